"""Kernel benchmark: squared-Mahalanobis + softmin, against the published N×N formulation.

12 features, 10 classes, 6 clusters. The baseline is the straightforward implementation: per
cluster and class, the pseudo-inverse, then (X−μ)Σ⁺(X−μ)ᵀ as a dense product and its diagonal.
Each size runs in a fresh process so its peak RSS is its own. Usage:
    python bench/kernel.py            # all sizes, writes bench/results/kernel_*.json
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
from common import median, peak_rss_bytes, timed, write_result

N_FEATURES, N_CLASSES, N_CLUSTERS = 12, 10, 6
REFERENCES_PER_CLASS = 300
PAPER_N = 14_507


def problem(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs, ys, cs = [], [], []
    for c in range(N_CLUSTERS):
        for k in range(N_CLASSES):
            centre = rng.uniform(0.2, 0.8, N_FEATURES)
            scale = rng.uniform(0.03, 0.15, N_FEATURES)
            xs.append(centre + scale * rng.standard_normal((REFERENCES_PER_CLASS, N_FEATURES)))
            ys.append(np.full(REFERENCES_PER_CLASS, k))
            cs.append(np.full(REFERENCES_PER_CLASS, c))
    x = rng.uniform(0, 1, (n, N_FEATURES))
    clusters = rng.integers(0, N_CLUSTERS, n)
    return np.vstack(xs), np.concatenate(ys), np.concatenate(cs), x, clusters


def baseline_predict_proba(x_ref, y_ref, c_ref, x, clusters):
    """The published formulation: an N_c × N_c matrix per cluster and class, then its diagonal."""
    d = np.full((len(x), N_CLASSES), np.inf)
    for c in range(N_CLUSTERS):
        rows = np.flatnonzero(clusters == c)
        for k in range(N_CLASSES):
            refs = x_ref[(c_ref == c) & (y_ref == k)]
            mu = refs.mean(axis=0)
            sigma_plus = np.linalg.pinv(np.cov(refs, rowvar=False))
            diff = x[rows] - mu
            d[rows, k] = np.diag(diff @ sigma_plus @ diff.T)
    w = np.exp(-(d - d.min(axis=1, keepdims=True)))
    return w / w.sum(axis=1, keepdims=True)


def run_size(n: int, kind: str) -> dict:
    from xpipe.method.kernel import MahalanobisSoftmin

    x_ref, y_ref, c_ref, x, clusters = problem(n)
    repeats = 5 if n <= 100_000 else 3
    if kind == "baseline":
        seconds = timed(lambda: baseline_predict_proba(x_ref, y_ref, c_ref, x, clusters),
                        repeats=1 if n > PAPER_N else 3)
        return {"seconds": median(seconds), "runs": seconds, "peak_rss_bytes": peak_rss_bytes()}
    dtype = np.float32 if kind == "float32" else np.float64
    n_jobs = 1 if kind == "float64_one_thread" else None
    model = MahalanobisSoftmin(dtype=dtype, n_jobs=n_jobs)
    model.fit(x_ref, y_ref, c_ref, n_clusters=N_CLUSTERS, n_classes=N_CLASSES)
    seconds = timed(lambda: model.predict_proba(x, clusters), repeats)
    out = {"seconds": median(seconds), "runs": seconds, "peak_rss_bytes": peak_rss_bytes()}
    if kind == "float32":
        exact = MahalanobisSoftmin().fit(x_ref, y_ref, c_ref, n_clusters=N_CLUSTERS,
                                         n_classes=N_CLASSES)
        p64 = exact.predict_proba(x[:200_000], clusters[:200_000])
        p32 = model.predict_proba(x[:200_000], clusters[:200_000])
        out["max_abs_probability_error"] = float(np.nanmax(np.abs(p64 - p32)))
        out["argmax_changed_fraction"] = float(np.mean(p64.argmax(1) != p32.argmax(1)))
    if kind == "float64" and n <= 100_000:
        base = baseline_predict_proba(x_ref, y_ref, c_ref, x, clusters)
        out["max_abs_difference_vs_baseline"] = float(np.abs(base - model.predict_proba(
            x, clusters)).max())
    return out


def matmul_reference(n: int) -> dict:
    """The kernel's core arithmetic as bare BLAS: [x 1] (n×13) @ (13×120) in cache-sized
    blocks of 4,096 rows on every core, the fastest shape measured here (one unblocked n×120
    product would measure memory bandwidth, not arithmetic)."""
    block_rows = 4096
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (n, N_FEATURES + 1))
    w = rng.uniform(0, 1, (N_FEATURES + 1, N_FEATURES * N_CLASSES))
    out = np.empty((block_rows, N_FEATURES * N_CLASSES))

    def blocked() -> None:
        for start in range(0, n - block_rows + 1, block_rows):
            np.matmul(x[start:start + block_rows], w, out=out)

    seconds = timed(blocked, repeats=3)
    done = (n // block_rows) * block_rows
    flops = 2 * done * (N_FEATURES + 1) * N_FEATURES * N_CLASSES
    return {"seconds": median(seconds) * n / done, "gflops": flops / median(seconds) / 1e9,
            "block_rows": block_rows}


def in_subprocess(n: int, kind: str) -> dict:
    code = (f"import json, sys; sys.path.insert(0, 'bench'); import kernel; "
            f"print(json.dumps(kernel.run_size({n}, {kind!r})))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    sizes = {"paper": PAPER_N, "large": 2_000_000}
    baseline_sizes = {"paper": PAPER_N, "largest_practical": 60_000}
    started = time.perf_counter()
    for label, n in sizes.items():
        result = {"n": n, "parameters": {"features": N_FEATURES, "classes": N_CLASSES,
                                         "clusters": N_CLUSTERS,
                                         "references_per_class": REFERENCES_PER_CLASS}}
        for kind in ("float64", "float64_one_thread", "float32"):
            r = in_subprocess(n, kind)
            result[kind] = {**r, "rows_per_s": n / r["seconds"]}
        result["seconds"] = result["float64"]["seconds"]
        result["rows_per_s"] = result["float64"]["rows_per_s"]
        result["peak_rss_bytes"] = result["float64"]["peak_rss_bytes"]
        base_n = baseline_sizes["paper"] if label == "paper" else baseline_sizes[
            "largest_practical"]
        base = in_subprocess(base_n, "baseline")
        result["baseline"] = {**base, "n": base_n, "rows_per_s": base_n / base["seconds"]}
        result["baseline_rows_per_s"] = result["baseline"]["rows_per_s"]
        result["speedup_vs_baseline"] = result["rows_per_s"] / result["baseline_rows_per_s"]
        mm = matmul_reference(n)
        result["matmul_reference"] = {**mm, "rows_per_s": n / mm["seconds"]}
        result["fraction_of_matmul_throughput"] = (result["rows_per_s"]
                                                   / result["matmul_reference"]["rows_per_s"])
        path = write_result(f"kernel_{label}", result)
        print(f"{path}: {result['rows_per_s']:,.0f} rows/s (float32 "
              f"{result['float32']['rows_per_s']:,.0f}), baseline "
              f"{result['baseline_rows_per_s']:,.0f} rows/s at n={base_n:,}, speedup "
              f"{result['speedup_vs_baseline']:,.0f}x, "
              f"{result['fraction_of_matmul_throughput']:.0%} of the bare matmul")
    print(f"kernel benchmarks done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
