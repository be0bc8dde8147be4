"""Run the SQL models in `sql/` in dependency order and enforce their data checks.

Each model is `sql/<layer>/<table>.sql` (a SELECT written as named CTEs) with a sidecar
`<table>.yml` giving the table it creates, its grain, how it is materialised (table, view, seed,
or python for tables written by the Python steps) and the checks run after it is built. A model
depends on the models whose tables its SQL names. Parameters reach the SQL as DuckDB variables
(`getvariable('name')`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from graphlib import TopologicalSorter
from pathlib import Path

import duckdb
import yaml

from xpipe.core.resources import sql_dir
from xpipe.warehouse.connection import drop_relation, first_row, scalar, sql_literal

LAYERS = ("seeds", "staging", "features", "labels", "classify", "votes", "validation")


class ModelCheckError(RuntimeError):
    """A model's output broke one of its declared checks."""


@dataclass(frozen=True)
class Model:
    name: str  # schema.table
    layer: str
    description: str
    grain: str
    materialized: str
    sql_path: Path | None
    checks: dict = field(default_factory=dict, hash=False, compare=False)
    seed_path: Path | None = None
    seed_columns: dict | None = field(default=None, hash=False, compare=False)

    @property
    def sql(self) -> str:
        if self.sql_path is None:
            raise ValueError(f"model {self.name} has no SQL file")
        return self.sql_path.read_text()


def _load_model(sidecar: Path, layer: str) -> Model:
    spec = yaml.safe_load(sidecar.read_text())
    materialized = spec.get("materialized", "table")
    sql_path = sidecar.with_suffix(".sql")
    seed_path = sidecar.with_suffix(".csv") if materialized == "seed" else None
    if materialized in {"table", "view"} and not sql_path.exists():
        raise FileNotFoundError(f"{sidecar}: materialized as {materialized} but {sql_path} missing")
    if seed_path is not None and not seed_path.exists():
        raise FileNotFoundError(f"{sidecar}: seed file {seed_path} missing")
    return Model(
        name=spec["name"],
        layer=layer,
        description=" ".join(str(spec.get("description", "")).split()),
        grain=spec.get("grain", ""),
        materialized=materialized,
        sql_path=sql_path if sql_path.exists() else None,
        checks=spec.get("checks", {}) or {},
        seed_path=seed_path,
        seed_columns=spec.get("columns"),
    )


@cache
def discover_models(root: Path | None = None) -> dict[str, Model]:
    root = root or sql_dir()
    models: dict[str, Model] = {}
    for layer in LAYERS:
        for sidecar in sorted((root / layer).glob("*.yml")):
            model = _load_model(sidecar, layer)
            if model.name in models:
                raise ValueError(f"model {model.name} defined twice ({sidecar})")
            models[model.name] = model
    return models


def dependencies(model: Model, models: dict[str, Model]) -> set[str]:
    if model.sql_path is None:
        return set()
    text = re.sub(r"--[^\n]*", "", model.sql)
    return {name for name in models if name != model.name
            and re.search(rf"\b{re.escape(name)}\b", text)}


def execution_order(models: dict[str, Model], selected: Iterable[str]) -> list[Model]:
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


def build(con: duckdb.DuckDBPyConnection, model: Model) -> None:
    """Materialise one model (seeds, SQL tables and views; python models are written elsewhere)."""
    if model.materialized == "seed":
        pairs = (model.seed_columns or {}).items()
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in pairs) + "}"
        con.execute(f"CREATE OR REPLACE TABLE {model.name} AS SELECT * FROM read_csv("
                    f"{sql_literal(model.seed_path)}, header = true, columns = {columns}, "
                    f"quote = '\"', escape = '\"', auto_detect = false)")
    elif model.materialized == "table":
        drop_relation(con, model.name)
        con.execute(f"CREATE TABLE {model.name} AS\n{model.sql}")
    elif model.materialized == "view":
        drop_relation(con, model.name)
        con.execute(f"CREATE VIEW {model.name} AS\n{model.sql}")
    elif model.materialized != "python":
        raise ValueError(f"model {model.name}: unknown materialization {model.materialized!r}")


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def row_conditions(model: Model) -> list[tuple[str, str]]:
    """(description, SQL condition true on a violating row) for every row-level check."""
    checks, out = model.checks, []
    for col in checks.get("not_null", []):
        out.append((f"{col} not null", f"{_quote(col)} IS NULL"))
    for rng in checks.get("accepted_range", []):
        where = rng.get("where", "TRUE")
        for col in rng["columns"]:
            conds = []
            if "min" in rng:
                conds.append(f"{_quote(col)} < {rng['min']}")
            if "max" in rng:
                conds.append(f"{_quote(col)} > {rng['max']}")
            out.append((f"{col} in [{rng.get('min', '-inf')}, {rng.get('max', 'inf')}]",
                        f"({where}) AND ({' OR '.join(conds)})"))
    for acc in checks.get("accepted_values", []):
        values = ", ".join(sql_literal(v) for v in acc["values"])
        out.append((f"{acc['column']} in {acc['values']}",
                    f"{_quote(acc['column'])} NOT IN ({values})"))
    for total in checks.get("sum_to_one", []):
        cols = " + ".join(_quote(c) for c in total["columns"])
        out.append((f"{total['name']} sum to 1 within {total['tolerance']}",
                    f"({total.get('where', 'TRUE')}) AND abs(({cols}) - 1) > "
                    f"{total['tolerance']}"))
    for expr in checks.get("expression", []):
        out.append((expr["name"], f"NOT coalesce(({expr['condition']}), FALSE)"))
    return out


def check_queries(model: Model) -> list[tuple[list[str], str]]:
    """(descriptions, SQL) pairs: the row-level checks share one scan returning one count per
    check; each unique key needs its own grouping."""
    t, out = model.name, []
    conditions = row_conditions(model)
    if conditions:
        counts = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond in conditions)
        out.append(([d for d, _ in conditions], f"SELECT {counts} FROM {t}"))
    for col in model.checks.get("unique", []):
        cols = col if isinstance(col, list) else [col]
        key = ", ".join(_quote(c) for c in cols)
        out.append(([f"{'+'.join(cols)} unique"],
                    f"SELECT count(*) FROM (SELECT {key} FROM {t} GROUP BY ALL "
                    f"HAVING count(*) > 1)"))
    return out


def run_checks(con: duckdb.DuckDBPyConnection, model: Model) -> None:
    failures = []
    for descriptions, query in check_queries(model):
        counts = first_row(con, query) or ()
        failures += [f"{d}: {bad} row(s) fail" for d, bad in zip(descriptions, counts,
                                                                   strict=True) if bad]
    if failures:
        raise ModelCheckError(f"model {model.name} ({model.grain}) failed its checks: "
                              + "; ".join(failures))


def run_models(con: duckdb.DuckDBPyConnection, layers: Iterable[str] = (),
               names: Iterable[str] = (), exclude: Iterable[str] = (),
               on_done: Callable[[Model, float, int], None] | None = None) -> None:
    """Build and check every non-python model of `layers` (or the models named), dependencies
    first."""
    models = discover_models()
    layers, names, exclude = set(layers), set(names), set(exclude)
    chosen = [m.name for m in models.values()
              if (m.layer in layers or m.name in names) and m.materialized != "python"
              and m.name not in exclude]
    for model in execution_order(models, chosen):
        start = time.perf_counter()
        try:
            build(con, model)
        except duckdb.Error as exc:
            raise ModelCheckError(f"model {model.name} ({model.sql_path}) failed: {exc}") from exc
        run_checks(con, model)
        if on_done is not None:
            rows = scalar(con, f"SELECT count(*) FROM {model.name}")
            on_done(model, time.perf_counter() - start, rows)


def describe_models() -> str:
    """Markdown table of every model: for README and `xpipe dag`."""
    lines = ["| table | layer | materialized | grain |", "|---|---|---|---|"]
    for model in discover_models().values():
        lines.append(f"| `{model.name}` | {model.layer} | {model.materialized} | {model.grain} |")
    return "\n".join(lines)


def dump_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
