-- Per source, its most anomalous classified detection (largest smallest squared Mahalanobis
-- distance to a usable reference class of its cluster; ties to the lower mixture
-- log-likelihood), ranked over all sources, with the detection's raw features.
WITH scored AS (
    SELECT * FROM results.detection_class WHERE min_mahalanobis_sq IS NOT NULL
),

ranked AS (
    SELECT
        *,
        count(*) OVER (PARTITION BY name) AS scored_detections,
        row_number() OVER (
            PARTITION BY name ORDER BY min_mahalanobis_sq DESC, log_likelihood, det_id
        ) AS rank_in_source
    FROM scored
),

final AS (
    SELECT
        row_number() OVER (
            ORDER BY r.min_mahalanobis_sq DESC, r.log_likelihood, r.det_id
        ) AS anomaly_rank,
        r.name,
        r.det_id,
        r.obsid,
        r.ra,
        r.dec,
        r.scored_detections,
        r.cluster,
        r.pred_class,
        r.nearest_class,
        r.min_mahalanobis_sq,
        r.anomaly_p,
        r.log_likelihood,
        f.flux_significance_b,
        {{ features | columns('f') }}
    FROM ranked AS r
    JOIN model.detection_features AS f USING (det_id)
    WHERE r.rank_in_source = 1
)

SELECT * FROM final ORDER BY anomaly_rank
