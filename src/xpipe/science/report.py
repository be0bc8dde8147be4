"""`xpipe report`: one self-contained HTML page with the paper's tables and figures for the run
stored in the warehouse.

Figures are embedded as base64 PNG, styles inline: the file opens from disk with no network.
The report only reads the warehouse. Analyses that were not run yet (`xpipe bic`, `validate`,
`stability`, `uncertainty`) get a section that says so and names the command; analyses computed
for an earlier classification are shown with a warning that they are stale.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import cast

import duckdb
import numpy as np
import polars as pl
from matplotlib.figure import Figure

from xpipe import __version__
from xpipe.predict.batch import stage_counts
from xpipe.predict.uncertainty import uncertainty_state
from xpipe.science import class_stability, figures
from xpipe.science.common import classify_params, classify_run_id, require_classified
from xpipe.warehouse.connection import table_exists
from xpipe.warehouse.seeds import aggregated_class_names, class_names
from xpipe.warehouse.sql_models import discover_models

AGG_ORDER = aggregated_class_names()
PAPER_GROUP_RECALL = {"young stars": 0.88, "large accretors": 0.75, "small accretors": 0.66}
PAPER_KAPPA = 0.94
SECTION_LABELS = ("metadata", "stages", "bic", "clusters", "sky maps", "density maps",
                  "validation", "stability", "uncertainty")


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    body: str


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def figure_html(fig_id: str, fig: Figure, caption: str, alt: str) -> str:
    """A <figure> with the PNG inline; `fig_id` is what the browser test looks for."""
    uri = figures.png_data_uri(fig)
    return (f'<figure id="{esc(fig_id)}" class="xp-figure"><img src="{uri}" alt="{esc(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def missing_html(what: str, command: str) -> str:
    return (f'<div class="missing"><strong>Not computed yet:</strong> {esc(what)}. Run '
            f"<code>{esc(command)}</code> (or <code>make report</code>, which runs it first), "
            "then <code>xpipe report</code> again.</div>")


def stale_html(command: str, run: str | None) -> str:
    return (f'<div class="stale"><strong>Stale:</strong> computed for an earlier '
            f"classification (run {esc(run)}); rerun <code>{esc(command)}</code> for the stored "
            "one.</div>")


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "—" if np.isnan(value) else f"{value:.{digits}f}"
    return esc(value)


def table_html(frame: pl.DataFrame, headers: dict[str, str] | None = None,
               formats: dict[str, Callable[[object], str]] | None = None,
               css: str = "") -> str:
    headers = headers or {c: c for c in frame.columns}
    formats = formats or {}
    head = "".join(f"<th>{esc(h)}</th>" for h in headers.values())
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers.values()) else ""
    rows = []
    for rec in frame.select(list(headers)).iter_rows(named=True):
        cells = "".join(f"<td>{formats.get(c, fmt)(rec[c])}</td>" for c in headers)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="{esc(css)}">{thead}<tbody>{"".join(rows)}</tbody></table>'


def percent(value: object) -> str:
    return "—" if value is None else f"{100 * float(cast(float, value)):.1f} %"


def analysis_state(con: duckdb.DuckDBPyConnection, table: str) -> tuple[bool, str | None]:
    """(exists, the classification run it was computed for)."""
    if not table_exists(con, table):
        return False, None
    row = con.execute(f"SELECT any_value(classify_run_id) FROM {table}").fetchall()
    return True, (row[0][0] if row else None)


# --- sections ---------------------------------------------------------------------------------

def metadata_section(con: duckdb.DuckDBPyConnection, warehouse: str) -> Section:
    runs = con.sql(
        "SELECT run_id, command, status, strftime(started_at, '%Y-%m-%d %H:%M:%S') AS started, "
        "round(epoch(finished_at - started_at), 1) AS seconds, xpipe_version, "
        "CAST(params AS VARCHAR) AS params, error FROM meta.runs ORDER BY started_at DESC"
    ).pl()
    current = classify_run_id(con)
    params = classify_params(con)
    facts = pl.DataFrame({"item": ["warehouse", "report written", "xpipe version",
                                   "classification run", "classification parameters"],
                          "value": [warehouse, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                    __version__, current,
                                    json.dumps(asdict(params), sort_keys=True)]})
    body = (table_html(facts, {"item": "", "value": ""}, css="facts")
            + "<h3>Every recorded run (meta.runs)</h3>"
            + table_html(runs, {"run_id": "run", "command": "command", "status": "status",
                                "started": "started (UTC)", "seconds": "seconds",
                                "params": "parameters", "error": "error"},
                         formats={"params": lambda v: f"<code>{esc(v)}</code>",
                                  "seconds": lambda v: fmt(v, 1)}, css="runs"))
    return Section("metadata", "Run metadata", body)


def stages_section(con: duckdb.DuckDBPyConnection) -> Section:
    counts = stage_counts(con)
    chain = [("pulled", counts["detections"]), ("selected", counts["selected"]),
             ("cleaned", counts["cleaned"]), ("labeled (references)", counts["references"]),
             ("classified", counts["classified"]), ("sources", counts["sources"])]
    detail = pl.DataFrame({"stage": list(counts), "rows": list(counts.values())})
    body = (figure_html("fig-stages", figures.stages_figure(chain),
                        "Rows left at each stage: pulled → selected (significance and spectral "
                        "fits) → cleaned (all 12 features) → labeled (SIMBAD references) → "
                        "classified (targets with probabilities) → sources (master classes).",
                        "bar chart of rows per stage")
            + table_html(detail, {"stage": "stage", "rows": "rows"}, css="narrow"))
    return Section("stages", "Rows at each stage", body)


def bic_section(con: duckdb.DuckDBPyConnection, current: str, stored_k: int) -> Section:
    exists, run = analysis_state(con, "results.bic_curve")
    if not exists:
        return Section("bic", "Choosing K: the BIC curve (Fig. 1)",
                       missing_html("the BIC curve over K", "xpipe bic"))
    curve = con.sql("SELECT * FROM results.bic_curve ORDER BY k").pl()
    scores = con.sql("SELECT k, seed, bic, converged FROM results.bic_scores").pl()
    elbow = int(curve.filter(pl.col("is_elbow"))["k"][0])
    knee = int(curve.filter(pl.col("is_knee"))["k"][0])
    minimum = int(curve.filter(pl.col("is_minimum"))["k"][0])
    not_converged = int((~scores["converged"]).sum())
    body = (stale_html("xpipe bic", run) if run != current else "") + (
        f"<p>The elbow rule — the K after which one more component brings the largest drop in "
        f"BIC improvement, i.e. the sharpest bend of the gradient — picks <strong>K = {elbow}"
        f"</strong>. For comparison, the K farthest below the straight line joining the "
        f"curve's ends (both axes scaled to [0, 1]) is K = {knee}, and the lowest mean BIC is "
        f"at K = {minimum}. The stored clustering uses K = {stored_k}; the paper's elbow is "
        f"K = 6. {scores.height} fits, {not_converged} not converged within 100 EM "
        "iterations.</p>")
    body += figure_html("fig-bic", figures.bic_figure(curve, scores, stored_k),
                        "BIC of a full-covariance Gaussian mixture per K: mean over seeds with a "
                        "±1 standard deviation band and each seed's value (top); gradient of the "
                        "mean (bottom); dashed: the elbow the rule picks; dotted: the stored "
                        "clustering's K where it differs.", "BIC curve and its gradient")
    body += table_html(curve, {"k": "K", "n_seeds": "seeds", "bic_mean": "mean BIC",
                               "bic_std": "std", "gradient": "gradient",
                               "improvement_drop": "improvement drop",
                               "elbow_distance": "below chord", "is_elbow": "elbow"},
                       formats={"bic_mean": lambda v: fmt(v, 0), "bic_std": lambda v: fmt(v, 0),
                                "gradient": lambda v: fmt(v, 0),
                                "improvement_drop": lambda v: fmt(v, 0)}, css="narrow")
    return Section("bic", "Choosing K: the BIC curve (Fig. 1)", body)


def cluster_section(con: duckdb.DuckDBPyConnection) -> Section:
    sizes = con.sql("""
        SELECT c.cluster, count(*) AS detections, count(*) / sum(count(*)) OVER () AS share,
               count(*) FILTER (WHERE r.role = 'reference') AS references_,
               count(*) FILTER (WHERE r.role = 'target') AS targets,
               count(r.otype) AS with_simbad_type
        FROM model.detection_cluster AS c JOIN model.detection_roles AS r USING (det_id)
        GROUP BY c.cluster ORDER BY c.cluster""").pl()
    types = con.sql("""
        WITH typed AS (
            SELECT c.cluster, r.otype, count(*) AS n
            FROM model.detection_cluster AS c JOIN model.detection_roles AS r USING (det_id)
            WHERE r.otype IS NOT NULL GROUP BY ALL
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY cluster ORDER BY n DESC, otype) AS rank
            FROM typed
        )
        SELECT cluster, string_agg(otype || ' (' || n || ')', ', ' ORDER BY rank) AS top_types
        FROM ranked WHERE rank <= 10 GROUP BY cluster""").pl()
    table = sizes.join(types, on="cluster", how="left")
    body = ("<p>Cluster sizes and the ten most common SIMBAD types among each cluster's "
            "detections with a counterpart (the paper's Table 3; SIMBAD's current otype codes, "
            "counts in detections).</p>"
            + table_html(table, {"cluster": "cluster", "detections": "detections",
                                 "share": "share", "references_": "references",
                                 "targets": "targets", "with_simbad_type": "with SIMBAD type",
                                 "top_types": "ten most common SIMBAD types"},
                         formats={"share": percent}))
    return Section("clusters", "Clusters and their SIMBAD types (Table 3)", body)


def sky_section(con: duckdb.DuckDBPyConnection) -> Section:
    detections = con.sql("SELECT c.cluster, f.ra, f.dec FROM model.detection_cluster AS c "
                         "JOIN model.detection_features AS f USING (det_id)").pl()
    sources = con.sql("SELECT agg_master_class, ra, dec FROM results.source_class "
                      "WHERE is_unique").pl()
    parts = []
    for frame in (detections, sources):
        gl, gb = figures.galactic(frame["ra"].to_numpy(), frame["dec"].to_numpy())
        parts.append(frame.with_columns(l=pl.Series(gl), b=pl.Series(gb)))
    clusters = sorted(parts[0]["cluster"].unique().to_list())
    by_cluster = parts[0].with_columns(pl.format("cluster {}", "cluster").alias("group"))
    body = figure_html(
        "fig-sky-clusters",
        figures.sky_figure(by_cluster, "group", [f"cluster {c}" for c in clusters],
                           title="cleaned detections per cluster (galactic, Mollweide)", ncols=3),
        "Sky positions of the cleaned detections of each cluster in galactic coordinates "
        "(Mollweide; l = 0 at the centre, increasing to the left) — the paper's Fig. 2.",
        "sky maps per cluster")
    body += figure_html(
        "fig-sky-classes",
        figures.sky_figure(parts[1], "agg_master_class", AGG_ORDER,
                           title="uniquely classified sources per aggregated master class",
                           colours=figures.AGG_COLOURS),
        "Uniquely classified sources per aggregated master class, galactic coordinates — the "
        "paper's Fig. 8.", "sky maps per aggregated master class")
    return Section("sky", "Sky maps (Figs. 2, 8)", body)


def _extent(values: pl.Series, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    finite = values.drop_nulls().filter(values.drop_nulls().is_finite()).to_numpy()
    if len(finite) == 0:
        return 0.0, 1.0
    a, b = np.percentile(finite, [lo, hi])
    return (float(a), float(b)) if b > a else (float(a) - 0.5, float(a) + 0.5)


def density_section(con: duckdb.DuckDBPyConnection) -> Section:
    frame = con.sql("""
        SELECT 'SIMBAD references' AS sample, c.agg_class AS agg, f.hard_hm, f.hard_ms,
               f.var_prob_b, CASE WHEN f.var_ratio_b > 0 THEN log10(f.var_ratio_b) END
                   AS log_var_ratio_b
        FROM model.detection_roles AS r JOIN model.detection_features AS f USING (det_id)
        JOIN model.classes AS c ON c.class = r.label_class WHERE r.role = 'reference'
        UNION ALL
        SELECT 'classified targets', c.agg_class, f.hard_hm, f.hard_ms, f.var_prob_b,
               CASE WHEN f.var_ratio_b > 0 THEN log10(f.var_ratio_b) END
        FROM results.detection_class AS d JOIN model.detection_features AS f USING (det_id)
        JOIN model.classes AS c ON c.class = d.pred_class""").pl()
    rows = ["SIMBAD references", "classified targets"]
    body = figure_html(
        "fig-hardness",
        figures.density_figure(frame, "hard_ms", "hard_hm", row="sample", rows=rows,
                               column="agg", columns=AGG_ORDER, extent=(-1, 1, -1, 1),
                               labels=("hard_ms (M vs S)", "hard_hm (H vs M)"),
                               title="hardness ratios per aggregated class"),
        "Hardness-ratio planes per aggregated class: SIMBAD references (top, by their SIMBAD "
        "class) and classified targets (bottom, by predicted class); log colour scale — the "
        "paper's Fig. 3.", "hardness-ratio density maps")
    y0, y1 = _extent(frame["log_var_ratio_b"])
    body += figure_html(
        "fig-variability",
        figures.density_figure(frame, "var_prob_b", "log_var_ratio_b", row="sample", rows=rows,
                               column="agg", columns=AGG_ORDER, extent=(0, 1, y0, y1),
                               labels=("var_prob_b", "log10 var_ratio_b (σ / mean)"),
                               title="variability per aggregated class"),
        "Variability probability against the log of the broad-band variability ratio per "
        "aggregated class, references (top) and classified targets (bottom) — the paper's "
        "Figs. 6 and 7.", "variability density maps")
    return Section("features", "Hardness and variability per class (Figs. 3, 6, 7)", body)


def kappa_html(con: duckdb.DuckDBPyConnection) -> str:
    """Cohen's kappa from the vote_kappa model's SQL (works on a read-only connection)."""
    row = con.sql(discover_models()["results.vote_kappa"].sql).pl().row(0, named=True)
    return (f"<p>Hard and soft votes over all {row['n_sources']:,} classified sources: "
            f"observed agreement {percent(row['observed_agreement'])}, chance agreement "
            f"{percent(row['expected_agreement'])}, <strong>Cohen's kappa "
            f"{fmt(row['kappa'])}</strong> (paper: {PAPER_KAPPA}).</p>")


def validation_section(con: duckdb.DuckDBPyConnection, current: str) -> Section:
    title = "Validation on held-out references (Figs. 4, 5)"
    exists, run = analysis_state(con, "results.validation_detections")
    if not exists or not table_exists(con, "results.validation_metrics"):
        return Section("validation", title,
                       missing_html("the held-out validation", "xpipe validate")
                       + kappa_html(con))
    confusion = con.sql("SELECT * FROM results.validation_confusion").pl()
    metrics = con.sql("SELECT * FROM results.validation_metrics ORDER BY level, class_order").pl()
    n_test = int(con.sql("SELECT count(*) FROM results.validation_detections").fetchall()[0][0])
    body = (stale_html("xpipe validate", run) if run != current else "")
    body += (f"<p>{n_test:,} held-out reference detections (a stratified split of the labeled "
             "detections; the kernel fitted on the rest, within the stored clusters) classified "
             "as if unlabeled. Rows are SIMBAD classes, normalised to 100 %.</p>")
    group = metrics.filter(pl.col("level") == "group").with_columns(
        paper=pl.col("class").replace_strict(PAPER_GROUP_RECALL, default=None,
                                             return_dtype=pl.Float64))
    body += ("<h3>Against the paper</h3>"
             + table_html(group, {"class": "group", "support": "held out",
                                  "recall": "recovered (this run)", "paper": "paper",
                                  "predicted_share": "chance", "precision": "precision"},
                          formats={"recall": percent, "paper": percent,
                                   "predicted_share": percent, "precision": percent},
                          css="narrow"))
    for level, fig_id, caption in (
            ("class", "fig-confusion-classes", "the ten classes (paper Fig. 4)"),
            ("aggregated", "fig-confusion-aggregated", "the aggregated classes (paper Fig. 5)"),
            ("group", "fig-confusion-groups", "the physical groups")):
        part = confusion.filter(pl.col("level") == level)
        body += figure_html(fig_id, figures.confusion_figure(part, f"confusion matrix: {caption}"),
                            f"Row-normalised confusion matrix for {caption}; percentages of each "
                            "SIMBAD class's held-out detections, support in brackets.",
                            f"confusion matrix for {caption}")
    body += "<h3>Precision and recall per class</h3>" + table_html(
        metrics.filter(pl.col("level") != "group"),
        {"level": "level", "class": "class", "n_train": "train", "support": "held out",
         "recall": "recall", "precision": "precision", "f1": "F1",
         "predicted_share": "chance (predicted share)"},
        formats={"recall": percent, "precision": percent, "f1": fmt, "predicted_share": percent})
    body += "<h3>Agreement of the votes</h3>" + kappa_html(con)
    return Section("validation", title, body)


def stability_section(con: duckdb.DuckDBPyConnection, current: str) -> Section:
    title = "Stability of the clustering"
    exists, run = analysis_state(con, "results.stability")
    if not exists:
        return Section("stability", title,
                       missing_html("the stability of the clustering", "xpipe stability"))
    table = con.sql("SELECT * FROM results.stability ORDER BY NOT is_control, "
                    "alternative LIKE 'K=%', n_components, random_state").pl()
    body = (stale_html("xpipe stability", run) if run != current else "")
    body += ("<p>Each alternative clustering reruns the kernel and the votes in memory; the "
             "adjusted Rand index compares its clusters with the stored ones over every cleaned "
             "detection (1 = identical partition), and the changed shares count the stored "
             "sources whose master class differs ('ambiguous' counts as a class). The control "
             "refits the stored K and seed: what numerical noise alone changes.</p>")
    body += figure_html("fig-stability", figures.stability_figure(table),
                        "Adjusted Rand index against the stored clustering (left) and the share "
                        "of sources whose fine / aggregated master class changes (right).",
                        "stability bar charts")
    body += table_html(table, {"alternative": "alternative", "n_components": "K",
                               "random_state": "seed", "converged": "converged",
                               "adjusted_rand_index": "ARI",
                               "fine_changed_fraction": "fine class changed",
                               "agg_changed_fraction": "aggregated class changed",
                               "unique_fraction": "uniquely classified"},
                       formats={"fine_changed_fraction": percent,
                                "agg_changed_fraction": percent, "unique_fraction": percent})
    return Section("stability", title, body)


def uncertainty_section(con: duckdb.DuckDBPyConnection) -> Section:
    title = "Class stability under measurement errors"
    state = uncertainty_state(con)
    if state.status == "absent":
        return Section("uncertainty", title, missing_html(
            "the class stability under the catalogue's measurement errors", "xpipe uncertainty"))
    body = (stale_html("xpipe uncertainty", state.computed_for) if not state.current else "")
    shares = class_stability.stable_share(con)
    by_count = class_stability.by_detection_count(con)
    no_errors = int(shares["no_published_errors"].sum())
    body += (f"<p>Every classified detection drawn {state.n_draws:,} times (seed {state.seed}) "
             "from the catalogue's confidence limits and classified as a new detection; a "
             "source's <em>class stability</em> is the share of the draws whose vote gives its "
             "stored outcome (its master class, or 'ambiguous'). "
             f"{no_errors:,} source(s) have no published errors: their stability is undefined "
             "(NULL), not counted below as stable or unstable. See docs/uncertainty.md.</p>")
    body += figure_html("fig-class-stability",
                        figures.class_stability_figure(by_count, class_stability.per_source(con)),
                        "Class stability against the number of classified detections of the "
                        "source (left: median and quartiles; bars: share ≥ 0.9) and against the "
                        "highest broad-band flux significance of its detections (right: each "
                        "source, and the median per decile).",
                        "class stability against detection count and flux significance")
    body += ("<h3>Sources whose class holds in ≥ 90 % of the draws</h3>"
             + table_html(shares, {"outcome": "stored outcome", "agg_class": "aggregated",
                                   "sources": "sources",
                                   "no_published_errors": "no published errors",
                                   "median_stability": "median stability",
                                   "share_stable": "class holds ≥ 90 %",
                                   "share_agg_stable": "aggregated class holds ≥ 90 %"},
                          formats={"share_stable": percent, "share_agg_stable": percent},
                          css="narrow"))
    body += ("<h3>Against the number of detections</h3>"
             + table_html(by_count, {"detections": "detections", "sources": "sources",
                                     "with_errors": "with errors", "q25": "25 %",
                                     "median": "median", "q75": "75 %",
                                     "share_stable": "class holds ≥ 90 %",
                                     "share_agg_stable": "aggregated class holds ≥ 90 %"},
                          formats={"share_stable": percent, "share_agg_stable": percent},
                          css="narrow"))
    return Section("uncertainty", title, body)


# --- page -------------------------------------------------------------------------------------

STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 0; color: #222;
       background: #fafafa; }
header { background: #1f3b5a; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 1.5em; }
nav { padding: 8px 32px; background: #e8edf3; font-size: 0.9em; }
nav a { margin-right: 14px; color: #1f3b5a; }
main { max-width: 1150px; margin: 0 auto; padding: 8px 32px 48px 32px; }
section { background: white; border: 1px solid #dde3ea; border-radius: 6px;
          padding: 8px 20px 16px 20px; margin: 18px 0; }
h2 { color: #1f3b5a; border-bottom: 1px solid #dde3ea; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 0.82em; margin: 8px 0; }
th, td { border: 1px solid #d5dbe2; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
table.runs td:nth-child(6) { max-width: 420px; word-break: break-all; }
figure { margin: 14px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ec; }
figcaption { font-size: 0.85em; color: #555; margin-top: 4px; }
.missing { background: #fff4e5; border-left: 4px solid #f0a030; padding: 10px 14px; }
.stale { background: #fdecea; border-left: 4px solid #d9534f; padding: 10px 14px; }
code { background: #f1f3f5; padding: 0 3px; border-radius: 3px; }
"""


def render(sections: Sequence[Section], subtitle: str) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            "<title>xpipe report</title>"
            f"<style>{STYLE}</style></head><body>"
            "<header><h1>xpipe: unsupervised classes of X-ray detections</h1>"
            f"<div>{esc(subtitle)}</div></header><nav>{nav}</nav><main>{body}</main>"
            "</body></html>")


def build_report(con: duckdb.DuckDBPyConnection, warehouse: str,
                 progress: Callable[[str], None] | None = None) -> str:
    """The whole page for the classification stored in `con`."""
    require_classified(con)
    current = classify_run_id(con)
    stored_k = classify_params(con).n_components
    builders: list[Callable[[], Section]] = [
        lambda: metadata_section(con, warehouse),
        lambda: stages_section(con),
        lambda: bic_section(con, current, stored_k),
        lambda: cluster_section(con),
        lambda: sky_section(con),
        lambda: density_section(con),
        lambda: validation_section(con, current),
        lambda: stability_section(con, current),
        lambda: uncertainty_section(con),
    ]
    sections = []
    for label, build in zip(SECTION_LABELS, builders, strict=True):
        sections.append(build())
        if progress is not None:
            progress(label)
    subtitle = (f"Pérez-Díaz et al. (2024) method on {warehouse}; classification {current}; "
                f"{len(class_names())} classes, K = {stored_k}")
    return render(sections, subtitle)
