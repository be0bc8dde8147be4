-- Best SIMBAD counterpart of each master source within getvariable('match_radius_arcsec').
-- TOPCAT's "best match for each table-1 row", without an O(N×M) join: positions become unit
-- vectors binned in 3-D cells of side 8×radius; a SIMBAD object is also put in a neighbouring
-- cell only when it lies within one radius of that cell's face, so an equi-join on the cell
-- finds every pair closer than the radius (RA wrap-around and the poles need no special case).
-- Sources come from raw.match_sources__staging (sql/ingest/match_sources.sql). Each source lies
-- in one cell, so the work splits into getvariable('match_partitions') disjoint partitions of
-- cells (by hash); this query is partition getvariable('match_partition'), keeping the join's
-- memory bounded at any catalogue size.
WITH params AS (
    SELECT
        radians(getvariable('match_radius_arcsec') / 3600.0) AS radius_rad,
        8.0 * radians(getvariable('match_radius_arcsec') / 3600.0) AS cell,
        CAST(getvariable('match_partitions') AS UBIGINT) AS partitions,
        CAST(getvariable('match_partition') AS UBIGINT) AS partition
),

source_cells AS (
    SELECT s.name, s.ra, s.dec, s.cx, s.cy, s.cz
    FROM raw.match_sources__staging AS s, params AS p
    WHERE hash(s.cx, s.cy, s.cz) % p.partitions = p.partition
),

simbad_vectors AS (
    SELECT
        b.main_id, b.otype, b.ra, b.dec,
        cos(radians(b.dec)) * cos(radians(b.ra)) / p.cell AS ux,
        cos(radians(b.dec)) * sin(radians(b.ra)) / p.cell AS uy,
        sin(radians(b.dec)) / p.cell AS uz,
        p.radius_rad / p.cell AS margin
    FROM raw.simbad AS b, params AS p
),

-- One axis at a time: the home cell, plus the neighbour across a face that is within reach.
simbad_x AS (
    SELECT *, CAST(floor(ux) AS BIGINT) + unnest(
        CASE WHEN ux - floor(ux) < margin THEN [0, -1]
             WHEN ux - floor(ux) > 1 - margin THEN [0, 1] ELSE [0] END) AS cx
    FROM simbad_vectors
),

simbad_xy AS (
    SELECT *, CAST(floor(uy) AS BIGINT) + unnest(
        CASE WHEN uy - floor(uy) < margin THEN [0, -1]
             WHEN uy - floor(uy) > 1 - margin THEN [0, 1] ELSE [0] END) AS cy
    FROM simbad_x
),

simbad_xyz AS (
    SELECT *, CAST(floor(uz) AS BIGINT) + unnest(
        CASE WHEN uz - floor(uz) < margin THEN [0, -1]
             WHEN uz - floor(uz) > 1 - margin THEN [0, 1] ELSE [0] END) AS cz
    FROM simbad_xy
),

simbad_cells AS (
    SELECT b.*
    FROM simbad_xyz AS b, params AS p
    WHERE hash(b.cx, b.cy, b.cz) % p.partitions = p.partition
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
