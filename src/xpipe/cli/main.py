"""The `xpipe` command line."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click
import duckdb

from xpipe.core.config import Settings
from xpipe.warehouse.connection import WarehouseError, connect
from xpipe.warehouse.contracts import SchemaError

USER_ERRORS = (SchemaError, WarehouseError, ValueError, FileNotFoundError, RuntimeError,
               duckdb.Error)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Known failures print one clear line instead of a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def settings_from(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group()
@click.option("--warehouse", "warehouse", type=click.Path(path_type=Path), default=None,
              help="DuckDB warehouse file [env XPIPE_WAREHOUSE; default warehouse/xpipe.duckdb].")
@click.version_option(package_name="xpipe")
@click.pass_context
def main(ctx: click.Context, warehouse: Path | None) -> None:
    """Probabilistic classes for every detection and source of an X-ray catalogue
    (Pérez-Díaz et al. 2024), at catalogue scale."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    settings = Settings()
    if warehouse is not None:
        settings = Settings(warehouse=warehouse)
    ctx.obj = {"settings": settings}


@main.command()
@click.option("--detections", "n_detections", type=click.IntRange(min=1), default=928_280,
              show_default=True, help="Number of detections (CSC 2.0 has 928,280).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--match-fraction", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Fraction of sources with a SIMBAD counterpart.")
@click.option("--wrong-type-fraction", type=click.FloatRange(0, 1), default=0.05,
              show_default=True, help="Fraction of counterparts with a wrong class type.")
@click.option("--chunk", "chunk_detections", type=click.IntRange(min=1000), default=1_000_000,
              show_default=True, help="Detections generated per chunk (bounds memory).")
@click.option("--outlier-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of the selected detections of unmatched sources made into outliers "
                   "(transients, extreme spectra), listed in DIR/outliers/ (anomaly tests).")
@user_errors
def simulate(n_detections: int, seed: int, out_dir: Path, match_fraction: float,
             wrong_type_fraction: float, chunk_detections: int,
             outlier_fraction: float = 0.0) -> None:
    """Write a simulated CSC-shaped catalogue, SIMBAD table and truth table (Parquet)."""
    from xpipe.core.progress import progress_bar
    from xpipe.simulation import SimulationConfig, simulate_catalogue

    config = SimulationConfig(n_detections=n_detections, seed=seed,
                              chunk_detections=chunk_detections, match_fraction=match_fraction,
                              wrong_type_fraction=wrong_type_fraction,
                              outlier_fraction=outlier_fraction)
    with progress_bar("simulate", total=n_detections) as bar:
        summary = simulate_catalogue(config, out_dir, progress=bar.update)
    click.echo(f"simulated catalogue in {out_dir}:")
    for key, value in summary.items():
        click.echo(f"  {key}: {value}")


def ensure_simulation(sim_dir: Path, n_detections: int, seed: int) -> None:
    """Reuse a simulated catalogue with the same size and seed, or make it."""
    import json

    manifest = sim_dir / "manifest.json"
    if manifest.exists():
        config = json.loads(manifest.read_text()).get("config", {})
        if config.get("n_detections") == n_detections and config.get("seed") == seed:
            click.echo(f"using simulated catalogue in {sim_dir} ({n_detections} detections, "
                       f"seed {seed})")
            return
    ctx = click.get_current_context()
    ctx.invoke(simulate, n_detections=n_detections, seed=seed, out_dir=sim_dir,
               match_fraction=0.5, wrong_type_fraction=0.05, chunk_detections=1_000_000)


@main.command()
@click.option("--source", required=True,
              help="'sim' (the simulated catalogue in --sim-dir, made if needed), 'csc20' or "
                   "'csc21' (pull every detection from the CSC TAP service, resumable), or a "
                   "VOTable, CSV or Parquet file / folder of Parquet parts with CSC columns.")
@click.option("--tap-url", default=None,
              help="TAP service of --source csc20/csc21 [default: the CXC's service].")
@click.option("--refresh", is_flag=True,
              help="csc20/csc21: forget pages pulled earlier and start the pull over.")
@click.option("--page-rows", type=click.IntRange(min=1), default=None,
              help="csc20/csc21: most rows per page (MAXREC) [default 50,000].")
@click.option("--band-deg", type=click.FloatRange(min=0.001, max=180), default=None,
              help="csc20/csc21: width of the top-level Dec bands [default 2].")
@click.option("--labels", default=None,
              help="SIMBAD objects (main_id, otype, ra, dec) or an offline match file (name, "
                   "main_id, otype/main_type, separation/angDist); 'none' for no labels. "
                   "Default for sim: the simulator's SIMBAD table.")
@click.option("--radius", "radius_arcsec", type=float, default=1.0, show_default=True,
              help="Best-match radius in arcsec.")
@click.option("--sim-dir", type=click.Path(path_type=Path), default=Path("warehouse/sim"),
              show_default=True)
@click.option("--detections", "n_detections", type=click.IntRange(min=1), default=928_280,
              show_default=True, help="Size of the simulated catalogue (--source sim).")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed of the simulated catalogue (--source sim).")
@click.pass_context
@user_errors
def warehouse(ctx: click.Context, source: str, tap_url: str | None, refresh: bool,
              page_rows: int | None, band_deg: float | None, labels: str | None,
              radius_arcsec: float, sim_dir: Path, n_detections: int, seed: int) -> None:
    """Load a catalogue and its SIMBAD labels into the warehouse (all or nothing)."""
    from xpipe.ingest.load import LoadRequest, load_catalogue
    from xpipe.services.csc import CSC_RELEASES

    if source in CSC_RELEASES:
        label_file = None if labels is None or labels.lower() == "none" else Path(labels)
        pull_from_service(settings_from(ctx), source, tap_url, refresh, page_rows, band_deg,
                          label_file, radius_arcsec)
        return
    if source == "sim":
        ensure_simulation(sim_dir, n_detections, seed)
        detections, default_labels = sim_dir / "detections", sim_dir / "simbad"
    else:
        detections, default_labels = Path(source), None
    label_path = default_labels if labels is None else (
        None if labels.lower() == "none" else Path(labels))
    settings = settings_from(ctx)
    start = time.perf_counter()
    con = connect(settings)
    try:
        counts = load_catalogue(con, LoadRequest(detections, label_path, radius_arcsec))
    finally:
        con.close()
    click.echo(f"loaded into {settings.warehouse} in {time.perf_counter() - start:.1f} s: "
               + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


def pull_from_service(settings: Settings, release: str, tap_url: str | None, refresh: bool,
                      page_rows: int | None, band_deg: float | None, labels: Path | None,
                      radius_arcsec: float) -> None:
    from xpipe.ingest.pull import PullOptions, pull_catalogue, with_limits
    from xpipe.services.csc import CSC_RELEASES

    config = with_limits(CSC_RELEASES[release].with_url(tap_url), page_rows, band_deg)
    start = time.perf_counter()
    con = connect(settings)
    try:
        counts = pull_catalogue(con, config, options=PullOptions(refresh, labels, radius_arcsec),
                                echo=click.echo)
    finally:
        con.close()
    click.echo(f"pulled {release} from {config.url} into {settings.warehouse} in "
               f"{time.perf_counter() - start:.1f} s: "
               + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@main.command()
@click.option("--tap-url", default=None,
              help="SIMBAD TAP service [default: CDS's]; any TAP service with a SIMBAD-shaped "
                   "`basic` table and uploads.")
@click.option("--radius", "radius_arcsec", type=click.FloatRange(min=0, min_open=True),
              default=1.0, show_default=True, help="Best-match radius in arcsec.")
@click.option("--chunk-rows", type=click.IntRange(min=1, max=200_000), default=200_000,
              show_default=True, help="Source positions per upload (SIMBAD allows 200,000).")
@click.option("--refresh", is_flag=True, help="Forget chunks matched earlier and start over.")
@click.pass_context
@user_errors
def crossmatch(ctx: click.Context, tap_url: str | None, radius_arcsec: float, chunk_rows: int,
               refresh: bool) -> None:
    """Best SIMBAD match of every master source through SIMBAD's TAP (resumable)."""
    from xpipe.ingest.crossmatch import crossmatch as run_crossmatch
    from xpipe.services.simbad import SimbadConfig

    config = SimbadConfig(radius_arcsec=radius_arcsec, chunk_rows=chunk_rows).with_url(tap_url)
    settings = settings_from(ctx)
    start = time.perf_counter()
    con = connect(settings)
    try:
        counts = run_crossmatch(con, config, refresh=refresh, echo=click.echo)
    finally:
        con.close()
    click.echo(f"cross-matched with {config.url} in {time.perf_counter() - start:.1f} s: "
               + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@main.command()
@click.option("--min-significance", type=float, default=5.0, show_default=True,
              help="Selection: flux_significance_b must exceed this.")
@click.option("--no-significance-cut", is_flag=True,
              help="Drop the significance cut: classify every detection with the features.")
@click.option("--require-spectral-fits/--no-require-spectral-fits", default=True,
              show_default=True, help="Selection: powlaw_gamma and bb_kt must be present.")
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
@user_errors
def classify(ctx: click.Context, min_significance: float, no_significance_cut: bool,
             require_spectral_fits: bool, n_components: int, random_state: int,
             fit_sample_size: int, min_references: int) -> None:
    """Run the SQL models, clustering, kernel and votes on the loaded catalogue."""
    from xpipe.predict.batch import ClassifyParams
    from xpipe.predict.batch import classify as run_classify

    params = ClassifyParams(
        min_flux_significance_b=None if no_significance_cut else min_significance,
        require_spectral_fits=require_spectral_fits, n_components=n_components,
        random_state=random_state, fit_sample_size=fit_sample_size,
        min_references=min_references)
    settings = settings_from(ctx)
    con = connect(settings)
    try:
        run, _counts = run_classify(con, settings, params)
        click.echo(f"run {run.run_id} done in {sum(run.timings.values()):.1f} s")
        print_summary(con, settings)
    finally:
        con.close()


def print_summary(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    from xpipe.predict.batch import stage_counts

    counts = stage_counts(con)
    click.echo("\nrows per stage:")
    for key, value in counts.items():
        click.echo(f"  {key:<20} {value:>12,}")
    click.echo("\nsources per master class (uniquely classified):")
    rows = con.execute(
        "SELECT agg_master_class, master_class, count(*) FROM results.source_class "
        "WHERE is_unique GROUP BY ALL ORDER BY agg_master_class, count(*) DESC").fetchall()
    for agg, fine, n in rows:
        click.echo(f"  {agg:<8} {fine:<10} {n:>10,}")
    click.echo(f"\nresults are in {settings.warehouse}: results.detection_class, "
               "results.source_class, results.uniquely_classified, "
               "results.ambiguous_classification")
    click.echo('try: xpipe sql "SELECT agg_master_class, count(*) FROM '
               'results.uniquely_classified GROUP BY 1 ORDER BY 2 DESC"')


@main.command()
@click.pass_context
@user_errors
def summary(ctx: click.Context) -> None:
    """Print the rows per stage and the master classes of the last classification."""
    settings = settings_from(ctx)
    con = connect(settings, read_only=True)
    try:
        print_summary(con, settings)
    finally:
        con.close()


@main.command()
@click.option("--detections", "detections", type=click.Path(path_type=Path, exists=True),
              required=True, help="Per-detection CSV in the published layout.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True)
@user_errors
def vote(detections: Path, out_dir: Path, fmt: str) -> None:
    """Run the voting SQL on an external per-detection table (the paper's layout)."""
    from xpipe.predict.votes import vote_file

    counts = vote_file(detections, out_dir, fmt)
    click.echo(f"wrote {out_dir}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True)
@click.pass_context
@user_errors
def export(ctx: click.Context, out_dir: Path, fmt: str) -> None:
    """Write detection_level_classification, uniquely_classified and ambiguous_classification."""
    from xpipe.predict.export import export_results

    con = connect(settings_from(ctx), read_only=True)
    try:
        written = export_results(con, out_dir, fmt)
    finally:
        con.close()
    for name, path in written.items():
        click.echo(f"{name}: {path}")


@main.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet"]),
              default="table", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@click.option("--max-rows", type=int, default=40, show_default=True,
              help="Rows shown by --format table.")
@click.pass_context
@user_errors
def sql(ctx: click.Context, query: str, fmt: str, out: Path | None, max_rows: int) -> None:
    """Run read-only statements on the warehouse (anything that would write is refused)."""
    from xpipe.warehouse.user_sql import open_guarded, run_user_sql, single_relation, write_relation

    if fmt == "parquet" and out is None:
        raise click.UsageError("--format parquet needs --out FILE")
    settings = settings_from(ctx)
    with open_guarded(settings) as con:
        if out is not None:
            write_relation(single_relation(con, query), out, settings=settings,
                           fmt="parquet" if fmt == "parquet" else "csv")
            click.echo(f"wrote {out}")
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            reader = single_relation(con, query).to_arrow_reader()
            with pacsv.CSVWriter(sys.stdout.buffer, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
        else:
            for relation in run_user_sql(con, query):
                relation.show(max_rows=max_rows, max_width=200)


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc


def _skip_if_current(con: duckdb.DuckDBPyConnection, table: str, command: str) -> bool:
    from xpipe.science.common import is_current, require_classified

    require_classified(con)
    if is_current(con, table):
        click.echo(f"{table} is current for the stored classification: skipping `xpipe "
                   f"{command}` (drop --skip-if-current to recompute)")
        return True
    return False


@main.command()
@click.option("--kmin", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--kmax", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Fits per K, with random_state first-seed, first-seed + 1, ...")
@click.option("--first-seed", type=int, default=42, show_default=True)
@click.option("--jobs", "n_jobs", type=int, default=-1, show_default=True,
              help="Worker processes (-1: every core).")
@click.option("--fit-sample", "fit_sample_size", type=click.IntRange(min=100), default=None,
              help="Sample size above which to subsample [default: the stored classification's].")
@click.option("--skip-if-current", is_flag=True,
              help="Do nothing if the stored curve is for the stored classification.")
@click.pass_context
@user_errors
def bic(ctx: click.Context, kmin: int, kmax: int, n_seeds: int, first_seed: int, n_jobs: int,
        fit_sample_size: int | None, skip_if_current: bool) -> None:
    """BIC of the Gaussian mixture per K and seed, its gradient and the elbow K (Fig. 1)."""
    from xpipe.science.bic import BicParams, curve_text, run_bic

    con = connect(settings_from(ctx))
    try:
        if skip_if_current and _skip_if_current(con, "results.bic_scores", "bic"):
            return
        result = run_bic(con, BicParams(kmin, kmax, n_seeds, first_seed, n_jobs,
                                        fit_sample_size))
        click.echo(curve_text(result.curve))
        click.echo(f"elbow K = {result.elbow_k}; stored in results.bic_scores and "
                   "results.bic_curve (run " + result.run.run_id + ")")
    finally:
        con.close()


@main.command()
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.3, show_default=True, help="Share of the references held out.")
@click.option("--seed", type=int, default=42, show_default=True, help="Split random_state.")
@click.option("--skip-if-current", is_flag=True,
              help="Do nothing if the stored validation is for the stored classification.")
@click.pass_context
@user_errors
def validate(ctx: click.Context, test_size: float, seed: int, skip_if_current: bool) -> None:
    """Held-out validation: confusion matrices, precision/recall, kappa of the votes."""
    from xpipe.science.validation import ValidateParams, run_validation, validation_text

    con = connect(settings_from(ctx))
    try:
        if skip_if_current and _skip_if_current(con, "results.validation_detections",
                                                "validate"):
            return
        result = run_validation(con, ValidateParams(test_size, seed),
                                settings_from(ctx).chunk_rows)
        click.echo(validation_text(result))
        click.echo("tables: results.validation_confusion, results.validation_metrics, "
                   "results.vote_kappa (run " + result.run.run_id + ")")
    finally:
        con.close()


@main.command()
@click.option("--seeds", "seeds", default="", metavar="S1,S2,...",
              help="Other seeds at the stored K [default: the three after the stored seed].")
@click.option("--k", "ks", default="5,7", show_default=True, metavar="K1,K2,...",
              help="Other K at the stored seed.")
@click.option("--control/--no-control", default=True, show_default=True,
              help="Also refit the stored K and seed (measures numerical noise).")
@click.option("--skip-if-current", is_flag=True,
              help="Do nothing if the stored summary is for the stored classification.")
@click.pass_context
@user_errors
def stability(ctx: click.Context, seeds: str, ks: str, control: bool,
              skip_if_current: bool) -> None:
    """Refit the clustering with other seeds and K; ARI and master-class changes."""
    from xpipe.science.stability import StabilityParams, run_stability, stability_text

    settings = settings_from(ctx)
    con = connect(settings)
    try:
        if skip_if_current and _skip_if_current(con, "results.stability", "stability"):
            return
        result = run_stability(con, StabilityParams(_int_list(seeds), _int_list(ks), control),
                               settings.chunk_rows)
        click.echo(stability_text(result.table))
        click.echo("stored in results.stability (run " + result.run.run_id + ")")
    finally:
        con.close()


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("report.html"),
              show_default=True)
@click.pass_context
@user_errors
def report(ctx: click.Context, out: Path) -> None:
    """Write one self-contained HTML report with the paper's tables and figures."""
    from xpipe.core.progress import progress_bar
    from xpipe.science.report import SECTION_LABELS, build_report

    settings = settings_from(ctx)
    con = connect(settings, read_only=True)
    try:
        with progress_bar("report", total=len(SECTION_LABELS), unit="sections") as bar:
            page = build_report(con, str(settings.warehouse),
                                progress=lambda label: (bar.set_postfix_str(label),
                                                        bar.update(1)))
    finally:
        con.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    missing = page.count('class="missing"')
    click.echo(f"wrote {out} ({len(page) / 1e6:.1f} MB)"
               + (f"; {missing} section(s) not computed yet, see the report" if missing else ""))


@main.command()
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also draw the explanation (paper Fig. 10) to this PNG.")
@click.pass_context
@user_errors
def explain(ctx: click.Context, name: str, out: Path | None) -> None:
    """Why one source got its class: detections, probabilities, 95 % bands, votes."""
    from xpipe.science.explain import explain_source
    from xpipe.science.figures import png_bytes

    con = connect(settings_from(ctx), read_only=True)
    try:
        explanation = explain_source(con, name)
    finally:
        con.close()
    click.echo(explanation.text())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png_bytes(explanation.figure(), dpi=110))
        click.echo(f"wrote {out}")


@main.command("dag")
def dag() -> None:
    """List the SQL models: table, layer, materialization and grain."""
    from xpipe.warehouse.sql_models import describe_models

    click.echo(describe_models())


@main.group("models")
def models() -> None:
    """Frozen model versions: one per `xpipe classify` run, or imported from a file."""


def _print_frame(frame: Any, max_rows: int = 40) -> None:
    import polars as pl

    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=1000,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        click.echo(frame)


@models.command("list")
@click.pass_context
@user_errors
def models_list(ctx: click.Context) -> None:
    """The stored versions, newest first."""
    from xpipe.models import store

    con = connect(settings_from(ctx), read_only=True)
    try:
        versions = store.list_versions(con)
    finally:
        con.close()
    if versions.is_empty():
        click.echo("no model versions: run `xpipe classify` or `xpipe models import FILE`")
        return
    _print_frame(versions, max_rows=200)


@models.command("show")
@click.argument("version", default="latest")
@click.pass_context
@user_errors
def models_show(ctx: click.Context, version: str) -> None:
    """One version: hash (verified), provenance, selection, scaling, mixture, references."""
    from xpipe.models import frozen, store

    con = connect(settings_from(ctx), read_only=True)
    try:
        model = store.load(con, version)
    finally:
        con.close()
    click.echo(frozen.describe(model))


@models.command("export")
@click.argument("version")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_context
@user_errors
def models_export(ctx: click.Context, version: str, file: Path) -> None:
    """Write VERSION to FILE (.npz: model.json and plain arrays; no pickle)."""
    from xpipe.models import file as model_file
    from xpipe.models import store

    con = connect(settings_from(ctx), read_only=True)
    try:
        model = store.load(con, version)
    finally:
        con.close()
    model_file.write_file(model, file)
    click.echo(f"wrote model {model.version} (hash {model.content_hash[:12]}) to {file}")


@models.command("import")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.pass_context
@user_errors
def models_import(ctx: click.Context, file: Path) -> None:
    """Add the model in FILE to the warehouse (verified; importing it again changes nothing)."""
    from xpipe.models import file as model_file
    from xpipe.models import store
    from xpipe.warehouse.connection import transaction

    model = model_file.read_file(file)
    settings = settings_from(ctx)
    con = connect(settings)
    try:
        with transaction(con):
            added = store.store(con, model, origin="import")
    finally:
        con.close()
    state = "imported" if added else "already present:"
    click.echo(f"{state} model {model.version} (hash {model.content_hash[:12]}) in "
               f"{settings.warehouse}")


@main.command("classify-new")
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
@click.pass_context
@user_errors
def classify_new(ctx: click.Context, file: Path, model_ref: str | None, append: bool,
                 out: Path | None, max_rows: int) -> None:
    """Classify the detections in FILE (VOTable, CSV, Parquet) with a frozen model."""
    from xpipe.predict.classify_new import append as append_results
    from xpipe.predict.classify_new import display_frames, resolve_model, summary_lines, write_table
    from xpipe.predict.new import predict

    settings = settings_from(ctx)
    model = resolve_model(settings, model_ref)
    start = time.perf_counter()
    prediction = predict(model, [file], settings)
    seconds = time.perf_counter() - start
    detections, sources = display_frames(prediction)
    _print_frame(detections, max_rows)
    click.echo("\nvotes of the sources in the file:")
    _print_frame(sources, max_rows)
    click.echo("")
    for line in summary_lines(prediction):
        click.echo(line)
    click.echo(f"classified in {seconds:.1f} s "
               f"({prediction.detections.height / max(seconds, 1e-9):,.0f} detections/s)")
    if out is not None:
        write_table(prediction.detections, out)
        click.echo(f"wrote {out}")
    if append:
        con = connect(settings)
        try:
            counts = append_results(con, prediction, model, str(file))
        finally:
            con.close()
        click.echo(f"appended to {settings.warehouse}: {counts['new']:,} new, "
                   f"{counts['already_stored']:,} already stored (replaced)")


@main.command()
@click.option("--top", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "parquet"]),
              default="table", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write to this file (csv or parquet) instead of printing.")
@click.pass_context
@user_errors
def anomalies(ctx: click.Context, top: int, fmt: str, out: Path | None) -> None:
    """The most anomalous sources: each source's most anomalous detection, with its features."""
    from xpipe.science.anomalies import top_anomalies

    con = connect(settings_from(ctx), read_only=True)
    try:
        frame = top_anomalies(con, top)
    finally:
        con.close()
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
        _print_frame(frame, max_rows=top)


if __name__ == "__main__":  # pragma: no cover
    main()
