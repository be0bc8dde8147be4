-- The published `uniquely_classified.csv` layout: votes, "mean±std" per class, position,
-- and the 12 raw features of the source's first detection. Classes and features come from
-- the seeds (sql/seeds/), rendered by the runner (Jinja).
WITH sources AS (
    SELECT * FROM results.source_class WHERE is_unique
),

probabilities AS (
    PIVOT (
        SELECT name, class, model.mean_pm_std(mean_probability, std_probability) AS mean_std
        FROM results.source_class_probs
    )
    ON class IN ({{ classes | map('sql_string') | join(', ') }})
    USING first(mean_std)
    GROUP BY name
),

final AS (
    SELECT
        s.name,
        s.agg_master_class,
        s.master_class,
        s.detection_count,
        {{ classes | columns('p') }},
        s.ra,
        s.dec,
        {{ features | columns('f') }}
    FROM sources AS s
    JOIN probabilities AS p USING (name)
    LEFT JOIN model.detection_features AS f ON f.det_id = s.first_det_id
)

SELECT * FROM final ORDER BY detection_count DESC, name
