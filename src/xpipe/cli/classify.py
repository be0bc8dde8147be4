"""Classifying and what comes out of it: `classify`, `summary`, `vote`, `export`,
`classify-new` and `anomalies`."""

from __future__ import annotations

import time
from pathlib import Path

import click
import duckdb

from xpipe.cli.common import counts_text, print_frame, settings_from
from xpipe.core.config import Settings
from xpipe.core.errors import WarehouseError
from xpipe.warehouse.connection import connect, table_exists
from xpipe.warehouse.file_formats import FORMATS

# What print_summary reads; a load drops them with the rest of the derived state.
SUMMARY_TABLES = ("model.stg_detections", "model.detection_features", "model.detection_roles",
                  "results.detection_class", "results.source_class")

EXPORT_FORMAT_HELP = ("csv, parquet, votable (.vot) or fits; every one but CSV carries the "
                      "provenance: xpipe version, classification run, model version and hash")


@click.command()
@click.option("--min-significance", type=float, default=5.0, show_default=True,
              help="Selection: flux_significance_b must exceed this.")
@click.option("--no-significance-cut", is_flag=True,
              help="Drop the significance cut: classify every detection with the features.")
@click.option("--require-spectral-fits/--no-require-spectral-fits", default=True,
              show_default=True, help="Selection: powlaw_gamma and bb_kt must be present.")
@click.option("--match-type", default=None, metavar="TYPE",
              help="Selection: only detections whose master_stack_assoc.match_type is TYPE "
                   "(u: unique, a: ambiguous; pulled catalogues only). Default: no selection.")
@click.option("--components", "n_components", type=click.IntRange(min=1), default=6,
              show_default=True, help="Mixture components K (the paper's BIC elbow is 6).")
@click.option("--seed", "random_state", type=int, default=42, show_default=True,
              help="GaussianMixture random_state.")
@click.option("--fit-sample", "fit_sample_size", type=click.IntRange(min=100),
              default=100_000, show_default=True,
              help="Fit the mixture on a seeded sample of this many cleaned detections when "
                   "there are more; every detection is then assigned.")
@click.option("--min-references", type=click.IntRange(min=2), default=12, show_default=True,
              help="References a class needs in a cluster to be used there.")
@click.pass_context
def classify(ctx: click.Context, *, min_significance: float, no_significance_cut: bool,
             require_spectral_fits: bool, n_components: int, random_state: int,
             fit_sample_size: int, min_references: int, match_type: str | None) -> None:
    """Run the SQL models, clustering, kernel and votes on the loaded catalogue."""
    from xpipe.predict.batch import ClassifyParams
    from xpipe.predict.batch import classify as run_classify

    params = ClassifyParams(
        min_flux_significance_b=None if no_significance_cut else min_significance,
        require_spectral_fits=require_spectral_fits, n_components=n_components,
        random_state=random_state, fit_sample_size=fit_sample_size,
        min_references=min_references, match_type=match_type)
    settings = settings_from(ctx)
    with connect(settings) as con:
        run, _counts = run_classify(con, settings, params)
        click.echo(f"run {run.run_id} done in {sum(run.timings.values()):.1f} s")
        print_summary(con, settings)


def print_summary(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """Rows per stage, sources per master class, and where the results are."""
    from xpipe.predict.batch import master_class_counts, stage_counts

    if not all(table_exists(con, table) for table in SUMMARY_TABLES):
        raise WarehouseError(f"{settings.warehouse} holds no classification of its loaded "
                             "detections (none ran since the last load): run `xpipe classify`")
    counts = stage_counts(con)
    click.echo("\nrows per stage:")
    for key, value in counts.items():
        click.echo(f"  {key:<20} {value:>12,}")
    click.echo("\nsources per master class (uniquely classified):")
    for agg, fine, n in master_class_counts(con):
        click.echo(f"  {agg:<8} {fine:<10} {n:>10,}")
    click.echo(f"\nresults are in {settings.warehouse}: results.detection_class, "
               "results.source_class, results.uniquely_classified, "
               "results.ambiguous_classification")
    click.echo('try: xpipe sql "SELECT agg_master_class, count(*) FROM '
               'results.uniquely_classified GROUP BY 1 ORDER BY 2 DESC"')


@click.command()
@click.pass_context
def summary(ctx: click.Context) -> None:
    """Print the rows per stage and the master classes of the last classification."""
    settings = settings_from(ctx)
    with connect(settings, read_only=True) as con:
        print_summary(con, settings)


@click.command()
@click.option("--detections", "detections", type=click.Path(path_type=Path, exists=True),
              required=True, help="Per-detection CSV in the published layout.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True,
              help=EXPORT_FORMAT_HELP)
@click.pass_context
def vote(ctx: click.Context, detections: Path, out_dir: Path, fmt: str) -> None:
    """Run the voting SQL on an external per-detection table (the paper's layout)."""
    from xpipe.predict.votes import vote_file

    counts = vote_file(detections, out_dir, fmt, chunk_rows=settings_from(ctx).chunk_rows)
    click.echo(f"wrote {out_dir}: " + counts_text(counts))


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True,
              help=EXPORT_FORMAT_HELP)
@click.pass_context
def export(ctx: click.Context, out_dir: Path, fmt: str) -> None:
    """Write detection_level_classification, uniquely_classified and ambiguous_classification
    (and source_class_stability, detection_class_intervals after `xpipe uncertainty`)."""
    from xpipe.predict.export import export_results

    settings = settings_from(ctx)
    with connect(settings, read_only=True) as con:
        result = export_results(con, out_dir, fmt, chunk_rows=settings.chunk_rows)
    for name, path in result.written.items():
        click.echo(f"{name}: {path}")
    if result.skipped:
        click.echo(f"uncertainty files not written: {result.skipped}")
    for path in result.removed:
        click.echo(f"removed {path}: an earlier export's, not for this classification")


@click.command("classify-new")
@click.argument("file", type=click.Path(path_type=Path, exists=True))
@click.option("--model", "model_ref", default=None,
              help="A model version in the warehouse (id, unique prefix of id or hash, or "
                   "'latest') or an exported model file [default: latest].")
@click.option("--append", is_flag=True,
              help="Store the results in results.new_detection_class / new_source_class "
                   "(the same detections appended twice are stored once).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write every column per detection (.parquet, or CSV otherwise).")
@click.option("--max-rows", type=int, default=20, show_default=True, help="Rows printed.")
@click.option("--draws", "n_draws", type=click.IntRange(min=1), default=None,
              help="Also draw every classified detection this many times from its published "
                   "errors (as `xpipe uncertainty`): intervals per class in --out, class "
                   "stability per source.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed of the draws' random streams (with --draws).")
@click.pass_context
def classify_new(ctx: click.Context, file: Path, *, model_ref: str | None, append: bool,
                 out: Path | None, max_rows: int, n_draws: int | None, seed: int) -> None:
    """Classify the detections in FILE (VOTable, CSV, Parquet) with a frozen model."""
    from xpipe.predict.classify_new import append as append_results
    from xpipe.predict.classify_new import (
        display_frames,
        output_frame,
        resolve_model,
        summary_lines,
        write_output_file,
    )
    from xpipe.predict.new import predict
    from xpipe.predict.uncertainty import DrawParams, predict_with_draws

    settings = settings_from(ctx)
    model = resolve_model(settings, model_ref)
    start = time.perf_counter()
    if n_draws is None:
        prediction = predict(model, [file], settings)
    else:
        prediction = predict_with_draws(model, [file], DrawParams(n_draws, seed), settings)
    seconds = time.perf_counter() - start
    detections, sources = display_frames(prediction)
    print_frame(detections, max_rows)
    click.echo("\nvotes of the sources in the file:")
    print_frame(sources, max_rows)
    click.echo("")
    for line in summary_lines(prediction):
        click.echo(line)
    click.echo(f"classified in {seconds:.1f} s "
               f"({prediction.detections.height / max(seconds, 1e-9):,.0f} detections/s)")
    if out is not None:
        write_output_file(output_frame(prediction), out)
        click.echo(f"wrote {out}")
    if append:
        with connect(settings, create=True) as con:
            counts = append_results(con, prediction, model, str(file))
        click.echo(f"appended to {settings.warehouse}: {counts['new']:,} new, "
                   f"{counts['already_stored']:,} already stored (replaced)"
                   + ("; the draws are not stored (they are in --out)" if n_draws else ""))


@click.command()
@click.option("--top", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet"]),
              default="table", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write to this file (csv or parquet) instead of printing.")
@click.pass_context
def anomalies(ctx: click.Context, top: int, fmt: str, out: Path | None) -> None:
    """The most anomalous sources: each source's most anomalous detection, with its features."""
    from xpipe.science.anomalies import top_anomalies

    with connect(settings_from(ctx), read_only=True) as con:
        frame = top_anomalies(con, top)
    if out is not None or fmt == "parquet":
        if out is None:
            raise click.UsageError("--format parquet needs --out FILE")
        if fmt == "parquet":
            frame.write_parquet(out)
        else:
            frame.write_csv(out)
        click.echo(f"wrote {out}")
    elif fmt == "csv":
        click.echo(frame.write_csv(), nl=False)
    else:
        print_frame(frame, max_rows=top)
