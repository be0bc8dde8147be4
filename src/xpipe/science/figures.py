"""The paper's figures as pure functions of data frames → matplotlib Figures.

Figures are built on `matplotlib.figure.Figure` and rendered by the Agg canvas: no pyplot, no
global state and no display, so they are safe in tests, CI and worker processes.
"""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence
from typing import Literal, cast

import numpy as np
import polars as pl
from astropy import units as u
from astropy.coordinates import SkyCoord
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from numpy.typing import NDArray

AGG_COLOURS = {"AGN": "#1f77b4", "Seyfert": "#9467bd", "XB": "#d62728", "YSO": "#2ca02c"}
MAX_POINTS = 60_000  # points drawn per sky panel; denser panels are subsampled (seeded)


def new_figure(width: float, height: float,
               layout: Literal["constrained", "tight"] | None = "constrained") -> Figure:
    """A Figure on the Agg canvas; pass layout=None and place axes by hand where a layout
    engine would spend seconds measuring many tick labels (sky maps, density grids)."""
    fig = Figure(figsize=(width, height), dpi=100, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def png_data_uri(fig: Figure, dpi: int = 100) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(fig, dpi)).decode("ascii")


def _count(n: int) -> str:
    return f"{n:,}"


# --- BIC (paper Fig. 1) -----------------------------------------------------------------------

def bic_figure(curve: pl.DataFrame, scores: pl.DataFrame, stored_k: int | None = None) -> Figure:
    """Mean BIC with a ±1 standard deviation band and every seed's value, its gradient below,
    the elbow the rule picks marked on both (and the K of the stored clustering, if different)."""
    fig = new_figure(7.5, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    k = curve["k"].to_numpy()
    mean, std = curve["bic_mean"].to_numpy(), curve["bic_std"].to_numpy()
    top.fill_between(k, mean - std, mean + std, color="#1f77b4", alpha=0.25,
                     label="±1 std over seeds")
    top.scatter(scores["k"], scores["bic"], s=8, color="#555555", alpha=0.6, zorder=3,
                label="one seed")
    top.plot(k, mean, "o-", color="#1f77b4", lw=1.5, ms=4, label="mean BIC")
    bottom.plot(k, curve["gradient"].to_numpy(), "o-", color="#ff7f0e", lw=1.5, ms=4)
    bottom.axhline(0, color="black", lw=0.6)
    elbow = int(curve.filter(pl.col("is_elbow"))["k"][0])
    for ax in (top, bottom):
        ax.axvline(elbow, color="#d62728", ls="--", lw=1.2)
        ax.grid(alpha=0.3)
    if stored_k is not None and stored_k != elbow:
        for ax in (top, bottom):
            ax.axvline(stored_k, color="#2ca02c", ls=":", lw=1.2)
        top.plot([], [], color="#2ca02c", ls=":", label=f"stored clustering K = {stored_k}")
    top.plot([], [], color="#d62728", ls="--", label=f"elbow K = {elbow}")
    top.set_ylabel("BIC (lower is better)")
    top.set_title(f"BIC over K ({int(cast(int, curve['n_seeds'].max()))} seeds per K)")
    top.legend(fontsize=8, loc="upper right")
    bottom.set_ylabel("gradient of mean BIC")
    bottom.set_xlabel("number of mixture components K")
    bottom.set_xticks(k)
    return fig


# --- stages -----------------------------------------------------------------------------------

def stages_figure(stages: Sequence[tuple[str, int]]) -> Figure:
    """Rows left at each stage, on a log axis so the small later stages stay visible."""
    fig = new_figure(7.5, 0.45 * len(stages) + 1.0)
    ax = fig.subplots()
    labels = [s for s, _ in stages][::-1]
    values = np.array([max(v, 0) for _, v in stages][::-1], dtype=float)
    ax.barh(labels, np.where(values > 0, values, np.nan), color="#4c72b0")
    for i, v in enumerate(values):
        ax.text(max(v, 1) * 1.05, i, _count(int(v)), va="center", fontsize=9)
    ax.set_xscale("log")
    positive = values[values > 0]
    low = 10 ** np.floor(np.log10(positive.min())) / 2 if len(positive) else 1
    ax.set_xlim(low, max(values.max(), 10) * 8)
    ax.set_xlabel("rows (log scale)")
    ax.set_title("rows at each stage")
    return fig


# --- sky maps (paper Figs. 2, 8) --------------------------------------------------------------

def galactic(ra: NDArray[np.float64], dec: NDArray[np.float64]
             ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """ICRS → galactic (l, b) in degrees."""
    coords = SkyCoord(ra=np.asarray(ra) * u.deg, dec=np.asarray(dec) * u.deg, frame="icrs")
    gal = coords.galactic
    return gal.l.deg, gal.b.deg


def mollweide_xy(l_deg: NDArray[np.float64], b_deg: NDArray[np.float64]
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Radians for matplotlib's Mollweide axes, astronomers' way: l = 0 at the centre,
    increasing to the left."""
    wrapped = (np.asarray(l_deg) + 180.0) % 360.0 - 180.0
    return np.radians(-wrapped), np.radians(np.asarray(b_deg))


def _label_galactic_axes(ax: Axes) -> None:
    ticks = np.array([-120, -60, 0, 60, 120])
    ax.set_xticks(np.radians(ticks))
    ax.set_xticklabels([f"{(-t) % 360}°" for t in ticks], fontsize=7)
    ax.set_yticks(np.radians([-60, -30, 0, 30, 60]))
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)


def sky_figure(frame: pl.DataFrame, group: str, groups: Sequence[str], *, title: str,
               colours: dict[str, str] | None = None, ncols: int = 2, seed: int = 0) -> Figure:
    """One Mollweide panel per group (galactic coordinates) from columns l, b and `group`."""
    nrows = max(1, -(-len(groups) // ncols))
    fig = new_figure(5.2 * ncols, 2.9 * nrows + 0.5, layout=None)
    fig.subplots_adjust(left=0.04, right=0.98, bottom=0.03, top=1 - 0.55 / (2.9 * nrows + 0.5),
                        wspace=0.12, hspace=0.25)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(groups):
        ax = fig.add_subplot(nrows, ncols, i + 1, projection="mollweide")
        part = frame.filter(pl.col(group) == name)
        n = part.height
        if n > MAX_POINTS:
            part = part[np.sort(rng.choice(n, MAX_POINTS, replace=False))]
        x, y = mollweide_xy(part["l"].to_numpy(), part["b"].to_numpy())
        colour = (colours or {}).get(str(name), f"C{i % 10}")
        ax.scatter(x, y, s=3, alpha=0.5, color=colour, linewidths=0, rasterized=True)
        ax.set_title(f"{name}: {_count(n)}", fontsize=10)
        _label_galactic_axes(ax)
    fig.suptitle(title)
    return fig


# --- density maps (paper Figs. 3, 6, 7) -------------------------------------------------------

def density_figure(frame: pl.DataFrame, x: str, y: str, *, row: str, rows: Sequence[str],
                   column: str, columns: Sequence[str], extent: tuple[float, float, float, float],
                   labels: tuple[str, str], title: str, bins: int = 50) -> Figure:
    """2-D histograms (log colour) of (x, y): one row per value of `row`, one column per value
    of `column`; each panel says how many detections it holds."""
    height = 2.8 * len(rows) + 0.6
    fig = new_figure(3.0 * len(columns) + 0.8, height, layout=None)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.55 / height, top=1 - 0.6 / height,
                        wspace=0.08, hspace=0.28)
    axes = np.atleast_2d(fig.subplots(len(rows), len(columns), sharex=True, sharey=True,
                                      squeeze=False))
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            ax = axes[i, j]
            part = frame.filter((pl.col(row) == r) & (pl.col(column) == c)).drop_nulls([x, y])
            if part.height:
                ax.hist2d(part[x].to_numpy(), part[y].to_numpy(), bins=bins,
                          range=[extent[:2], extent[2:]], cmap="viridis", norm=LogNorm(),
                          cmin=1)
            else:
                ax.text(0.5, 0.5, "no detections", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
            ax.set_title(f"{c} — {r} ({_count(part.height)})", fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel(labels[0])
            if j == 0:
                ax.set_ylabel(labels[1])
            ax.grid(alpha=0.2)
    fig.suptitle(title)
    return fig


# --- confusion matrices (paper Figs. 4, 5) ----------------------------------------------------

def confusion_figure(confusion: pl.DataFrame, title: str) -> Figure:
    """Row-normalised heatmap from results.validation_confusion rows of one level: true class
    down, predicted class across, each cell's percentage written in it."""
    rows = confusion.select("true_class", "true_order").unique().sort("true_order")["true_class"]
    cols = confusion.select("pred_class", "pred_order").unique().sort("pred_order")["pred_class"]
    grid = np.full((len(rows), len(cols)), np.nan)
    index_r = {name: i for i, name in enumerate(rows)}
    index_c = {name: j for j, name in enumerate(cols)}
    for rec in confusion.iter_rows(named=True):
        if rec["fraction"] is not None:
            grid[index_r[rec["true_class"]], index_c[rec["pred_class"]]] = rec["fraction"]
    longest = max(len(str(label)) for label in [*rows, *cols])
    size = 1.4 + 0.62 * max(len(rows), len(cols)) + 0.07 * longest
    fig = new_figure(max(size + 1.8, 6.0), max(size, 4.2))
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] > 0.55 else "black")
    support = confusion.group_by("true_class").agg(pl.col("row_total").first())
    totals = dict(zip(support["true_class"], support["row_total"], strict=True))
    ax.set_xticks(range(len(cols)), list(cols), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r} ({totals.get(r, 0)})" for r in rows], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("SIMBAD class (held-out detections)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row")
    return fig


# --- stability --------------------------------------------------------------------------------

def stability_figure(table: pl.DataFrame) -> Figure:
    """Adjusted Rand index and the share of sources whose master class changes, per
    alternative clustering."""
    fig = new_figure(7.5, 0.5 * table.height + 1.6)
    left, right = fig.subplots(1, 2, sharey=True)
    labels = table["alternative"].to_list()[::-1]
    pos = np.arange(len(labels))
    left.barh(pos, table["adjusted_rand_index"].to_numpy()[::-1], color="#4c72b0")
    left.set_xlim(0, 1)
    left.set_xlabel("adjusted Rand index vs stored")
    left.set_yticks(pos, labels, fontsize=8)
    right.barh(pos - 0.2, table["fine_changed_fraction"].to_numpy()[::-1], height=0.4,
               color="#dd8452", label="fine class")
    right.barh(pos + 0.2, table["agg_changed_fraction"].to_numpy()[::-1], height=0.4,
               color="#55a868", label="aggregated class")
    right.set_xlim(0, 1)
    right.set_xlabel("sources whose master class changes")
    right.legend(fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("stability of the clustering and of the master classes")
    return fig


# --- one source (paper Fig. 10) ---------------------------------------------------------------

def explain_figure(detections: pl.DataFrame, summary: pl.DataFrame, *, classes: Sequence[str],
                   agg_of: dict[str, str], title: str,
                   votes: dict[str, str] | None = None,
                   intervals: pl.DataFrame | None = None, note: str = "") -> Figure:
    """Each detection's probability per class (dots), the mean with its 95 % band (bars), the
    classes coloured by aggregated class; `votes` ({"hard": class, "soft": class}) are written
    above their classes. With `intervals` (det_id, class, lo68, hi68, lo95, hi95: the draws of
    `xpipe uncertainty`) each dot gets its 95 % (thin) and 68 % (thick) interval; `note` (the
    class stability, or why it is missing) is written under the title."""
    fig = new_figure(8.0, 4.9 if note else 4.6)
    ax = fig.subplots()
    pos = np.arange(len(classes))
    colours = [AGG_COLOURS.get(agg_of[c], "#777777") for c in classes]
    means = summary["mean_probability"].to_numpy()
    low = np.clip(means - summary["band_low"].fill_null(np.nan).to_numpy(), 0, None)
    high = np.clip(summary["band_high"].fill_null(np.nan).to_numpy() - means, 0, None)
    ax.bar(pos, means, color=colours, alpha=0.75, width=0.7, label="mean over detections")
    has_band = ~np.isnan(low)
    if has_band.any():
        ax.errorbar(pos[has_band], means[has_band], yerr=[low[has_band], high[has_band]],
                    fmt="none", ecolor="black", capsize=4, lw=1.2, label="95 % band of the mean")
    rng = np.random.default_rng(0)
    labelled = False
    for k, name in enumerate(classes):
        shown = detections.select("det_id", name).drop_nulls()
        x = pos[k] + rng.uniform(-0.18, 0.18, shown.height)
        if intervals is not None:
            labelled |= _detection_intervals(ax, x, shown,
                                             intervals.filter(pl.col("class") == name),
                                             label=not labelled)
        ax.scatter(x, shown[name].to_numpy(), s=14, color="black", alpha=0.6, zorder=3,
                   label="one detection" if k == 0 else None)
    by_class: dict[str, list[str]] = {}
    for vote, name in (votes or {}).items():
        by_class.setdefault(name, []).append(f"{vote} vote")
    for name, labels in by_class.items():
        ax.text(list(classes).index(name), 1.01, " + ".join(labels), ha="center", va="bottom",
                fontsize=8, fontweight="bold")
    ax.set_xticks(pos, list(classes), rotation=30, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("class probability")
    ax.set_title(title + (f"\n{textwrap.fill(note, 110)}" if note else ""), fontsize=9)
    fig.legend(fontsize=8, loc="outside lower center", ncols=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _detection_intervals(ax: Axes, x: np.ndarray, shown: pl.DataFrame, intervals: pl.DataFrame,
                         *, label: bool) -> bool:
    """Each shown detection's 95 % and 68 % intervals over the draws, at its dot's x; True
    when any was drawn."""
    rows = shown.select("det_id").with_row_index("i").join(
        intervals.select("det_id", "lo68", "hi68", "lo95", "hi95").drop_nulls(), on="det_id")
    if rows.is_empty():
        return False
    at = x[rows["i"].to_numpy()]
    ax.vlines(at, rows["lo95"].to_numpy(), rows["hi95"].to_numpy(), color="#9a9a9a", lw=0.8,
              zorder=2, label="95 % of the draws" if label else "_nolegend_")
    ax.vlines(at, rows["lo68"].to_numpy(), rows["hi68"].to_numpy(), color="#222222", lw=2.4,
              zorder=2, label="68 % of the draws" if label else "_nolegend_")
    return True


# --- class stability under measurement errors (xpipe uncertainty) ----------------------------

def class_stability_figure(by_count: pl.DataFrame, sources: pl.DataFrame) -> Figure:
    """Class stability against the number of detections (median and quartiles per bin; the
    share ≥ 0.9 on a second axis) and against the source's highest flux significance (each
    source, and the median in logarithmic bins)."""
    fig = new_figure(10.0, 4.2)
    left, right = fig.subplots(1, 2)
    x = np.arange(by_count.height)
    median = by_count["median"].fill_null(np.nan).to_numpy()
    low = median - by_count["q25"].fill_null(np.nan).to_numpy()
    high = by_count["q75"].fill_null(np.nan).to_numpy() - median
    left.errorbar(x, median, yerr=[low, high], fmt="o", color="#1f3b5a", capsize=4,
                  label="median (quartiles)")
    left.bar(x, by_count["share_stable"].fill_null(np.nan).to_numpy(), color="#55a868",
             alpha=0.4, width=0.6, label="share ≥ 0.9")
    left.set_xticks(x, [f"{d}\n({n:,})" for d, n in zip(by_count["detections"],
                                                         by_count["with_errors"], strict=True)])
    left.set_xlabel("classified detections of the source (sources with errors)")
    left.set_ylabel("class stability")
    left.set_ylim(0, 1.02)
    left.legend(fontsize=8, loc="lower right")
    significance = sources["flux_significance"].to_numpy()
    stability = sources["class_stability"].to_numpy()
    keep = np.isfinite(significance) & (significance > 0)
    right.scatter(significance[keep], stability[keep], s=3, alpha=0.15, color="#777777",
                  label="one source")
    if keep.sum() > 10:
        edges = np.unique(np.quantile(significance[keep], np.linspace(0, 1, 11)))
        which = np.clip(np.searchsorted(edges, significance[keep], side="right") - 1, 0,
                        len(edges) - 2)
        centres = np.sqrt(edges[:-1] * edges[1:])
        medians = [np.median(stability[keep][which == i]) if (which == i).any() else np.nan
                   for i in range(len(edges) - 1)]
        right.plot(centres, medians, "o-", color="#c0392b", label="median per decile")
    right.set_xscale("log")
    right.set_xlabel("highest broad-band flux significance of its detections")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=8, loc="lower right")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("class stability under the measurement errors (share of draws keeping the "
                 "stored outcome)")
    return fig
