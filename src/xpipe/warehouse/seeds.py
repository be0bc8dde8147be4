"""The class list and feature order, read from the seeds the SQL models use (one source of
truth)."""

from __future__ import annotations

import csv
from functools import cache

from xpipe.core.resources import sql_dir


def _seed_rows(name: str) -> list[dict[str, str]]:
    with (sql_dir() / "seeds" / f"{name}.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@cache
def class_names() -> tuple[str, ...]:
    """The ten classes in published column order (ties in argmax go to the earlier class)."""
    rows = sorted(_seed_rows("classes"), key=lambda r: int(r["class_order"]))
    return tuple(r["class"] for r in rows)


@cache
def aggregated_classes() -> dict[str, str]:
    return {r["class"]: r["agg_class"] for r in _seed_rows("classes")}


@cache
def feature_names() -> tuple[str, ...]:
    rows = sorted(_seed_rows("features"), key=lambda r: int(r["position"]))
    return tuple(r["feature"] for r in rows)


@cache
def class_otypes() -> dict[str, str]:
    """Today's SIMBAD otype code of each class: its first `reference` spelling in the seed,
    which lists the current codes before the pre-2022 long names."""
    first: dict[str, str] = {}
    for r in _seed_rows("otype_classes"):
        if r["kind"] == "reference":
            first.setdefault(r["class"], r["otype"])
    return {c: first[c] for c in class_names()}
