"""End to end on a small simulated catalogue: simulate, load, classify, vote, export, query."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

N_DETECTIONS = 200_000


@pytest.fixture(scope="module")
def classified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One simulated catalogue, loaded and classified once for every test of this module."""
    from click.testing import CliRunner

    from xpipe.cli.main import main

    root = tmp_path_factory.mktemp("e2e")
    warehouse = root / "xpipe.duckdb"
    runner = CliRunner()
    for args in (["warehouse", "--source", "sim", "--sim-dir", str(root / "sim"),
                  "--detections", str(N_DETECTIONS), "--seed", "7"],
                 ["classify"]):
        result = runner.invoke(main, ["--warehouse", str(warehouse), *args],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return {"root": root, "warehouse": warehouse, "sim": root / "sim",
            "classify_output": result.output}


def test_stages_and_checks(classified) -> None:
    con = duckdb.connect(str(classified["warehouse"]), read_only=True)
    counts = json.loads(con.execute("SELECT row_counts FROM meta.runs WHERE command = 'classify'"
                                    " AND status = 'ok'").fetchall()[0][0])
    n_raw = con.execute("SELECT count(*) FROM raw.detections").fetchall()[0][0]
    dups = con.execute("SELECT count(*) - count(DISTINCT det_id) FROM results.detection_class"
                       ).fetchall()[0][0]
    roles = con.execute("SELECT count(*) FROM model.detection_roles").fetchall()[0][0]
    con.close()
    assert counts["detections"] == n_raw == N_DETECTIONS
    # about 4 % pass the paper's selection and ~78 % of those survive cleaning, as in CSC 2.0
    assert 0.03 < counts["selected"] / N_DETECTIONS < 0.05
    assert 0.70 < counts["cleaned"] / counts["selected"] < 0.86
    assert counts["references"] + counts["targets"] + counts["excluded"] == counts["cleaned"]
    assert roles == counts["cleaned"]
    assert counts["classified"] == counts["targets"] - counts["unclassifiable"]
    assert dups == 0
    assert counts["uniquely_classified"] + counts["ambiguous"] == counts["sources"]
    assert "rows per stage" in classified["classify_output"]


def test_accuracy_against_truth(classified, report) -> None:
    """Per aggregated class, recall against the simulator's truth beats chance (the class's
    share of the targets), and the mean recall is well above the 0.25 of four classes."""
    con = duckdb.connect(str(classified["warehouse"]), read_only=True)
    truth = f"read_parquet('{classified['sim']}/truth/*.parquet')"
    rows = con.execute(f"""
        WITH det AS (
            SELECT t.agg_class AS truth, c.agg_class AS predicted
            FROM results.detection_class d
            JOIN model.classes c ON c.class = d.pred_class
            JOIN {truth} t USING (name)
        )
        SELECT truth, count(*) AS n, avg((predicted = truth)::INT) AS recall,
               count(*) / sum(count(*)) OVER () AS prior
        FROM det GROUP BY truth ORDER BY truth
    """).fetchall()
    sources = con.execute(f"""
        SELECT t.agg_class, count(*), avg((s.agg_master_class = t.agg_class)::INT)
        FROM results.source_class s JOIN {truth} t USING (name)
        WHERE s.is_unique GROUP BY 1 ORDER BY 1
    """).fetchall()
    con.close()
    report(f"simulated catalogue of {N_DETECTIONS:,} detections, accuracy against truth:")
    for (cls, n, recall, prior), (_, n_src, src_acc) in zip(rows, sources, strict=True):
        report(f"  {cls:<8} detections {n:>5}  recall {recall:.2f} (prior {prior:.2f})  "
               f"uniquely classified sources {n_src:>5}  accuracy {src_acc:.2f}")
    assert {r[0] for r in rows} == {"AGN", "Seyfert", "XB", "YSO"}
    for cls, _, recall, prior in rows:
        assert recall > prior, f"{cls}: recall {recall:.2f} vs prior {prior:.2f}"
    assert sum(r[2] for r in rows) / len(rows) > 0.5


def test_export_layout_and_sql(classified, cli, tmp_path: Path) -> None:
    warehouse = str(classified["warehouse"])
    out = tmp_path / "export"
    cli("--warehouse", warehouse, "export", "--out", str(out))
    det = pl.read_csv(out / "detection_level_classification.csv")
    assert det.columns[:7] == ["", "name", "obsid", "cluster", "ra", "dec", "main_type"]
    assert det[""].to_list() == list(range(det.height))
    assert det.select(pl.col("name"), pl.col("obsid")).equals(
        det.select("name", "obsid").sort("name", "obsid", maintain_order=True))
    unique = pl.read_csv(out / "uniquely_classified.csv")
    assert unique.columns[:4] == ["name", "agg_master_class", "master_class", "detection_count"]
    assert unique["QSO"].str.contains(r"^\d+(\.\d+)?±\d+(\.\d+)?$").all()
    assert unique["var_newq_b"].null_count() == 0  # features of the first detection
    cli("--warehouse", warehouse, "export", "--out", str(out), "--format", "parquet")
    assert pl.read_parquet(out / "ambiguous_classification.parquet").height == \
        pl.read_csv(out / "ambiguous_classification.csv").height

    result = cli("--warehouse", warehouse, "sql", "--format", "csv",
                 "SELECT agg_master_class, count(*) AS n FROM results.uniquely_classified "
                 "GROUP BY 1 ORDER BY 1")
    lines = result.output.strip().splitlines()
    assert lines[0] == '"agg_master_class","n"'
    assert [line.split(",")[0].strip('"') for line in lines[1:]] == ["AGN", "Seyfert", "XB",
                                                                    "YSO"]
    assert sum(int(line.split(",")[1]) for line in lines[1:]) == unique.height
    # read-only: a write is refused and nothing changes
    result = cli("--warehouse", warehouse, "sql", "DELETE FROM results.source_class",
                 expect_ok=False)
    assert result.exit_code == 1 and "read-only" in result.output


def test_simulation_is_reused_and_deterministic(classified, cli) -> None:
    result = cli("--warehouse", str(classified["root"] / "second.duckdb"), "warehouse",
                 "--source", "sim", "--sim-dir", str(classified["sim"]), "--detections",
                 str(N_DETECTIONS), "--seed", "7")
    assert "using simulated catalogue" in result.output
    a = duckdb.connect(str(classified["warehouse"]), read_only=True)
    b = duckdb.connect(str(classified["root"] / "second.duckdb"), read_only=True)
    q = "SELECT * FROM raw.detections ORDER BY det_id LIMIT 1000"
    assert a.execute(q).fetchall() == b.execute(q).fetchall()
    a.close()
    b.close()
