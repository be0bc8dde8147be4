"""The three published tables of a simulated catalogue, pinned.

`tests/data/expected_export/` holds what xpipe at commit e94f6c4 (before the redesign) exported
for the science fixture's catalogue (150,000 simulated detections, seed 7). Any change to a
class, a vote, a count or a row fails here. Probabilities are compared to 1e-9, since BLAS
takes other paths on other CPUs; on one machine `scripts/pin_results.py --compare` shows every
table identical bit for bit.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from science_fixtures import classified_copy

EXPECTED = Path(__file__).parent / "data" / "expected_export"
TABLES = ("detection_level_classification", "uniquely_classified", "ambiguous_classification")
MEAN_STD = re.compile(r"^(-?[\d.]+)±([\d.]+)$")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from xpipe.cli.main import main

    warehouse = classified_copy(tmp_path_factory, "pinned")
    out = warehouse.parent / "export"
    result = CliRunner().invoke(main, ["--warehouse", str(warehouse), "export", "--out",
                                       str(out), "--format", "parquet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _last_digit(text: str) -> float:
    """One unit in the last printed decimal of a number written as text."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 10.0 ** -decimals


def assert_mean_std_close(got: pl.Series, want: pl.Series) -> None:
    """'mean±std' strings: equal, or differing by one unit in the last printed digit (a value
    that moved by 1e-9 across a rounding boundary)."""
    for a, b in zip(got.to_list(), want.to_list(), strict=True):
        if a == b:
            continue
        ma, mb = MEAN_STD.match(a or ""), MEAN_STD.match(b or "")
        assert ma and mb, (a, b)
        for x, y in zip(ma.groups(), mb.groups(), strict=True):
            assert abs(float(x) - float(y)) <= _last_digit(y) * 1.0001, (a, b)


@pytest.mark.parametrize("table", TABLES)
def test_export_matches_the_pinned_one(exported: Path, table: str) -> None:
    got = pl.read_parquet(exported / f"{table}.parquet")
    want = pl.read_parquet(EXPECTED / f"{table}.parquet")
    assert got.schema == want.schema
    assert got.height == want.height
    for name, dtype in want.schema.items():
        if dtype == pl.Float64:
            diff = (got[name] - want[name]).abs()
            assert got[name].is_null().equals(want[name].is_null()), name
            assert diff.max() is None or diff.max() <= 1e-9, (name, diff.max())
        elif dtype == pl.Utf8 and want[name].str.contains("±").any():
            assert_mean_std_close(got[name], want[name])
        else:
            assert got[name].equals(want[name]), name
