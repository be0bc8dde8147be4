"""Writing files: seconds, rows/s, peak RSS and size per format, on a table shaped like the
published per-detection table (a 21-character name, two integers, twelve doubles, a class name;
one detection in ten without a cluster or class).

Each format is written by its own process (`write_result`, the writer of `xpipe export` and
`xpipe sql --out`, chunked by XPIPE_CHUNK_ROWS), so its peak RSS (from wait4) is its own; memory
must not grow with the row count. Usage:
    python bench/file_formats.py [N ...]      # default: 1000000 10000000
Results: bench/results/file_formats_<N>.json. Work files live in bench/work/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from common import write_result

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "file_formats"
DEFAULT_SIZES = [1_000_000, 10_000_000]
FORMATS = ("csv", "parquet", "votable", "fits")
QUERY = "SELECT * FROM detections ORDER BY i"


def build(path: Path, n: int) -> None:
    probs = ", ".join(f"random() AS p{k}" for k in range(10))
    with duckdb.connect(str(path)) as con:
        con.execute(f"""
            CREATE TABLE detections AS
            SELECT i, printf('2CXO J%06d.%d+%06d', i % 999983, i % 10, i % 700001) AS name,
                   (i % 30000)::INTEGER AS obsid,
                   CASE WHEN i % 10 = 0 THEN NULL ELSE (i % 6)::INTEGER END AS cluster,
                   random() * 360 AS ra, random() * 180 - 90 AS dec, {probs},
                   CASE WHEN i % 10 = 0 THEN NULL ELSE ['QSO', 'AGN', 'Seyfert_1', 'HMXB',
                       'YSO'][1 + i % 5] END AS main_type
            FROM range(?) t(i)""", [n])


def write_one(database: str, out: str, fmt: str) -> None:
    """The measured process: open the table read-only and write it."""
    from xpipe.core.config import Settings
    from xpipe.warehouse.file_formats import write_result as write_file
    from xpipe.warehouse.provenance import file_provenance

    settings = Settings()
    with duckdb.connect(database, read_only=True,
                        config={"memory_limit": settings.memory_limit,
                                "preserve_insertion_order": False}) as con:
        write_file(con, con.sql(QUERY), Path(out), fmt, file_provenance(con),
                   chunk_rows=settings.chunk_rows)


def measure(database: Path, fmt: str) -> dict:
    out = WORK / f"out.{fmt}"
    env = {**os.environ, "XPIPE_PROGRESS": "0"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--one", str(database), str(out), fmt],
                            env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"writing {fmt} failed")
    size = out.stat().st_size
    out.unlink()
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024, "bytes": size}


def run(n: int) -> Path:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    database = WORK / "table.duckdb"
    build(database, n)
    formats = {}
    for fmt in FORMATS:
        result = measure(database, fmt)
        result["rows_per_s"] = n / result["seconds"]
        formats[fmt] = result
        print(f"n={n:,} {fmt}: {result['seconds']:.1f} s, {result['rows_per_s']:,.0f} rows/s, "
              f"peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB, "
              f"{result['bytes'] / 1e6:,.0f} MB", flush=True)
    shutil.rmtree(WORK, ignore_errors=True)
    return write_result(f"file_formats_{n}", {
        "n": n, "query": QUERY, "chunk_rows": int(os.environ.get("XPIPE_CHUNK_ROWS", 500_000)),
        "formats": formats})


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        write_one(*sys.argv[2:5])
        return
    for n in [int(a) for a in sys.argv[1:]] or DEFAULT_SIZES:
        print(f"wrote {run(n)}")


if __name__ == "__main__":
    main()
