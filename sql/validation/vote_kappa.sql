-- Cohen's kappa between the hard and soft votes of all classified sources.
WITH sources AS (
    SELECT hard_class, soft_class FROM results.source_class
),

totals AS (
    SELECT count(*) AS n_sources, count(*) FILTER (WHERE hard_class = soft_class) AS n_agree
    FROM sources
),

hard AS (
    SELECT hard_class AS class, count(*) AS n_hard FROM sources GROUP BY 1
),

soft AS (
    SELECT soft_class AS class, count(*) AS n_soft FROM sources GROUP BY 1
),

expected AS (
    SELECT coalesce(sum(h.n_hard * s.n_soft), 0) AS n_pairs
    FROM hard AS h
    JOIN soft AS s USING (class)
),

agreement AS (
    SELECT
        t.n_sources,
        t.n_agree,
        t.n_agree / nullif(t.n_sources, 0) AS observed_agreement,
        e.n_pairs / nullif(t.n_sources * t.n_sources, 0) AS expected_agreement
    FROM totals AS t
    CROSS JOIN expected AS e
),

final AS (
    SELECT
        n_sources,
        n_agree,
        coalesce(observed_agreement, 0) AS observed_agreement,
        coalesce(expected_agreement, 0) AS expected_agreement,
        (observed_agreement - expected_agreement) / nullif(1 - expected_agreement, 0) AS kappa
    FROM agreement
)

SELECT * FROM final
