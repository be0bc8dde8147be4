-- Mean and population standard deviation of each class probability over a source's
-- classified detections (METHOD §7); the soft vote is the argmax of the mean.
WITH detections AS (
    SELECT * FROM results.detection_class WHERE pred_class IS NOT NULL
),

long AS (
    UNPIVOT detections
    ON QSO, AGN, Seyfert_1, Seyfert_2, HMXB, LMXB, XB, YSO, "TTau*", "Orion_V*"
    INTO NAME class VALUE probability
),

final AS (
    SELECT
        l.name,
        l.class,
        c.class_order,
        avg(l.probability) AS mean_probability,
        stddev_pop(l.probability) AS std_probability
    FROM long AS l
    JOIN model.classes AS c USING (class)
    GROUP BY l.name, l.class, c.class_order
)

SELECT * FROM final
