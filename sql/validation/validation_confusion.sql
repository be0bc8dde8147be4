-- Confusion matrices of the held-out validation, row-normalised, at each level of
-- model.class_levels; every (true, predicted) pair is listed, zeros included.
WITH predictions AS (
    SELECT true_class, pred_class FROM results.validation_detections
),

levels AS (
    SELECT level, class, label, label_order FROM model.class_levels
),

labels AS (
    SELECT DISTINCT level, label, label_order FROM levels
),

pairs AS (
    SELECT
        t.level,
        t.label AS true_class,
        coalesce(p.label, 'unclassified') AS pred_class
    FROM predictions AS d
    JOIN levels AS t ON t.class = d.true_class
    LEFT JOIN levels AS p ON p.class = d.pred_class AND p.level = t.level
),

columns AS (
    SELECT level, label, label_order FROM labels
    UNION ALL
    SELECT DISTINCT level, 'unclassified', 99 FROM pairs WHERE pred_class = 'unclassified'
),

counts AS (
    SELECT level, true_class, pred_class, count(*) AS n FROM pairs GROUP BY ALL
),

grid AS (
    SELECT
        r.level,
        r.label AS true_class,
        r.label_order AS true_order,
        c.label AS pred_class,
        c.label_order AS pred_order,
        coalesce(n.n, 0)::BIGINT AS n
    FROM labels AS r
    JOIN columns AS c USING (level)
    LEFT JOIN counts AS n
        ON n.level = r.level AND n.true_class = r.label AND n.pred_class = c.label
),

final AS (
    SELECT
        *,
        (sum(n) OVER (PARTITION BY level, true_class))::BIGINT AS row_total,
        n / nullif(sum(n) OVER (PARTITION BY level, true_class), 0) AS fraction
    FROM grid
)

SELECT * FROM final ORDER BY level, true_order, pred_order
