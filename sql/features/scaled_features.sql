-- The cleaned detections in the scaled feature space the mixture and the kernel work in.
WITH clean AS (
    SELECT * FROM model.detection_features WHERE is_clean
),

params AS (
    PIVOT (SELECT feature, log_offset, min_value, max_value FROM model.preprocessing_params)
    ON feature
    USING first(log_offset) AS off, first(min_value) AS lo, first(max_value) AS hi
),

scaled AS (
    SELECT
        c.det_id,
        c.name,
        c.obsid,
        c.hard_hm,
        c.hard_hs,
        c.hard_ms,
        model.minmax(c.powlaw_gamma, p.powlaw_gamma_lo, p.powlaw_gamma_hi) AS powlaw_gamma,
        model.log_minmax(c.bb_kt, p.bb_kt_off, p.bb_kt_lo, p.bb_kt_hi) AS bb_kt,
        c.var_prob_b,
        model.log_minmax(c.var_ratio_b, p.var_ratio_b_off, p.var_ratio_b_lo, p.var_ratio_b_hi)
            AS var_ratio_b,
        c.var_prob_h,
        model.log_minmax(c.var_ratio_h, p.var_ratio_h_off, p.var_ratio_h_lo, p.var_ratio_h_hi)
            AS var_ratio_h,
        c.var_prob_s,
        model.log_minmax(c.var_ratio_s, p.var_ratio_s_off, p.var_ratio_s_lo, p.var_ratio_s_hi)
            AS var_ratio_s,
        model.log_minmax(c.var_newq_b, p.var_newq_b_off, p.var_newq_b_lo, p.var_newq_b_hi)
            AS var_newq_b
    FROM clean AS c
    CROSS JOIN params AS p
),

final AS (
    SELECT * FROM scaled ORDER BY det_id
)

SELECT * FROM final
