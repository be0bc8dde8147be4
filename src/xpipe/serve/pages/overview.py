"""Overview (`/`): the stored classification — its run, parameters and when it ran, the rows
left at each stage, sources per aggregated and fine master class, unique vs ambiguous — and
the way into the other pages. Everything comes from the functions `xpipe classify`,
`xpipe summary` and `xpipe report` use, read once per server (the file cannot change while
it is served)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import dash
import duckdb
import plotly.graph_objects as go
import polars as pl
from dash import dcc, html
from dash.development.base_component import Component

from xpipe.predict.batch import master_class_counts, stage_counts
from xpipe.science.anomalies import top_anomalies
from xpipe.science.common import classify_params, classify_run_id
from xpipe.science.figures import AGG_COLOURS
from xpipe.serve import ui
from xpipe.serve.context import PageContext
from xpipe.serve.routing import require_no_subpath
from xpipe.warehouse.connection import first_row, table_exists

PATH = "/"
TITLE = "Overview"
TOP_ANOMALIES = 10
STAGE_LABELS = {
    "detections": "detections loaded", "impossible_values": "excluded: impossible values",
    "selected": "selected (significance, spectral fits)", "cleaned": "cleaned (all 12 features)",
    "references": "references (SIMBAD-labelled)", "targets": "targets",
    "excluded": "excluded SIMBAD types", "classified": "classified detections",
    "unclassifiable": "targets without a usable class", "sources": "classified sources",
    "uniquely_classified": "uniquely classified sources", "ambiguous": "ambiguous sources"}


@dataclass(frozen=True)
class Overview:
    run: dict[str, Any]  # the classification's meta.runs row
    params: dict[str, object]
    stages: dict[str, int]
    classes: list[tuple[str, str, int]]  # (aggregated, fine, sources), uniquely classified
    anomalies: pl.DataFrame | None  # the most anomalous sources (None: not scored)


def read_overview(con: duckdb.DuckDBPyConnection) -> Overview:
    run_id = classify_run_id(con)
    row = first_row(con, "SELECT run_id, started_at, finished_at, xpipe_version, host "
                         "FROM meta.runs WHERE run_id = ?", [run_id])
    keys = ("run_id", "started_at", "finished_at", "xpipe_version", "host")
    run = dict(zip(keys, row, strict=True)) if row else {"run_id": run_id}
    anomalies = (top_anomalies(con, TOP_ANOMALIES).select(
        "anomaly_rank", "name", "pred_class", "min_mahalanobis_sq", "anomaly_p")
        if table_exists(con, "results.source_anomaly") else None)
    return Overview(run, asdict(classify_params(con)), stage_counts(con),
                    master_class_counts(con), anomalies)


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    require_no_subpath(PATH, path_rest)


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    facts = ctx.reader.cached("overview", read_overview)
    stages = facts.stages
    return html.Div([
        html.H1("Overview"),
        html.P([f"{stages['sources']:,} classified sources from {stages['classified']:,} "
                f"classified detections: {stages['uniquely_classified']:,} uniquely "
                f"classified (both votes agree), {stages['ambiguous']:,} ambiguous. Explore: ",
                *page_links(ctx)], id="overview-summary"),
        ui.columns(
            [html.H2("The classification"),
             ui.facts_table(run_facts(ctx, facts), id="overview-run"),
             html.H2("Rows at each stage"),
             ui.facts_table([(STAGE_LABELS.get(k, k), f"{v:,}") for k, v in stages.items()],
                            id="overview-stages")],
            [html.H2("Uniquely classified sources per master class"),
             dcc.Graph(id="overview-classes", figure=class_figure(facts.classes),
                       config={"displaylogo": False}),
             ui.data_table(pl.DataFrame(facts.classes, orient="row",
                                        schema=["aggregated class", "master class", "sources"]),
                           id="overview-class-table")]),
        *anomaly_section(facts.anomalies),
    ])


def page_links(ctx: PageContext) -> list[Component | str]:
    """Links to the other pages (the SQL page only where it is on)."""
    from xpipe.serve.pages import nav_pages  # the package imports this module

    links: list[Component | str] = []
    for page in nav_pages(ctx.settings):
        if page.PATH not in (PATH, "/source"):
            links += [" · "] if links else []
            links.append(dcc.Link(page.TITLE, href=page.PATH))
    return links


def run_facts(ctx: PageContext, facts: Overview) -> list[tuple[str, object]]:
    run = facts.run
    started, finished = run.get("started_at"), run.get("finished_at")
    took = (f" ({(finished - started).total_seconds():.1f} s)"
            if started and finished else "")
    return [("warehouse", str(ctx.reader.path)), ("classification run", str(run["run_id"])),
            ("ran", f"{started:%Y-%m-%d %H:%M:%S} UTC{took}" if started else "—"),
            ("xpipe version", str(run.get("xpipe_version") or "—")),
            ("parameters", html.Code(json.dumps(facts.params, sort_keys=True, indent=1),
                                     style={"whiteSpace": "pre"}))]


def class_figure(classes: list[tuple[str, str, int]]) -> go.Figure:
    """Bars of uniquely classified sources per master class, coloured by aggregated class."""
    fig = go.Figure()
    for agg in dict.fromkeys(agg for agg, _, _ in classes):
        rows = [(fine, n) for a, fine, n in classes if a == agg]
        fig.add_bar(x=[fine for fine, _ in rows], y=[n for _, n in rows], name=agg,
                    marker_color=AGG_COLOURS.get(agg, "#777777"))
    fig.update_layout(height=320, margin={"l": 50, "r": 10, "t": 10, "b": 40},
                      yaxis_title="uniquely classified sources", legend_title="aggregated class",
                      template="plotly_white")
    return fig


def anomaly_section(anomalies: pl.DataFrame | None) -> list[Component]:
    if anomalies is None:
        return []
    return [html.H2(f"The {TOP_ANOMALIES} most anomalous sources"),
            html.P("Ranked by their most anomalous detection (`xpipe anomalies`)."),
            ui.data_table(anomalies, id="overview-anomalies", link_names=True)]


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    return None
