-- Detections with a physically impossible value: outside its range in
-- sql/seeds/physical_ranges.csv (a hardness ratio beyond ±1, a probability beyond [0, 1], a
-- position off the sky, a negative temperature or count rate). They stay in raw.detections, and
-- `classify` leaves them out of its selection (model.detection_features) so that one bad row
-- neither fails the run nor shifts the scaling; the cross-matches leave them out too.
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
        {{ impossible_values() }} AS reasons
    FROM detections
),

final AS (
    SELECT * FROM checked
    WHERE reasons IS NOT NULL
)

SELECT * FROM final
