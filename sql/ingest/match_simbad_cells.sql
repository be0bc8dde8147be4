-- One row per SIMBAD object and cell it can match in: its home cell (side 8×radius, as in
-- match_sources.sql), plus the neighbour across a face when the object lies within one radius
-- of that face, so an equi-join on the cell finds every pair closer than the radius (RA
-- wrap-around and the poles need no special case). cell_hash assigns the row to a partition.
WITH params AS (
    SELECT
        radians(getvariable('match_radius_arcsec') / 3600.0) AS radius_rad,
        8.0 * radians(getvariable('match_radius_arcsec') / 3600.0) AS cell
),

vectors AS (
    SELECT
        b.main_id, b.otype, b.ra, b.dec,
        cos(radians(b.dec)) * cos(radians(b.ra)) / p.cell AS ux,
        cos(radians(b.dec)) * sin(radians(b.ra)) / p.cell AS uy,
        sin(radians(b.dec)) / p.cell AS uz,
        p.radius_rad / p.cell AS margin
    FROM raw.simbad AS b, params AS p
),

-- One axis at a time: the home cell, plus the neighbour across a face that is within reach.
cells AS (
    SELECT
        main_id, otype, ra, dec,
        CAST(floor(ux) AS BIGINT) + unnest(model.cell_reach(ux, margin)) AS cx,
        uy, uz, margin
    FROM vectors
),

cells_xy AS (
    SELECT *, CAST(floor(uy) AS BIGINT) + unnest(model.cell_reach(uy, margin)) AS cy
    FROM cells
),

cells_xyz AS (
    SELECT *, CAST(floor(uz) AS BIGINT) + unnest(model.cell_reach(uz, margin)) AS cz
    FROM cells_xy
),

final AS (
    SELECT main_id, otype, ra, dec, cx, cy, cz, hash(cx, cy, cz) AS cell_hash
    FROM cells_xyz
)

SELECT * FROM final
