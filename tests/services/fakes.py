"""Fake CSC and SIMBAD services: the pull's and the cross-match's paging, splitting and
resumption are tested everywhere without a server (tests/services/test_dachs.py repeats the
important cases against a real one)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from factories import detections_frame

from xpipe.services.csc import Box
from xpipe.services.simbad import EDGE_MARGIN
from xpipe.services.tap import Overflow, QueryRefusedError, TapResult


def fake_catalogue(n: int = 600, seed: int = 3) -> pl.DataFrame:
    """Detections spread over the sky, a few sources with many detections, one at a pole."""
    rng = np.random.default_rng(seed)
    n_sources = n // 3
    ra = rng.uniform(0, 360, n_sources)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n_sources)))
    dec[0], dec[1] = 90.0, -90.0
    source = np.concatenate([np.zeros(60, dtype=int), rng.integers(0, n_sources, n - 60)])
    frame = detections_frame(n, seed).with_columns(
        name=pl.Series([f"SRC {i:05d}" for i in source]),
        ra=pl.Series(ra[source]), dec=pl.Series(dec[source]),
        obsid=pl.Series(rng.integers(1, 30000, n), dtype=pl.Int32),
        detect_stack_id=pl.Series([f"stack{i}" for i in range(n)]))
    return frame


def in_box(frame: pl.DataFrame, box: Box | None) -> pl.DataFrame:
    if box is None:
        return frame
    dec_hi = pl.col("dec") <= box.dec_hi if box.dec_hi >= 90 else pl.col("dec") < box.dec_hi
    ra_hi = pl.col("ra") <= box.ra_hi if box.ra_hi >= 360 else pl.col("ra") < box.ra_hi
    return frame.filter((pl.col("dec") >= box.dec_lo) & dec_hi & (pl.col("ra") >= box.ra_lo)
                        & ra_hi & (pl.col("obsid") >= box.obsid_lo)
                        & (pl.col("obsid") < box.obsid_hi))


class FakeService:
    """Answers like a CSC service over `frame`, with faults on given fetch numbers; with
    `refuse_count` it refuses every COUNT(*) as a service whose ADQL parser has none."""

    def __init__(self, frame: pl.DataFrame, row_limit: int, overflow_on: set[int] = frozenset(),
                 short_on: set[int] = frozenset(), retype_on: set[int] = frozenset(),
                 interrupt_on: int | None = None, refuse_count: bool = False) -> None:
        self.frame, self.row_limit = frame, row_limit
        self.refuse_count = refuse_count
        self.overflow_on, self.short_on, self.retype_on = overflow_on, short_on, retype_on
        self.interrupt_on = interrupt_on
        self.fetches = 0
        self.counts = 0

    def count(self, box: Box | None) -> int:
        if self.refuse_count:
            raise QueryRefusedError("fake service: COUNT is not supported")
        self.counts += 1
        return in_box(self.frame, box).height

    def fetch(self, box: Box, mode: str) -> TapResult:
        self.fetches += 1
        if self.fetches == self.interrupt_on:
            raise KeyboardInterrupt
        page = in_box(self.frame, box)
        if page.height > self.row_limit or self.fetches in self.overflow_on:
            raise Overflow("fake overflow")
        if self.fetches in self.short_on:
            page = page.head(page.height - 1)
        if self.fetches in self.retype_on:
            page = page.with_columns(pl.col("hard_hm").cast(pl.Utf8))
        return TapResult(page.sample(fraction=1.0, shuffle=True, seed=self.fetches).to_arrow(),
                         mode, 1, 0.01)


def fake_simbad(catalogue: pl.DataFrame, seed: int = 5) -> pl.DataFrame:
    """SIMBAD-like objects: 0-3 within 2″ of most master positions (ties and misses
    included), and some far from any."""
    rng = np.random.default_rng(seed)
    sources = catalogue.group_by("name").agg(pl.col("ra").first(), pl.col("dec").first()
                                             ).sort("name")
    rows = []
    for name, ra, dec in sources.iter_rows():
        for j in range(int(rng.integers(0, 4))):
            r = rng.uniform(0, 2.0) / 3600
            theta = rng.uniform(0, 2 * np.pi)
            d = float(np.clip(dec + r * np.sin(theta), -90, 90))
            a = float((ra + r * np.cos(theta) / max(np.cos(np.radians(dec)), 1e-6)) % 360)
            rows.append((f"OBJ {name}-{j}", rng.choice(["QSO", "Star", "Seyfert_1"]), a, d))
    rows += [(f"FAR {k}", "Star", float(rng.uniform(0, 360)), float(rng.uniform(-80, 80)))
             for k in range(50)]
    return pl.DataFrame(rows, schema=["main_id", "otype", "ra", "dec"], orient="row")


def separations_arcsec(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray
                       ) -> np.ndarray:
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600


class FakeSimbad:
    """Answers the cross-match's upload query over `objects`, with faults on given calls."""

    def __init__(self, objects: pl.DataFrame, radius_arcsec: float = 1.0,
                 overflow_on: set[int] = frozenset(), interrupt_on: int | None = None) -> None:
        self.objects, self.radius_arcsec = objects, radius_arcsec
        self.overflow_on, self.interrupt_on = overflow_on, interrupt_on
        self.calls = 0
        self.uploaded: list[int] = []

    def candidates(self, upload: pa.Table, mode: str) -> TapResult:
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        if self.calls in self.overflow_on:
            raise Overflow("fake overflow")
        self.uploaded.append(upload.num_rows)
        ra, dec = upload.column("ra").to_numpy(), upload.column("dec").to_numpy()
        sep = separations_arcsec(ra[:, None], dec[:, None],
                                 self.objects["ra"].to_numpy()[None, :],
                                 self.objects["dec"].to_numpy()[None, :])
        i, j = np.nonzero(sep <= self.radius_arcsec * EDGE_MARGIN)
        names = upload.column("name").to_pylist()
        table = pa.table({"name": [names[k] for k in i],
                          "main_id": self.objects["main_id"].gather(j).to_list(),
                          "otype": self.objects["otype"].gather(j).to_list(),
                          "ra": self.objects["ra"].to_numpy()[j],
                          "dec": self.objects["dec"].to_numpy()[j]})
        return TapResult(table, mode, 1, 0.01)
