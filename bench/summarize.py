"""Write bench/results/SUMMARY.md from the JSON results (what README quotes)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def gib(b: float | None) -> str:
    return "–" if b is None else f"{b / 2**30:.2f} GiB"


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
                  "| n | float64 rows/s | float32 rows/s | float32 max abs error | baseline "
                  "rows/s (n) | speedup | of bare matmul |", "|---|---|---|---|---|---|---|"]
        for r in sorted(kernels, key=lambda r: r["n"]):
            lines.append(
                f"| {r['n']:,} | {r['rows_per_s']:,.0f} | {r['float32']['rows_per_s']:,.0f} | "
                f"{r['float32']['max_abs_probability_error']:.1e} | "
                f"{r['baseline_rows_per_s']:,.0f} ({r['baseline']['n']:,}) | "
                f"{r['speedup_vs_baseline']:,.0f}× | {r['fraction_of_matmul_throughput']:.0%} |")
        lines.append("")
    pipes = [r for k, r in results.items() if k.startswith("pipeline_") and
             k != "pipeline_scaling"]
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
    if "pipeline_scaling" in results:
        fit = results["pipeline_scaling"]["fit"]
        lines += [f"Scaling: log-log slope {fit['loglog_slope']:.2f} (1 = linear); "
                  f"{fit['seconds_per_million_rows']:.1f} s per million detections "
                  "(warehouse + classify + export).", ""]
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
