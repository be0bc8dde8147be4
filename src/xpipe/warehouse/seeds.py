"""The classes, aggregated classes, their groups and the features, read from the seeds in
`sql/seeds/` (the one source of truth: the SQL templates, the table contracts and the Python
steps all read them from here)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from xpipe.core.resources import sql_dir

Row = dict[str, str]


@cache
def seed_rows(name: str) -> tuple[Row, ...]:
    """The rows of `sql/seeds/<name>.csv`, in file order, every value as text."""
    with (sql_dir() / "seeds" / f"{name}.csv").open(newline="") as handle:
        return tuple(csv.DictReader(handle))


def _class_rows() -> tuple[Row, ...]:
    return tuple(sorted(seed_rows("classes"), key=lambda r: int(r["class_order"])))


def _agg_class_rows() -> tuple[Row, ...]:
    first: dict[str, Row] = {}
    for row in _class_rows():
        first.setdefault(row["agg_class"], {"agg_class": row["agg_class"]})
    return tuple(first.values())


def _feature_rows() -> tuple[Row, ...]:
    return tuple(sorted(seed_rows("features"), key=lambda r: int(r["position"])))


def _limit_column_rows() -> tuple[Row, ...]:
    """Every confidence-limit column: each feature's lower then upper one, in seed order."""
    return tuple({**r, "column": r[key], "side": side} for r in seed_rows("confidence_limits")
                 for side, key in (("lower", "lolim_column"), ("upper", "hilim_column")))


# What a `{template: NAME}` in a contract or check expands over: one row per column, in order.
TEMPLATES: dict[str, tuple[str, Callable[[], tuple[Row, ...]]]] = {
    "classes": ("class", _class_rows),
    "agg_classes": ("agg_class", _agg_class_rows),
    "class_groups": ("agg_class", lambda: seed_rows("class_groups")),
    "features": ("feature", _feature_rows),
    "confidence_limits": ("feature", lambda: seed_rows("confidence_limits")),
    "confidence_limit_columns": ("column", _limit_column_rows),
}


def _template(template: str) -> tuple[str, Callable[[], tuple[Row, ...]]]:
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template]


def template_rows(template: str) -> tuple[Row, ...]:
    """The seed rows a template expands over (e.g. the ten classes in published order)."""
    return _template(template)[1]()


def template_key(template: str) -> str:
    """The seed column naming each row (the default column name)."""
    return _template(template)[0]


@cache
def class_names() -> tuple[str, ...]:
    """The ten classes in published column order (ties in argmax go to the earlier class)."""
    return tuple(r["class"] for r in _class_rows())


@cache
def aggregated_classes() -> dict[str, str]:
    """Class → aggregated class (AGN, Seyfert, XB, YSO)."""
    return {r["class"]: r["agg_class"] for r in _class_rows()}


@cache
def aggregated_class_names() -> tuple[str, ...]:
    """The aggregated classes in the order of their first class."""
    return tuple(r["agg_class"] for r in _agg_class_rows())


@cache
def feature_names() -> tuple[str, ...]:
    """The 12 clustering features in model column order."""
    return tuple(r["feature"] for r in _feature_rows())


@cache
def feature_transforms() -> dict[str, str]:
    """Feature → its preprocessing: none, minmax or log_minmax (METHOD §3)."""
    return {r["feature"]: r["transform"] for r in _feature_rows()}


@cache
def class_otypes() -> dict[str, str]:
    """Today's SIMBAD otype code of each class: its first `reference` spelling in the seed,
    which lists the current codes before the pre-2022 long names."""
    first: dict[str, str] = {}
    for r in seed_rows("otype_classes"):
        if r["kind"] == "reference":
            first.setdefault(r["class"], r["otype"])
    return {c: first[c] for c in class_names()}


@dataclass(frozen=True)
class PhysicalRange:
    """The possible values of one detection column (sql/seeds/physical_ranges.csv)."""

    column: str
    min: float | None
    max: float | None
    min_inclusive: bool
    max_inclusive: bool

    def interval(self) -> str:
        """`[-1, 1]`, `[0, 360)`, `[0, inf)`."""
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "inf" if self.max is None else f"{self.max:g}"
        return (("[" if self.min_inclusive else "(") + f"{lo}, {hi}"
                + ("]" if self.max_inclusive else ")"))


def _bound(text: str) -> float | None:
    return float(text) if text.strip() else None


@cache
def physical_ranges() -> dict[str, PhysicalRange]:
    """Column → its physically possible range, in seed order."""
    return {r["column_name"]: PhysicalRange(
        r["column_name"], _bound(r["min_value"]), _bound(r["max_value"]),
        r["min_inclusive"].strip().lower() == "true", r["max_inclusive"].strip().lower() == "true")
        for r in seed_rows("physical_ranges")}


@dataclass(frozen=True)
class ConfidenceLimit:
    """The published error of one feature (sql/seeds/confidence_limits.csv): the raw.detections
    columns of its lower and upper confidence limits and the interval's confidence level."""

    feature: str
    lolim: str
    hilim: str
    level: float


@cache
def confidence_limits() -> dict[str, ConfidenceLimit]:
    """Feature → its published confidence limits, in seed order (the features without an entry
    have no published errors)."""
    return {r["feature"]: ConfidenceLimit(r["feature"], r["lolim_column"], r["hilim_column"],
                                          float(r["confidence_level"]))
            for r in seed_rows("confidence_limits")}


def limit_columns() -> list[str]:
    """The raw.detections columns of the confidence limits, each feature's lower then upper."""
    return [c for limit in confidence_limits().values() for c in (limit.lolim, limit.hilim)]
