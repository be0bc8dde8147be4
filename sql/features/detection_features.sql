-- The 12 features of METHOD §2 for the detections that pass the paper's selection, and the
-- cleaning. A detection with a physically impossible value (model.excluded_detections) is never
-- selected, unless getvariable('exclude_impossible') is FALSE (classify-new, which flags it). Ratios with a zero or null denominator are NULL (never inf), so such detections are
-- dropped. Only selected detections are kept: at catalogue scale they are ~4 % of the rows.
-- The features, their order and which are log-transformed come from sql/seeds/features.csv;
-- `derived` says how the ones that are not CSC columns are computed.
{% set derived = {
    'var_ratio_b': 'var_sigma_b / NULLIF(var_mean_b, 0)',
    'var_ratio_h': 'var_sigma_h / NULLIF(var_mean_h, 0)',
    'var_ratio_s': 'var_sigma_s / NULLIF(var_mean_s, 0)',
    'var_newq_b': '((var_max_b + var_min_b) / 2) / NULLIF(var_mean_b, 0)',
} %}
WITH detections AS (
    SELECT * FROM model.stg_detections
    WHERE {{ physically_possible() }}
       OR NOT coalesce(getvariable('exclude_impossible'), TRUE)
),

derived AS (
    SELECT
        det_id,
        name,
        obsid,
        ra,
        dec,
        flux_significance_b,
        match_type,
    {% for f in features %}
        {{ derived[f] ~ ' AS ' if f in derived }}{{ f }}{{ ',' if not loop.last }}
    {% endfor %}
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
             OR (powlaw_gamma IS NOT NULL AND bb_kt IS NOT NULL))
        -- an optional selection on master_stack_assoc.match_type (NULL: none)
        AND coalesce(match_type = getvariable('match_type'), getvariable('match_type') IS NULL)
            AS is_selected,
        coalesce(
            {%+ for f in features %}{{ f }} IS NOT NULL{{ ' AND ' if not loop.last }}{% endfor %},
            FALSE
        ) AS has_all_features,
        -- ln(x + m/10) needs x >= 0 (the log_minmax features); physically never negative
        coalesce(
            {%+ for f in features if transforms[f] == 'log_minmax' %}{{ f }} >= 0{{ ' AND ' if not loop.last }}{% endfor %},
            FALSE
        ) AS in_log_domain
    FROM derived
),

final AS (
    SELECT
        * EXCLUDE (is_selected, match_type),
        has_all_features AND in_log_domain AS is_clean
    FROM flagged
    WHERE is_selected
)

SELECT * FROM final
