"""`xpipe explain NAME`: why one source got its master class (the paper's Fig. 10).

Everything shown is read from the stored results — the per-detection probabilities of
results.detection_class, the per-class mean and spread of results.source_class_probs and the
votes of results.source_class — so the explanation is exactly what the catalogue says. The only
number computed here is the 95 % band of each mean: a Student-t interval, mean ± t(0.975, n−1)
· s / √n with s the sample standard deviation over the n detections (none for one detection),
clipped to [0, 1].

When `xpipe uncertainty` ran for the stored classification, the measurement errors are shown
too: each detection's 68 % and 95 % intervals over the draws (results.detection_class_intervals)
and the source's class stability (results.source_class_stability). Otherwise the text says how
to get them, or that they are stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from scipy import stats

from xpipe.core.errors import InputError
from xpipe.predict.draws import NO_ERRORS
from xpipe.predict.uncertainty import UncertaintyState, uncertainty_state
from xpipe.science.common import require_classified
from xpipe.science.figures import explain_figure
from xpipe.warehouse.connection import scalar
from xpipe.warehouse.seeds import aggregated_classes, class_names


class SourceNotClassifiedError(InputError):
    """The source exists but has no classification to explain (or does not exist)."""


def mean_band(mean: np.ndarray, std_pop: np.ndarray, n: int, level: float = 0.95
              ) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean from the population std of n values (NaN when n < 2)."""
    if n < 2:
        nan = np.full_like(np.asarray(mean, dtype=float), np.nan)
        return nan, nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * np.asarray(std_pop) / np.sqrt(n - 1)
    return np.clip(mean - half, 0.0, 1.0), np.clip(mean + half, 0.0, 1.0)


@dataclass(frozen=True)
class Explanation:
    name: str
    source: dict[str, object]  # the results.source_class row
    detections: pl.DataFrame  # results.detection_class rows of the source
    summary: pl.DataFrame  # class, agg_class, mean, std, band_low, band_high
    uncertainty: UncertaintyState = field(default_factory=lambda: UncertaintyState("absent"))
    # when current: results.detection_class_intervals of the source's detections (det_id, class,
    # probability, lo68, hi68, lo95, hi95) and results.detection_class_uncertainty joined in
    intervals: pl.DataFrame | None = None
    stability: dict[str, object] | None = None  # the results.source_class_stability row

    def title(self) -> str:
        votes = (f"master class {self.source['master_class']} "
                 f"({self.source['agg_master_class']})" if self.source["is_unique"]
                 else f"ambiguous: hard {self.source['hard_class']}, "
                      f"soft {self.source['soft_class']}")
        return (f"{self.name} — {self.source['detection_count']} classified detection(s); "
                f"{votes}")

    def text(self) -> str:
        """A plain-text account: detections, per-class means with bands, and the votes."""
        classes = class_names()
        lines = [self.title(), "", "detections (cluster, predicted class, probabilities):"]
        header = f"  {'obsid':>7} {'cluster':>7} {'predicted':<10}" + "".join(
            f"{c[:9]:>10}" for c in classes)
        lines.append(header)
        for row in self.detections.iter_rows(named=True):
            probs = "".join("{:>10}".format("—" if row[c] is None else f"{row[c]:.3f}")
                            for c in classes)
            lines.append(f"  {row['obsid']:>7} {row['cluster']:>7} "
                         f"{row['pred_class'] or 'none':<10}{probs}")
        lines += ["", "mean probability per class (population std; 95 % band of the mean):"]
        for row in self.summary.iter_rows(named=True):
            band = ("n/a (one detection)" if row["band_low"] is None
                    else f"[{row['band_low']:.3f}, {row['band_high']:.3f}]")
            lines.append(f"  {row['class']:<10} {row['agg_class']:<8} "
                         f"{row['mean_probability']:.3f} ± {row['std_probability']:.3f}  {band}")
        counts = self.detections["pred_class"].drop_nulls().value_counts(sort=True)
        lines += ["", "hard vote: most frequent predicted class (ties: first in detection "
                      "order) → " + str(self.source["hard_class"]),
                  "  counts: " + ", ".join(f"{r['pred_class']} {r['count']}"
                                           for r in counts.iter_rows(named=True)),
                  f"soft vote: highest mean probability → {self.source['soft_class']}",
                  ("votes agree: uniquely classified as "
                   f"{self.source['master_class']} ({self.source['agg_master_class']})"
                   if self.source["is_unique"]
                   else "votes differ: listed in results.ambiguous_classification")]
        return "\n".join([*lines, "", *self.uncertainty_lines()])

    def uncertainty_lines(self) -> list[str]:
        """The measurement errors: per detection the predicted class's intervals, then the
        source's class stability; or why they are not shown."""
        state = self.uncertainty
        if not state.current or self.intervals is None or self.stability is None:
            return ["measurement errors: " + state.message()]
        lines = [f"measurement errors ({state.n_draws:,} draws, seed {state.seed}; "
                 "the predicted class's probability, 68 % and 95 % intervals over the draws):",
                 f"  {'obsid':>7} {'predicted':<10} {'prob':>6} {'68 %':>15} {'95 %':>15} "
                 f"{'keeps':>6}  other class"]
        for row in self.intervals.filter(pl.col("class") == pl.col("pred_class")).sort(
                "obsid", "det_id").iter_rows(named=True):
            if row["flag"] == NO_ERRORS:
                lines.append(f"  {row['obsid']:>7} {row['pred_class']:<10} "
                             f"{row['probability']:>6.3f}  no published errors: not drawn")
                continue
            other = ("—" if row["other_class"] is None
                     else f"{row['other_class']} {row['other_fraction']:.1%}")
            lines.append(f"  {row['obsid']:>7} {row['pred_class']:<10} {row['probability']:>6.3f}"
                         f" {interval(row['lo68'], row['hi68']):>15}"
                         f" {interval(row['lo95'], row['hi95']):>15}"
                         f" {percent(row['pred_agreement']):>6}  {other}"
                         + (f"  ({row['flag']})" if row["flag"] else ""))
        return [*lines, stability_line(self.stability)]

    def stability_text(self) -> str:
        """One line for the figure: the class stability, or why there is none."""
        if not self.uncertainty.current or self.stability is None:
            return self.uncertainty.message()
        return stability_line(self.stability)

    def figure(self) -> Figure:
        return explain_figure(self.detections, self.summary, classes=class_names(),
                              agg_of=aggregated_classes(), title=self.title(),
                              votes={"hard": str(self.source["hard_class"]),
                                     "soft": str(self.source["soft_class"])},
                              intervals=self.intervals, note=self.stability_text())


def percent(value: object) -> str:
    return "—" if value is None else f"{float(value):.1%}"  # type: ignore[arg-type]


def interval(low: object, high: object) -> str:
    return "—" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def stability_line(row: dict[str, object]) -> str:
    """The source's class stability in words; NULL is 'no published errors', never 1."""
    if row["class_stability"] is None:
        return (f"class stability: none — no detection of the source has published errors "
                f"(flag '{row['flag']}'), so nothing was drawn")
    other = ("every draw keeps it" if row["other_outcome"] is None
             else f"most frequent other outcome: {row['other_outcome']} "
                  f"({percent(row['other_fraction'])})")
    return (f"class stability: {row['outcome']} holds in {percent(row['class_stability'])} of "
            f"the draws (aggregated class {percent(row['agg_class_stability'])}; hard vote "
            f"{percent(row['hard_stability'])}, soft vote {percent(row['soft_stability'])}); "
            f"{other}" + (f"; flag '{row['flag']}'" if row["flag"] else ""))


def uncertainty_rows(con: duckdb.DuckDBPyConnection, name: str
                     ) -> tuple[pl.DataFrame, dict[str, object] | None]:
    """The source's per-detection intervals (with each detection's agreement and flag) and its
    stability row, from the stored uncertainty tables."""
    intervals = con.sql(
        "SELECT i.det_id, u.obsid, i.class, u.pred_class, i.probability, i.mean_probability, "
        "i.lo68, i.hi68, i.lo95, i.hi95, u.pred_agreement, u.other_class, u.other_fraction, "
        "u.flag FROM results.detection_class_intervals AS i "
        "JOIN results.detection_class_uncertainty AS u USING (det_id) "
        "WHERE i.name = $name ORDER BY u.obsid, i.det_id, i.class", params={"name": name}).pl()
    stability = con.sql("SELECT * FROM results.source_class_stability WHERE name = $name",
                        params={"name": name}).pl()
    return intervals, (stability.row(0, named=True) if stability.height else None)


def why_not_classified(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """The reason a source has no master class, in words."""
    n_raw = scalar(con, "SELECT count(*) FROM raw.detections WHERE name = ?", [name])
    if not n_raw:
        return (f"no source named {name!r} in the warehouse (names look like "
                "'2CXO J123456.7+123456'; try `xpipe sql \"SELECT name FROM "
                "results.source_class LIMIT 5\"`)")
    roles = con.execute("SELECT role, any_value(label_class), any_value(otype), count(*) "
                        "FROM model.detection_roles WHERE name = ? GROUP BY role",
                        [name]).fetchall()
    if not roles:
        return (f"{name}: none of its {n_raw} detection(s) passed the selection and cleaning "
                "(flux significance, spectral fits and all 12 features)")
    kinds = {role: (label, otype, n) for role, label, otype, n in roles}
    if "reference" in kinds:
        label, otype, n = kinds["reference"]
        return (f"{name} is a reference: its SIMBAD type {otype} is the class {label}; its "
                f"{n} detection(s) train the kernel and are not classified")
    if "excluded" in kinds:
        _, otype, n = kinds["excluded"]
        return (f"{name} is excluded: its SIMBAD type {otype} is neither one of the ten "
                f"classes nor uninformative ({n} detection(s))")
    return f"{name}: its detections lie in clusters without usable reference classes"


def explain_source(con: duckdb.DuckDBPyConnection, name: str) -> Explanation:
    require_classified(con)
    name = name.strip()
    source = con.sql("SELECT * FROM results.source_class WHERE name = $name",
                     params={"name": name}).pl()
    if source.is_empty():
        raise SourceNotClassifiedError(why_not_classified(con, name))
    probs = ", ".join(f'"{c}"' for c in class_names())
    detections = con.sql(
        f"SELECT det_id, obsid, cluster, pred_class, {probs} FROM results.detection_class "
        "WHERE name = $name ORDER BY obsid, det_id", params={"name": name}).pl()
    summary = con.sql(
        "SELECT p.class, c.agg_class, p.mean_probability, p.std_probability "
        "FROM results.source_class_probs AS p JOIN model.classes AS c USING (class) "
        "WHERE p.name = $name ORDER BY c.class_order", params={"name": name}).pl()
    n = int(source["detection_count"][0])
    low, high = mean_band(summary["mean_probability"].to_numpy(),
                          summary["std_probability"].to_numpy(), n)
    summary = summary.with_columns(band_low=pl.Series(low, nan_to_null=True),
                                   band_high=pl.Series(high, nan_to_null=True))
    state = uncertainty_state(con)
    if not state.current:
        return Explanation(name, source.row(0, named=True), detections, summary, state)
    intervals, stability = uncertainty_rows(con, name)
    return Explanation(name, source.row(0, named=True), detections, summary, state, intervals,
                       stability)
