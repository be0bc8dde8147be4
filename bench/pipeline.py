"""End-to-end scaling: simulate → warehouse → classify (incl. votes) → export, per size.

Each stage runs as its own `xpipe` process, so its peak RSS (from wait4) is the stage's own;
a thread samples the DuckDB spill directory for the largest spill. Usage:
    python bench/pipeline.py [N ...]      # default: 100000 928280 1304376 10000000 100000000
Results: bench/results/pipeline_<N>.json. Work files live in bench/work/ (git-ignored) and are
deleted after each size. With BENCH_SIM_CACHE=<dir> the simulated catalogue of each size is kept
in <dir>/n<N> with its measured simulate stage (simulate.json) and reused by later runs: the 10^8
catalogue takes about 18 minutes and 19 GB to make.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
XPIPE = [sys.executable, "-m", "xpipe.cli"]
DEFAULT_SIZES = [100_000, 928_280, 1_304_376, 10_000_000, 100_000_000]
# Disk one detection needs while its size runs, measured at 10^8: 190 B of simulated Parquet,
# 230 B of warehouse, up to 20 B of DuckDB spill, 10 B of export; rounded up.
DISK_BYTES_PER_DETECTION = 500


class NotEnoughDiskError(RuntimeError):
    pass


def check_disk(n: int, sim: Path) -> None:
    """Refuse a size the disk cannot hold before spending an hour on it, saying why."""
    needed = n * DISK_BYTES_PER_DETECTION - folder_bytes(sim)
    WORK.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(WORK).free
    if needed > free:
        raise NotEnoughDiskError(f"n={n:,} needs about {needed / 1e9:.0f} GB of disk under {WORK} "
                            f"(and the simulation cache), {free / 1e9:.0f} GB are free")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_stage(args: list[str], env: dict, spill_dir: Path) -> dict:
    """Run one xpipe command; wall seconds, peak RSS and the largest spill seen while it ran."""
    peak_spill = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_spill
        while not done.is_set():
            peak_spill = max(peak_spill, folder_bytes(spill_dir))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.Popen([*XPIPE, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"xpipe {' '.join(args)} failed:\n{output[-3000:]}")
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "spill_bytes": peak_spill}


def simulate_stage(n: int, sim: Path, env: dict, spill: Path) -> dict:
    """Simulate the catalogue into `sim`, or reuse a cached one with the timing measured then."""
    record = sim / "simulate.json"
    if record.exists():
        return json.loads(record.read_text())
    shutil.rmtree(sim, ignore_errors=True)
    result = run_stage(["simulate", "--detections", str(n), "--seed", "1", "--out", str(sim)],
                       env, spill)
    record.write_text(json.dumps(result))
    return result


def bench_size(n: int) -> dict:
    work = WORK / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    cache = os.environ.get("BENCH_SIM_CACHE")
    sim = Path(cache) / f"n{n}" if cache else work / "sim"
    check_disk(n, sim)
    work.mkdir(parents=True)
    warehouse = work / "xpipe.duckdb"
    spill = work / "tmp"
    env = {**os.environ, "XPIPE_WAREHOUSE": str(warehouse), "XPIPE_TEMP_DIR": str(spill),
           "XPIPE_PROGRESS": "0"}
    stages = {
        "warehouse": ["warehouse", "--source", str(sim / "detections"), "--labels",
                      str(sim / "simbad")],
        "classify": ["classify"],
        "export": ["export", "--out", str(work / "export"), "--format", "parquet"],
    }
    results = {"simulate": simulate_stage(n, sim, env, spill)}
    results["simulate"]["rows_per_s"] = n / results["simulate"]["seconds"]
    for name, args in stages.items():
        results[name] = run_stage(args, env, spill)
        results[name]["rows_per_s"] = n / results[name]["seconds"]
        print(f"  n={n:,} {name}: {results[name]['seconds']:.1f} s, "
              f"{results[name]['peak_rss_bytes'] / 2**20:,.0f} MiB peak RSS", flush=True)
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    runs = {command: con.execute(
        "SELECT row_counts, timings FROM meta.runs WHERE command = ? AND status = 'ok' "
        "ORDER BY started_at DESC LIMIT 1", [command]).fetchall()[0]
        for command in ("warehouse", "classify")}
    con.close()
    sizes = {"simulated_bytes": folder_bytes(sim / "detections") + folder_bytes(sim / "simbad"),
             "warehouse_bytes": warehouse.stat().st_size}
    shutil.rmtree(work, ignore_errors=True)
    return {"stages": results,
            "warehouse_substages_seconds": json.loads(runs["warehouse"][1]),
            "classify_substages_seconds": json.loads(runs["classify"][1]),
            "warehouse_row_counts": json.loads(runs["warehouse"][0]),
            "row_counts": json.loads(runs["classify"][0]),
            **sizes}


def main(sizes: list[int]) -> None:
    for n in sizes:
        try:
            result = bench_size(n)
        except NotEnoughDiskError as exc:
            sys.exit(f"stopped before n={n:,}, the largest sizes done are the ones above: {exc}")
        stages = result["stages"]
        total = sum(s["seconds"] for name, s in stages.items() if name != "simulate")
        payload = {
            "n": n,
            "parameters": {"memory_limit": os.environ.get("XPIPE_MEMORY_LIMIT", "2GB"),
                           "chunk_rows": int(os.environ.get("XPIPE_CHUNK_ROWS", "500000"))},
            "seconds": {k: v["seconds"] for k, v in stages.items()},
            "seconds_pipeline_total": total,
            "rows_per_s": n / total,
            "peak_rss_bytes": max(s["peak_rss_bytes"] for s in stages.values()),
            "spill_bytes": max(s["spill_bytes"] for s in stages.values()),
            **result,
        }
        path = write_result(f"pipeline_{n}", payload)
        print(f"{path}: {total:.1f} s without simulation, {n / total:,.0f} rows/s, "
              f"peak RSS {payload['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or DEFAULT_SIZES)
