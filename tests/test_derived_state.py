"""Issue 12 §2: derived state never outlives the detections it was computed from, and results do
not depend on how rows are chunked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from factories import detections_frame
from science_fixtures import classified_copy

from xpipe.cli.main import main
from xpipe.core.config import Settings
from xpipe.models.store import VERSION_TABLES
from xpipe.predict.batch import ClassifyParams, classify
from xpipe.predict.scoring import fit_reference_stats
from xpipe.warehouse.connection import connect
from xpipe.warehouse.contracts import create_table
from xpipe.warehouse.seeds import class_names, feature_names
from xpipe.warehouse.sql_models import discover_models

SEEDS = {m.name for m in discover_models().values() if m.materialized == "seed"}
SCIENCE_TABLES = ("results.bic_scores", "results.validation_metrics", "results.stability")
_spec = importlib.util.spec_from_file_location(
    "pin_results", Path(__file__).resolve().parents[1] / "scripts" / "pin_results.py")
assert _spec is not None and _spec.loader is not None
pin_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pin_results)


def xpipe(warehouse: Path, *args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["--warehouse", str(warehouse), *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def derived_tables(path: Path) -> dict[str, int]:
    """Rows of every table of `model` and `results`."""
    with duckdb.connect(str(path), read_only=True) as con:
        names = [f"{s}.{t}" for s, t in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE schema_name IN ('model', 'results') ORDER BY ALL").fetchall()]
        return {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


@pytest.fixture
def classified(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """The science fixture's classified warehouse with appended classify-new results and
    (empty) BIC, validation and stability tables."""
    warehouse = classified_copy(tmp_path_factory, "derived")
    new = tmp_path / "new.csv"
    xpipe(warehouse, "sql", "--out", str(new), "SELECT * EXCLUDE (det_id, source_file, "
          "source_row) FROM raw.detections ORDER BY det_id LIMIT 300")
    xpipe(warehouse, "classify-new", str(new), "--append")
    with connect(Settings(warehouse=warehouse)) as con:
        for table in SCIENCE_TABLES:
            create_table(con, table)
    tables = derived_tables(warehouse)
    assert {"results.new_detection_class", "results.detection_class", "model.reference_stats",
            *SCIENCE_TABLES, *VERSION_TABLES} <= tables.keys()
    return warehouse


def _other_detections(tmp_path: Path, kind: str) -> list[str]:
    if kind == "file":
        source = tmp_path / "other.parquet"
        detections_frame(40).write_parquet(source)
        return ["--source", str(source), "--labels", "none"]
    return ["--source", "sim", "--sim-dir", str(tmp_path / "sim"), "--detections", "2000",
            "--seed", "11"]


@pytest.mark.parametrize("kind", ["file", "sim"])
def test_a_load_removes_what_was_derived_from_the_old_detections(classified: Path,
                                                                tmp_path: Path,
                                                                kind: str) -> None:
    before = derived_tables(classified)
    xpipe(classified, "warehouse", *_other_detections(tmp_path, kind))
    after = derived_tables(classified)
    kept = {t: before[t] for t in before if t in SEEDS or t in VERSION_TABLES}
    assert after == kept  # the model versions keep their rows, the seeds stay
    assert set(kept) == SEEDS | set(VERSION_TABLES)
    result = xpipe(classified, "summary", ok=False)
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "run `xpipe classify`" in result.output
    # the stored versions still classify new detections, and classify runs on the new ones
    # (the file's 40 detections are too few to cluster, which is an ordinary error)
    if kind == "sim":
        xpipe(classified, "classify", "--no-significance-cut", "--no-require-spectral-fits")
        assert "rows per stage" in xpipe(classified, "summary").output


def test_a_failed_load_removes_nothing(classified: Path, tmp_path: Path) -> None:
    before = derived_tables(classified)
    bad = tmp_path / "bad.parquet"
    frame = detections_frame(40)
    pl.concat([frame, frame.head(1)]).write_parquet(bad)  # a duplicated detection key
    result = xpipe(classified, "warehouse", "--source", str(bad), "--labels", "none", ok=False)
    assert "detection key" in result.output
    assert derived_tables(classified) == before
    assert "rows per stage" in xpipe(classified, "summary").output


def test_versions_and_seeds_are_the_only_kept_tables() -> None:
    from xpipe.warehouse.derived import is_kept

    assert all(is_kept(t, SEEDS) for t in (*VERSION_TABLES, *SEEDS))
    assert not any(is_kept(t, SEEDS) for t in ("model.reference_stats", "model.versioned",
                                                "results.versions", "results.new_source_class"))


# 2. results do not depend on the chunk size ---------------------------------------------------

def _references(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    classes = class_names()
    frame = pl.DataFrame({f: rng.normal(i, 1 + i / 7, n) * 1e3 for i, f in
                          enumerate(feature_names())})
    return frame.with_columns(
        label_class=pl.Series(rng.choice(classes[:3], n, p=[0.9, 0.07, 0.03])),
        cluster=pl.Series(rng.integers(0, 2, n), dtype=pl.Int32))


def _chunks(frame: pl.DataFrame, size: int) -> list[pl.DataFrame]:
    return [frame.slice(i, size) for i in range(0, frame.height, size)]


def test_reference_stats_are_the_same_bits_for_any_chunking() -> None:
    # groups above scoring.REFERENCE_BLOCK_ROWS (8,192) and below it
    frame = _references(25_000, seed=5)
    fits = [fit_reference_stats(_chunks(frame, size), n_clusters=2, min_references=12)
            for size in (frame.height, 1000, 333, 7)]
    for fit in fits[1:]:
        for name in ("counts_", "means_", "pinv_", "factors_"):
            np.testing.assert_array_equal(getattr(fit, name), getattr(fits[0], name), name)


def test_classify_gives_the_same_bits_for_any_chunk_size(tmp_path_factory: pytest.TempPathFactory,
                                                        tmp_path: Path) -> None:
    """The default chunk, the smallest legal one, and one that cuts the references into many
    chunks (a Settings value below the variable's minimum): every model and results table."""
    pins = []
    for size in (500_000, 1_000, 97):
        warehouse = classified_copy(tmp_path_factory, f"chunks-{size}")
        settings = Settings(warehouse=warehouse, chunk_rows=size)
        with connect(settings) as con:
            classify(con, settings, ClassifyParams())
            assert con.execute("SELECT count(*) FROM model.detection_roles "
                               "WHERE role = 'reference'").fetchone()[0] > 10 * 97
        pins.append({k: v for k, v in pin_results.table_pins(warehouse, tmp_path).items()
                     if k.startswith(("table model.", "table results."))})
    assert "table model.reference_stats" in pins[0] and "table results.detection_class" in pins[0]
    assert pins[1] == pins[0]
    assert pins[2] == pins[0]
