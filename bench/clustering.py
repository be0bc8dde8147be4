"""Clustering at scale: fit the mixture on seeded samples of the cleaned detections and compare
with the fit on all of them (adjusted Rand index of the cluster assignments, agreement of the
master classes), with the fit time. Runs `xpipe classify --fit-sample S` on a copy of a
classified warehouse. Usage:
    python bench/clustering.py WAREHOUSE [S ...]    # default S: 10000 30000 100000 300000
Result: bench/results/clustering_sample_size.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
from common import write_result
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "clustering"


def classify(warehouse: Path, fit_sample: int) -> dict:
    env = {**os.environ, "XPIPE_WAREHOUSE": str(warehouse), "XPIPE_PROGRESS": "0"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xpipe.cli", "classify", "--fit-sample",
                    str(fit_sample)], env=env, cwd=ROOT, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    con = duckdb.connect(str(warehouse), read_only=True)
    timings = json.loads(con.execute("SELECT timings FROM meta.runs WHERE command = 'classify' "
                                     "ORDER BY started_at DESC LIMIT 1").fetchall()[0][0])
    clusters = con.sql("SELECT det_id, cluster FROM model.detection_cluster ORDER BY det_id").pl()
    sources = con.sql("SELECT s.name, s.hard_class, s.soft_class, s.master_class, "
                      "s.agg_master_class FROM results.source_class s").pl()
    n_clean = con.execute("SELECT count(*) FROM model.scaled_features").fetchall()[0][0]
    con.close()
    return {"seconds": seconds, "fit_seconds": timings["fit_mixture"], "clusters": clusters,
            "sources": sources, "n_clean": n_clean}


def agreement(a: pl.DataFrame, b: pl.DataFrame) -> dict:
    j = a.join(b, on="name", suffix="_b")
    return {
        "sources_compared": j.height,
        "soft_class_agreement": float((j["soft_class"] == j["soft_class_b"]).mean()),
        "hard_class_agreement": float((j["hard_class"] == j["hard_class_b"]).mean()),
        "aggregated_master_class_agreement": float(
            (j["agg_master_class"].fill_null("ambiguous")
             == j["agg_master_class_b"].fill_null("ambiguous")).mean()),
    }


def main(source: Path, samples: list[int]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    warehouse = WORK / "xpipe.duckdb"
    shutil.copy(source, warehouse)
    full = classify(warehouse, 10**9)
    n_clean = full["n_clean"]
    print(f"full fit on {n_clean:,} cleaned detections: {full['fit_seconds']:.1f} s", flush=True)
    rows = []
    for s in [s for s in samples if s < n_clean]:
        run = classify(warehouse, s)
        labels = full["clusters"].join(run["clusters"], on="det_id", suffix="_s")
        ari = adjusted_rand_score(labels["cluster"].to_numpy(), labels["cluster_s"].to_numpy())
        row = {"sample_size": s, "fit_seconds": run["fit_seconds"], "adjusted_rand_index": ari,
               **agreement(full["sources"], run["sources"])}
        rows.append(row)
        print(f"sample {s:,}: fit {row['fit_seconds']:.1f} s, ARI {ari:.3f}, soft-class "
              f"agreement {row['soft_class_agreement']:.3f}", flush=True)
    write_result("clustering_sample_size", {
        "n": n_clean, "seconds": full["fit_seconds"], "rows_per_s": n_clean / full["fit_seconds"],
        "peak_rss_bytes": None, "full_fit_seconds": full["fit_seconds"], "samples": rows})
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(a) for a in sys.argv[2:]] or [10_000, 30_000, 100_000, 300_000])
