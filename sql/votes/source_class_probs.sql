-- Mean and population standard deviation of each class probability over a source's
-- classified detections (METHOD §7); the soft vote is the argmax of the mean. Aggregated
-- wide (one group per source, 20 aggregates) and unpivoted afterwards: grouping the long
-- form needs ten times the groups, and was 4× slower at 10^7 detections.
WITH detections AS (
    SELECT * FROM results.detection_class WHERE pred_class IS NOT NULL
),

per_source AS (
    SELECT
        name,
        avg(QSO) AS QSO_mean, stddev_pop(QSO) AS QSO_std,
        avg(AGN) AS AGN_mean, stddev_pop(AGN) AS AGN_std,
        avg(Seyfert_1) AS Seyfert_1_mean, stddev_pop(Seyfert_1) AS Seyfert_1_std,
        avg(Seyfert_2) AS Seyfert_2_mean, stddev_pop(Seyfert_2) AS Seyfert_2_std,
        avg(HMXB) AS HMXB_mean, stddev_pop(HMXB) AS HMXB_std,
        avg(LMXB) AS LMXB_mean, stddev_pop(LMXB) AS LMXB_std,
        avg(XB) AS XB_mean, stddev_pop(XB) AS XB_std,
        avg(YSO) AS YSO_mean, stddev_pop(YSO) AS YSO_std,
        avg("TTau*") AS "TTau*_mean", stddev_pop("TTau*") AS "TTau*_std",
        avg("Orion_V*") AS "Orion_V*_mean", stddev_pop("Orion_V*") AS "Orion_V*_std"
    FROM detections
    GROUP BY name
),

long AS (
    UNPIVOT per_source
    ON (QSO_mean, QSO_std) AS QSO, (AGN_mean, AGN_std) AS AGN,
       (Seyfert_1_mean, Seyfert_1_std) AS Seyfert_1, (Seyfert_2_mean, Seyfert_2_std) AS Seyfert_2,
       (HMXB_mean, HMXB_std) AS HMXB, (LMXB_mean, LMXB_std) AS LMXB, (XB_mean, XB_std) AS XB,
       (YSO_mean, YSO_std) AS YSO, ("TTau*_mean", "TTau*_std") AS "TTau*",
       ("Orion_V*_mean", "Orion_V*_std") AS "Orion_V*"
    INTO NAME class VALUE mean_probability, std_probability
),

final AS (
    SELECT l.name, l.class, c.class_order, l.mean_probability, l.std_probability
    FROM long AS l
    JOIN model.classes AS c USING (class)
)

SELECT * FROM final
