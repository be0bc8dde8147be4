"""What to simulate, and where the fitted parameters live."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xpipe.core.errors import InputError

_MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Validated on construction so a bad value fails before any I/O."""

    n_detections: int
    seed: int = 42
    chunk_detections: int = 1_000_000  # generation unit; memory is O(chunk)
    match_fraction: float = 0.5  # fraction of sources with a SIMBAD counterpart
    wrong_type_fraction: float = 0.05  # matched sources whose SIMBAD type is a wrong class
    params_path: Path | None = None  # default: the packaged simulator_params.json
    # selected detections of sources without a counterpart turned into outliers (anomaly tests)
    outlier_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check_integers(self)
        _check_fractions(self)
        if self.params_path is not None and not isinstance(self.params_path, str | Path):
            raise InputError(f"params_path must be a path or None, got {self.params_path!r}")

    @property
    def chunk_size(self) -> int:
        """Detections per chunk (the last chunk may be smaller)."""
        return min(self.chunk_detections, self.n_detections)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_detections // min(self.chunk_detections, self.n_detections))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["params_path"] = None if self.params_path is None else str(self.params_path)
        return out


def _check_integers(cfg: SimulationConfig) -> None:
    for name in ("n_detections", "seed", "chunk_detections"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InputError(f"{name} must be an integer, got {value!r}")
    if cfg.n_detections < 1:
        raise InputError(f"n_detections must be >= 1, got {cfg.n_detections}")
    if cfg.n_detections > _MAX_INT32 - 1:
        raise InputError(
            f"n_detections must be < 2**31 - 1 (obsid and region_id are int32), "
            f"got {cfg.n_detections}"
        )
    if cfg.seed < 0:
        raise InputError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.chunk_detections < 1:
        raise InputError(f"chunk_detections must be >= 1, got {cfg.chunk_detections}")
    if cfg.n_chunks > 999_999:
        raise InputError(f"{cfg.n_chunks} chunks is too many (max 999,999); raise chunk_detections")


def _check_fractions(cfg: SimulationConfig) -> None:
    for name in ("match_fraction", "wrong_type_fraction", "outlier_fraction"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
        if not (0.0 <= float(value) <= 1.0):
            raise InputError(f"{name} must be in [0, 1], got {value!r}")


def default_params_path() -> Path:
    """The params file shipped with the package (written by scripts/calibrate_simulator.py)."""
    return Path(__file__).resolve().parent / "data" / "simulator_params.json"
