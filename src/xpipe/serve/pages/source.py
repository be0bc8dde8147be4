"""One source (`/source/<CSC name, URL-encoded>`): why it got its class, as `xpipe explain`
tells it (its detections with cluster, probabilities and predicted class; the mean per class
with its 95 % band; both votes — the paper's Fig. 10), its SIMBAD counterpart, its anomaly
score and rank, and links out: SIMBAD, and the CSC's TAP service with the ADQL the pull uses,
narrowed to this source. After `xpipe uncertainty`, each detection's 68 % and 95 % intervals
over the draws (a table, and error bars on the figure's dots) and the source's class stability;
when those results are absent or stale the page says so."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import quote, urlencode

import dash
import duckdb
import numpy as np
import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from xpipe.core.errors import NotFoundError
from xpipe.ingest.pull import one_source_query
from xpipe.science.explain import Explanation, explain_source, why_not_classified
from xpipe.science.figures import AGG_COLOURS
from xpipe.serve import ui
from xpipe.serve.context import PageContext
from xpipe.services.csc import CSC_RELEASES, CscConfig
from xpipe.warehouse.connection import first_row, table_exists

PATH = "/source"
TITLE = "Source"
SIMBAD = "https://simbad.cds.unistra.fr/simbad"
SIMBAD_CONE_ARCSEC = 10.0  # around a source without a counterpart: what lies near it
MAX_NAME_CHARS = 200
# Above this many dots (classes x detections) Fig. 10 draws them in WebGL: each SVG dot (and
# error bar) is a DOM node, and a source of ~200 detections would take most of a second to draw.
MAX_SVG_DOTS = 600


def validate(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> None:
    """A name must be a classified source; none (the bare /source) shows the name form."""
    if not path_rest:
        return
    if len(path_rest) > MAX_NAME_CHARS:
        raise NotFoundError(f"no source named {path_rest[:40]!r}…: names are short")
    with ctx.reader.cursor() as cur:
        if first_row(cur, "SELECT 1 FROM results.source_class WHERE name = ?", [path_rest]):
            return
        raise NotFoundError(why_not_classified(cur, path_rest))


def layout(ctx: PageContext, path_rest: str, query: Mapping[str, str]) -> Component:
    if not path_rest:
        return name_form()
    with ctx.reader.cursor() as cur:
        explanation = explain_source(cur, path_rest)
        counterpart = simbad_counterpart(cur, explanation.name)
        anomaly = anomaly_of(cur, explanation.name)
    release = ctx.reader.cached("source-release", csc_release)
    return html.Div([
        html.H1(explanation.name, id="source-name-title"),
        html.P(explanation.title(), id="source-title"),
        ui.columns(
            [ui.facts_table(source_facts(explanation, counterpart, anomaly), id="source-facts"),
             html.H2("Elsewhere"),
             html.Ul(links(explanation, counterpart, release), id="source-links")],
            [dcc.Graph(id="source-figure", figure=explanation_figure(explanation),
                       config={"displaylogo": False})]),
        html.H2("Detections"),
        html.P("Each classified detection: its cluster, its probability per class and the "
               "class predicted for it (the most probable)."),
        ui.data_table(explanation.detections, id="source-detections"),
        html.H2("Measurement errors"),
        *uncertainty_part(explanation),
        html.P(f"The ADQL that fetches this source's rows from {release.release} "
               f"({release.url}), as `xpipe warehouse --source {release.release}` asks:"),
        html.Pre(one_source_query(release, explanation.name), id="source-adql"),
    ])


INTERVAL_COLUMNS = ["obsid", "det_id", "pred_class", "probability", "lo68", "hi68", "lo95",
                    "hi95", "pred_agreement", "other_class", "other_fraction", "flag"]


def uncertainty_part(explanation: Explanation) -> list[Component]:
    """The predicted class's intervals per detection and the class stability, or why none."""
    if explanation.intervals is None or explanation.stability is None:
        return [ui.message(explanation.stability_text(), error=False,
                           id="source-uncertainty-note")]
    state = explanation.uncertainty
    rows = (explanation.intervals.filter(pl.col("class") == pl.col("pred_class"))
            .sort("obsid", "det_id").select(INTERVAL_COLUMNS))
    return [html.P(f"Each detection drawn {state.n_draws:,} times (seed {state.seed}) from its "
                   "published confidence limits and classified as a new detection: the "
                   "predicted class's stored probability, the central 68 % and 95 % of its "
                   "draws, the share of draws keeping the class (pred_agreement) and the most "
                   "frequent other. A detection without published errors is not drawn "
                   "(empty intervals, flag 'no published errors').",
                   id="source-uncertainty-about"),
            ui.data_table(rows, id="source-intervals"),
            html.P(explanation.stability_text(), id="source-stability")]


def name_form() -> Component:
    return html.Div([
        html.H1("Source"),
        html.P(["Open a source by its CSC name, or find one on the ",
                dcc.Link("search page", href="/search"), "."]),
        html.Div([html.Label(["name", dcc.Input(id="source-name", type="text", debounce=True,
                                                placeholder="2CXO J123456.7+123456",
                                                style={"width": "22em"})]),
                  html.Button("open", id="source-open")], className="xp-form"),
    ])


def simbad_counterpart(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, object] | None:
    if not table_exists(con, "raw.simbad_match"):
        return None
    row = first_row(con, "SELECT main_id, otype, separation_arcsec FROM raw.simbad_match "
                         "WHERE name = ?", [name])
    return dict(zip(("main_id", "otype", "separation_arcsec"), row, strict=True)) if row else None


def anomaly_of(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, object] | None:
    """The source's row of results.source_anomaly and how many sources are ranked."""
    if not table_exists(con, "results.source_anomaly"):
        return None
    row = first_row(con, "SELECT anomaly_rank, det_id, min_mahalanobis_sq, anomaly_p, "
                         "count(*) OVER () FROM results.source_anomaly "
                         "QUALIFY name = ?", [name])
    keys = ("rank", "det_id", "min_mahalanobis_sq", "anomaly_p", "ranked")
    return dict(zip(keys, row, strict=True)) if row else None


def csc_release(con: duckdb.DuckDBPyConnection) -> CscConfig:
    """The CSC release (and TAP service) the detections were pulled from; CSC 2.0, the
    paper's, for a catalogue loaded from files."""
    row = first_row(con, "SELECT params FROM meta.runs WHERE command = 'warehouse' AND "
                         "status = 'ok' ORDER BY started_at DESC LIMIT 1")
    params = json.loads(row[0]) if row and isinstance(row[0], str) else {}
    config = CSC_RELEASES.get(str(params.get("source")), CSC_RELEASES["csc20"])
    return config.with_url(params.get("tap_url") if params.get("source") in CSC_RELEASES
                           else None)


def _number(value: object, digits: int = 3) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def source_facts(explanation: Explanation, counterpart: dict[str, object] | None,
                 anomaly: dict[str, object] | None) -> list[tuple[str, object]]:
    source = explanation.source
    facts: list[tuple[str, object]] = [
        ("position (ICRS)", f"ra {source['ra']:.6f}°, dec {source['dec']:.6f}°"),
        ("classified detections", str(source["detection_count"])),
        ("hard vote", str(source["hard_class"])),
        ("soft vote", str(source["soft_class"])),
        ("master class", f"{source['master_class']} ({source['agg_master_class']})"
         if source["is_unique"] else "ambiguous: the votes differ"),
        ("class stability", stability_fact(explanation)),
    ]
    facts.append(("SIMBAD counterpart",
                  f"{counterpart['main_id']} ({counterpart['otype']}), "
                  f"{_number(counterpart['separation_arcsec'])}″ away" if counterpart
                  else "none within the match radius"))
    if anomaly:
        facts.append(("anomaly", f"rank {anomaly['rank']:,} of {anomaly['ranked']:,} sources "
                                 f"(1: most anomalous); its most anomalous detection "
                                 f"{anomaly['det_id']}: smallest Mahalanobis² "
                                 f"{_number(anomaly['min_mahalanobis_sq'], 2)}, "
                                 f"p = {_number(anomaly['anomaly_p'], 4)}"))
    return facts


def stability_fact(explanation: Explanation) -> str:
    """The share of draws keeping the stored outcome; NULL is 'no published errors', never 1;
    absent or stale results say so."""
    row = explanation.stability
    if row is None or not explanation.uncertainty.current:
        return explanation.uncertainty.message()
    if row["class_stability"] is None:
        return "unknown: no published errors (nothing drawn)"
    return (f"{row['outcome']} holds in {float(row['class_stability']):.1%} of the draws "  # type: ignore[arg-type]
            f"(aggregated class {float(row['agg_class_stability']):.1%})")  # type: ignore[arg-type]


def links(explanation: Explanation, counterpart: dict[str, object] | None,
          release: CscConfig) -> list[Component]:
    source = explanation.source
    if counterpart:
        simbad = html.A(f"SIMBAD: {counterpart['main_id']}", id="source-simbad",
                        href=f"{SIMBAD}/sim-id?" + urlencode({"Ident": counterpart["main_id"]}))
    else:
        coord = f"{source['ra']:.6f} {source['dec']:+.6f}"
        simbad = html.A(f"SIMBAD: objects within {SIMBAD_CONE_ARCSEC:g}″ of the source",
                        id="source-simbad", href=f"{SIMBAD}/sim-coo?" + urlencode({
                            "Coord": coord, "CooFrame": "ICRS", "CooEpoch": "2000",
                            "CooEqui": "2000", "Radius": f"{SIMBAD_CONE_ARCSEC:g}",
                            "Radius.unit": "arcsec"}))
    adql = one_source_query(release, explanation.name)
    return [html.Li(simbad),
            html.Li(html.A(f"CSC ({release.release} TAP): this source's detections as a "
                           "VOTable", id="source-csc", href=release.sync_url(adql))),
            html.Li(html.A("this source's page address", href=PATH + "/"
                           + quote(explanation.name, safe="")))]


def explanation_figure(explanation: Explanation) -> go.Figure:
    """The paper's Fig. 10 as `xpipe explain` draws it: the mean probability per class (bars,
    coloured by aggregated class) with its 95 % band, each detection's probability (dots),
    and the classes the hard and soft votes chose."""
    summary = explanation.summary
    classes = summary["class"].to_list()
    means = summary["mean_probability"].to_numpy()
    high = summary["band_high"].fill_null(np.nan).to_numpy() - means
    low = means - summary["band_low"].fill_null(np.nan).to_numpy()
    fig = go.Figure()
    fig.add_bar(x=classes, y=means, name="mean over detections (95 % band)",
                marker_color=[AGG_COLOURS.get(a, "#777777") for a in summary["agg_class"]],
                error_y={"type": "data", "array": high, "arrayminus": low, "visible": True},
                opacity=0.8)
    dets = explanation.detections
    # numpy arrays: plotly takes them without checking each element (lists cost ~0.1 s here)
    x = np.repeat(np.array(classes, dtype=object), dets.height)
    y = np.concatenate([dets[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in classes]
                       ) if classes else np.array([], dtype=float)
    bands = detection_bands(explanation, classes)
    dots = go.Scattergl if len(x) > MAX_SVG_DOTS else go.Scatter
    fig.add_trace(dots(
        x=x, y=y, mode="markers",
        name="one detection" + (" (95 % of the draws)" if bands else ""),
        marker={"color": "black", "size": 6, "opacity": 0.6},
        customdata=np.tile(dets["obsid"].to_numpy(), len(classes)),
        error_y=_error_bars(y, bands.get("95"), width=1),
        hovertemplate="%{x}: %{y:.3f} (obsid %{customdata})<extra></extra>"))
    if bands:
        fig.add_trace(dots(x=x, y=y, mode="markers", name="68 % of the draws",
                           marker={"color": "#222222", "size": 1},
                           error_y=_error_bars(y, bands["68"], width=4), hoverinfo="skip"))
    votes: dict[str, list[str]] = {}
    for vote in ("hard", "soft"):
        votes.setdefault(str(explanation.source[f"{vote}_class"]), []).append(f"{vote} vote")
    for name, labels in votes.items():
        fig.add_annotation(x=name, y=1.06, text=" + ".join(labels), showarrow=False,
                           font={"size": 11})
    fig.update_layout(height=420, template="plotly_white", yaxis_range=[0, 1.12],
                      yaxis_title="class probability", legend_orientation="h",
                      margin={"l": 50, "r": 10, "t": 20, "b": 40})
    return fig


def detection_bands(explanation: Explanation, classes: list[str]
                    ) -> dict[str, tuple[list[float], list[float]]]:
    """Per interval level, (low, high) for every dot of the figure (classes × detections, in
    its order; NaN where a detection has none); {} without current uncertainty results."""
    if explanation.intervals is None:
        return {}
    order = pl.DataFrame({"class": [c for c in classes for _ in explanation.detections["det_id"]],
                          "det_id": [d for _ in classes for d in explanation.detections["det_id"]]})
    joined = order.join(explanation.intervals.select("det_id", "class", "lo68", "hi68", "lo95",
                                                     "hi95"),
                        on=["class", "det_id"], how="left", maintain_order="left")
    return {level: (joined[f"lo{level}"].fill_null(np.nan).to_list(),
                    joined[f"hi{level}"].fill_null(np.nan).to_list()) for level in ("68", "95")}


def _error_bars(y: np.ndarray, band: tuple[list[float], list[float]] | None,
                width: int) -> dict[str, object]:
    if band is None:
        return {"visible": False}
    low, high = np.asarray(band[0], dtype=float), np.asarray(band[1], dtype=float)
    return {"type": "data", "symmetric": False, "visible": True, "thickness": width, "width": 0,
            "array": np.clip(high - y, 0, None), "arrayminus": np.clip(y - low, 0, None),
            "color": "#444444"}


def register_callbacks(app: dash.Dash, ctx: PageContext) -> None:
    @app.callback(Output("url", "pathname", allow_duplicate=True),
                  Input("source-open", "n_clicks"), Input("source-name", "n_submit"),
                  State("source-name", "value"), prevent_initial_call=True)
    def open_source(clicks: int | None, submit: int | None, name: str | None) -> str:
        if not (clicks or submit) or not name or not name.strip():
            raise dash.exceptions.PreventUpdate
        return PATH + "/" + quote(name.strip(), safe="")
