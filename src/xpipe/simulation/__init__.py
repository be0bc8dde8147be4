"""Simulate a CSC-2.0-like per-detection table, a SIMBAD-like object table and the truth.

Why: the pipeline has to be exercised at scales the real catalogue cannot reach (10^8
detections) and against known answers the published tables cannot give. Every distribution
used here is either fitted on the real reference tables by `scripts/calibrate_simulator.py`
or chosen and stated, with its reason, in `data/simulator_params.json`, so a run is a
plausible stand-in for CSC 2.0 rather than random numbers of the right type. The classes and
features come from the seeds (`sql/seeds/`), like everywhere else in the pipeline.

Generation is chunked: chunk j draws from its own `SeedSequence(seed, spawn_key=(j,))`
stream and only one chunk's arrays are alive at a time, so memory is O(chunk_detections)
and output is byte-identical for a given config.

Stages, one module each: `config` (what to simulate), `calibration` (the params file as arrays),
`sources` (sources, classes, brightness), `detections` (features), `columns` (raw CSC
columns and nulls), `sky` and `names` (positions, unique CSC names), `observations`
(obsid, obi, region_id), `simbad` (counterparts, field objects), `outliers`, `chunk` (one
chunk, stage by stage) and `catalogue` (the parts and the manifest).
"""

from xpipe.simulation.calibration import detections_per_source_pmf
from xpipe.simulation.catalogue import simulate_catalogue
from xpipe.simulation.config import SimulationConfig, default_params_path
from xpipe.simulation.features import derive_features, paper_selection
from xpipe.simulation.latent import (
    HARD_CLIP,
    PROB_EPS,
    PROB_FLOOR,
    RATIO_FLOOR,
    apply_uniform_maps,
    blend_latents,
    features_to_latent,
    latent_to_features,
)
from xpipe.simulation.names import chunk_residues, csc_name_cells, csc_names, nudge_to_residue
from xpipe.simulation.outliers import OUTLIER_KINDS, inject_outliers
from xpipe.simulation.sky import galactic_to_icrs, icrs_to_galactic, offset_positions
from xpipe.simulation.vocabulary import (
    AGG_CLASS,
    BANDS,
    CLASSES,
    DETECTION_SCHEMA,
    FEATURES,
    OWN_OTYPE,
    SIMBAD_SCHEMA,
    TRUTH_SCHEMA,
)

__all__ = [
    "AGG_CLASS",
    "BANDS",
    "CLASSES",
    "DETECTION_SCHEMA",
    "FEATURES",
    "HARD_CLIP",
    "OUTLIER_KINDS",
    "OWN_OTYPE",
    "PROB_EPS",
    "PROB_FLOOR",
    "RATIO_FLOOR",
    "SIMBAD_SCHEMA",
    "TRUTH_SCHEMA",
    "SimulationConfig",
    "apply_uniform_maps",
    "blend_latents",
    "chunk_residues",
    "csc_name_cells",
    "csc_names",
    "default_params_path",
    "derive_features",
    "detections_per_source_pmf",
    "features_to_latent",
    "galactic_to_icrs",
    "icrs_to_galactic",
    "inject_outliers",
    "latent_to_features",
    "nudge_to_residue",
    "offset_positions",
    "paper_selection",
    "simulate_catalogue",
]
