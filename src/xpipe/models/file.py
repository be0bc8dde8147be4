"""The portable model file: one frozen model as a zip (`.npz`) that loads without running code.

`xpipe models export` writes `model.json` (format, version, hash, classes, features, selection,
parameters, scaling, provenance) and plain float64/int64 `.npy` arrays (`mixture_*`,
`reference_*`). It is read with `allow_pickle=False` and checked member by member, then for
integrity (the content hash) and for sense (`check_sense`: names and transforms from the seeds,
positive definite covariances, counts, parameters), so a file whose hash was recomputed after
an edit is still refused with the file named; `np.load(file)` or `unzip -p file model.json`
inspect it.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from xpipe.core.errors import ModelFileError
from xpipe.method.mixture import MixtureParams
from xpipe.models.frozen import ARRAYS, FeatureScaling, FrozenModel
from xpipe.warehouse.seeds import class_names, feature_names, feature_transforms

FORMAT = "xpipe-model"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 64 * 2**20  # a model is ~100 kB; refuse anything absurd before reading it
# relative tolerance of the symmetry and semi-definiteness of the reference pseudo-inverses and
# of the mixture weights' sum (a fit's rounding is ~1e-15 of the largest entry)
TOLERANCE = 1e-8

def write_file(model: FrozenModel, path: Path) -> Path:
    """Write the portable model file (a zip of model.json and plain .npy arrays)."""
    arrays = model.arrays()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": model.version,
            "content_hash": model.content_hash, **model.content(),
            "provenance": model.provenance,
            "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)}
                       for k, v in arrays.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.json", json.dumps(meta, indent=1, allow_nan=False))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def read_file(path: Path) -> FrozenModel:
    """Read and verify a model file; no pickle, no code: JSON and plain numeric arrays only."""
    origin = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{origin}: not an xpipe model file (a zip archive): {exc}") from exc
    with archive:
        expected = {"model.json", *(f"{name}.npy" for name in ARRAYS)}
        members = {info.filename: info for info in archive.infolist()}
        if set(members) != expected:
            raise ModelFileError(f"{origin}: expected members {sorted(expected)}, found "
                                 f"{sorted(members)}")
        big = [n for n, info in members.items() if info.file_size > MAX_MEMBER_BYTES]
        if big:
            raise ModelFileError(f"{origin}: member {big[0]} is implausibly large")
        try:
            meta = json.loads(archive.read("model.json"))
        except ValueError as exc:
            raise ModelFileError(f"{origin}: model.json is not valid JSON: {exc}") from exc
        arrays = {name: _read_array(archive, name, origin) for name in ARRAYS}
    return _model_from_parts(meta, arrays, origin)


def _read_array(archive: zipfile.ZipFile, name: str, origin: str) -> np.ndarray:
    with archive.open(f"{name}.npy") as handle:
        try:
            array = np.lib.format.read_array(io.BytesIO(handle.read()), allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle: refused
            raise ModelFileError(f"{origin}: {name}.npy is not a plain numeric array: "
                                 f"{exc}") from exc
    if array.dtype.str != ARRAYS[name]:
        raise ModelFileError(f"{origin}: {name}.npy has dtype {array.dtype.str}, expected "
                             f"{ARRAYS[name]}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ModelFileError(f"{origin}: {name}.npy holds NaN or infinite values")
    return array


def _model_from_parts(meta: dict[str, Any], arrays: dict[str, np.ndarray], origin: str
                      ) -> FrozenModel:
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{origin}: format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r}; this xpipe reads {FORMAT!r} "
                             f"version {FORMAT_VERSION}")
    try:
        classes, features = tuple(meta["classes"]), tuple(meta["features"])
        scaling = tuple(FeatureScaling(**s) for s in meta["scaling"])
        model = FrozenModel(
            version=str(meta["version"]), classes=classes, features=features,
            selection=dict(meta["selection"]), params=dict(meta["params"]), scaling=scaling,
            mixture=MixtureParams(arrays["mixture_weights"], arrays["mixture_means"],
                                  arrays["mixture_covariances"]),
            reference_counts=arrays["reference_counts"],
            reference_means=arrays["reference_means"], reference_pinv=arrays["reference_pinv"],
            provenance=dict(meta.get("provenance", {})))
        expected_hash = str(meta["content_hash"])
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{origin}: model.json lacks or mistypes {exc}") from exc
    check_shapes(model, origin)
    if model.content_hash != expected_hash:
        raise ModelFileError(f"{origin}: content hash mismatch (file says "
                             f"{expected_hash[:12]}…, content hashes to "
                             f"{model.content_hash[:12]}…): the file was altered or damaged")
    check_sense(model, origin)
    return model


def check_shapes(model: FrozenModel, origin: str) -> None:
    """Arrays must agree with each other and with the class and feature lists."""
    k, c, f = len(model.mixture.weights), len(model.classes), len(model.features)
    expected = {"mixture_weights": (k,), "mixture_means": (k, f),
                "mixture_covariances": (k, f, f), "reference_counts": (k, c),
                "reference_means": (k, c, f), "reference_pinv": (k, c, f, f)}
    for name, array in model.arrays().items():
        if array.shape != expected[name]:
            raise ModelFileError(f"{origin}: {name} has shape {array.shape}, expected "
                                 f"{expected[name]} for {k} components, {c} classes, "
                                 f"{f} features")
    if [s.feature for s in model.scaling] != list(model.features):
        raise ModelFileError(f"{origin}: scaling lists {[s.feature for s in model.scaling]}, "
                             f"features are {list(model.features)}")


def check_sense(model: FrozenModel, origin: str) -> None:
    """What the hash cannot vouch for: names and transforms this xpipe knows, a usable mixture
    and kernel, counts and parameters in range. Every message names the file."""
    _check_names(model, origin)
    _check_params(model, origin)
    _check_mixture(model, origin)
    _check_references(model, origin)


def _check_names(model: FrozenModel, origin: str) -> None:
    for kind, names, known in (("feature", model.features, feature_names()),
                               ("class", model.classes, class_names())):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ModelFileError(f"{origin}: unknown {kind} name(s) {unknown}; this xpipe knows "
                                 f"{list(known)}")
        if len(set(names)) != len(names):
            raise ModelFileError(f"{origin}: {kind} names repeat: {list(names)}")
    transforms = feature_transforms()
    for s in model.scaling:
        if s.transform != transforms[s.feature]:
            raise ModelFileError(f"{origin}: feature {s.feature} has transform {s.transform!r}; "
                                 f"its seed's transform is {transforms[s.feature]!r}")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_params(model: FrozenModel, origin: str) -> None:
    min_references = model.params.get("min_references")
    if not isinstance(min_references, int) or not _count(min_references) or min_references < 2:
        raise ModelFileError(f"{origin}: params.min_references is {min_references!r}; "
                             "expected an integer ≥ 2")
    counts = model.provenance.get("counts") or {}
    if not isinstance(counts, dict):
        raise ModelFileError(f"{origin}: provenance.counts is {counts!r}; expected a mapping")
    for name, value in counts.items():
        if not _count(value):
            raise ModelFileError(f"{origin}: provenance count {name!r} is {value!r}; expected "
                                 "a non-negative integer")
    negative = np.argwhere(model.reference_counts < 0)
    if len(negative):
        cl, k = negative[0]
        raise ModelFileError(f"{origin}: reference_counts of cluster {cl}, class "
                             f"{model.classes[k]} is {model.reference_counts[cl, k]}; expected "
                             "a non-negative integer")


def _check_mixture(model: FrozenModel, origin: str) -> None:
    weights = model.mixture.weights
    if np.any(weights < 0) or abs(float(weights.sum()) - 1.0) > TOLERANCE:
        raise ModelFileError(f"{origin}: mixture_weights {weights.tolist()} are not "
                             "non-negative weights summing to 1")
    for k, cov in enumerate(model.mixture.covariances):
        scale = max(float(np.abs(cov).max()), np.finfo(float).tiny)
        if not np.allclose(cov, cov.T, rtol=0, atol=TOLERANCE * scale):
            raise ModelFileError(f"{origin}: mixture_covariances of component {k} is not "
                                 "symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ModelFileError(f"{origin}: mixture_covariances of component {k} is not "
                                 "positive definite (no Cholesky factor)") from None


def _check_references(model: FrozenModel, origin: str) -> None:
    for cl, k in np.ndindex(*model.reference_pinv.shape[:2]):
        pinv = model.reference_pinv[cl, k]
        scale = float(np.abs(pinv).max())
        if scale == 0.0:
            continue  # an unusable class stores zeros
        where = f"reference_pinv of cluster {cl}, class {model.classes[k]}"
        if not np.allclose(pinv, pinv.T, rtol=0, atol=TOLERANCE * scale):
            raise ModelFileError(f"{origin}: {where} is not symmetric")
        lowest = float(np.linalg.eigvalsh((pinv + pinv.T) / 2).min())
        if lowest < -TOLERANCE * scale:
            raise ModelFileError(f"{origin}: {where} is not positive semi-definite (eigenvalue "
                                 f"{lowest:.3g})")
