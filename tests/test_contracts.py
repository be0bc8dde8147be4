"""Table contracts: every table declared once (schemas/ or its sidecar), class and feature
columns expanded from the seeds, DDL from the contract, and the check that a table has exactly
the declared columns and DuckDB types."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest
from science_fixtures import classified_copy

from xpipe.core.resources import sql_dir
from xpipe.warehouse.contracts import (
    Column,
    ContractError,
    all_contracts,
    check_contract,
    contract,
    create_table,
    detection_key,
    load_schema,
    relation_columns,
    resolve_columns,
)
from xpipe.warehouse.seeds import class_names, feature_names
from xpipe.warehouse.sql_models import (
    ModelCheckError,
    SqlModel,
    build,
    discover_models,
    run_checks,
)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA results")
    return con


def test_every_table_declares_described_columns_in_duckdb_spelling() -> None:
    probe = duckdb.connect()
    contracts = all_contracts()
    assert {c.table for c in contracts} >= set(discover_models())
    for table in contracts:
        assert table.columns and table.grain.startswith("one row per"), table.table
        assert len(set(table.names)) == len(table.names), table.table
        for col in table.columns:
            assert col.description, f"{table.table}.{col.name} has no description"
            spelled = probe.execute(f"SELECT typeof(CAST(NULL AS {col.type}))").fetchone()
            assert spelled == (col.type,), f"{table.table}.{col.name}: write {spelled[0]}"


def test_class_and_feature_columns_expand_from_the_seeds() -> None:
    classes, features = class_names(), feature_names()
    detections = contract("results.detection_class")
    assert detections.names[6:16] == classes
    assert detections.column("TTau*") == Column("TTau*", "DOUBLE",
                                                description="probability of TTau*")
    published = contract("results.uniquely_classified")
    assert published.names[4:14] == classes and published.names[-12:] == features
    assert {published.column(c).type for c in classes} == {"VARCHAR"}
    assert contract("model.scaled_features").names == ("det_id", "name", "obsid", *features)
    paper = contract("raw.paper_detections")
    assert paper.names[-10:] == classes and all(paper.column(c).required for c in classes)
    # `like` takes the type and meaning of another table's column (not its input rules)
    assert contract("model.stg_detections").column("obsid") == Column(
        "obsid", "INTEGER", description="Chandra observation id")


def test_sidecars_and_sql_never_name_a_class() -> None:
    """The class list lives in sql/seeds/classes.csv only: SQL templates and sidecar columns
    and checks reach it through templates (descriptions may still mention a class)."""
    pattern = re.compile("|".join(rf"(?<![\w*]){re.escape(c)}(?![\w*])" for c in class_names()))
    for path in [*sql_dir().rglob("*.sql"), *sql_dir().rglob("*.yml")]:
        lines = path.read_text().splitlines()
        if path.suffix == ".yml":  # its columns and checks, without the prose
            lines = lines[next((i for i, x in enumerate(lines) if x == "columns:"), 0):]
            lines = [line.split("description:")[0] for line in lines]
        else:
            lines = [line.split("--")[0] for line in lines]
        named = [m.group(0) for line in lines for m in pattern.finditer(line)]
        assert not named, f"{path} names {named}: use the classes template"


def test_checks_take_every_class_and_feature_from_the_seeds() -> None:
    models = discover_models()
    classes = list(class_names())
    detection = models["results.detection_class"].checks
    assert detection["accepted_range"][0]["columns"] == classes
    assert detection["sum_to_one"][0]["columns"] == classes
    assert detection["argmax"][0] == {"name": "pred_class is the most probable class",
                                      "label": "pred_class", "columns": classes}
    new = models["results.new_detection_class"].checks
    assert new["accepted_range"][0]["columns"] == [*classes, "anomaly_p"]
    assert models["model.otype_classes"].checks["accepted_values"][1]["values"] == classes
    scaled = models["model.scaled_features"].checks
    assert scaled["not_null"] == ["det_id", "name", *feature_names()]
    # the min-max scaled features: the hand-written list this check had before the template
    assert scaled["accepted_range"][0]["columns"] == [
        "powlaw_gamma", "bb_kt", "var_ratio_b", "var_ratio_h", "var_ratio_s", "var_newq_b"]


def test_argmax_check_names_the_most_probable_column(con) -> None:
    con.execute("CREATE TABLE results.t AS SELECT * FROM (VALUES (0.7, 0.3, 'p'), "
                "(0.2, 0.8, 'q'), (NULL, NULL, NULL)) v(p, q, label)")
    model = SqlModel(name="results.t", layer="votes", description="", grain="one row",
                     materialized="python", sql_path=None,
                     checks={"argmax": [{"name": "label is the argmax", "label": "label",
                                         "columns": ["p", "q"]}]})
    run_checks(con, model)
    con.execute("INSERT INTO results.t VALUES (0.9, 0.1, 'q')")
    with pytest.raises(ModelCheckError, match="label is the argmax: 1 row"):
        run_checks(con, model)


def test_detection_key_is_declared_once() -> None:
    assert detection_key() == ("name", "obsid", "obi", "region_id")
    assert set(detection_key()) <= set(contract("raw.detections").names)


def test_ddl_and_create_table(con) -> None:
    table = contract("results.detection_class")
    assert table.ddl("results.x").startswith('CREATE TABLE results.x (\n  "det_id" BIGINT,\n')
    create_table(con, "results.detection_class")
    check_contract(con, "results.detection_class")
    with pytest.raises(duckdb.CatalogException):
        create_table(con, "results.detection_class")
    create_table(con, "results.detection_class", if_not_exists=True)
    # without the anomaly columns (optional: the votes-only layout) it still meets its contract
    create_table(con, "results.detection_class", replace=True, optional=False)
    check_contract(con, "results.detection_class")
    assert [n for n, _ in relation_columns(con, "results.detection_class")] == \
        [c.name for c in table.columns if not c.optional]
    create_table(con, "results.detection_class", name="results.detection_class__staging")
    assert relation_columns(con, "results.detection_class__staging") == \
        [(c.name, c.type) for c in table.columns]
    with pytest.raises(ValueError, match="exclude each other"):
        create_table(con, "results.detection_class", replace=True, if_not_exists=True)


def test_load_schema_keeps_the_input_view() -> None:
    schema, full = load_schema("raw.detections"), contract("raw.detections")
    assert [c.name for c in schema.generated] == ["det_id", "source_file", "source_row"]
    assert schema.columns == full.input_columns and schema.all_columns == full.columns
    assert schema.ddl() == full.ddl() and schema.ddl("raw.x") == full.ddl("raw.x")
    available = ["NAME_1", "obsid", "ra", "dec"]
    assert resolve_columns(contract("raw.simbad_match"), ["name", "main_id", "otype", "angDist"],
                           "f.csv")["separation_arcsec"] == "angDist"
    with pytest.raises(ValueError, match="missing required column"):
        resolve_columns(schema, available, "f.csv")


@pytest.mark.parametrize("ddl, message", [
    ("c_id BIGINT, label VARCHAR", None),
    ("c_id INTEGER, label VARCHAR", r'column "c_id" is INTEGER, declared BIGINT'),
    ("c_id BIGINT", r'column "label" is missing \(declared VARCHAR\)'),
    ("c_id BIGINT, label VARCHAR, extra DOUBLE", r'column "extra" \(DOUBLE\) is not declared'),
    ("label VARCHAR, c_id BIGINT", r"columns are in the order label, c_id; declared c_id, label"),
])
def test_runner_enforces_declared_columns(con, tmp_path: Path, ddl: str, message: str | None
                                          ) -> None:
    con.execute(f"CREATE TABLE results.src ({ddl})")
    sql = tmp_path / "t.sql"
    sql.write_text("WITH final AS (SELECT * FROM results.src) SELECT * FROM final")
    declared = (Column("c_id", "BIGINT"), Column("label", "VARCHAR"))
    for materialized in ("table", "view"):
        model = SqlModel(name="results.t", layer="votes", description="", grain="one row",
                         materialized=materialized, sql_path=sql, columns=declared,
                         origin="sql/votes/t.yml")
        if message is None:
            build(con, model)
            continue
        with pytest.raises(ContractError, match=r"results\.t does not match its contract "
                                                r"\(sql/votes/t\.yml\): " + message):
            build(con, model)


def test_a_model_without_columns_is_refused(con, tmp_path: Path) -> None:
    sql = tmp_path / "t.sql"
    sql.write_text("WITH final AS (SELECT 1 AS x) SELECT * FROM final")
    model = SqlModel(name="results.t", layer="votes", description="", grain="one row",
                     materialized="table", sql_path=sql, origin="sql/votes/t.yml")
    with pytest.raises(ModelCheckError, match="declares no columns"):
        build(con, model)


def test_classify_writes_what_the_contracts_declare(tmp_path_factory) -> None:
    """The tables `xpipe classify` writes in Python meet the contracts their writers will
    check (check_contract), as the SQL models do."""
    warehouse = classified_copy(tmp_path_factory, "contracts")
    con = duckdb.connect(str(warehouse), read_only=True)
    present = {f"{s}.{t}" for s, t in con.execute(
        "SELECT schema_name, table_name FROM duckdb_columns() WHERE database_name = "
        "current_database()").fetchall()}
    checked = [c.table for c in all_contracts() if c.table in present]
    assert {"results.detection_class", "model.gmm_components", "model.versions"} <= set(checked)
    for table in checked:
        check_contract(con, table)


def test_pull_tables_are_their_contracts() -> None:
    """The tables a resumable pull lands rows in are declared like any other (schemas/), and
    the paging mechanism's idea of their columns agrees with the declaration."""
    from xpipe.ingest.crossmatch import XMATCH
    from xpipe.ingest.pull import pull_spec
    from xpipe.services.csc import CSC_RELEASES

    for spec in (pull_spec(CSC_RELEASES["csc20"]), XMATCH):
        declared = contract(spec.pull_table)
        assert declared.names == (*spec.unit_columns, *spec.columns()), spec.pull_table
        assert declared.origin == f"schemas/{spec.pull_table}.yaml"


def test_simulator_writes_the_input_contracts_types() -> None:
    """The simulator's Parquet schemas (kept literal so its files stay byte-identical) must
    give every column the type its input contract declares."""
    from xpipe.simulation.vocabulary import DETECTION_SCHEMA, SIMBAD_SCHEMA
    from xpipe.warehouse.dtypes import arrow_type

    for schema, table in ((DETECTION_SCHEMA, "raw.detections"), (SIMBAD_SCHEMA, "raw.simbad")):
        declared = {c.name: c.type for c in contract(table).input_columns}
        for field in schema:
            assert field.name in declared, (table, field.name)
            assert field.type == arrow_type(declared[field.name]), (table, field.name)
        required = {c.name for c in contract(table).input_columns if c.required}
        assert required <= set(schema.names), table
