-- The published `uniquely_classified.csv` layout: votes, "mean±std" per class, position,
-- and the 12 raw features of the source's first detection.
WITH sources AS (
    SELECT * FROM results.source_class WHERE is_unique
),

probabilities AS (
    PIVOT (
        SELECT name, class, model.mean_pm_std(mean_probability, std_probability) AS mean_std
        FROM results.source_class_probs
    )
    ON class IN ('QSO', 'AGN', 'Seyfert_1', 'Seyfert_2', 'HMXB', 'LMXB', 'XB', 'YSO', 'TTau*',
                 'Orion_V*')
    USING first(mean_std)
    GROUP BY name
),

final AS (
    SELECT
        s.name,
        s.agg_master_class,
        s.master_class,
        s.detection_count,
        p.QSO, p.AGN, p.Seyfert_1, p.Seyfert_2, p.HMXB, p.LMXB, p.XB, p.YSO, p."TTau*",
        p."Orion_V*",
        s.ra,
        s.dec,
        f.hard_hm, f.hard_hs, f.hard_ms, f.powlaw_gamma, f.bb_kt, f.var_prob_b, f.var_ratio_b,
        f.var_prob_h, f.var_ratio_h, f.var_prob_s, f.var_ratio_s, f.var_newq_b
    FROM sources AS s
    JOIN probabilities AS p USING (name)
    LEFT JOIN model.detection_features AS f ON f.det_id = s.first_det_id
)

SELECT * FROM final ORDER BY detection_count DESC, name
