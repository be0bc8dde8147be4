"""Is the class stability calibrated? On a simulated catalogue, where the truth is known: the
accuracy of each uniquely classified source's class against the simulator's truth, in
stability bins (< 0.5, 0.5–0.9, ≥ 0.9), per aggregated master class and overall.

    python scripts/uncertainty_calibration.py WAREHOUSE TRUTH [--out calibration.json]

WAREHOUSE: a classified warehouse of a simulated catalogue after `xpipe uncertainty`; TRUTH:
the `truth/` folder `xpipe simulate` (or `xpipe warehouse --source sim`) wrote beside it.
Prints a Markdown table (the one in docs/uncertainty.md) and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import duckdb
import polars as pl

from xpipe.predict.uncertainty import uncertainty_state
from xpipe.science.class_stability import calibration, read_truth


def markdown(table: pl.DataFrame, level: str) -> str:
    """One row per aggregated class, a column per bin: accuracy (correct / sources)."""
    part = table.filter(pl.col("level") == level)
    bins = list(dict.fromkeys(part["bin"].to_list()))
    lines = ["| aggregated class | " + " | ".join(f"stability {b}" for b in bins) + " |",
             "|---|" + "---:|" * len(bins)]
    for agg in dict.fromkeys(part["agg_class"].to_list()):
        cells = []
        for b in bins:
            row = part.filter((pl.col("agg_class") == agg) & (pl.col("bin") == b))
            cells.append("—" if row.is_empty() else
                         f"{row['accuracy'][0]:.1%} ({row['correct'][0]:,} / "
                         f"{row['sources'][0]:,})")
        lines.append(f"| {agg} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("warehouse", type=Path)
    parser.add_argument("truth", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    with duckdb.connect(str(args.warehouse), read_only=True) as con:
        state = uncertainty_state(con)
        if not state.current:
            raise SystemExit(f"{args.warehouse}: {state.message()}")
        table = calibration(con, read_truth(args.truth))
    for level, what in (("aggregated", "aggregated class, binned by agg_class_stability"),
                        ("class", "fine class, binned by class_stability")):
        print(f"\n{what} ({state.n_draws:,} draws, seed {state.seed}):\n")
        print(markdown(table, level))
    if args.out is not None:
        args.out.write_text(json.dumps({"warehouse": str(args.warehouse),
                                        "draws": state.n_draws, "seed": state.seed,
                                        "rows": table.to_dicts()}, indent=1) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
