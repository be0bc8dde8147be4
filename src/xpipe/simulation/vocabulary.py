"""What the simulator writes: the classes, features and SIMBAD codes (read from the seeds the
SQL models use, so the simulator and the pipeline cannot disagree) and the output schemas."""

from __future__ import annotations

import pyarrow as pa

from xpipe.warehouse.seeds import (
    aggregated_classes,
    class_names,
    class_otypes,
    confidence_limits,
    feature_names,
)

CLASSES: tuple[str, ...] = class_names()
AGG_CLASS: dict[str, str] = {c: aggregated_classes()[c] for c in CLASSES}
OWN_OTYPE: dict[str, str] = dict(class_otypes())  # the SIMBAD code a true counterpart carries
FEATURES: tuple[str, ...] = feature_names()
BANDS: tuple[str, ...] = ("b", "h", "m", "s")
VAR_STATS: tuple[str, ...] = ("prob", "sigma", "mean", "min", "max")
LIMIT_COLUMNS: tuple[str, ...] = tuple(c for lim in confidence_limits().values()
                                       for c in (lim.lolim, lim.hilim))

DETECTION_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("obsid", pa.int32()),
        ("obi", pa.int16()),
        ("region_id", pa.int32()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("flux_significance_b", pa.float64()),
        ("hard_hm", pa.float64()),
        ("hard_hs", pa.float64()),
        ("hard_ms", pa.float64()),
        ("powlaw_gamma", pa.float64()),
        ("bb_kt", pa.float64()),
    ]
    + [(f"var_{stat}_{band}", pa.float64()) for band in BANDS for stat in VAR_STATS]
    + [(column, pa.float64()) for column in LIMIT_COLUMNS]  # last: they came last
)
SIMBAD_SCHEMA = pa.schema(
    [("main_id", pa.string()), ("otype", pa.string()), ("ra", pa.float64()), ("dec", pa.float64())]
)
TRUTH_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("true_class", pa.string()),
        ("agg_class", pa.string()),
        ("simbad_main_id", pa.string()),
        ("simbad_otype", pa.string()),
    ]
)
