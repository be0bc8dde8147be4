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

from xpipe.config import Settings
from xpipe.schemas import SchemaError
from xpipe.warehouse import WarehouseError, connect, sql_literal

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
@user_errors
def simulate(n_detections: int, seed: int, out_dir: Path, match_fraction: float,
             wrong_type_fraction: float, chunk_detections: int) -> None:
    """Write a simulated CSC-shaped catalogue, SIMBAD table and truth table (Parquet)."""
    from xpipe.progress import progress_bar
    from xpipe.simulate import SimulationConfig, simulate_catalogue

    config = SimulationConfig(n_detections=n_detections, seed=seed,
                              chunk_detections=chunk_detections, match_fraction=match_fraction,
                              wrong_type_fraction=wrong_type_fraction)
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
              help="'sim' (the simulated catalogue in --sim-dir, made if needed) or a VOTable, "
                   "CSV or Parquet file / folder of Parquet parts with CSC columns.")
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
def warehouse(ctx: click.Context, source: str, labels: str | None, radius_arcsec: float,
              sim_dir: Path, n_detections: int, seed: int) -> None:
    """Load a catalogue and its SIMBAD labels into the warehouse (all or nothing)."""
    from xpipe.load import LoadRequest, load_catalogue

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
              default=1_000_000, show_default=True,
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
    from xpipe.classify import ClassifyParams
    from xpipe.classify import classify as run_classify

    params = ClassifyParams(
        min_flux_significance_b=None if no_significance_cut else min_significance,
        require_spectral_fits=require_spectral_fits, n_components=n_components,
        random_state=random_state, fit_sample_size=fit_sample_size,
        min_references=min_references)
    settings = settings_from(ctx)
    con = connect(settings)
    try:
        run, counts = run_classify(con, settings, params)
        click.echo(f"run {run.run_id} done in {sum(run.timings.values()):.1f} s")
        print_summary(con, settings)
    finally:
        con.close()


def print_summary(con: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    from xpipe.classify import stage_counts

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
    from xpipe.vote import vote_file

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
    from xpipe.export import export_results

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
    """Run a query on a read-only connection to the warehouse."""
    con = connect(settings_from(ctx), read_only=True)
    try:
        if out is not None or fmt == "parquet":
            if out is None:
                raise click.UsageError("--format parquet needs --out FILE")
            kind = "parquet" if fmt == "parquet" else "csv, HEADER true"
            con.execute(f"COPY ({query}) TO {sql_literal(out)} (FORMAT {kind})")
            click.echo(f"wrote {out}")
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            reader = con.sql(query).to_arrow_reader()
            with pacsv.CSVWriter(sys.stdout.buffer, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
        else:
            con.sql(query).show(max_rows=max_rows, max_width=200)
    finally:
        con.close()


@main.command("models")
def models_doc() -> None:
    """List the SQL models: table, layer, materialization and grain."""
    from xpipe.runner import describe_models

    click.echo(describe_models())


if __name__ == "__main__":
    main()
