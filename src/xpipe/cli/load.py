"""Getting a catalogue into the warehouse: `simulate`, `warehouse` and `crossmatch`."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import click

from xpipe.cli.common import counts_text, settings_from
from xpipe.core.config import Settings
from xpipe.warehouse.connection import connect


@click.command()
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
def simulate(*, n_detections: int, seed: int, out_dir: Path, match_fraction: float,
             wrong_type_fraction: float, chunk_detections: int,
             outlier_fraction: float = 0.0) -> None:
    """Write a simulated CSC-shaped catalogue, SIMBAD table and truth table (Parquet)."""
    from xpipe.core.progress import progress_bar
    from xpipe.simulation.catalogue import SimulationConfig, simulate_catalogue

    config = SimulationConfig(n_detections=n_detections, seed=seed,
                              chunk_detections=chunk_detections, match_fraction=match_fraction,
                              wrong_type_fraction=wrong_type_fraction,
                              outlier_fraction=outlier_fraction)
    with progress_bar("simulate", total=n_detections) as bar:

        def advance(n: int) -> None:
            bar.update(n)

        summary = simulate_catalogue(config, out_dir, progress=advance)
    click.echo(f"simulated catalogue in {out_dir}:")
    for key, value in summary.items():
        click.echo(f"  {key}: {value}")


def ensure_simulation(sim_dir: Path, n_detections: int, *, seed: int) -> None:
    """Reuse a simulated catalogue with the same size, seed and simulator params file, or make
    it; one the simulator made from another params file (e.g. before it drew confidence
    limits) is replaced, since its columns differ."""
    from xpipe.simulation.catalogue import GENERATOR, current_params_sha256, output_paths

    manifest = sim_dir / "manifest.json"
    if manifest.exists():
        made = json.loads(manifest.read_text())
        config = made.get("config", {})
        if config.get("n_detections") == n_detections and config.get("seed") == seed:
            if made.get("params_sha256") == current_params_sha256():
                click.echo(f"using simulated catalogue in {sim_dir} ({n_detections} "
                           f"detections, seed {seed})")
                return
            if made.get("generator") == GENERATOR:
                click.echo(f"the simulated catalogue in {sim_dir} was made from other simulator "
                           "params (an older xpipe): making it again")
                for path in output_paths(sim_dir):
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
    # click fills every option not given here with its default, as on the command line
    click.get_current_context().invoke(simulate, n_detections=n_detections, seed=seed,
                                       out_dir=sim_dir)


@click.command()
@click.option("--source", required=True,
              help="'sim' (the simulated catalogue in --sim-dir, made if needed), 'csc20' or "
                   "'csc21' (pull every detection from the CSC TAP service, resumable), or a "
                   "VOTable, CSV or Parquet file / folder of Parquet parts with CSC columns, or a "
                   "folder written by `xpipe simulate --out`.")
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
                   "Default for sim or a simulated catalogue's folder: its SIMBAD table.")
@click.option("--radius", "radius_arcsec", type=float, default=1.0, show_default=True,
              help="Best-match radius in arcsec.")
@click.option("--sim-dir", type=click.Path(path_type=Path), default=Path("warehouse/sim"),
              show_default=True)
@click.option("--detections", "n_detections", type=click.IntRange(min=1), default=928_280,
              show_default=True, help="Size of the simulated catalogue (--source sim).")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Seed of the simulated catalogue (--source sim).")
@click.pass_context
def warehouse(ctx: click.Context, *, source: str, tap_url: str | None, refresh: bool,
              page_rows: int | None, band_deg: float | None, labels: str | None,
              radius_arcsec: float, sim_dir: Path, n_detections: int, seed: int) -> None:
    """Load a catalogue and its SIMBAD labels into the warehouse (all or nothing)."""
    from xpipe.services.csc import CSC_RELEASES

    no_labels = labels is not None and labels.lower() == "none"
    if source in CSC_RELEASES:
        pull_from_service(settings_from(ctx), source, tap_url=tap_url, refresh=refresh,
                          page_rows=page_rows, band_deg=band_deg,
                          labels=None if labels is None or no_labels else Path(labels),
                          radius_arcsec=radius_arcsec)
        return
    if source == "sim":
        ensure_simulation(sim_dir, n_detections, seed=seed)
        source = str(sim_dir)
    detections, default_labels = catalogue_inputs(Path(source))
    label_path = default_labels if labels is None else None if no_labels else Path(labels)
    load_files(settings_from(ctx), detections, labels=label_path, radius_arcsec=radius_arcsec)


def catalogue_inputs(source: Path) -> tuple[Path, Path | None]:
    """The detections of `source` and its default labels: a simulated catalogue's folder (what
    `xpipe simulate --out DIR` writes) holds both; any other file or folder, detections only."""
    if (source / "manifest.json").is_file() and (source / "detections").is_dir():
        return source / "detections", source / "simbad"
    return source, None


def load_files(settings: Settings, detections: Path, *, labels: Path | None,
               radius_arcsec: float) -> None:
    """Load detection files and their labels (xpipe.ingest.load) and report the counts."""
    from xpipe.ingest.load import LoadRequest, load_catalogue

    start = time.perf_counter()
    with connect(settings, create=True) as con:
        counts = load_catalogue(con, LoadRequest(detections, labels, radius_arcsec))
    click.echo(f"loaded into {settings.warehouse} in {time.perf_counter() - start:.1f} s: "
               + counts_text(counts))


def pull_from_service(settings: Settings, release: str, *, tap_url: str | None, refresh: bool,
                      page_rows: int | None, band_deg: float | None, labels: Path | None,
                      radius_arcsec: float) -> None:
    """Pull a CSC release over TAP (xpipe.ingest.pull) and report the counts."""
    from xpipe.ingest.pull import PullOptions, pull_catalogue, with_limits
    from xpipe.services.csc import CSC_RELEASES

    config = with_limits(CSC_RELEASES[release].with_url(tap_url), page_rows, band_deg)
    start = time.perf_counter()
    with connect(settings, create=True) as con:
        counts = pull_catalogue(con, config, options=PullOptions(refresh, labels, radius_arcsec),
                                echo=click.echo)
    click.echo(f"pulled {release} from {config.url} into {settings.warehouse} in "
               f"{time.perf_counter() - start:.1f} s: " + counts_text(counts))


@click.command()
@click.option("--tap-url", default=None,
              help="SIMBAD TAP service [default: CDS's]; any TAP service with a SIMBAD-shaped "
                   "`basic` table and uploads.")
@click.option("--radius", "radius_arcsec", type=click.FloatRange(min=0, min_open=True),
              default=1.0, show_default=True, help="Best-match radius in arcsec.")
@click.option("--chunk-rows", type=click.IntRange(min=1, max=200_000), default=200_000,
              show_default=True, help="Source positions per upload (SIMBAD allows 200,000).")
@click.option("--refresh", is_flag=True, help="Forget chunks matched earlier and start over.")
@click.pass_context
def crossmatch(ctx: click.Context, *, tap_url: str | None, radius_arcsec: float,
               chunk_rows: int, refresh: bool) -> None:
    """Best SIMBAD match of every master source through SIMBAD's TAP (resumable)."""
    from xpipe.ingest.crossmatch import crossmatch as run_crossmatch
    from xpipe.services.simbad import SimbadConfig

    config = SimbadConfig(radius_arcsec=radius_arcsec, chunk_rows=chunk_rows).with_url(tap_url)
    start = time.perf_counter()
    with connect(settings_from(ctx)) as con:
        counts = run_crossmatch(con, config, refresh=refresh, echo=click.echo)
    click.echo(f"cross-matched with {config.url} in {time.perf_counter() - start:.1f} s: "
               + counts_text(counts))
