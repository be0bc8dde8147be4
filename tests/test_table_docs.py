"""docs/tables.md is generated from the contracts (`make docs`): it must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from xpipe.warehouse.contracts import all_contracts

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "table_docs.py"


def _script():
    spec = importlib.util.spec_from_file_location("table_docs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_docs_are_current() -> None:
    docs = _script()
    assert docs.OUT.read_text() == docs.render(), (
        "docs/tables.md differs from the contracts: run `make docs` and commit it")


def test_table_docs_cover_every_table_and_column() -> None:
    text = _script().render()
    for contract in all_contracts():
        section = text.split(f"## `{contract.table}`\n", 1)[1].split("\n## ", 1)[0]
        for i, col in enumerate(contract.columns, start=1):
            assert f"| {i} | `{col.name}` | {col.type} | " in section, (contract.table, col.name)
