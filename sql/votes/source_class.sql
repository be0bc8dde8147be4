-- Hard and soft votes per master source (METHOD §7). Hard-vote ties go to the class that occurs
-- first in detection order (name, obsid, then ingest order), as in the published catalogue.
WITH detections AS (
    SELECT * FROM results.detection_class WHERE pred_class IS NOT NULL
),

sources AS (
    SELECT
        name,
        arg_min(ra, (obsid, det_id)) AS ra,
        arg_min(dec, (obsid, det_id)) AS dec,
        count(*) AS detection_count,
        arg_min(det_id, (obsid, det_id)) AS first_det_id
    FROM detections
    GROUP BY name
),

class_counts AS (
    SELECT
        name,
        pred_class AS class,
        count(*) AS n_detections,
        min(obsid) AS first_obsid,
        arg_min(det_id, (obsid, det_id)) AS first_det_id
    FROM detections
    GROUP BY name, pred_class
),

hard_votes AS (
    SELECT
        name,
        arg_max(class, (n_detections, -first_obsid, -first_det_id)) AS hard_class
    FROM class_counts
    GROUP BY name
),

soft_votes AS (
    SELECT
        name,
        arg_max(class, (mean_probability, -class_order)) AS soft_class
    FROM results.source_class_probs
    GROUP BY name
),

final AS (
    SELECT
        s.name,
        s.ra,
        s.dec,
        s.detection_count,
        s.first_det_id,
        h.hard_class,
        v.soft_class,
        h.hard_class = v.soft_class AS is_unique,
        CASE WHEN h.hard_class = v.soft_class THEN h.hard_class END AS master_class,
        CASE WHEN h.hard_class = v.soft_class THEN c.agg_class END AS agg_master_class
    FROM sources AS s
    JOIN hard_votes AS h USING (name)
    JOIN soft_votes AS v USING (name)
    LEFT JOIN model.classes AS c ON c.class = h.hard_class
)

SELECT * FROM final ORDER BY detection_count DESC, name
