"""`xpipe uncertainty` benchmark: N draws of every classified detection of a classified
warehouse (default: the `make demo` catalogue, 928,280 detections, seed 42), time and peak RSS,
and draws per second against the single-pass rate of the same scoring (cluster assignment +
kernel on the stored scaled features) measured in the same run.

    python bench/uncertainty.py [WAREHOUSE] [--draws 1000]

WAREHOUSE is copied to bench/work/ first (the command writes its tables); without it, the demo
catalogue is simulated, loaded and classified there (a few minutes). The run itself is its own
`xpipe` process, so its peak RSS (wait4) is its own. A second, in-process pass over one chunk
splits the time into its steps. Results: bench/results/uncertainty.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from common import median, timed, write_result

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "uncertainty"
XPIPE = [sys.executable, "-m", "xpipe.cli"]
DEMO = {"detections": 928_280, "seed": 42}


def xpipe(warehouse: Path, *args: str) -> dict:
    """Run one xpipe command as its own process: wall seconds and peak RSS."""
    env = {**os.environ, "XPIPE_PROGRESS": "0"}
    start = time.perf_counter()
    proc = subprocess.Popen([*XPIPE, "--warehouse", str(warehouse), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"xpipe {' '.join(args)} failed:\n{output[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "output": output}


def prepared(source: Path | None) -> Path:
    """A private copy of `source`, or the demo catalogue made and classified in WORK."""
    WORK.mkdir(parents=True, exist_ok=True)
    target = WORK / "xpipe.duckdb"
    for stale in (target, target.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    if source is not None:
        shutil.copyfile(source, target)
        return target
    xpipe(target, "warehouse", "--source", "sim", "--sim-dir", str(WORK / "sim"),
          "--detections", str(DEMO["detections"]), "--seed", str(DEMO["seed"]))
    xpipe(target, "classify")
    return target


def single_pass(warehouse: Path) -> dict:
    """Rows per second of one scoring pass (clusters + kernel, as each draw is scored) over
    the classified detections' stored scaled features, and of the draws' steps on one chunk."""
    from xpipe.predict import uncertainty
    from xpipe.predict.draws import (
        DrawParams,
        DrawScaler,
        chunk_detections,
        detection_frames,
        drawn_features,
        score_draws,
        source_frame,
    )
    from xpipe.predict.scoring import feature_matrix, feature_select, score_array

    with duckdb.connect(str(warehouse), read_only=True) as con:
        model = uncertainty.stored_model(con)
        x = feature_matrix(con.sql(
            f"SELECT {feature_select('s.')} FROM model.scaled_features AS s JOIN "
            "results.detection_class AS d USING (det_id) WHERE d.pred_class IS NOT NULL").pl())
        per_chunk = chunk_detections(DrawParams(), 500_000)
        uncertainty.select_detections(con, per_chunk)
        frame, sources = next(uncertainty.chunk_frames(con, 1))
    kernel = model.kernel()
    seconds = median(timed(lambda: score_array(x, kernel=kernel, mixture=model.mixture),
                           repeats=3))
    params = DrawParams(1000, 42)
    scaler = DrawScaler(model)
    steps: dict[str, float] = {}
    try:
        start = time.perf_counter()
        raw, _ = drawn_features(frame, params)
        steps["draw features"] = time.perf_counter() - start
        n, d, f = raw.shape
        start = time.perf_counter()
        scaled = scaler.scale(raw.reshape(n * d, f))
        steps["scale (SQL model)"] = time.perf_counter() - start
        start = time.perf_counter()
        score_array(scaled, kernel=kernel, mixture=model.mixture)
        steps["clusters + kernel"] = time.perf_counter() - start
        scored = score_draws(frame, model, scaler, params)
        start = time.perf_counter()
        detection_frames(frame, scored)
        steps["detection summaries"] = time.perf_counter() - start
        start = time.perf_counter()
        source_frame(frame, sources, scored)
        steps["source votes"] = time.perf_counter() - start
    finally:
        scaler.close()
    return {"rows": len(x), "seconds": seconds, "rows_per_s": len(x) / seconds,
            "chunk_detections": frame.height, "chunk_draw_rows": frame.height * 1000,
            "chunk_step_seconds": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warehouse", nargs="?", type=Path, default=None)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args()
    warehouse = prepared(args.warehouse)
    from xpipe.warehouse.seeds import limit_columns

    any_limit = " OR ".join(f"l.{c} IS NOT NULL" for c in limit_columns())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        detections, sources, with_limits = con.execute(
            f"SELECT count(*), count(DISTINCT d.name), count(*) FILTER (WHERE {any_limit}) "
            "FROM results.detection_class AS d JOIN model.detection_limits AS l "
            "USING (det_id) WHERE d.pred_class IS NOT NULL").fetchall()[0]
    base = single_pass(warehouse)
    run = xpipe(warehouse, "uncertainty", "--draws", str(args.draws))
    draws = detections * args.draws
    with duckdb.connect(str(warehouse), read_only=True) as con:
        timings = con.execute("SELECT timings FROM meta.runs WHERE command = 'uncertainty' "
                              "ORDER BY started_at DESC LIMIT 1").fetchall()[0][0]
        stable = con.execute("SELECT avg((class_stability >= 0.9)::INT) FROM "
                             "results.source_class_stability").fetchall()[0][0]
    path = write_result("uncertainty", {
        "warehouse": str(args.warehouse or f"demo catalogue {DEMO}"),
        "draws": args.draws, "classified_detections": detections, "sources": sources,
        "detections_with_limits": with_limits,
        "seconds": run["seconds"], "peak_rss_bytes": run["peak_rss_bytes"],
        "stage_seconds": timings, "draws_per_s": draws / run["seconds"],
        "single_pass": base, "single_pass_rows_per_s": base["rows_per_s"],
        "draw_rate_vs_single_pass": draws / run["seconds"] / base["rows_per_s"],
        "share_of_sources_stable_90": stable,
    })
    print(f"{detections:,} detections × {args.draws:,} draws in {run['seconds']:.1f} s "
          f"({draws / run['seconds']:,.0f} draws/s; single pass {base['rows_per_s']:,.0f} "
          f"rows/s), peak RSS {run['peak_rss_bytes'] / 2**30:.2f} GiB; {path}")


if __name__ == "__main__":
    main()
