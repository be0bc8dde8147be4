-- Best SIMBAD counterpart of each master source within getvariable('match_radius_arcsec'):
-- TOPCAT's "best match for each table-1 row", without an O(N×M) join. Sources and SIMBAD
-- objects come binned in 3-D cells from raw.match_sources__staging and
-- raw.match_simbad_cells__staging (match_sources.sql, match_simbad_cells.sql). A source lies in
-- one cell, so the work splits into getvariable('match_partitions') disjoint partitions of
-- cells by hash; this query is partition getvariable('match_partition'), which keeps the
-- join's memory bounded at any catalogue size.
WITH params AS (
    SELECT
        CAST(getvariable('match_partitions') AS UBIGINT) AS partitions,
        CAST(getvariable('match_partition') AS UBIGINT) AS partition
),

source_cells AS (
    SELECT s.name, s.ra, s.dec, s.cx, s.cy, s.cz
    FROM raw.match_sources__staging AS s, params AS p
    WHERE s.cell_hash % p.partitions = p.partition
),

simbad_cells AS (
    SELECT b.main_id, b.otype, b.ra, b.dec, b.cx, b.cy, b.cz
    FROM raw.match_simbad_cells__staging AS b, params AS p
    WHERE b.cell_hash % p.partitions = p.partition
),

candidates AS (
    SELECT
        s.name,
        b.main_id,
        b.otype,
        -- haversine: accurate at arcsecond separations, unlike the cosine formula
        degrees(2 * asin(sqrt(
            pow(sin(radians(b.dec - s.dec) / 2), 2)
            + cos(radians(s.dec)) * cos(radians(b.dec)) * pow(sin(radians(b.ra - s.ra) / 2), 2)
        ))) * 3600.0 AS separation_arcsec
    FROM source_cells AS s
    JOIN simbad_cells AS b USING (cx, cy, cz)
),

final AS (
    SELECT
        'raw.simbad' AS source_file,
        CAST(NULL AS BIGINT) AS source_row,
        name,
        arg_min(main_id, (separation_arcsec, main_id)) AS main_id,
        arg_min(otype, (separation_arcsec, main_id)) AS otype,
        min(separation_arcsec) AS separation_arcsec
    FROM candidates
    WHERE separation_arcsec <= getvariable('match_radius_arcsec')
    GROUP BY name
)

SELECT * FROM final
