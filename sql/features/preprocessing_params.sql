-- Scaling parameters of METHOD §3, fitted on the cleaned set and kept so that new detections
-- can be scaled identically later. The features and their transforms are the seed's
-- (sql/seeds/features.csv, model.features).
WITH clean AS (
    SELECT * FROM model.detection_features WHERE is_clean
),

long AS (
    UNPIVOT clean
    ON {{ features | columns }}
    INTO NAME feature VALUE value
),

smallest_nonzero AS (
    SELECT feature, min(value) FILTER (WHERE value <> 0) AS min_nonzero
    FROM long
    GROUP BY feature
),

offsets AS (
    SELECT
        f.feature,
        f.position,
        f.transform,
        CASE WHEN f.transform = 'log_minmax' THEN s.min_nonzero END AS min_nonzero,
        CASE WHEN f.transform = 'log_minmax' THEN s.min_nonzero / 10 END AS log_offset
    FROM model.features AS f
    LEFT JOIN smallest_nonzero AS s USING (feature)
),

transformed AS (
    SELECT
        o.feature,
        CASE o.transform WHEN 'log_minmax' THEN ln(l.value + o.log_offset) ELSE l.value END
            AS value
    FROM long AS l
    JOIN offsets AS o USING (feature)
    WHERE o.transform <> 'none'
),

ranges AS (
    SELECT feature, min(value) AS min_value, max(value) AS max_value
    FROM transformed
    GROUP BY feature
),

final AS (
    SELECT
        getvariable('run_id') AS run_id,
        o.feature,
        o.position,
        o.transform,
        o.min_nonzero,
        o.log_offset,
        r.min_value,
        r.max_value
    FROM offsets AS o
    LEFT JOIN ranges AS r USING (feature)
    ORDER BY o.position
)

SELECT * FROM final
