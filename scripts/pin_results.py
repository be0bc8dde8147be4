"""Pin every result of a simulated catalogue, to compare two versions of xpipe bit for bit.

    python scripts/pin_results.py OUT_DIR [--detections N] [--seed S]
    python scripts/pin_results.py --compare OLD_DIR NEW_DIR

Builds a warehouse in OUT_DIR with the `xpipe` on PATH (the version under test), classifies it,
runs the science commands, exports the three published tables, a frozen model file and a
`classify-new` result, then writes OUT_DIR/pins.json: the SHA-256 of every exported file (a
Parquet file's rows: its provenance metadata names the classify run) and of every warehouse
table's full content (rows sorted, doubles written shortest-round-trip, so equal
hashes mean equal bits). Columns that record when or by which process something ran are left
out. `--compare` lists every pin that differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

# Columns that say when, how long, or on which machine something ran, not what it computed.
VOLATILE = ("created_at", "started_at", "finished_at", "seconds", "elapsed", "host", "pid",
            "xpipe_version", "run_id", "runtime", "imported_at", "stored_at", "provenance",
            "source_file", "version", "appended_by")
SKIP_SCHEMAS = ("meta",)


def xpipe(warehouse: Path, *args: str) -> None:
    env = {**os.environ, "XPIPE_PROGRESS": "0"}
    command = [str(Path(sys.executable).parent / "xpipe"), "--warehouse", str(warehouse), *args]
    subprocess.run(command, check=True, env=env)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_volatile(column: str) -> bool:
    return any(column == v or column.endswith("_" + v) for v in VOLATILE)


def content_pin(con: duckdb.DuckDBPyConnection, relation: str, scratch: Path) -> str | None:
    """SHA-256 of a relation's rows (sorted, volatile columns left out), or None if none left."""
    columns = [c for c in (d[0] for d in con.sql(f"SELECT * FROM {relation} LIMIT 0").description)
               if not is_volatile(c)]
    if not columns:
        return None
    select = ", ".join(f'"{c}"' for c in columns)
    target = scratch / "pin.csv"
    con.execute(f"COPY (SELECT {select} FROM {relation} ORDER BY ALL) TO '{target}' "
                "(FORMAT csv)")
    digest = sha256_file(target)
    target.unlink()
    return digest


def table_pins(warehouse: Path, scratch: Path) -> dict[str, str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    pins = {}
    tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables() "
                         "ORDER BY ALL").fetchall()
    for schema, table in tables:
        if schema not in SKIP_SCHEMAS:
            pin = content_pin(con, f'"{schema}"."{table}"', scratch)
            if pin is not None:
                pins[f"table {schema}.{table}"] = pin
    con.close()
    return pins


def file_pins(export: Path, scratch: Path) -> dict[str, str]:
    """Exported files byte for byte, or by content where they carry a volatile column or
    volatile metadata (a Parquet file's provenance names its classify run, a random id)."""
    con = duckdb.connect()
    pins = {}
    for path in sorted(export.iterdir()):
        parquet = path.suffix == ".parquet"
        relation = f"{'read_parquet' if parquet else 'read_csv'}('{path}')"
        names = [d[0] for d in con.sql(f"SELECT * FROM {relation} LIMIT 0").description]
        if parquet or any(is_volatile(c) for c in names):
            pins[f"content {path.name}"] = content_pin(con, relation, scratch) or ""
        else:
            pins[f"file {path.name}"] = sha256_file(path)
    con.close()
    return pins


def write_pins(out: Path) -> None:
    scratch = out / "scratch"
    scratch.mkdir(exist_ok=True)
    pins = file_pins(out / "export", scratch)
    pins.update(table_pins(out / "xpipe.duckdb", scratch))
    (out / "pins.json").write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    print(f"{len(pins)} pins in {out / 'pins.json'}")


def build(out: Path, detections: int, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    warehouse = out / "xpipe.duckdb"
    xpipe(warehouse, "warehouse", "--source", "sim", "--sim-dir", str(out / "sim"),
          "--detections", str(detections), "--seed", str(seed))
    xpipe(warehouse, "classify")
    xpipe(warehouse, "validate")
    xpipe(warehouse, "stability", "--seeds", "43", "--k", "5")
    xpipe(warehouse, "bic", "--kmin", "4", "--kmax", "7", "--seeds", "2", "--jobs", "1")
    xpipe(warehouse, "export", "--out", str(out / "export"))
    xpipe(warehouse, "export", "--out", str(out / "export"), "--format", "parquet")
    xpipe(warehouse, "sql", "--out", str(out / "new_detections.csv"),
          "SELECT * EXCLUDE (det_id, source_file, source_row) FROM raw.detections "
          "USING SAMPLE 3000 ROWS (reservoir, 5)")
    xpipe(warehouse, "classify-new", str(out / "new_detections.csv"),
          "--out", str(out / "export" / "classify_new.csv"))
    write_pins(out)


def compare(old: Path, new: Path) -> int:
    before = json.loads((old / "pins.json").read_text())
    after = json.loads((new / "pins.json").read_text())
    differ = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    for key in differ:
        print(f"DIFFERS {key}")
    for key in sorted(before.keys() - after.keys()):
        print(f"ONLY BEFORE {key}")
    for key in sorted(after.keys() - before.keys()):
        print(f"ONLY AFTER {key}")
    same = len(before.keys() & after.keys()) - len(differ)
    print(f"{same} identical, {len(differ)} differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--detections", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    parser.add_argument("--repin", action="store_true",
                        help="recompute OUT_DIR/pins.json from an existing build")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.repin:
        write_pins(args.out)
        return 0
    if args.out is None:
        parser.error("OUT_DIR is required unless --compare is given")
    build(args.out, args.detections, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
