-- Each matched master source's SIMBAD type mapped onto the method's classes (METHOD §5).
WITH matches AS (
    SELECT * FROM model.stg_simbad_match
),

mapped AS (
    SELECT
        m.name,
        m.main_id,
        m.otype,
        m.separation_arcsec,
        o.class AS label_class,
        coalesce(o.kind, 'other') AS otype_kind
    FROM matches AS m
    LEFT JOIN model.otype_classes AS o USING (otype)
),

final AS (
    SELECT
        *,
        CASE otype_kind
            WHEN 'reference' THEN 'reference'
            WHEN 'uninformative' THEN 'target'
            ELSE 'excluded'
        END AS role
    FROM mapped
)

SELECT * FROM final
