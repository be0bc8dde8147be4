"""Table contracts: every warehouse table's columns, types and meaning, declared once.

Input and bookkeeping tables are declared in `schemas/<table>.yaml` (with what an input file
must provide); every SQL model and every table the Python steps write, in the sidecar
`sql/<layer>/<table>.yml` beside its SQL. `contract(name)` reads either into one dataclass. A
column entry `{template: classes, type: DOUBLE, description: "probability of {class}"}` stands
for one column per row of a seed (sql/seeds/), in seed order, so the class and feature lists
are written nowhere else; `{name: obsid, like: raw.detections}` takes the type and meaning of
that table's column. Writers create tables from `ddl()` / `create_table` and verify what they
wrote with `check_contract`; the SQL runner does the same after every model it builds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import yaml

from xpipe.core.errors import InputError, WarehouseError
from xpipe.core.resources import schemas_dir, sql_dir
from xpipe.warehouse.seeds import template_key, template_rows

NUMERIC_TYPES = {"DOUBLE", "FLOAT", "INTEGER", "SMALLINT", "BIGINT", "TINYINT"}
# The folders of sql/ that hold sidecars, in build order.
LAYERS = ("seeds", "staging", "features", "labels", "classify", "votes", "validation",
          "uncertainty")


class SchemaError(InputError):
    """Input does not match a table contract; the message names the file, column or row."""


class ContractError(WarehouseError):
    """A table in the warehouse does not have the columns and types its contract declares."""


@dataclass(frozen=True)
class Column:
    """One declared column; the input-only fields matter for schemas/ tables."""

    name: str
    type: str  # as DuckDB spells it (duckdb_columns().data_type), so it compares as text
    required: bool = False  # input: a file must provide it
    nullable: bool = True
    aliases: tuple[str, ...] = ()  # input: other names a file may give it
    description: str = ""
    unit: str = ""
    generated: bool = False  # input: added by the warehouse, never read from a file
    optional: bool = False  # output: a writer may leave it out (in place when present)


@dataclass(frozen=True)
class TableContract:
    """A table's declaration, from schemas/ or a sidecar: the one place its columns live."""

    table: str  # schema.name
    description: str
    grain: str
    layer: str  # raw or meta (schemas/), or the sql/ folder of the sidecar
    materialized: str  # seed, table, view or python (every schemas/ table is written by Python)
    origin: str  # the file that declares it, e.g. sql/votes/source_class.yml
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    natural_key: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def generated(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.generated)

    @property
    def input_columns(self) -> tuple[Column, ...]:
        """The columns an input file provides (all but the generated ones)."""
        return tuple(c for c in self.columns if not c.generated)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.table} ({self.origin}) declares no column {name!r}")

    def ddl(self, name: str | None = None, *, optional: bool = True) -> str:
        """CREATE TABLE text for this contract, under `name` (e.g. a staging name) if given;
        `optional=False` leaves out the columns a writer may omit."""
        return _create_sql("CREATE TABLE", name or self.table,
                           [c for c in self.columns if optional or not c.optional])


def _create_sql(verb: str, name: str, columns: Iterable[Column]) -> str:
    cols = ",\n  ".join(f"{quote_ident(c.name)} {c.type}" for c in columns)
    return f"{verb} {name} (\n  {cols}\n)"


def quote_ident(name: str) -> str:
    """A column name as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------------------------
# Reading the declarations
# ------------------------------------------------------------------------------------------


def expand_template(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One spec per seed row of `spec['template']` (optionally only the rows whose seed
    columns take the values in `filter`); every text field is formatted with the row, and the
    name defaults to the row's key (e.g. `{class}`)."""
    wanted = {k: v if isinstance(v, list) else [v] for k, v in spec.get("filter", {}).items()}
    rows = [r for r in template_rows(spec["template"])
            if all(r[k] in values for k, values in wanted.items())]
    pattern = {"name": "{" + template_key(spec["template"]) + "}",
               **{k: v for k, v in spec.items() if k not in {"template", "filter"}}}
    return [{k: v.format(**row) if isinstance(v, str) else v for k, v in pattern.items()}
            for row in rows]


def expand_names(value: Any) -> Any:
    """`value` with every `{template: ...}` item of a list replaced by the names it stands
    for: how checks list every class or feature without naming them."""
    if isinstance(value, dict):
        return {k: expand_names(v) for k, v in value.items()}
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for item in value:
        if isinstance(item, dict) and "template" in item:
            out += [spec["name"] for spec in expand_template(item)]
        else:
            out.append(expand_names(item))
    return out


def _column(spec: dict[str, Any], generated: bool = False) -> Column:
    if "like" in spec:
        base = contract(spec["like"]).column(spec["name"])
        spec = {"type": base.type, "description": base.description, "unit": base.unit,
                **{k: v for k, v in spec.items() if k != "like"}}
    return Column(
        name=str(spec["name"]),
        type=spec["type"].upper(),
        required=bool(spec.get("required", False)),
        nullable=bool(spec.get("nullable", True)),
        aliases=tuple(spec.get("aliases", ())),
        description=" ".join(str(spec.get("description", "")).split()),
        unit=str(spec.get("unit", "")),
        generated=generated,
        optional=bool(spec.get("optional", False)),
    )


def parse_columns(specs: Sequence[dict[str, Any]], generated: bool = False
                  ) -> tuple[Column, ...]:
    """Column entries of a contract, templates expanded in place."""
    out: list[Column] = []
    for spec in specs:
        if "columns_of" in spec:  # every column a file provides for that table, in order
            out += contract(spec["columns_of"]).input_columns
            continue
        expanded = expand_template(spec) if "template" in spec else [spec]
        out += [_column(s, generated) for s in expanded]
    return tuple(out)


def _relative(path: Path, folder: Path) -> str:
    """`path` as the checkout names it (schemas/..., sql/...), given its top folder."""
    return str(path.relative_to(folder.parent))


def _schema_contract(path: Path) -> TableContract:
    spec = yaml.safe_load(path.read_text())
    return TableContract(
        table=spec["table"],
        description=" ".join(str(spec.get("description", "")).split()),
        grain=spec.get("grain", ""),
        layer=spec["table"].split(".")[0],
        materialized="python",
        origin=_relative(path, path.parent),  # schemas/<table>.yaml
        columns=parse_columns(spec.get("generated", ()), generated=True)
        + parse_columns(spec["columns"]),
        key=tuple(spec.get("key", ())),
        natural_key=tuple(spec.get("natural_key", ())),
    )


def sidecar_contract(spec: dict[str, Any], layer: str, origin: str) -> TableContract:
    """The contract a sidecar declares; its key is its first unique check."""
    unique = expand_names((spec.get("checks") or {}).get("unique", []))
    first = unique[0] if unique else []
    key = tuple(first) if isinstance(first, list) else (first,)
    return TableContract(
        table=spec["name"],
        description=" ".join(str(spec.get("description", "")).split()),
        grain=spec.get("grain", ""),
        layer=layer,
        materialized=spec.get("materialized", "table"),
        origin=origin,
        columns=parse_columns(spec.get("columns") or ()),
        key=key,
    )


@dataclass(frozen=True)
class Sidecar:
    """A model's `.yml` beside its SQL, read once and shared by the contracts and the runner."""

    path: Path
    layer: str
    spec: dict[str, Any]

    @property
    def origin(self) -> str:
        return _relative(self.path, self.path.parents[1])


@cache
def sidecars(root: Path | None = None) -> dict[str, Sidecar]:
    """Every sidecar under `root` (default: the checkout's sql/) by the table it declares."""
    root = root or sql_dir()
    found: dict[str, Sidecar] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).glob("*.yml")):
            spec = yaml.safe_load(path.read_text())
            if spec["name"] in found:
                raise ValueError(f"table {spec['name']} declared twice ({path})")
            found[spec["name"]] = Sidecar(path, layer, spec)
    return found


@cache
def contract(table: str) -> TableContract:
    """The contract of `table`, from schemas/<table>.yaml or its sidecar in sql/."""
    path = schemas_dir() / f"{table}.yaml"
    if path.exists():
        return _schema_contract(path)
    sidecar = sidecars().get(table)
    if sidecar is None:
        raise FileNotFoundError(f"no contract for table {table!r}: expected {path} or a "
                                f"sidecar sql/<layer>/{table.split('.')[-1]}.yml")
    return sidecar_contract(sidecar.spec, sidecar.layer, sidecar.origin)


def all_contracts() -> list[TableContract]:
    """Every declared table: the schemas/ contracts, then the sidecars in build order."""
    names = [p.stem for p in sorted(schemas_dir().glob("*.yaml"))] + list(sidecars())
    return [contract(name) for name in names]


def detection_key() -> tuple[str, ...]:
    """The columns that identify a detection in the catalogue (raw.detections natural_key)."""
    key = contract("raw.detections").natural_key
    if not key:
        raise ValueError("schemas/raw.detections.yaml declares no natural_key")
    return key


# ------------------------------------------------------------------------------------------
# Creating and verifying tables
# ------------------------------------------------------------------------------------------


def create_table(con: duckdb.DuckDBPyConnection, table: str, *, name: str | None = None,
                 replace: bool = False, if_not_exists: bool = False,
                 optional: bool = True) -> None:
    """Create `table` (or `name`, e.g. its staging table) with its contract's columns."""
    if replace and if_not_exists:
        raise ValueError("create_table: replace and if_not_exists exclude each other")
    verb = ("CREATE OR REPLACE TABLE" if replace
            else "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE")
    columns = [c for c in contract(table).columns if optional or not c.optional]
    con.execute(_create_sql(verb, name or table, columns))


def relation_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a table's or view's columns, in order."""
    schema, name = table.split(".")
    return [(str(n), str(t)) for n, t in con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = "
        "current_database() AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema, name]).fetchall()]


def _problems(expected: list[tuple[str, str]], actual: list[tuple[str, str]]) -> list[str]:
    declared, built = dict(expected), dict(actual)
    problems = [f"column {quote_ident(n)} is missing (declared {t})"
                for n, t in expected if n not in built]
    problems += [f"column {quote_ident(n)} ({t}) is not declared"
                 for n, t in actual if n not in declared]
    problems += [f"column {quote_ident(n)} is {built[n]}, declared {t}"
                 for n, t in expected if n in built and built[n] != t]
    if not problems:  # same columns and types, another order
        problems.append(f"columns are in the order {', '.join(n for n, _ in actual)}; "
                        f"declared {', '.join(n for n, _ in expected)}")
    return problems


def check_columns(con: duckdb.DuckDBPyConnection, table: str, declared: Sequence[Column],
                  origin: str = "") -> None:
    """Fail unless `table`'s columns are `declared`, in order, with the same DuckDB types
    (an optional declared column may be absent)."""
    actual = relation_columns(con, table)
    if not actual:
        raise ContractError(f"{table}: no such table or view in the warehouse")
    present = {n for n, _ in actual}
    expected = [(c.name, c.type) for c in declared if not c.optional or c.name in present]
    if actual != expected:
        where = f" ({origin})" if origin else ""
        raise ContractError(f"{table} does not match its contract{where}: "
                            + "; ".join(_problems(expected, actual)))


def check_contract(con: duckdb.DuckDBPyConnection, table: str, *, name: str | None = None
                   ) -> None:
    """Verify a table just written (or `name`, e.g. its staging table) against the contract of
    `table`: call it after writing, as the runner does after building each SQL model."""
    declared = contract(table)
    check_columns(con, name or table, declared.columns, declared.origin)


# ------------------------------------------------------------------------------------------
# The input-file view (ingest): kept for the packages that validate and load files
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSchema:
    """An input contract as the loaders read it: `columns` are those a file provides,
    `generated` those the warehouse adds."""

    table: str
    description: str
    grain: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    generated: tuple[Column, ...]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.generated + self.columns

    @property
    def input_columns(self) -> tuple[Column, ...]:
        return self.columns

    def ddl(self, table: str | None = None) -> str:
        return _create_sql("CREATE TABLE", table or self.table, self.all_columns)


@cache
def load_schema(table: str) -> TableSchema:
    """The input view of `contract(table)`."""
    full = contract(table)
    return TableSchema(table=full.table, description=full.description, grain=full.grain,
                       key=full.key, columns=full.input_columns, generated=full.generated)


def resolve_columns(schema: TableSchema | TableContract, available: list[str], origin: str
                    ) -> dict[str, str | None]:
    """Map each contract column to the input column that provides it (by name or alias).

    Matching is case-insensitive, as VOTable and CSV producers differ in case. A missing required
    column is an error naming the file and the expected type; a missing optional one maps to None.
    """
    by_lower = {name.lower(): name for name in available}
    mapping: dict[str, str | None] = {}
    missing: list[str] = []
    for col in schema.input_columns:
        found = next(
            (by_lower[n.lower()] for n in (col.name, *col.aliases) if n.lower() in by_lower), None
        )
        if found is None and col.required:
            alias_note = f" (or {', '.join(col.aliases)})" if col.aliases else ""
            missing.append(f"{col.name}{alias_note}: {col.type}")
        mapping[col.name] = found
    if missing:
        raise SchemaError(
            f"{origin}: missing required column(s) for {schema.table}: "
            + "; ".join(missing)
            + f". Columns found: {', '.join(available) or '(none)'}"
        )
    return mapping
