"""Write bench/results/SUMMARY.md from the JSON results (what README quotes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def gib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**30:.2f} GiB"


# From CSC 2.0's size up, fixed costs (process start, a mixture fit on at most 100,000
# detections) no longer dominate, so the slope there is the one that says how time grows.
LARGE_N = 900_000


def scaling_fit(ns: list[int], seconds: list[float]) -> dict:
    """Slope of log(seconds) against log(N) (1 = linear), over all sizes and from LARGE_N up,
    and the least-squares seconds per row."""
    slope, _ = np.polyfit(np.log(ns), np.log(seconds), 1)
    large = [(n, s) for n, s in zip(ns, seconds, strict=True) if n >= LARGE_N]
    large_slope = (float(np.polyfit(np.log([n for n, _ in large]),
                                    np.log([s for _, s in large]), 1)[0])
                   if len(large) >= 2 else None)
    per_row, intercept = np.polyfit(ns, seconds, 1)
    return {"loglog_slope": float(slope), "loglog_slope_from_large_n": large_slope,
            "large_n": LARGE_N, "seconds_per_million_rows": float(per_row * 1e6),
            "intercept_seconds": float(intercept)}


def serve_latency_section(results: dict[str, dict]) -> list[str]:
    """The explorer's latency per interaction: median and maximum per warehouse size."""
    runs = sorted((r for k, r in results.items() if k.startswith("serve_latency_")),
                  key=lambda r: r["detections"])
    if not runs:
        return []
    head = " | ".join(f"{r['detections']:,} detections (target {r['target_s']:g} s)"
                      for r in runs)
    lines = ["## Explorer latency (`xpipe serve` in headless Chromium, until drawn; median / "
             "max s)", "", f"| interaction | {head} |", "|---|" + "---|" * len(runs)]
    for name in runs[0]["interactions"]:
        cells = []
        for r in runs:
            i = r["interactions"].get(name)
            cells.append("–" if i is None else f"{i['median_s']:.2f} / {i['max_s']:.2f}"
                         + ("" if i["within_target"] else " ✗"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| server start (to the first answer) | "
                 + " | ".join(f"{r['startup_s']:.1f}" for r in runs) + " |")
    lines.append("| measured at (load average) | " + " | ".join(
        f"{r.get('measured_at', '?')[:16]} ({_load(r)})" for r in runs) + " |")
    return [*lines, ""]


def _load(result: dict) -> str:
    load = result.get("machine", {}).get("load_average_at_start")
    return "?" if not load else " ".join(f"{x:.1f}" for x in load)


def main() -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    lines = ["# Benchmark summary", ""]
    any_result = next(iter(results.values()), None)
    if any_result:
        m = any_result["machine"]
        lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {gib(m['memory_bytes'])}; "
                  f"Python {m['python']}; numpy {m['versions']['numpy']}, duckdb "
                  f"{m['versions']['duckdb']}. Medians over repeated runs.", ""]
    kernels = [r for k, r in results.items() if k.startswith("kernel_")]
    if kernels:
        lines += ["## Kernel (squared Mahalanobis + softmin; 12 features, 10 classes, "
                  "6 clusters)", "",
                  "| n | float64 rows/s | float64, 1 thread | float32 rows/s | float32 max abs "
                  "error | baseline rows/s (n) | speedup | of bare matmul |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(kernels, key=lambda r: r["n"]):
            lines.append(
                f"| {r['n']:,} | {r['rows_per_s']:,.0f} | "
                f"{r['float64_one_thread']['rows_per_s']:,.0f} | "
                f"{r['float32']['rows_per_s']:,.0f} | "
                f"{r['float32']['max_abs_probability_error']:.1e} | "
                f"{r['baseline_rows_per_s']:,.0f} ({r['baseline']['n']:,}) | "
                f"{r['speedup_vs_baseline']:,.0f}× | {r['fraction_of_matmul_throughput']:.0%} |")
        lines.append("")
    pipes = sorted((r for k, r in results.items() if k.startswith("pipeline_") and
                    k != "pipeline_scaling"), key=lambda r: r["n"])
    if pipes:
        lines += ["## End to end (seconds per stage)", "",
                  "| n | simulate | warehouse | classify | export | pipeline rows/s | "
                  "peak RSS | spill |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(pipes, key=lambda r: r["n"]):
            s = r["seconds"]
            lines.append(f"| {r['n']:,} | {s['simulate']:.1f} | {s['warehouse']:.1f} | "
                         f"{s['classify']:.1f} | {s['export']:.1f} | {r['rows_per_s']:,.0f} | "
                         f"{gib(r['peak_rss_bytes'])} | {gib(r['spill_bytes'])} |")
        lines.append("")
    if len(pipes) >= 2:
        fit = scaling_fit([r["n"] for r in pipes], [r["seconds_pipeline_total"] for r in pipes])
        large = (f", {fit['loglog_slope_from_large_n']:.2f} from {LARGE_N:,} detections up"
                 if fit["loglog_slope_from_large_n"] is not None else "")
        lines += [f"Scaling over {len(pipes)} sizes: log-log slope {fit['loglog_slope']:.2f}"
                  f"{large} (1 = linear); {fit['seconds_per_million_rows']:.1f} s per million "
                  "detections (warehouse + classify + export, least squares).", ""]
        (RESULTS / "pipeline_scaling.json").write_text(json.dumps(
            {"benchmark": "pipeline_scaling", "n": [r["n"] for r in pipes],
             "seconds": [r["seconds_pipeline_total"] for r in pipes],
             "rows_per_s": [r["rows_per_s"] for r in pipes], "fit": fit}, indent=2) + "\n")
    clustering = results.get("clustering_sample_size")
    if clustering:
        lines += [f"## Mixture fit on a sample ({clustering['n']:,} cleaned detections; full "
                  f"fit {clustering['full_fit_seconds']:.0f} s)", "",
                  "| sample | fit s | ARI vs full | soft vote kept | aggregated class kept |",
                  "|---|---|---|---|---|"]
        for r in clustering["samples"]:
            lines.append(f"| {r['sample_size']:,} | {r['fit_seconds']:.1f} | "
                         f"{r['adjusted_rand_index']:.3f} | {r['soft_class_agreement']:.1%} | "
                         f"{r['aggregated_master_class_agreement']:.1%} |")
        lines.append("")
    writes = sorted((r for k, r in results.items() if k.startswith("file_formats_")),
                    key=lambda r: r["n"])
    if writes:
        lines += ["## Writing files (one process per format; seconds, rows/s, peak RSS, size)",
                  "", "| n | format | seconds | rows/s | peak RSS | MB |",
                  "|---|---|---|---|---|---|"]
        for r in writes:
            for fmt, f in r["formats"].items():
                lines.append(f"| {r['n']:,} | {fmt} | {f['seconds']:.1f} | "
                             f"{f['rows_per_s']:,.0f} | {gib(f['peak_rss_bytes'])} | "
                             f"{f['bytes'] / 1e6:,.0f} |")
        lines.append("")
    drawn = results.get("uncertainty")
    if drawn:
        single = drawn["single_pass"]
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in single["chunk_step_seconds"].items())
        lines += [f"## Uncertainty ({drawn['draws']:,} draws of {drawn['classified_detections']:,}"
                  " classified detections)", "",
                  "| seconds | draws/s | single pass rows/s | ratio | peak RSS |",
                  "|---|---|---|---|---|",
                  f"| {drawn['seconds']:.0f} | {drawn['draws_per_s']:,.0f} | "
                  f"{drawn['single_pass_rows_per_s']:,.0f} | "
                  f"{drawn['draw_rate_vs_single_pass']:.2f} | {gib(drawn['peak_rss_bytes'])} |",
                  "", f"One chunk of {single['chunk_draw_rows']:,} draw rows: {steps}.", ""]
    lines += serve_latency_section(results)
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
