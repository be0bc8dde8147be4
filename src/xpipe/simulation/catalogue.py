"""`simulate_catalogue`: the chunks written as Parquet parts, and the manifest that sums
them up."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xpipe.simulation.calibration import load_calibration
from xpipe.simulation.chunk import generate_chunk
from xpipe.simulation.config import SimulationConfig, default_params_path
from xpipe.simulation.vocabulary import CLASSES

GENERATOR = "xpipe.simulate"  # the manifest's name for the simulator (stable across layouts)
_DICTIONARY_COLUMNS = {  # dictionary-encoded columns of each table
    "detections": ["name"],
    "simbad": ["otype"],
    "truth": ["true_class", "agg_class", "simbad_otype"],
    "outliers": ["kind"],
}
_TOTALS = (
    "n_detections",
    "n_sources",
    "n_counterparts",
    "n_field_objects",
    "n_selected",
    "n_selected_complete",
)
_PER_CLASS = ("sources", "detections", "selected", "selected_complete", "with_counterpart")


def simulate_catalogue(
    config: SimulationConfig, out_dir: Path, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Write a simulated catalogue under `out_dir` and return its summary.

    Layout: detections/part-NNNNN.parquet (one per chunk, DETECTION_SCHEMA),
    simbad/part-NNNNN.parquet, truth/part-NNNNN.parquet and manifest.json (config, params
    sha256, summary). `progress(n)` is called with the detections written after each chunk.
    Refuses to write into a folder that already holds a simulated catalogue, so stale parts
    from an earlier, larger run can never mix in.
    """
    if not isinstance(config, SimulationConfig):
        raise ValueError(f"config must be a SimulationConfig, got {type(config).__name__}")
    calibration = load_calibration(config.params_path)
    out_dir = Path(out_dir)
    parts = _part_folders(out_dir, with_outliers=config.outlier_fraction > 0)
    totals = dict.fromkeys(_TOTALS + (("n_outliers",) if "outliers" in parts else ()), 0)
    per_class = {key: np.zeros(len(CLASSES), dtype=np.int64) for key in _PER_CLASS}
    files: dict[str, list[str]] = {name: [] for name in parts}
    n_chunks, size = config.n_chunks, config.chunk_size
    for j in range(n_chunks):
        n_det = min(size, config.n_detections - j * size)
        chunk = generate_chunk(calibration, config, j, n_chunks=n_chunks, n_det=n_det)
        fname = f"part-{j:05d}.parquet"
        for name, table in chunk.tables.items():
            _write(table, parts[name] / fname, _DICTIONARY_COLUMNS[name])
            files[name].append(f"{name}/{fname}")
        for key in totals:
            totals[key] += int(chunk.stats[key])
        for key in per_class:
            per_class[key] += chunk.stats[key]
        del chunk  # only one chunk's arrays are alive at a time
        if progress is not None:
            progress(n_det)

    summary = _summary(totals, per_class, n_chunks)
    params_file = default_params_path() if config.params_path is None else config.params_path
    manifest = {
        "generator": GENERATOR,
        "config": config.to_json(),
        "params_file": str(Path(params_file)),
        "params_sha256": calibration.sha256,
        "summary": summary,
        "files": files,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def current_params_sha256() -> str:
    """The sha256 of the packaged params file, as a manifest records it."""
    return hashlib.sha256(default_params_path().read_bytes()).hexdigest()


def output_paths(out_dir: Path) -> list[Path]:
    """What `simulate_catalogue` writes under `out_dir`: the table folders and the manifest."""
    return [out_dir / name for name in _DICTIONARY_COLUMNS] + [out_dir / "manifest.json"]


def _part_folders(out_dir: Path, *, with_outliers: bool) -> dict[str, Path]:
    """The tables' folders, made empty; an earlier catalogue there is an error."""
    names = ["detections", "simbad", "truth"] + (["outliers"] if with_outliers else [])
    parts = {name: out_dir / name for name in names}
    existing = [p for p in [*parts.values(), out_dir / "manifest.json"] if p.exists()]
    if existing:
        raise FileExistsError(
            f"{out_dir} already holds simulator output ({existing[0].name}); use an empty folder"
        )
    for p in parts.values():
        p.mkdir(parents=True, exist_ok=True)
    return parts


def _write(table: pa.Table, path: Path, dictionary: list[str]) -> None:
    pq.write_table(
        table, path, compression="snappy", use_dictionary=dictionary, write_statistics=True
    )


def _summary(
    totals: dict[str, int], per_class: dict[str, np.ndarray], n_chunks: int
) -> dict[str, Any]:
    return {
        **totals,
        "n_simbad_rows": totals["n_counterparts"] + totals["n_field_objects"],
        "n_chunks": n_chunks,
        "per_class": {
            c: {key: int(per_class[key][i]) for key in per_class} for i, c in enumerate(CLASSES)
        },
    }
