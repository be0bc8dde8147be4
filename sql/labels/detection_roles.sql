-- Every cleaned detection is a reference (labelled), a target (to classify) or excluded.
WITH clean AS (
    SELECT det_id, name FROM model.scaled_features
),

labels AS (
    SELECT name, label_class, otype, role FROM model.source_labels
),

final AS (
    SELECT
        c.det_id,
        c.name,
        l.otype,
        l.label_class,
        coalesce(l.role, 'target') AS role
    FROM clean AS c
    LEFT JOIN labels AS l USING (name)
)

SELECT * FROM final
