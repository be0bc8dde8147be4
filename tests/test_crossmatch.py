"""The cell-join best match equals a brute-force best match, at the RA wrap and the poles too."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from factories import detections_frame

from xpipe.ingest import load


def angular_sep_arcsec(ra1, dec1, ra2, dec2):
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600


# One partition, and ~11 partitions of cells, each matched by its own query.
@pytest.mark.parametrize("partition_sources", [load.MATCH_PARTITION_SOURCES, 37])
def test_best_match_equals_brute_force(tmp_path: Path, cli, warehouse_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       partition_sources: int) -> None:
    monkeypatch.setattr(load, "MATCH_PARTITION_SOURCES", partition_sources)
    rng = np.random.default_rng(11)
    n = 400
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    # hard places: both sides of RA = 0, within arcseconds of both poles
    ra[:40] = rng.choice([0.00001, 359.99999], 40)
    dec[40:60] = rng.choice([89.99990, -89.99995], 20)
    frame = detections_frame(n).with_columns(
        name=pl.Series([f"SRC {i:04d}" for i in range(n)]),
        ra=pl.Series(ra), dec=pl.Series(dec))
    frame.write_parquet(tmp_path / "det.parquet")
    # 1-3 candidates per source scattered to 2 arcsec, plus objects far away
    rows = []
    for i in range(n):
        for j in range(rng.integers(1, 4)):
            r = rng.uniform(0, 2.0) / 3600
            theta = rng.uniform(0, 2 * np.pi)
            d = np.clip(dec[i] + r * np.sin(theta), -90, 90)
            a = (ra[i] + r * np.cos(theta) / max(np.cos(np.radians(dec[i])), 1e-6)) % 360
            rows.append((f"OBJ {i}-{j}", "QSO", a, d))
    simbad = pl.DataFrame(rows, schema=["main_id", "otype", "ra", "dec"], orient="row")
    simbad.write_parquet(tmp_path / "simbad.parquet")
    cli("warehouse", "--source", str(tmp_path / "det.parquet"), "--labels",
        str(tmp_path / "simbad.parquet"), "--radius", "1.0")

    sep = angular_sep_arcsec(ra[:, None], dec[:, None], simbad["ra"].to_numpy()[None, :],
                             simbad["dec"].to_numpy()[None, :])
    best = sep.argmin(axis=1)
    expected = {f"SRC {i:04d}": (simbad["main_id"][int(best[i])], sep[i, best[i]])
                for i in range(n) if sep[i, best[i]] <= 1.0}
    con = duckdb.connect(str(warehouse_path), read_only=True)
    got = {name: (main_id, s) for name, main_id, s in con.execute(
        "SELECT name, main_id, separation_arcsec FROM raw.simbad_match").fetchall()}
    con.close()
    assert 100 < len(expected) < n  # both matched and unmatched sources are exercised
    assert set(got) == set(expected)
    for name, (main_id, s) in expected.items():
        assert got[name][0] == main_id
        assert abs(got[name][1] - s) < 1e-6
    wrap = {f"SRC {i:04d}" for i in range(60)} & set(expected)
    assert len(wrap) > 20  # the RA wrap and the poles produced matches


def test_offline_match_file_keeps_closest(tmp_path: Path, cli, warehouse_path: Path) -> None:
    frame = detections_frame(6)
    frame.write_parquet(tmp_path / "det.parquet")
    names = frame["name"].unique(maintain_order=True).to_list()
    matches = pl.DataFrame({
        "name_1": [names[0], names[0], names[1], names[2]],
        "main_id": ["A", "B", None, "C"],
        "main_type": ["QSO", "Seyfert_1", None, "Star"],
        "angDist": [0.8, 0.3, None, 0.5],
    })
    matches.write_csv(tmp_path / "matches.csv")
    cli("warehouse", "--source", str(tmp_path / "det.parquet"), "--labels",
        str(tmp_path / "matches.csv"))
    con = duckdb.connect(str(warehouse_path), read_only=True)
    got = con.execute("SELECT name, main_id, otype, separation_arcsec FROM raw.simbad_match "
                      "ORDER BY name").fetchall()
    con.close()
    assert got == [(names[0], "B", "Seyfert_1", 0.3), (names[2], "C", "Star", 0.5)]
