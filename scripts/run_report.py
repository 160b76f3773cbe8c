"""Summarize a run directory's metrics.jsonl for a report: evaluations, thresholds crossed, throughput.

    python scripts/run_report.py RUN_DIR [--metric return_mean] [--thresholds -15,0,18] [--extra survival_tics_mean]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from drl.metrics import read_metrics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--metric", default="return_mean")
    parser.add_argument("--thresholds", default="")
    parser.add_argument("--extra", default="")
    args = parser.parse_args()
    rows = read_metrics(Path(args.run_dir) / "metrics.jsonl")
    evals = [r for r in rows if r["event"] == "eval"]
    trains = [r for r in rows if r["event"] == "train"]
    print("| env steps | frames | wall-clock (min) | eval " + args.metric + (" | " + args.extra if args.extra else "")
          + " | std |")
    print("|---|---|---|---|" + ("---|" if args.extra else "") + "---|")
    for r in evals:
        extra = f" | {r.get(args.extra, float('nan')):.1f}" if args.extra else ""
        print(f"| {r['env_steps']:,} | {r['frames']:,} | {r['wall_time'] / 60:.1f} | {r[args.metric]:.2f}{extra} | "
              f"{r.get('return_std', float('nan')):.2f} |")
    for t in [float(x) for x in args.thresholds.split(",") if x]:
        hit = next((r for r in evals if r[args.metric] > t), None)
        print(f"first eval above {t:g}: " + (f"{hit['env_steps']:,} env steps, {hit['wall_time'] / 60:.1f} min"
                                              if hit else "not reached"))
    if trains:
        last = trains[-1]
        print(f"train rows: {len(trains)}; last at {last['env_steps']:,} env steps, {last['wall_time'] / 60:.1f} min; "
              f"overall {last['env_steps'] / last['wall_time']:.1f} env steps/s incl. evaluation")
        learning = [r for r in trains if r.get("updates")]
        if len(learning) > 1:
            a, b = learning[0], learning[-1]
            print(f"steps/s after learning starts: {(b['env_steps'] - a['env_steps']) / (b['wall_time'] - a['wall_time']):.1f}"
                  f" (median of train rows {sorted(r['sps'] for r in learning)[len(learning) // 2]:.1f})")


if __name__ == "__main__":
    main()
