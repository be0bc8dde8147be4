"""The paper's checks and figures on a stored classification: `bic`, `validate`, `stability`,
`report` and `explain`."""

from __future__ import annotations

from pathlib import Path

import click
import duckdb

from xpipe.cli.common import settings_from
from xpipe.warehouse.connection import connect

SKIP_IF_CURRENT_HELP = "Do nothing if the stored {} is for the stored classification."


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc


def _skip_if_current(con: duckdb.DuckDBPyConnection, table: str, command: str) -> bool:
    """True (and says so) when `table` already holds this classification's result."""
    from xpipe.science.common import is_current, require_classified

    require_classified(con)
    if is_current(con, table):
        click.echo(f"{table} is current for the stored classification: skipping `xpipe "
                   f"{command}` (drop --skip-if-current to recompute)")
        return True
    return False


@click.command()
@click.option("--kmin", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--kmax", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Fits per K, with random_state first-seed, first-seed + 1, ...")
@click.option("--first-seed", type=int, default=42, show_default=True)
@click.option("--jobs", "n_jobs", type=int, default=-1, show_default=True,
              help="Worker processes (-1: every core).")
@click.option("--fit-sample", "fit_sample_size", type=click.IntRange(min=100), default=None,
              help="Sample size above which to subsample [default: the stored classification's].")
@click.option("--skip-if-current", is_flag=True, help=SKIP_IF_CURRENT_HELP.format("curve"))
@click.pass_context
def bic(ctx: click.Context, *, kmin: int, kmax: int, n_seeds: int, first_seed: int,
        n_jobs: int, fit_sample_size: int | None, skip_if_current: bool) -> None:
    """BIC of the Gaussian mixture per K and seed, its gradient and the elbow K (Fig. 1)."""
    from xpipe.science.bic import BicParams, curve_text, run_bic

    with connect(settings_from(ctx)) as con:
        if skip_if_current and _skip_if_current(con, "results.bic_scores", "bic"):
            return
        result = run_bic(con, BicParams(kmin, kmax, n_seeds, first_seed, n_jobs,
                                        fit_sample_size))
    click.echo(curve_text(result.curve))
    click.echo(f"elbow K = {result.elbow_k}; stored in results.bic_scores and "
               "results.bic_curve (run " + result.run.run_id + ")")


@click.command()
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.3, show_default=True, help="Share of the references held out.")
@click.option("--seed", type=int, default=42, show_default=True, help="Split random_state.")
@click.option("--skip-if-current", is_flag=True, help=SKIP_IF_CURRENT_HELP.format("validation"))
@click.pass_context
def validate(ctx: click.Context, *, test_size: float, seed: int, skip_if_current: bool) -> None:
    """Held-out validation: confusion matrices, precision/recall, kappa of the votes."""
    from xpipe.science.validation import ValidateParams, run_validation, validation_text

    settings = settings_from(ctx)
    with connect(settings) as con:
        if skip_if_current and _skip_if_current(con, "results.validation_detections",
                                                "validate"):
            return
        result = run_validation(con, ValidateParams(test_size, seed), settings.chunk_rows)
    click.echo(validation_text(result))
    click.echo("tables: results.validation_confusion, results.validation_metrics, "
               "results.vote_kappa (run " + result.run.run_id + ")")


@click.command()
@click.option("--seeds", "seeds", default="", metavar="S1,S2,...",
              help="Other seeds at the stored K [default: the three after the stored seed].")
@click.option("--k", "ks", default="5,7", show_default=True, metavar="K1,K2,...",
              help="Other K at the stored seed.")
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also refit the stored K and seed (measures numerical noise).")
@click.option("--skip-if-current", is_flag=True, help=SKIP_IF_CURRENT_HELP.format("summary"))
@click.pass_context
def stability(ctx: click.Context, *, seeds: str, ks: str, control: bool,
              skip_if_current: bool) -> None:
    """Refit the clustering with other seeds and K; ARI and master-class changes."""
    from xpipe.science.stability import StabilityParams, run_stability, stability_text

    settings = settings_from(ctx)
    with connect(settings) as con:
        if skip_if_current and _skip_if_current(con, "results.stability", "stability"):
            return
        result = run_stability(con, StabilityParams(_int_list(seeds), _int_list(ks), control),
                               settings.chunk_rows)
    click.echo(stability_text(result.table))
    click.echo("stored in results.stability (run " + result.run.run_id + ")")


@click.command()
@click.option("--draws", "n_draws", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Monte Carlo draws per detection.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed of the random streams (one per detection, keyed by its detection key).")
@click.option("--skip-if-current", is_flag=True,
              help="Do nothing if the stored draws are for the stored classification, with "
                   "these --draws and --seed.")
@click.pass_context
def uncertainty(ctx: click.Context, *, n_draws: int, seed: int, skip_if_current: bool) -> None:
    """Draw every classified detection from its published errors: intervals and class stability."""
    from xpipe.predict.uncertainty import DrawParams, run_uncertainty, summary_text
    from xpipe.science.common import uncertainty_is_current

    settings = settings_from(ctx)
    params = DrawParams(n_draws=n_draws, seed=seed)
    with connect(settings) as con:
        if skip_if_current and uncertainty_is_current(con, params.recorded()):
            click.echo("results.source_class_stability is current for the stored "
                       "classification, draws and seed: skipping `xpipe uncertainty`")
            return
        run, _counts = run_uncertainty(con, settings, params)
        click.echo(summary_text(con))
    click.echo(f"stored in results.detection_class_uncertainty, results.detection_class_intervals"
               f" and results.source_class_stability (run {run.run_id}, "
               f"{sum(run.timings.values()):.1f} s)")


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"),
              show_default=True)
@click.pass_context
def report(ctx: click.Context, out: Path) -> None:
    """Write one self-contained HTML report with the paper's tables and figures."""
    from xpipe.core.progress import progress_bar
    from xpipe.science.report import SECTION_LABELS, build_report

    settings = settings_from(ctx)
    with (connect(settings, read_only=True) as con,
          progress_bar("report", total=len(SECTION_LABELS), unit="sections") as bar):

        def section_done(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        page = build_report(con, str(settings.warehouse), progress=section_done)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    missing = page.count('class="missing"')
    click.echo(f"wrote {out} ({len(page) / 1e6:.1f} MB)"
               + (f"; {missing} section(s) not computed yet, see the report" if missing else ""))


@click.command()
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also draw the explanation (paper Fig. 10) to this PNG.")
@click.pass_context
def explain(ctx: click.Context, name: str, out: Path | None) -> None:
    """Why one source got its class: detections, probabilities, 95 % bands, votes."""
    from xpipe.science.explain import explain_source
    from xpipe.science.figures import png_bytes

    with connect(settings_from(ctx), read_only=True) as con:
        explanation = explain_source(con, name)
    click.echo(explanation.text())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png_bytes(explanation.figure(), dpi=110))
        click.echo(f"wrote {out}")

