-- The cleaned detections in the scaled feature space the mixture and the kernel work in: each
-- feature of sql/seeds/features.csv, in seed order, scaled by its transform (none, minmax or
-- log_minmax, the macros of macros.sql).
WITH clean AS (
    SELECT * FROM model.detection_features WHERE is_clean
),

params AS (
    PIVOT (SELECT feature, log_offset, min_value, max_value FROM model.preprocessing_params)
    ON feature
    USING first(log_offset) AS off, first(min_value) AS lo, first(max_value) AS hi
),

scaled AS (
    SELECT
        c.det_id,
        c.name,
        c.obsid,
    {% for f in features %}
        {% if transforms[f] == 'log_minmax' %}
        model.log_minmax(c.{{ f }}, p.{{ f }}_off, p.{{ f }}_lo, p.{{ f }}_hi) AS {{ f }}
        {%- elif transforms[f] == 'minmax' %}
        model.minmax(c.{{ f }}, p.{{ f }}_lo, p.{{ f }}_hi) AS {{ f }}
        {%- else %}
        c.{{ f }}
        {%- endif %}{{ ',' if not loop.last }}
    {% endfor %}
    FROM clean AS c
    CROSS JOIN params AS p
),

final AS (
    SELECT * FROM scaled ORDER BY det_id
)

SELECT * FROM final
