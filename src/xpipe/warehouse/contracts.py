"""Table contracts from `schemas/*.yaml`: DDL for the warehouse and validation of input files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import yaml

from xpipe.core.resources import schemas_dir

NUMERIC_TYPES = {"DOUBLE", "FLOAT", "INTEGER", "SMALLINT", "BIGINT", "TINYINT"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    nullable: bool = True
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class TableSchema:
    table: str
    description: str
    grain: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    generated: tuple[Column, ...]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.generated + self.columns

    def ddl(self, table: str | None = None) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in self.all_columns)
        return f"CREATE TABLE {table or self.table} (\n  {cols}\n)"


class SchemaError(ValueError):
    """Input does not match a table contract; the message names the file, column or row."""


def _column(spec: dict) -> Column:
    return Column(
        name=spec["name"],
        type=spec["type"].upper(),
        required=bool(spec.get("required", False)),
        nullable=bool(spec.get("nullable", True)),
        aliases=tuple(spec.get("aliases", ())),
        description=spec.get("description", ""),
    )


@cache
def load_schema(table: str) -> TableSchema:
    path = schemas_dir() / f"{table}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no schema file for table {table!r}: expected {path}")
    spec = yaml.safe_load(path.read_text())
    return TableSchema(
        table=spec["table"],
        description=spec.get("description", "").strip(),
        grain=spec.get("grain", ""),
        key=tuple(spec.get("key", ())),
        columns=tuple(_column(c) for c in spec["columns"]),
        generated=tuple(_column(c) for c in spec.get("generated", ())),
    )


def resolve_columns(schema: TableSchema, available: list[str], origin: str
                    ) -> dict[str, str | None]:
    """Map each contract column to the input column that provides it (by name or alias).

    Matching is case-insensitive, as VOTable and CSV producers differ in case. A missing required
    column is an error naming the file and the expected type; a missing optional one maps to None.
    """
    by_lower = {name.lower(): name for name in available}
    mapping: dict[str, str | None] = {}
    missing: list[str] = []
    for col in schema.columns:
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
