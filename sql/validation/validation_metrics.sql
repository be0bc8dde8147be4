-- Recall, precision and F1 per class from the confusion matrices, with the training counts
-- and the chance level (the predicted share of each class).
WITH confusion AS (
    SELECT * FROM results.validation_confusion
),

train AS (
    SELECT l.level, l.label AS class, count(*) AS n_train
    FROM results.validation_split AS s
    JOIN model.class_levels AS l ON l.class = s.label_class
    WHERE s.split = 'train'
    GROUP BY ALL
),

rows_ AS (
    SELECT
        level,
        true_class AS class,
        any_value(true_order) AS class_order,
        sum(n)::BIGINT AS support,
        (sum(n) FILTER (WHERE pred_class = true_class))::BIGINT AS true_positives
    FROM confusion
    GROUP BY level, true_class
),

columns_ AS (
    SELECT level, pred_class AS class, sum(n)::BIGINT AS n_predicted
    FROM confusion
    GROUP BY level, pred_class
),

totals AS (
    SELECT level, sum(n)::BIGINT AS n_total FROM confusion GROUP BY level
),

scores AS (
    SELECT
        r.level,
        r.class,
        r.class_order,
        r.support,
        coalesce(t.n_train, 0) AS n_train,
        c.n_predicted,
        r.true_positives,
        r.true_positives / nullif(r.support, 0) AS recall,
        r.true_positives / nullif(c.n_predicted, 0) AS precision,
        c.n_predicted / nullif(n.n_total, 0) AS predicted_share
    FROM rows_ AS r
    JOIN columns_ AS c USING (level, class)
    JOIN totals AS n USING (level)
    LEFT JOIN train AS t USING (level, class)
),

final AS (
    SELECT
        *,
        2 * precision * recall / nullif(precision + recall, 0) AS f1
    FROM scores
)

SELECT * FROM final ORDER BY level, class_order
