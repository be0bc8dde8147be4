-- One row per master source: the position of its first-ingested detection, the 3-D cell (side
-- 8×getvariable('match_radius_arcsec')) its unit vector falls in, and a hash of that cell that
-- assigns it to a cross-match partition. Materialised once, with match_simbad_cells.sql, so
-- that each partition of simbad_match.sql only filters on cell_hash: grouping 10^8 detections
-- and joining in one query needs the memory of both at once. Detections with a physically
-- impossible value (sql/seeds/physical_ranges.csv) give no position: a source has its first
-- possible detection's, or none.
WITH params AS (
    SELECT 8.0 * radians(getvariable('match_radius_arcsec') / 3600.0) AS cell
),

sources AS (
    SELECT name, arg_min(ra, det_id) AS ra, arg_min(dec, det_id) AS dec
    FROM raw.detections
    WHERE {{ physically_possible() }}
    GROUP BY name
),

cells AS (
    SELECT
        s.name, s.ra, s.dec,
        CAST(floor(cos(radians(s.dec)) * cos(radians(s.ra)) / p.cell) AS BIGINT) AS cx,
        CAST(floor(cos(radians(s.dec)) * sin(radians(s.ra)) / p.cell) AS BIGINT) AS cy,
        CAST(floor(sin(radians(s.dec)) / p.cell) AS BIGINT) AS cz
    FROM sources AS s, params AS p
),

final AS (
    SELECT *, hash(cx, cy, cz) AS cell_hash
    FROM cells
)

SELECT * FROM final
