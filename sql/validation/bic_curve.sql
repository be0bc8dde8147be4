-- Mean, spread and gradient of the BIC over seeds, the elbow K and the knee K (rules in
-- bic_curve.yml).
WITH scores AS (
    SELECT * FROM results.bic_scores
),

per_k AS (
    SELECT
        any_value(run_id) AS run_id,
        any_value(classify_run_id) AS classify_run_id,
        k,
        count(*) AS n_seeds,
        count(*) FILTER (WHERE NOT converged) AS n_not_converged,
        avg(bic) AS bic_mean,
        coalesce(stddev_samp(bic), 0) AS bic_std,
        min(bic) AS bic_min,
        max(bic) AS bic_max
    FROM scores
    GROUP BY k
),

neighbours AS (
    SELECT
        *,
        coalesce(lead(bic_mean) OVER w, bic_mean) AS next_mean,
        coalesce(lead(k) OVER w, k) AS next_k,
        coalesce(lag(bic_mean) OVER w, bic_mean) AS prev_mean,
        coalesce(lag(k) OVER w, k) AS prev_k
    FROM per_k
    WINDOW w AS (ORDER BY k)
),

scaled AS (
    SELECT
        *,
        CASE WHEN next_k = prev_k THEN 0
             ELSE (next_mean - prev_mean) / (next_k - prev_k) END AS gradient,
        CASE WHEN k > prev_k AND next_k > k THEN prev_mean - 2 * bic_mean + next_mean
        END AS improvement_drop,
        (k - min(k) OVER ()) / nullif(max(k) OVER () - min(k) OVER (), 0) AS x,
        (bic_mean - min(bic_mean) OVER ())
            / nullif(max(bic_mean) OVER () - min(bic_mean) OVER (), 0) AS y
    FROM neighbours
),

chord AS (
    SELECT
        *,
        coalesce(
            round(
                first_value(y) OVER ends
                + (last_value(y) OVER ends - first_value(y) OVER ends) * x - y,
                12),
            0) AS elbow_distance
    FROM scaled
    WINDOW ends AS (ORDER BY k ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
),

final AS (
    SELECT
        run_id,
        classify_run_id,
        k,
        n_seeds,
        n_not_converged,
        bic_mean,
        bic_std,
        bic_min,
        bic_max,
        gradient,
        improvement_drop,
        elbow_distance,
        k = arg_max(k, (coalesce(improvement_drop, '-inf'::DOUBLE), -k)) OVER () AS is_elbow,
        k = arg_max(k, (elbow_distance, -k)) OVER () AS is_knee,
        k = arg_min(k, (bic_mean, k)) OVER () AS is_minimum
    FROM chord
)

SELECT * FROM final ORDER BY k
