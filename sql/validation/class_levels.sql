-- The ten classes mapped onto the three levels of the validation (fine, aggregated, group).
WITH classes AS (
    SELECT
        class,
        class_order,
        agg_class,
        min(class_order) OVER (PARTITION BY agg_class) AS agg_order,
        CASE agg_class
            WHEN 'AGN' THEN 'large accretors'
            WHEN 'Seyfert' THEN 'large accretors'
            WHEN 'XB' THEN 'small accretors'
            WHEN 'YSO' THEN 'young stars'
        END AS group_label
    FROM model.classes
),

final AS (
    SELECT 'class' AS level, class, class AS label, class_order AS label_order FROM classes
    UNION ALL
    SELECT 'aggregated', class, agg_class, agg_order FROM classes
    UNION ALL
    SELECT 'group', class, group_label, min(class_order) OVER (PARTITION BY group_label)
    FROM classes
)

SELECT * FROM final
