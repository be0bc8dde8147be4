-- SIMBAD counterparts with trimmed types, ready to map onto classes.
WITH source AS (
    SELECT * FROM raw.simbad_match
),

renamed AS (
    SELECT
        name,
        main_id,
        trim(otype) AS otype,
        separation_arcsec
    FROM source
)

SELECT * FROM renamed
