-- Typed, renamed CSC detections: the one place downstream models read raw.detections from.
WITH source AS (
    SELECT * FROM raw.detections
),

renamed AS (
    SELECT
        det_id,
        name,
        obsid,
        obi,
        region_id,
        ra,
        dec,
        flux_significance_b,
        hard_hm, hard_hs, hard_ms,
        powlaw_gamma,
        bb_kt,
        var_prob_b, var_sigma_b, var_mean_b, var_min_b, var_max_b,
        var_prob_h, var_sigma_h, var_mean_h,
        var_prob_s, var_sigma_s, var_mean_s,
        match_type,
        {% for limit in confidence_limits %}
        {{ limit.lolim | ident }}, {{ limit.hilim | ident }}{{ "," if not loop.last }}
        {% endfor %}
    FROM source
)

SELECT * FROM renamed
