-- One row per master source: the position of its first-ingested detection and the 3-D cell
-- (side 8×getvariable('match_radius_arcsec')) its unit vector falls in. Materialised once so
-- that the cross-match can run cell partition by cell partition: grouping 10^8 detections
-- and joining in the same query needs the memory of both at once.
WITH params AS (
    SELECT 8.0 * radians(getvariable('match_radius_arcsec') / 3600.0) AS cell
),

sources AS (
    SELECT name, arg_min(ra, det_id) AS ra, arg_min(dec, det_id) AS dec
    FROM raw.detections
    GROUP BY name
),

final AS (
    SELECT
        s.name, s.ra, s.dec,
        CAST(floor(cos(radians(s.dec)) * cos(radians(s.ra)) / p.cell) AS BIGINT) AS cx,
        CAST(floor(cos(radians(s.dec)) * sin(radians(s.ra)) / p.cell) AS BIGINT) AS cy,
        CAST(floor(sin(radians(s.dec)) / p.cell) AS BIGINT) AS cz
    FROM sources AS s, params AS p
)

SELECT * FROM final
