-- The 12 features of METHOD §2 for the detections that pass the paper's selection, and the
-- cleaning. Ratios with a zero or null denominator are NULL (never inf), so such detections are
-- dropped. Only selected detections are kept: at catalogue scale they are ~4 % of the rows.
WITH detections AS (
    SELECT * FROM model.stg_detections
),

derived AS (
    SELECT
        det_id,
        name,
        obsid,
        ra,
        dec,
        flux_significance_b,
        hard_hm,
        hard_hs,
        hard_ms,
        powlaw_gamma,
        bb_kt,
        var_prob_b,
        var_sigma_b / NULLIF(var_mean_b, 0) AS var_ratio_b,
        var_prob_h,
        var_sigma_h / NULLIF(var_mean_h, 0) AS var_ratio_h,
        var_prob_s,
        var_sigma_s / NULLIF(var_mean_s, 0) AS var_ratio_s,
        ((var_max_b + var_min_b) / 2) / NULLIF(var_mean_b, 0) AS var_newq_b
    FROM detections
),

flagged AS (
    SELECT
        *,
        -- the paper's selection; a NULL threshold drops the significance cut
        coalesce(
            flux_significance_b > getvariable('min_flux_significance_b'),
            getvariable('min_flux_significance_b') IS NULL
        )
        AND (NOT getvariable('require_spectral_fits')
             OR (powlaw_gamma IS NOT NULL AND bb_kt IS NOT NULL)) AS is_selected,
        coalesce(
            hard_hm IS NOT NULL AND hard_hs IS NOT NULL AND hard_ms IS NOT NULL
            AND powlaw_gamma IS NOT NULL AND bb_kt IS NOT NULL
            AND var_prob_b IS NOT NULL AND var_ratio_b IS NOT NULL
            AND var_prob_h IS NOT NULL AND var_ratio_h IS NOT NULL
            AND var_prob_s IS NOT NULL AND var_ratio_s IS NOT NULL
            AND var_newq_b IS NOT NULL,
            FALSE
        ) AS has_all_features,
        -- ln(x + m/10) needs x >= 0; physically these are never negative
        coalesce(
            bb_kt >= 0 AND var_ratio_b >= 0 AND var_ratio_h >= 0 AND var_ratio_s >= 0
            AND var_newq_b >= 0,
            FALSE
        ) AS in_log_domain
    FROM derived
),

final AS (
    SELECT
        * EXCLUDE (is_selected),
        has_all_features AND in_log_domain AS is_clean
    FROM flagged
    WHERE is_selected
)

SELECT * FROM final
