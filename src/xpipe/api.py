"""Python API: a frozen xpipe model as a scikit-learn style classifier.

    from xpipe.api import Classifier
    clf = Classifier.load("warehouse/xpipe.duckdb")          # or a version, or from_file(...)
    proba = clf.predict_proba(frame)                         # (n, 10), columns clf.classes_
    labels = clf.predict(frame)                              # class names, None if unclassified
    spread = clf.predict_intervals(frame, draws=1000)        # mean, 68 % and 95 % intervals

`frame` is a Polars or pandas DataFrame or an Arrow table with CSC columns (name, obsid, ra,
dec, the hardness ratios, spectral fits and variability columns of schemas/raw.detections.yaml;
flux_significance_b, obi and region_id optional). The model is fitted by `xpipe classify`, not
here: `fit` is deliberately absent. Rows are classified exactly as `xpipe classify-new` and the
batch run classify them (xpipe.predict), in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from numpy.typing import NDArray

from xpipe.core.config import Settings
from xpipe.models import file as model_file
from xpipe.models import store
from xpipe.models.frozen import FrozenModel
from xpipe.predict.classify_new import output_frame
from xpipe.predict.draws import DrawParams
from xpipe.predict.new import Prediction, predict
from xpipe.predict.uncertainty import predict_with_draws
from xpipe.warehouse.connection import connect
from xpipe.warehouse.dtypes import polars_schema

FrameLike = Any  # pl.DataFrame | pandas.DataFrame | pa.Table | pa.RecordBatch
INTERVAL_STATS = ("mean", "lo68", "hi68", "lo95", "hi95")


@dataclass(frozen=True)
class ClassIntervals:
    """`Classifier.predict_intervals`: (n, n_classes) arrays in `classes_` order, and per
    detection the share of draws keeping its class, the share unclassified and the flag
    ('no published errors', 'partial errors' or None)."""

    mean: NDArray[np.float64]
    lo68: NDArray[np.float64]
    hi68: NDArray[np.float64]
    lo95: NDArray[np.float64]
    hi95: NDArray[np.float64]
    pred_agreement: NDArray[np.float64]
    unclassified_fraction: NDArray[np.float64]
    flag: NDArray[np.object_]

    @classmethod
    def from_wide(cls, frame: pl.DataFrame, classes: tuple[str, ...], n: int
                  ) -> ClassIntervals:
        """From classify-new's --out layout ({class}_{stat} columns); n empty rows if none."""
        def values(columns: list[str]) -> NDArray[np.float64]:
            if frame.is_empty():
                return np.full((n, len(columns)), np.nan)
            return frame.select(columns).to_numpy().astype(np.float64)

        stats = {s: values([f"{c}_{s}" for c in classes]) for s in INTERVAL_STATS}
        return cls(**stats, pred_agreement=values(["pred_agreement"])[:, 0],
                   unclassified_fraction=values(["unclassified_fraction"])[:, 0],
                   flag=np.array(frame["uncertainty_flag"].to_list() if n else [],
                                 dtype=object))


def to_arrow(frame: FrameLike) -> pa.Table:
    """An Arrow table from a Polars or pandas frame or Arrow data, without copying where the
    library allows it."""
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    if isinstance(frame, pl.DataFrame):
        return frame.to_arrow()
    if type(frame).__module__.split(".")[0] == "pandas" and hasattr(frame, "columns"):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise TypeError(f"expected a Polars or pandas DataFrame or an Arrow table, got "
                    f"{type(frame).__name__}")


class Classifier:
    """Classifies CSC detections with one frozen model version (scikit-learn conventions:
    `classes_`, `predict_proba`, `predict`, `score_samples`)."""

    def __init__(self, model: FrozenModel, settings: Settings | None = None) -> None:
        self.model = model
        self.settings = settings or Settings()
        self.classes_ = np.array(model.classes, dtype=object)
        self.version_ = model.version
        self.n_features_in_ = len(model.features)

    @classmethod
    def load(cls, warehouse: str | Path, version: str | None = None) -> Classifier:
        """A version stored in a warehouse (id, unique prefix, or None for the latest)."""
        with connect(Settings(warehouse=Path(warehouse)), read_only=True) as con:
            return cls(store.load(con, version))

    @classmethod
    def from_file(cls, path: str | Path) -> Classifier:
        """A model file written by `xpipe models export`."""
        return cls(model_file.read_file(Path(path)))

    def __repr__(self) -> str:
        return f"Classifier(version={self.version_!r}, hash={self.model.content_hash[:12]!r})"

    def classify(self, frame: FrameLike, *, draws: int | None = None, seed: int = 42
                 ) -> Prediction:
        """Everything `xpipe classify-new` reports: per detection (status, reason, flags,
        cluster, probabilities, anomaly scores, votes of its source) and per source; with
        `draws`, also `.uncertainty` (as `classify-new --draws`, docs/uncertainty.md)."""
        inputs = [(to_arrow(frame), "<frame>")]
        if draws is None:
            return predict(self.model, inputs, self.settings)
        return predict_with_draws(self.model, inputs, DrawParams(draws, seed), self.settings)

    def _detections(self, frame: FrameLike) -> pl.DataFrame:
        table = to_arrow(frame)
        if table.num_rows == 0:
            return pl.DataFrame(schema=polars_schema(
                "results.new_detection_class", [*self.model.classes, "log_likelihood",
                                                "pred_class"]))
        return self.classify(table).detections

    def predict_proba(self, frame: FrameLike, *, draws: int | None = None, seed: int = 42
                      ) -> NDArray[np.float64]:
        """(n, n_classes) probabilities in `classes_` order; NaN rows for detections that
        cannot be classified (see `classify(frame).detections["reason"]`).

        With `draws`: the mean probabilities over that many draws of each detection from its
        published errors (`predict_intervals` gives the intervals); NaN also for a detection
        without published limits, as `xpipe uncertainty` stores NULL for it."""
        if draws is not None:
            return self.predict_intervals(frame, draws=draws, seed=seed).mean
        det = self._detections(frame)
        return det.select(list(self.model.classes)).to_numpy().astype(np.float64)

    def predict_intervals(self, frame: FrameLike, *, draws: int = 1000, seed: int = 42
                          ) -> ClassIntervals:
        """Each detection's class probabilities under its measurement errors: mean and
        central 68 % and 95 % intervals over `draws` draws (the numbers `xpipe uncertainty`
        stores for the same detection, draws and seed). Rows in input order; NaN where the
        detection is not classified or has no published limits (`flag` says which)."""
        table = to_arrow(frame)
        if table.num_rows == 0:
            return ClassIntervals.from_wide(pl.DataFrame(), self.model.classes, 0)
        prediction = self.classify(table, draws=draws, seed=seed)
        return ClassIntervals.from_wide(output_frame(prediction), self.model.classes,
                                        prediction.detections.height)

    def predict(self, frame: FrameLike) -> NDArray[np.object_]:
        """The most probable class of each detection; None where it cannot be classified."""
        return np.array(self._detections(frame)["pred_class"].to_list(), dtype=object)

    def score_samples(self, frame: FrameLike) -> NDArray[np.float64]:
        """Log-likelihood of each detection under the model's mixture (as GaussianMixture's
        `score_samples`); NaN where the features are incomplete. Low values are anomalous."""
        return self._detections(frame)["log_likelihood"].to_numpy().astype(np.float64)
