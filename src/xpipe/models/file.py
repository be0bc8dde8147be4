"""The portable model file: one frozen model as a zip (`.npz`) that loads without running code.

`xpipe models export` writes `model.json` (format, version, hash, classes, features, selection,
parameters, scaling, provenance) and plain float64/int64 `.npy` arrays (`mixture_*`,
`reference_*`). It is read with `allow_pickle=False` and checked member by member;
`np.load(file)` or `unzip -p file model.json` inspect it.
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

FORMAT = "xpipe-model"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 64 * 2**20  # a model is ~100 kB; refuse anything absurd before reading it



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
