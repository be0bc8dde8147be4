"""Run the SQL models in `sql/` in dependency order and enforce their contracts and checks.

Each model is `sql/<layer>/<table>.sql` (a SELECT written as named CTEs) with a sidecar
`<table>.yml` giving the table it creates, its grain, how it is materialised (table, view, seed,
or python for tables written by the Python steps), its columns (the table's contract, see
xpipe.warehouse.contracts) and the checks run after it is built. The SQL is a Jinja template
rendered with the seeds (`{{ classes }}`, `{{ agg_classes }}`, `{{ features }}`,
`{{ transforms }}`), so no model lists a class or a feature by hand. A model depends on the
models whose tables its SQL names. Parameters reach the SQL as DuckDB variables
(`getvariable('name')`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from graphlib import TopologicalSorter
from pathlib import Path

import duckdb
import jinja2
import polars as pl

from xpipe.core.errors import ModelCheckError
from xpipe.core.resources import sql_dir
from xpipe.warehouse.connection import drop_relation, first_row, insert_frame, sql_literal
from xpipe.warehouse.contracts import (
    Column,
    Sidecar,
    check_columns,
    check_contract,
    create_table,
    expand_names,
    quote_ident,
    sidecar_contract,
    sidecars,
)
from xpipe.warehouse.seeds import (
    ConfidenceLimit,
    PhysicalRange,
    aggregated_class_names,
    class_names,
    confidence_limits,
    feature_names,
    feature_transforms,
    physical_ranges,
)


@dataclass(frozen=True)
class SqlModel:
    """One table of the warehouse as the runner sees it: its sidecar, SQL and seed file."""

    name: str  # schema.table
    layer: str
    description: str
    grain: str
    materialized: str
    sql_path: Path | None
    checks: dict = field(default_factory=dict, hash=False, compare=False)
    seed_path: Path | None = None
    columns: tuple[Column, ...] = field(default=(), hash=False, compare=False)
    origin: str = ""  # the sidecar, e.g. sql/votes/source_class.yml

    @property
    def source(self) -> str:
        """The SQL file as written (a Jinja template)."""
        if self.sql_path is None:
            raise ValueError(f"model {self.name} has no SQL file")
        return self.sql_path.read_text()

    @property
    def sql(self) -> str:
        """The SQL the runner executes: the template rendered with the seeds."""
        return render_sql(self.source)


def sql_ident(name: str) -> str:
    """A column name as SQL: bare when it is a plain identifier, else double-quoted."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else quote_ident(name)


def column_list(names: Iterable[str], alias: str = "") -> str:
    """`a.x, a.y, a."TTau*"`: the Jinja filter `columns`."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + sql_ident(n) for n in names)


def outside_range_sql(rng: PhysicalRange, alias: str = "") -> str:
    """SQL true where the column's value is outside its physical range (NULL where NULL)."""
    column = (f"{alias}." if alias else "") + sql_ident(rng.column)
    conditions = []
    if rng.min is not None:
        conditions.append(f"{column} {'<' if rng.min_inclusive else '<='} {rng.min!r}")
    if rng.max is not None:
        conditions.append(f"{column} {'>' if rng.max_inclusive else '>='} {rng.max!r}")
    return "(" + " OR ".join(conditions) + ")"


def physically_possible(alias: str = "") -> str:
    """SQL true where no value of the row is outside its range in sql/seeds/physical_ranges.csv
    (the Jinja global `physically_possible()`)."""
    outside = " OR ".join(outside_range_sql(r, alias) for r in physical_ranges().values())
    return f"NOT coalesce({outside}, FALSE)"


def impossible_values(alias: str = "") -> str:
    """SQL text naming each value of the row outside its physical range, e.g. `hard_hm = 1.5
    outside [-1, 1], ra = 720.0 outside [0, 360)`; NULL when none (the Jinja global
    `impossible_values()`)."""
    prefix = f"{alias}." if alias else ""
    parts = [f"CASE WHEN {outside_range_sql(r, alias)} THEN "
             f"{sql_literal(r.column + ' = ')} || CAST({prefix}{sql_ident(r.column)} AS VARCHAR) "
             f"|| {sql_literal(' outside ' + r.interval())} END"
             for r in physical_ranges().values()]
    return f"nullif(concat_ws(', ', {', '.join(parts)}), '')"


def _as_text(column: str) -> str:
    return f"coalesce(CAST({sql_ident(column)} AS VARCHAR), 'NULL')"


def limit_problem(limit: ConfidenceLimit) -> str:
    """SQL text saying why a detection's confidence limits of one feature cannot be used, e.g.
    `hard_hm = 0.1 outside its limits [0.2, 0.5]`; NULL when they can or when none are given
    (the Jinja global `limit_problem(limit)`). Usable: both limits, a value, lolim <= value <=
    hilim, and both limits inside the feature's range in sql/seeds/physical_ranges.csv."""
    value, lo, hi = (sql_ident(c) for c in (limit.feature, limit.lolim, limit.hilim))
    interval = f"'[' || {_as_text(limit.lolim)} || ', ' || {_as_text(limit.hilim)} || ']'"
    cases = [
        f"WHEN {lo} IS NULL AND {hi} IS NULL THEN NULL",
        f"WHEN {value} IS NULL THEN {sql_literal(limit.feature + ' has limits but no value')}",
        f"WHEN {lo} IS NULL OR {hi} IS NULL THEN "
        f"{sql_literal(limit.feature + ' has one limit only: ')} || {interval}",
        f"WHEN NOT ({lo} <= {value} AND {value} <= {hi}) THEN "
        f"{sql_literal(limit.feature + ' = ')} || {_as_text(limit.feature)} "
        f"|| ' outside its limits ' || {interval}",
    ]
    bounds = physical_ranges().get(limit.feature)
    if bounds is not None:
        outside = " OR ".join(outside_range_sql(replace(bounds, column=c))
                              for c in (limit.lolim, limit.hilim))
        cases.append(f"WHEN {outside} THEN {sql_literal(limit.feature + ' limits ')} || "
                     f"{interval} || {sql_literal(' outside ' + bounds.interval())}")
    return "CASE " + " ".join(cases) + " END"


@cache
def _jinja() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(sql_string=sql_literal, ident=sql_ident, columns=column_list)
    env.globals.update(classes=class_names(), agg_classes=aggregated_class_names(),
                       features=feature_names(), transforms=feature_transforms(),
                       physically_possible=physically_possible,
                       impossible_values=impossible_values,
                       confidence_limits=tuple(confidence_limits().values()),
                       limit_problem=limit_problem)
    return env


@cache
def render_sql(text: str) -> str:
    """Render a model's SQL template with the seeds in context (what dbt does with its
    seeds): the class and feature lists are generated, never written twice."""
    return _jinja().from_string(text).render()


def _load_model(sidecar: Sidecar) -> SqlModel:
    spec = sidecar.spec
    materialized = spec.get("materialized", "table")
    sql_path = sidecar.path.with_suffix(".sql")
    seed_path = sidecar.path.with_suffix(".csv") if materialized == "seed" else None
    if materialized in {"table", "view"} and not sql_path.exists():
        raise FileNotFoundError(f"{sidecar.path}: materialized as {materialized} but "
                                f"{sql_path} missing")
    if seed_path is not None and not seed_path.exists():
        raise FileNotFoundError(f"{sidecar.path}: seed file {seed_path} missing")
    contract = sidecar_contract(spec, sidecar.layer, sidecar.origin)
    return SqlModel(
        name=contract.table,
        layer=sidecar.layer,
        description=contract.description,
        grain=contract.grain,
        materialized=materialized,
        sql_path=sql_path if sql_path.exists() else None,
        checks=expand_names(spec.get("checks", {}) or {}),
        seed_path=seed_path,
        columns=contract.columns,
        origin=sidecar.origin,
    )


@cache
def discover_models(root: Path | None = None) -> dict[str, SqlModel]:
    return {name: _load_model(sidecar) for name, sidecar in sidecars(root).items()}


def dependencies(model: SqlModel, models: dict[str, SqlModel]) -> set[str]:
    if model.sql_path is None:
        return set()
    text = re.sub(r"--[^\n]*", "", model.sql)
    return {name for name in models if name != model.name
            and re.search(rf"\b{re.escape(name)}\b", text)}


def execution_order(models: dict[str, SqlModel], selected: Iterable[str]) -> list[SqlModel]:
    selected = set(selected)
    graph = {name: dependencies(models[name], models) & selected for name in selected}
    return [models[name] for name in TopologicalSorter(graph).static_order()]


def set_parameters(con: duckdb.DuckDBPyConnection, params: dict[str, object]) -> None:
    for key, value in params.items():
        if value is None:
            con.execute(f"SET VARIABLE {key} = NULL")
        elif isinstance(value, bool):
            con.execute(f"SET VARIABLE {key} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            con.execute(f"SET VARIABLE {key} = CAST({value!r} AS DOUBLE)")
        else:
            con.execute(f"SET VARIABLE {key} = {sql_literal(str(value))}")


def load_macros(con: duckdb.DuckDBPyConnection) -> None:
    con.execute((sql_dir() / "macros.sql").read_text())


def build(con: duckdb.DuckDBPyConnection, model: SqlModel) -> None:
    """Materialise one model (seeds, SQL tables and views; python models are written elsewhere)
    and verify its columns and types against its contract."""
    if model.materialized == "python":
        return
    if not model.columns:
        raise ModelCheckError(f"model {model.name} ({model.origin}) declares no columns")
    if model.materialized == "seed":
        columns = "{" + ", ".join(f"'{c.name}': '{c.type}'" for c in model.columns) + "}"
        con.execute(f"CREATE OR REPLACE TABLE {model.name} AS SELECT * FROM read_csv("
                    f"{sql_literal(model.seed_path or '')}, header = true, columns = {columns}, "
                    f"quote = '\"', escape = '\"', auto_detect = false)")
    elif model.materialized in {"table", "view"}:
        drop_relation(con, model.name)
        con.execute(f"CREATE {model.materialized.upper()} {model.name} AS\n{model.sql}")
    else:
        raise ValueError(f"model {model.name}: unknown materialization {model.materialized!r}")
    check_columns(con, model.name, model.columns, model.origin)


def _range_conditions(rng: dict) -> list[tuple[str, str]]:
    out = []
    for col in rng["columns"]:
        conds = []
        if "min" in rng:
            conds.append(f"{quote_ident(col)} < {rng['min']}")
        if "max" in rng:
            conds.append(f"{quote_ident(col)} > {rng['max']}")
        out.append((f"{col} in [{rng.get('min', '-inf')}, {rng.get('max', 'inf')}]",
                    f"({rng.get('where', 'TRUE')}) AND ({' OR '.join(conds)})"))
    return out


def argmax_condition(label: str, columns: list[str]) -> str:
    """SQL true when `label` is NULL or names the column holding the row's largest value
    (the last column stands for any other label, as a CASE's ELSE)."""
    quoted = [quote_ident(c) for c in columns]
    whens = " ".join(f"WHEN {sql_literal(c)} THEN {q}"
                     for c, q in zip(columns[:-1], quoted[:-1], strict=True))
    return (f"{quote_ident(label)} IS NULL OR greatest({', '.join(quoted)}) = "
            f"CASE {quote_ident(label)} {whens} ELSE {quoted[-1]} END")


def row_conditions(model: SqlModel) -> list[tuple[str, str]]:
    """(description, SQL condition true on a violating row) for every row-level check."""
    checks, out = model.checks, []
    for col in checks.get("not_null", []):
        out.append((f"{col} not null", f"{quote_ident(col)} IS NULL"))
    for rng in checks.get("accepted_range", []):
        out += _range_conditions(rng)
    for acc in checks.get("accepted_values", []):
        values = ", ".join(sql_literal(v) for v in acc["values"])
        out.append((f"{acc['column']} in {acc['values']}",
                    f"{quote_ident(acc['column'])} NOT IN ({values})"))
    for total in checks.get("sum_to_one", []):
        cols = " + ".join(quote_ident(c) for c in total["columns"])
        out.append((f"{total['name']} sum to 1 within {total['tolerance']}",
                    f"({total.get('where', 'TRUE')}) AND abs(({cols}) - 1) > "
                    f"{total['tolerance']}"))
    expressions = [(e["name"], e["condition"]) for e in checks.get("expression", [])]
    expressions += [(a["name"], argmax_condition(a["label"], a["columns"]))
                    for a in checks.get("argmax", [])]
    out += [(name, f"NOT coalesce(({cond}), FALSE)") for name, cond in expressions]
    return out


def check_queries(model: SqlModel) -> list[tuple[list[str], str]]:
    """(descriptions, SQL) pairs: the row-level checks share one scan returning one count per
    check; each unique key needs its own grouping."""
    t, out = model.name, []
    conditions = row_conditions(model)
    if conditions:
        counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond in conditions)
        out.append(([d for d, _ in conditions], f"SELECT {counts} FROM {t}"))
    for col in model.checks.get("unique", []):
        cols = col if isinstance(col, list) else [col]
        key = ", ".join(quote_ident(c) for c in cols)
        out.append(([f"{'+'.join(cols)} unique"],
                    f"SELECT count(*) FROM (SELECT {key} FROM {t} GROUP BY ALL "
                    f"HAVING count(*) > 1)"))
    return out


def run_checks(con: duckdb.DuckDBPyConnection, model: SqlModel) -> None:
    failures = []
    for descriptions, query in check_queries(model):
        counts = first_row(con, query) or ()
        failures += [f"{d}: {bad} row(s) fail" for d, bad in zip(descriptions, counts,
                                                                   strict=True) if bad]
    if failures:
        raise ModelCheckError(f"model {model.name} ({model.grain}) failed its checks: "
                              + "; ".join(failures))


def check_written(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """A table Python wrote (`materialized: python`): its declared columns, then its checks."""
    check_contract(con, table)
    run_checks(con, discover_models()[table])


def write_table(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Replace a Python-written table by `frame`, with its contract's columns and types."""
    create_table(con, table, replace=True)
    insert_frame(con, table, frame)
    check_written(con, table)


def run_models(con: duckdb.DuckDBPyConnection, layers: Iterable[str] = (), *,
               names: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
    """Build, verify and check every non-python model of `layers` (or the models named),
    dependencies first. The seeds a chosen model reads are (re)loaded with it, so a warehouse
    built before a seed was added still runs the models that read it."""
    models = discover_models()
    layers, names, exclude = set(layers), set(names), set(exclude)
    chosen = [m.name for m in models.values()
              if (m.layer in layers or m.name in names) and m.materialized != "python"
              and m.name not in exclude]
    seeds = {dep for name in chosen for dep in dependencies(models[name], models)
             if models[dep].materialized == "seed"}
    chosen += [name for name in models if name in seeds and name not in chosen]
    for model in execution_order(models, chosen):
        try:
            build(con, model)
        except duckdb.Error as exc:
            raise ModelCheckError(f"model {model.name} ({model.sql_path}) failed: {exc}") from exc
        run_checks(con, model)


def describe_models() -> str:
    """Markdown table of every model: for README and `xpipe dag`."""
    lines = ["| table | layer | materialized | grain |", "|---|---|---|---|"]
    for model in discover_models().values():
        lines.append(f"| `{model.name}` | {model.layer} | {model.materialized} | {model.grain} |")
    return "\n".join(lines)


def dump_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
