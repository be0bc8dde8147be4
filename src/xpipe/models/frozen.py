"""A frozen model: what `xpipe classify` fitted, as one immutable, self-contained value.

A version holds everything needed to classify a detection later exactly as the batch run did:
the selection, the scaling parameters, the mixture, the per (cluster, class) reference
statistics and the class list, with the run it came from and a SHA-256 of that content. The
version store (`models.store`) keeps versions in the warehouse; the model file
(`models.file`) moves one between warehouses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xpipe import __version__
from xpipe.method.kernel import MahalanobisSoftmin, usable_classes
from xpipe.method.mixture import MixtureParams

F64 = NDArray[np.float64]

ARRAYS = {  # name: dtype; shapes follow from (components K, classes C, features F)
    "mixture_weights": "<f8", "mixture_means": "<f8", "mixture_covariances": "<f8",
    "reference_counts": "<i8", "reference_means": "<f8", "reference_pinv": "<f8",
}

@dataclass(frozen=True)
class FeatureScaling:
    """One row of model.preprocessing_params: how a raw feature is scaled (METHOD §3)."""

    feature: str
    position: int
    transform: str  # none | minmax | log_minmax
    min_nonzero: float | None
    log_offset: float | None
    min_value: float | None
    max_value: float | None


@dataclass(frozen=True, eq=False, kw_only=True)
class FrozenModel:
    """An immutable, self-contained classification model (one version)."""

    version: str
    classes: tuple[str, ...]
    features: tuple[str, ...]
    selection: dict[str, Any]  # min_flux_significance_b, require_spectral_fits[, match_type]
    params: dict[str, Any]  # n_components, random_state, fit_sample_size, min_references
    scaling: tuple[FeatureScaling, ...]
    mixture: MixtureParams
    reference_counts: NDArray[np.int64]  # (K, C)
    reference_means: F64  # (K, C, F); zeros where the class is not usable
    reference_pinv: F64  # (K, C, F, F); zeros where the class is not usable
    provenance: dict[str, Any] = field(default_factory=dict)  # run_id, created_at, counts

    @property
    def run_id(self) -> str:
        return str(self.provenance.get("run_id", self.version))

    @property
    def min_references(self) -> int:
        return int(self.params["min_references"])

    @property
    def usable(self) -> NDArray[np.bool_]:
        return usable_classes(self.reference_counts, self.min_references)

    def arrays(self) -> dict[str, np.ndarray]:
        values = {"mixture_weights": self.mixture.weights, "mixture_means": self.mixture.means,
                  "mixture_covariances": self.mixture.covariances,
                  "reference_counts": self.reference_counts,
                  "reference_means": self.reference_means, "reference_pinv": self.reference_pinv}
        return {k: np.ascontiguousarray(v, dtype=ARRAYS[k]) for k, v in values.items()}

    def content(self) -> dict[str, Any]:
        """Everything but the arrays and provenance, as JSON values (floats round-trip)."""
        return {"classes": list(self.classes), "features": list(self.features),
                "selection": self.selection, "params": self.params,
                "scaling": [vars(s) for s in self.scaling]}

    @cached_property
    def content_hash(self) -> str:
        return content_hash(self.content(), self.arrays())

    def kernel(self) -> MahalanobisSoftmin:
        """The fitted kernel, restored from the stored statistics."""
        return MahalanobisSoftmin(self.min_references).set_statistics(
            self.reference_counts, self.reference_means, self.reference_pinv)


# Selections a model records only when they were used (a model from before they existed, or
# fitted without them, records none): the SQL variable's value when absent.
OPTIONAL_SELECTION: dict[str, Any] = {"match_type": None}


def selection_variables(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The SQL variables of a recorded selection: every optional selection not in it is off."""
    return {**OPTIONAL_SELECTION, **selection}


def content_hash(content: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the canonical JSON of `content` and each array's name, dtype, shape, bytes."""
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                       allow_nan=False).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name], dtype=ARRAYS[name])
        digest.update(f"\n{name}:{array.dtype.str}:{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def from_fit(run_id: str, *, selection: dict[str, Any], params: dict[str, Any],
             scaling: list[FeatureScaling], mixture: MixtureParams, kernel: MahalanobisSoftmin,
             classes: tuple[str, ...], features: tuple[str, ...],
             counts: dict[str, int] | None = None) -> FrozenModel:
    """The version a classify run just fitted (its id is the run id)."""
    return FrozenModel(
        version=run_id, classes=tuple(classes), features=tuple(features),
        selection=dict(selection), params=dict(params), scaling=tuple(scaling),
        mixture=MixtureParams(np.asarray(mixture.weights, dtype=np.float64),
                              np.asarray(mixture.means, dtype=np.float64),
                              np.asarray(mixture.covariances, dtype=np.float64)),
        reference_counts=np.asarray(kernel.counts_, dtype=np.int64),
        reference_means=np.where(kernel.usable_[..., None], kernel.means_, 0.0),
        reference_pinv=np.where(kernel.usable_[..., None, None], kernel.pinv_, 0.0),
        provenance={"run_id": run_id,
                    "created_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                    "xpipe_version": __version__, **({"counts": counts} if counts else {})},
    )



def describe(model: FrozenModel) -> str:
    """`xpipe models show`: provenance, selection, scaling, mixture and reference counts."""
    sel = model.selection
    cut = sel.get("min_flux_significance_b")
    lines = [
        f"model version {model.version}",
        f"  content hash   {model.content_hash} (verified)",
        f"  from run       {model.run_id}, frozen {model.provenance.get('created_at', '?')}, "
        f"xpipe {model.provenance.get('xpipe_version', '?')}",
        f"  selection      flux_significance_b > {cut}" if cut is not None else
        "  selection      no significance cut",
        f"                 spectral fits required: {sel.get('require_spectral_fits')}",
        *([f"                 master_stack_assoc.match_type = {sel['match_type']!r}"]
          if sel.get("match_type") is not None else []),
        f"  method         K = {model.params.get('n_components')}, random_state "
        f"{model.params.get('random_state')}, min_references {model.min_references}",
    ]
    counts = model.provenance.get("counts") or {}
    if counts:
        lines.append("  trained on     " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    lines += ["", "scaling (METHOD §3):",
              f"  {'feature':<13} {'transform':<11} {'log offset':>12} {'min':>12} {'max':>12}"]
    for s in model.scaling:
        lines.append(f"  {s.feature:<13} {s.transform:<11} {_num(s.log_offset):>12} "
                     f"{_num(s.min_value):>12} {_num(s.max_value):>12}")
    lines += ["", "mixture weights: " + ", ".join(f"{w:.3f}" for w in model.mixture.weights),
              "", "references per cluster and class (* usable):",
              "  cluster " + " ".join(f"{name[:9]:>9}" for name in model.classes)]
    usable = model.usable
    for cl in range(len(model.mixture.weights)):
        cells = [f"{model.reference_counts[cl, k]:>8}{'*' if usable[cl, k] else ' '}"
                 for k in range(len(model.classes))]
        lines.append(f"  {cl:>7} " + " ".join(cells))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
