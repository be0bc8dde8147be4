-- The published confidence limits of every detection (sql/seeds/confidence_limits.csv), kept
-- where they can be used and NULL otherwise, with the reason. A bad limit never excludes a
-- detection from `classify` (the method does not use the limits, and the classification stays
-- the paper's); it only leaves that feature without a usable error.
WITH detections AS (
    SELECT * FROM model.stg_detections
),

checked AS (
    SELECT
        det_id,
        name,
        obsid,
        obi,
        region_id,
        {% for limit in confidence_limits %}
        {{ limit.lolim | ident }},
        {{ limit.hilim | ident }},
        {{ limit_problem(limit) }} AS {{ (limit.feature ~ '__problem') | ident }},
        {% endfor %}
    FROM detections
),

final AS (
    SELECT
        * EXCLUDE (
            {% for limit in confidence_limits %}
            {{ (limit.feature ~ '__problem') | ident }}{{ "," if not loop.last }}
            {% endfor %}
        ) REPLACE (
            {% for limit in confidence_limits %}
            {% set problem = (limit.feature ~ '__problem') | ident %}
            CASE WHEN {{ problem }} IS NULL THEN {{ limit.lolim | ident }} END
                AS {{ limit.lolim | ident }},
            CASE WHEN {{ problem }} IS NULL THEN {{ limit.hilim | ident }} END
                AS {{ limit.hilim | ident }}{{ "," if not loop.last }}
            {% endfor %}
        ),
        nullif(concat_ws('; ',
            {% for limit in confidence_limits %}
            {{ (limit.feature ~ '__problem') | ident }}{{ "," if not loop.last }}
            {% endfor %}
        ), '') AS limit_problems
    FROM checked
)

SELECT * FROM final
