"""Turn a simulated catalogue into CSC-shaped and SIMBAD-shaped CSV tables for DaCHS.

Why: the service tests need a real TAP server holding the five tables of the CSC stack-table
join (METHOD §1) and a SIMBAD `basic` table, filled with rows whose right answer is known (the
simulator's detection files). A few rows the join must *not* return are added: detections no
stack links to, stack detections no master source claims, and master sources without any
detection. Every tenth master-stack association is ambiguous (match_type 'a'). Every
per-detection column of the simulator goes to observation_source, the confidence limits
(hard_hm_lolim, ..., bb_kt_hilim) included, as in the CSC's per-observation table. Output is
deterministic for a given input.

Usage: python make_tables.py SIM_DIR OUT_DIR SCHEMA [SCHEMA ...]
writes OUT_DIR/data/*.csv, OUT_DIR/<schema>/q.rd for each CSC schema and OUT_DIR/simbad/q.rd.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

OFFSET_DEG = 1e-4
OBS_EXCLUDED = {"name", "ra", "dec"}


def stack_id(obsid: pl.Expr, obi: pl.Expr) -> pl.Expr:
    """One detect stack per observation interval, named like CSC's stacks."""
    return pl.format("acisf{}_{}N001", obsid.cast(pl.Utf8).str.zfill(5),
                     obi.cast(pl.Utf8).str.zfill(3))


def csc_tables(det: pl.DataFrame, seed: int = 7) -> dict[str, pl.DataFrame]:
    """The five CSC tables, with the decoys described in the module docstring."""
    rng = np.random.default_rng(seed)
    det = det.with_columns(detect_stack_id=stack_id(pl.col("obsid"), pl.col("obi")))
    n_decoy = max(3, det.height // 200)
    obs_cols = [c for c in det.columns if c not in OBS_EXCLUDED | {"detect_stack_id"}]
    # per-observation positions differ from the master position, which the pull must return
    observation = det.select(
        *obs_cols, (pl.col("ra") + OFFSET_DEG) % 360,
        (pl.col("dec") - OFFSET_DEG).clip(-90, 90))
    # decoy detections: copies of real ones in an observation no stack contains
    decoys = observation.sample(n_decoy, seed=seed).with_columns(
        obsid=pl.col("obsid") + 900_000)
    observation = pl.concat([observation, decoys])
    stack_obs = det.select("detect_stack_id", "region_id", "obsid", "obi")
    stack_source = det.select("detect_stack_id", "region_id", "ra", "dec").unique(
        ["detect_stack_id", "region_id"], keep="first", maintain_order=True)
    orphan_stacks = stack_source.sample(n_decoy, seed=seed + 1).with_columns(
        region_id=pl.col("region_id") + 100_000)
    stack_source = pl.concat([stack_source, orphan_stacks])
    stack_obs = pl.concat([stack_obs, orphan_stacks.select(
        "detect_stack_id", "region_id",
        pl.lit(999_999, pl.Int32).alias("obsid"), pl.lit(0, pl.Int16).alias("obi"))])
    assoc = det.select("name", "detect_stack_id", "region_id").with_columns(
        match_type=pl.when(pl.int_range(pl.len()) % 10 == 3).then(pl.lit("a"))
        .otherwise(pl.lit("u")))
    master = det.group_by("name", maintain_order=True).agg(
        pl.col("ra").first(), pl.col("dec").first())
    lonely = pl.DataFrame({
        "name": [f"2CXO J{i:06d}.0+000000Z" for i in range(n_decoy)],
        "ra": rng.uniform(0, 360, n_decoy),
        "dec": rng.uniform(-89, 89, n_decoy),
    })
    master = pl.concat([master, lonely])
    return {
        "master_source": master,
        "master_stack_assoc": assoc,
        "stack_source": stack_source,
        "stack_observation_assoc": stack_obs,
        "observation_source": observation,
    }


PG_TYPES = {pl.Utf8: "text", pl.Float64: "double precision", pl.Int64: "bigint",
            pl.Int32: "integer", pl.Int16: "smallint", pl.UInt32: "bigint"}
INDEXES = {
    "master_source": ["dec", "name"],
    "master_stack_assoc": ["name", "detect_stack_id,region_id"],
    "stack_source": ["detect_stack_id,region_id"],
    "stack_observation_assoc": ["detect_stack_id,region_id", "obsid,obi,region_id"],
    "observation_source": ["obsid,obi,region_id"],
}
META = """  <meta name="title">{title}</meta>
  <meta name="description">{title}, made by xpipe's service tests.</meta>
  <meta name="creationDate">2024-01-01T00:00:00Z</meta>
  <meta name="subject">X-ray sources</meta>
  <meta name="creator.name">xpipe</meta>
"""


def column_xml(name: str, dtype: pl.DataType, main_pos: bool) -> str:
    ucd = ""
    if main_pos and name in ("ra", "dec"):
        ucd = f' ucd="pos.eq.{name};meta.main" unit="deg"'
    return f'    <column name="{name}" type="{PG_TYPES[dtype]}"{ucd}/>'


def table_xml(name: str, frame: pl.DataFrame, indexes: list[str], extra: str = "") -> str:
    cols = "\n".join(column_xml(c, t, bool(extra)) for c, t in frame.schema.items())
    idx = "\n".join(f'    <index columns="{i}"/>' for i in indexes)
    return (f'  <table id="{name}" onDisk="True" adql="True"{extra}>\n'
            f'    <meta name="description">{name}</meta>\n{cols}\n{idx}\n  </table>')


def rd_xml(schema: str, title: str, tables: dict[str, str]) -> str:
    """A resource descriptor whose import only creates the tables (rows come by COPY)."""
    makes = "\n".join(f'    <make table="{t}"/>' for t in tables)
    body = "\n".join(tables.values())
    return (f'<resource schema="{schema}" resdir=".">\n{META.format(title=title)}{body}\n'
            f'  <data id="import">\n{makes}\n  </data>\n</resource>\n')


def main(sim_dir: Path, out_dir: Path, schemas: list[str]) -> None:
    data = out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    det = pl.read_parquet(sorted((sim_dir / "detections").glob("*.parquet")))
    tables = csc_tables(det)
    for name, frame in tables.items():
        frame.write_csv(data / f"{name}.csv")
    xml = {name: table_xml(name, frame, INDEXES[name]) for name, frame in tables.items()}
    for schema in schemas:
        (out_dir / schema).mkdir(exist_ok=True)
        (out_dir / schema / "q.rd").write_text(
            rd_xml(schema, f"CSC-shaped tables ({schema})", xml))
    simbad = pl.read_parquet(sorted((sim_dir / "simbad").glob("*.parquet")))
    basic = simbad.with_row_index("oid", offset=1).with_columns(pl.col("oid").cast(pl.Int64))
    basic.write_csv(data / "basic.csv")
    (out_dir / "simbad").mkdir(exist_ok=True)
    basic_xml = table_xml("basic", basic, ["main_id"],
                          extra=' mixin="//scs#pgs-pos-index" primary="oid"')
    (out_dir / "simbad" / "q.rd").write_text(
        rd_xml("public", "SIMBAD-shaped basic table", {"basic": basic_xml}))
    print(f"wrote {out_dir}: {det.height} detections, {simbad.height} SIMBAD objects")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
