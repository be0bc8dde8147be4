-- Mean and population standard deviation of each class probability over a source's
-- classified detections (METHOD §7); the soft vote is the argmax of the mean. Aggregated
-- wide (one group per source, 20 aggregates) and unpivoted afterwards: grouping the long
-- form needs ten times the groups, and was 4× slower at 10^7 detections. The class list comes
-- from the seed (sql/seeds/classes.csv), rendered by the runner (Jinja).
WITH detections AS (
    SELECT * FROM results.detection_class WHERE pred_class IS NOT NULL
),

per_source AS (
    SELECT
        name,
    {% for c in classes %}
        {% set p, mean, std = c | ident, (c ~ '_mean') | ident, (c ~ '_std') | ident %}
        avg({{ p }}) AS {{ mean }}, stddev_pop({{ p }}) AS {{ std }}{{ ',' if not loop.last }}
    {% endfor %}
    FROM detections
    GROUP BY name
),

long AS (
    UNPIVOT per_source
    ON
    {% for c in classes %}
        ({{ (c ~ '_mean') | ident }}, {{ (c ~ '_std') | ident }}) AS {{ c | ident }}{{ ',' if not loop.last }}
    {% endfor %}
    INTO NAME class VALUE mean_probability, std_probability
),

final AS (
    SELECT l.name, l.class, c.class_order, l.mean_probability, l.std_probability
    FROM long AS l
    JOIN model.classes AS c USING (class)
)

SELECT * FROM final
