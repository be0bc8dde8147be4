"""Small hand-made inputs for the loader tests (the simulator makes the realistic ones)."""

from __future__ import annotations

import numpy as np
import polars as pl

from xpipe.warehouse.contracts import load_schema
from xpipe.warehouse.seeds import confidence_limits


def limit_columns() -> list[str]:
    """The optional confidence-limit columns of raw.detections, each feature's lower then upper."""
    return [c for lim in confidence_limits().values() for c in (lim.lolim, lim.hilim)]


def detections_frame(n: int = 20, seed: int = 0) -> pl.DataFrame:
    """n valid detections with every raw.detections column but the optional confidence limits
    (`with_limits` adds them), two detections per source."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for col in load_schema("raw.detections").columns:
        if col.type == "DOUBLE" and col.name not in limit_columns():
            data[col.name] = rng.uniform(0.1, 0.9, n)
    names = [f"2CXO J0000{i // 2:02d}.0+0000{i // 2:02d}" for i in range(n)]
    data.update(
        name=names,
        obsid=np.arange(1000, 1000 + n, dtype=np.int32),
        obi=np.zeros(n, dtype=np.int16),
        region_id=np.arange(1, n + 1, dtype=np.int32),
        ra=np.array([10.0 + i // 2 * 0.01 for i in range(n)]),
        dec=np.array([-5.0 + i // 2 * 0.01 for i in range(n)]),
        flux_significance_b=rng.uniform(3, 20, n),
        hard_hm=rng.uniform(-1, 1, n),
    )
    ordered = [c.name for c in load_schema("raw.detections").columns if c.name in data]
    return pl.DataFrame(data).select(ordered)


def simbad_frame(detections: pl.DataFrame) -> pl.DataFrame:
    """One counterpart 0.3 arcsec north of every other source."""
    sources = detections.unique("name", keep="first", maintain_order=True)[::2]
    return pl.DataFrame({
        "main_id": [f"SIM {i}" for i in range(sources.height)],
        "otype": ["QSO"] * sources.height,
        "ra": sources["ra"],
        "dec": sources["dec"] + 0.3 / 3600,
    })


def with_limits(frame: pl.DataFrame, half_width: float = 0.05) -> pl.DataFrame:
    """`frame` with usable confidence limits: value -+ half_width (a relative one for bb_kt),
    kept inside [-1, 1] for the hardness ratios and above 0 for bb_kt."""
    columns = []
    for lim in confidence_limits().values():
        value = pl.col(lim.feature)
        if lim.feature == "bb_kt":
            lo, hi = value * (1 - half_width), value * (1 + half_width)
        else:
            lo, hi = value - half_width, value + half_width
        if lim.feature.startswith("hard_"):
            lo, hi = lo.clip(-1.0, 1.0), hi.clip(-1.0, 1.0)
        columns += [lo.alias(lim.lolim), hi.alias(lim.hilim)]
    return frame.with_columns(columns)
