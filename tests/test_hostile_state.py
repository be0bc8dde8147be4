"""Hostile testing of state a command does not own: XPIPE_* variables, a mistyped --warehouse,
runs killed mid-way, and model files whose hash was recomputed after an edit."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from factories import detections_frame

from xpipe.cli.main import main
from xpipe.core.config import Settings
from xpipe.core.errors import InputError, ModelFileError
from xpipe.method.mixture import MixtureParams
from xpipe.models import file as model_file
from xpipe.warehouse.connection import connect
from xpipe.warehouse.migrations import CURRENT, LIMIT_COLUMNS_V5

OLD_MODEL = Path(__file__).parent / "data" / "model_e94f6c4.npz"


# 1. XPIPE_* variables -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("XPIPE_CHUNK_ROWS", "0"), ("XPIPE_CHUNK_ROWS", "-5"), ("XPIPE_CHUNK_ROWS", "10"),
    ("XPIPE_CHUNK_ROWS", "lots"), ("XPIPE_THREADS", "abc"), ("XPIPE_THREADS", "-1"),
    ("XPIPE_MEMORY_LIMIT", "lots"), ("XPIPE_MEMORY_LIMIT", "2000"), ("XPIPE_MEMORY_LIMIT", "0GB"),
])
def test_bad_variable_is_an_input_error_naming_it(monkeypatch: pytest.MonkeyPatch, name: str,
                                                   value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=f"{name}='{value}': expected"):
        Settings()


def test_bad_path_variables_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XPIPE_WAREHOUSE", str(tmp_path))
    with pytest.raises(InputError, match=r"XPIPE_WAREHOUSE=.*it is a directory"):
        Settings()
    monkeypatch.delenv("XPIPE_WAREHOUSE")
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("XPIPE_TEMP_DIR", str(tmp_path / "afile"))
    with pytest.raises(InputError, match=r"XPIPE_TEMP_DIR=.*a directory"):
        Settings()


def test_good_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"XPIPE_CHUNK_ROWS": "1000", "XPIPE_THREADS": "3",
                        "XPIPE_MEMORY_LIMIT": "1.5GiB"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.chunk_rows, settings.threads, settings.memory_limit) == (1000, 3, "1.5GiB")


def test_bad_variable_is_one_cli_line(tmp_path: Path) -> None:
    env = {**os.environ, "XPIPE_THREADS": "abc"}
    done = subprocess.run([sys.executable, "-m", "xpipe.cli", "--warehouse",
                           str(tmp_path / "x.duckdb"), "summary"], capture_output=True,
                          text=True, timeout=120, check=False, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == ("Error: environment variable XPIPE_THREADS='abc': expected an "
                           "integer ≥ 0 (0: every core)\n")


# 2. a mistyped --warehouse creates nothing ----------------------------------------------------

NEEDS_WAREHOUSE = [["summary"], ["classify"], ["export", "--out", "OUT"], ["sql", "SELECT 1"],
                   ["bic"], ["validate"], ["stability"], ["report", "--out", "OUT/r.html"],
                   ["explain", "X"], ["models", "list"], ["models", "show"],
                   ["models", "export", "latest", "OUT/m.npz"], ["anomalies"], ["crossmatch"],
                   ["classify-new", "DETECTIONS"]]


@pytest.mark.parametrize("args", NEEDS_WAREHOUSE, ids=lambda a: " ".join(a[:2]))
def test_mistyped_warehouse_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    detections = tmp_path / "detections.parquet"
    detections_frame(4).write_parquet(detections)
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else str(out / a[4:]) if a.startswith("OUT/") else
            str(detections) if a == "DETECTIONS" else a for a in args]
    mistyped = tmp_path / "typo" / "deeper" / "xpipe.duckdb"
    result = CliRunner().invoke(main, ["--warehouse", str(mistyped), *args])
    assert result.exit_code == 1, result.output
    assert f"no warehouse at {mistyped}" in result.output
    assert not (tmp_path / "typo").exists()


# 3. runs whose process is gone, SIGTERM -------------------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _runs(path: Path) -> dict[str, tuple[str, str | None]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {r[0]: (r[1], r[2]) for r in
                con.execute("SELECT run_id, status, error FROM meta.runs").fetchall()}


def test_run_of_a_dead_process_becomes_interrupted(loaded: Path, cli, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    runs = _runs(loaded)
    assert [status for status, _ in runs.values()] == ["ok"]
    with duckdb.connect(str(loaded)) as con:
        assert con.execute("SELECT pid, host FROM meta.runs").fetchall() == [
            (os.getpid(), socket.gethostname())]
        insert = ("INSERT INTO meta.runs (run_id, command, status, started_at, xpipe_version, "
                  "params, pid, host) VALUES (?, 'classify', 'running', now(), 'x', '{}', ?, ?)")
        con.execute(insert, ["killed", _dead_pid(), socket.gethostname()])
        con.execute(insert, ["elsewhere", _dead_pid(), "another-host.example"])
        con.execute(insert, ["alive", os.getpid(), socket.gethostname()])
    # a read-only command reports it and writes nothing
    cli("--warehouse", str(loaded), "sql", "SELECT 1")
    assert "run killed (classify)" in caplog.text and "was interrupted" in caplog.text
    assert _runs(loaded)["killed"][0] == "running"
    # the next writing command marks it
    other = tmp_path / "other.parquet"
    detections_frame(10).write_parquet(other)
    cli("--warehouse", str(loaded), "warehouse", "--source", str(other), "--labels", "none")
    after = _runs(loaded)
    assert after["killed"][0] == "interrupted" and "process" in (after["killed"][1] or "")
    assert after["elsewhere"] == ("running", None)  # another host: cannot tell, left alone
    assert after["alive"] == ("running", None)


def test_version_2_warehouse_migrates_and_keeps_its_runs(loaded: Path) -> None:
    with duckdb.connect(str(loaded)) as con:  # make it what the previous xpipe wrote
        con.execute("ALTER TABLE meta.runs DROP COLUMN host")
        con.execute("ALTER TABLE meta.runs DROP COLUMN pid")
        for column in ("match_type", *LIMIT_COLUMNS_V5):
            con.execute(f"ALTER TABLE raw.detections DROP COLUMN {column}")
        con.execute("DELETE FROM meta.schema_version")
        con.execute("INSERT INTO meta.schema_version VALUES (2, now(), 'old', 'new warehouse')")
        before = con.execute("SELECT * FROM meta.runs").fetchall()
    assert CURRENT == 5
    with connect(Settings(warehouse=loaded), read_only=True) as con:  # read-only: untouched
        assert con.execute("SELECT max(version) FROM meta.schema_version").fetchall() == [(2,)]
    connect(Settings(warehouse=loaded)).close()
    with duckdb.connect(str(loaded), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM meta.schema_version").fetchall() == [(5,)]
        assert con.execute("SELECT * EXCLUDE (pid, host) FROM meta.runs").fetchall() == before
        assert con.execute("SELECT pid, host FROM meta.runs").fetchall() == [(None, None)]


SLOW_LOAD = textwrap.dedent("""
    import sys, time
    import xpipe.ingest.load as load
    def slow(*args, **kwargs):
        print("ready", flush=True)
        time.sleep(120)
    load.stage_crossmatch = slow
    from xpipe.cli.main import main
    main(sys.argv[1:])
""")


def test_sigterm_rolls_back_and_records_failed(loaded: Path, tmp_path: Path) -> None:
    with duckdb.connect(str(loaded), read_only=True) as con:
        before = con.execute("SELECT * FROM raw.detections ORDER BY det_id").fetchall()
    other = tmp_path / "other.parquet"
    detections_frame(10, seed=3).write_parquet(other)
    child = subprocess.Popen([sys.executable, "-c", SLOW_LOAD, "--warehouse", str(loaded),
                              "warehouse", "--source", str(other), "--labels", "none"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    with duckdb.connect(str(loaded), read_only=True) as con:
        assert con.execute("SELECT * FROM raw.detections ORDER BY det_id").fetchall() == before
        runs = con.execute("SELECT status, error FROM meta.runs ORDER BY started_at").fetchall()
    assert runs[0][0] == "ok"
    assert runs[1] == ("failed", "Terminated: stopped by SIGTERM")


# 4. model files that are intact but make no sense ---------------------------------------------

def _tampered(tmp_path: Path, **changes: object) -> Path:
    """The old model file with `changes`, written with a recomputed (matching) hash."""
    model = replace(model_file.read_file(OLD_MODEL), **changes)  # type: ignore[arg-type]
    return model_file.write_file(model, tmp_path / "tampered.npz")


def _scaling(model, feature: str | None = None, transform: str | None = None):
    first = model.scaling[0]
    return (replace(first, feature=feature or first.feature,
                    transform=transform or first.transform), *model.scaling[1:])


def test_model_files_that_make_no_sense_are_refused(tmp_path: Path, cli) -> None:
    model = model_file.read_file(OLD_MODEL)
    mixture = model.mixture
    pinv = model.reference_pinv.copy()
    usable = np.argwhere(np.abs(pinv).max(axis=(2, 3)) > 0)[0]
    pinv[usable[0], usable[1]] = -np.eye(pinv.shape[-1])
    asym = model.reference_pinv.copy()
    asym[usable[0], usable[1], 0, 1] += 1e-3 * np.abs(asym[usable[0], usable[1]]).max()
    counts = model.reference_counts.copy()
    counts[0, 0] = -3
    cases = {
        "unknown feature name": dict(features=("nope", *model.features[1:]),
                                     scaling=_scaling(model, feature="nope")),
        "unknown class name": dict(classes=("Martian", *model.classes[1:])),
        "has transform 'log'": dict(scaling=_scaling(model, transform="log")),
        "has transform 'log_minmax'": dict(scaling=_scaling(model, transform="log_minmax")),
        "component 0 is not positive definite": dict(mixture=MixtureParams(
            mixture.weights, mixture.means, np.zeros_like(mixture.covariances))),
        "not positive semi-definite": dict(reference_pinv=pinv),
        "is not symmetric": dict(reference_pinv=asym),
        "reference_counts of cluster 0": dict(reference_counts=counts),
        "min_references is 'abc'": dict(params={**model.params, "min_references": "abc"}),
        "min_references is 1;": dict(params={**model.params, "min_references": 1}),
        "provenance count 'cleaned'": dict(provenance={**model.provenance,
                                                       "counts": {"cleaned": -1}}),
    }
    for message, change in cases.items():
        bad = _tampered(tmp_path, **change)
        with pytest.raises(ModelFileError, match=rf"^{re.escape(str(bad))}: .*"
                                                 rf"{re.escape(message)}"):
            model_file.read_file(bad)
    # both entry points read the file through the check: models import and classify-new
    bad = _tampered(tmp_path, params={**model.params, "min_references": "abc"})
    wh = tmp_path / "wh" / "xpipe.duckdb"
    result = cli("--warehouse", str(wh), "models", "import", str(bad), expect_ok=False)
    assert result.exit_code == 1 and f"{bad}: params.min_references" in result.output
    assert not wh.exists()
    detections = tmp_path / "d.parquet"
    detections_frame(4).write_parquet(detections)
    result = cli("classify-new", str(detections), "--model", str(bad), expect_ok=False)
    assert result.exit_code == 1 and f"{bad}: params.min_references" in result.output
