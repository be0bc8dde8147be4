-- The ten classes mapped onto the three levels of the validation (fine, aggregated, group);
-- the groups of the aggregated classes are the seed model.class_groups.
WITH classes AS (
    SELECT
        c.class,
        c.class_order,
        c.agg_class,
        min(c.class_order) OVER (PARTITION BY c.agg_class) AS agg_order,
        g.group_label
    FROM model.classes AS c
    LEFT JOIN model.class_groups AS g USING (agg_class)
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
