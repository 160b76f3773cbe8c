"""``python -m drl.compare RUN_DIR_OR_GROUP ... [--out DIR] [--metric return_mean] [--threshold X]``.

Inputs are run directories (holding ``metrics.jsonl``), directories holding run directories (searched
recursively) or glob prefixes (``runs/catch`` matches ``runs/catch*``). Runs are grouped by experiment name
(``name`` in RUN_DIR/config.yaml); the runs of a group are its seeds. With ``--wandb ENTITY/PROJECT`` the runs come
from the W&B server instead, and the inputs, if any, are group names.

Outputs (in ``--out``, default ``comparison``):
- ``curves_<metric>.png`` / ``.svg``: evaluation ``<metric>`` against environment frames, per group the mean over
  seeds and a 95% bootstrap confidence interval (each seed's curve is interpolated linearly onto a common grid of
  frames where all seeds have data), seeds as thin lines;
- ``table_<metric>.md`` (also printed) and ``summary_<metric>.json``: per group the final score (each seed's last
  evaluation) as mean ± std over seeds (std with ddof=1), its interquartile mean (25% trimmed from each end, as
  ``scipy.stats.trim_mean(x, 0.25)``), the mean env steps to first reach ``--threshold`` over the seeds that
  reached it, and the mean training steps per second (``sps`` of the train rows).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from drl.cli import run_cli
from drl.errors import UserError
from drl.metrics import read_metrics

BOOTSTRAP_SAMPLES = 2000
GRID_POINTS = 200
IGNORED_CONFIG_KEYS = ("seed", "output_dir", "tracking.", "compute.threads", "device")


@dataclass
class Run:
    group: str
    seed: int | None
    source: str                                           # run directory or W&B run path
    evals: list[tuple[int, int, float]] = field(default_factory=list)  # (env_steps, frames, metric value)
    sps: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _warn(message: str) -> None:
    print(f"drl.compare: warning: {message}", file=sys.stderr)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m drl.compare",
                                     description="Compare runs: learning curves with bootstrap CIs and a score table.")
    parser.add_argument("inputs", nargs="*", metavar="RUN_DIR_OR_GROUP",
                        help="run directories, directories of runs or glob prefixes (with --wandb: group names)")
    parser.add_argument("--out", metavar="DIR", default="comparison", help="output directory (default: comparison)")
    parser.add_argument("--metric", default="return_mean",
                        help="evaluation metric, e.g. return_mean, return_median, kills_mean, survival_tics_mean")
    parser.add_argument("--threshold", type=float, metavar="X", help="report env steps to first reach this score")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from the W&B server instead")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ local runs
def find_run_dirs(spec: str) -> list[Path]:
    if any(ch in spec for ch in "*?["):
        candidates = [Path(p) for p in sorted(glob.glob(spec))]
    elif Path(spec).exists():
        candidates = [Path(spec)]
    else:
        candidates = [Path(p) for p in sorted(glob.glob(glob.escape(spec) + "*"))]
    found: list[Path] = []
    for path in candidates:
        if (path / "metrics.jsonl").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(m.parent for m in path.rglob("metrics.jsonl"))
    if not found:
        raise UserError(f"no runs found for '{spec}': give a run directory (with metrics.jsonl), a directory of "
                        "run directories or a glob prefix such as runs/catch")
    return found


def _append_monotonic(points: list, item: tuple) -> None:
    """A resumed run repeats the steps after its last checkpoint: later rows replace earlier ones."""
    while points and points[-1][0] >= item[0]:
        points.pop()
    points.append(item)


def load_local_run(run_dir: Path, metric: str) -> tuple[Run, set[str]]:
    cfg: dict = {}
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        _warn(f"{run_dir}: no readable config.yaml; grouping it by its directory name")
    group = str(cfg.get("name") or run_dir.name)
    run = Run(group=group, seed=cfg.get("seed"), source=str(run_dir), config=cfg)
    available: set[str] = set()
    sps_points: list[tuple[int, float]] = []
    for row in read_metrics(run_dir / "metrics.jsonl"):
        event = row.get("event")
        if event == "eval":
            available |= {k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                          and k not in ("env_steps", "frames", "wall_time")}
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                _append_monotonic(run.evals, (int(row["env_steps"]), int(row.get("frames", row["env_steps"])),
                                              float(value)))
        elif event == "train" and isinstance(row.get("sps"), (int, float)):
            _append_monotonic(sps_points, (int(row["env_steps"]), float(row["sps"])))
    run.sps = [s for _, s in sps_points]
    return run, available


def load_local(inputs: list[str], metric: str) -> list[Run]:
    dirs: list[Path] = []
    for spec in inputs:
        for d in find_run_dirs(spec):
            if d.resolve() not in {x.resolve() for x in dirs}:
                dirs.append(d)
    runs, available = [], set()
    for d in dirs:
        run, keys = load_local_run(d, metric)
        available |= keys
        if run.evals:
            runs.append(run)
        elif keys:
            _warn(f"{d}: its eval rows have no '{metric}'; skipped")
        else:
            _warn(f"{d}: no evaluation rows yet; skipped")
    if not runs:
        hint = f"available: {', '.join(sorted(available))}" if available else "no run has evaluation rows yet"
        raise UserError(f"no run has eval metric '{metric}' ({hint}); pick one with --metric")
    return runs


# ------------------------------------------------------------------------------------------------ W&B runs
def load_wandb(spec: str, groups: list[str], metric: str) -> list[Run]:
    from drl.tracking import api_host, logged_in, server_reachable

    if spec.count("/") != 1 or not all(spec.split("/")):
        raise UserError(f"--wandb '{spec}' must look like ENTITY/PROJECT")
    if os.environ.get("WANDB_MODE", "").strip().lower() in ("offline", "dryrun", "disabled"):
        raise UserError(f"--wandb reads from the W&B server but WANDB_MODE={os.environ['WANDB_MODE']}; unset it, "
                        "or compare the local run directories instead")
    if not logged_in():
        raise UserError("--wandb needs a W&B login (run `wandb login` or set WANDB_API_KEY); "
                        "or compare the local run directories instead")
    if not server_reachable():
        raise UserError(f"--wandb: cannot reach the W&B server {api_host()[0]} (offline?); "
                        "compare the local run directories instead")
    import wandb

    key = f"eval/{metric}"
    try:
        api = wandb.Api(timeout=30)
        filters = {"group": {"$in": groups}} if groups else None
        remote = list(api.runs(spec, filters=filters))
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown project
        raise UserError(f"--wandb {spec}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]}") from None
    runs = []
    for r in remote:
        if getattr(r, "job_type", None) not in ("train", "", None):  # drl.evaluate runs are job type eval
            continue
        cfg = dict(r.config)
        run = Run(group=getattr(r, "group", None) or str(cfg.get("name", r.name)), seed=cfg.get("seed"),
                  source="/".join(r.path), config=cfg)
        try:
            for row in r.scan_history(keys=["env_steps", "env_frames", key]):
                if isinstance(row.get(key), (int, float)):
                    _append_monotonic(run.evals, (int(row["env_steps"]), int(row["env_frames"]), float(row[key])))
            run.sps = [float(row["train/sps"]) for row in r.scan_history(keys=["train/sps"])]
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"--wandb: reading run {run.source} failed "
                            f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})") from None
        if run.evals:
            runs.append(run)
    if not runs:
        which = f"groups {', '.join(groups)}" if groups else "any group"
        raise UserError(f"--wandb {spec}: no training runs of {which} logged '{key}'")
    return runs


# ------------------------------------------------------------------------------------------------ statistics
def iqm(values) -> float:
    """Interquartile mean: drop int(0.25 n) values from each end, average the rest (scipy's trim_mean(x, 0.25))."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())


def bootstrap_ci(curves: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap CI of the mean over seeds (rows), per grid point (columns)."""
    rng = np.random.default_rng(seed)
    n = curves.shape[0]
    means = curves[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high


def group_curves(runs: list[Run]) -> tuple[np.ndarray, np.ndarray]:
    """Common frame grid where every seed has data, and each seed's curve interpolated onto it."""
    xs = [np.array([f for _, f, _ in r.evals], dtype=np.float64) for r in runs]
    ys = [np.array([v for _, _, v in r.evals], dtype=np.float64) for r in runs]
    low, high = max(x[0] for x in xs), min(x[-1] for x in xs)
    if high < low:  # seeds without a common span: flat extrapolation over the union
        low, high = min(x[0] for x in xs), max(x[-1] for x in xs)
        _warn(f"group '{runs[0].group}': seeds have no common range of frames; curves are extended flat")
    grid = np.linspace(low, high, GRID_POINTS) if high > low else np.array([high])
    return grid, np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys)])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_group_configs(group: str, runs: list[Run]) -> None:
    flat = [_flatten(r.config) for r in runs if r.config]
    if len(flat) < 2:
        return
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if not k.startswith(IGNORED_CONFIG_KEYS) and len({json.dumps(f.get(k)) for f in flat}) > 1]
    if differ:
        _warn(f"group '{group}' mixes configs that differ in {', '.join(differ[:6])}"
              f"{' ...' if len(differ) > 6 else ''}; give each variant its own name=... to compare them")


def summarize_group(runs: list[Run], threshold: float | None) -> dict:
    finals = np.array([r.evals[-1][2] for r in runs])
    reached = []
    if threshold is not None:
        for r in runs:
            hit = next((steps for steps, _, v in r.evals if v >= threshold), None)
            if hit is not None:
                reached.append(hit)
    sps = [float(np.mean(r.sps)) for r in runs if r.sps]
    return {
        "seeds": len(runs),
        "seed_values": [r.seed for r in runs],
        "final_values": finals.tolist(),
        "final_mean": float(finals.mean()),
        "final_std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
        "final_iqm": iqm(finals),
        "final_env_steps_mean": float(np.mean([r.evals[-1][0] for r in runs])),
        "threshold": threshold,
        "steps_to_threshold_mean": float(np.mean(reached)) if reached else None,
        "seeds_reached": len(reached),
        "sps_mean": float(np.mean(sps)) if sps else None,
        "runs": [r.source for r in runs],
    }


# ------------------------------------------------------------------------------------------------ output
def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.3f}"


def table_rows(summaries: dict[str, dict], metric: str, threshold: float | None) -> tuple[list[str], list[list[str]]]:
    header = ["group", "seeds", f"final {metric} (mean ± std)", "IQM", "env steps"]
    if threshold is not None:
        header.append(f"env steps to {threshold:g}")
    header.append("steps/s")
    rows = []
    for group, s in summaries.items():
        row = [group, str(s["seeds"]), f"{fmt(s['final_mean'])} ± {fmt(s['final_std'])}", fmt(s["final_iqm"]),
               f"{s['final_env_steps_mean']:,.0f}"]
        if threshold is not None:
            row.append(f"{s['steps_to_threshold_mean']:,.0f} ({s['seeds_reached']}/{s['seeds']})"
                       if s["seeds_reached"] else f"not reached (0/{s['seeds']})")
        row.append(f"{s['sps_mean']:,.0f}" if s["sps_mean"] is not None else "-")
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def plot(groups: dict[str, list[Run]], metric: str, threshold: float | None, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (group, runs) in enumerate(groups.items()):
        color = colors[i % len(colors)]
        for r in runs:
            ax.plot([f for _, f, _ in r.evals], [v for _, _, v in r.evals], color=color, alpha=0.25, linewidth=0.8)
        grid, curves = group_curves(runs)
        mean = curves.mean(axis=0)
        low, high = bootstrap_ci(curves)
        label = f"{group} ({len(runs)} seed{'s' if len(runs) != 1 else ''})"
        if len(grid) == 1:
            ax.errorbar(grid, mean, yerr=[mean - low, high - mean], fmt="o", color=color, label=label, capsize=4)
        else:
            ax.plot(grid, mean, color=color, linewidth=2, label=label)
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("environment frames")
    ax.set_ylabel(f"eval {metric}")
    ax.set_title(f"eval {metric}: mean over seeds, 95% bootstrap CI")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    paths = [out / f"curves_{metric}.png", out / f"curves_{metric}.svg"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    metric = args.metric.removeprefix("eval/")
    if not metric or "/" in metric:
        raise UserError(f"--metric '{args.metric}' must be an eval metric name such as return_mean")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UserError("--threshold must be a finite number")
    if args.wandb:
        runs = load_wandb(args.wandb, args.inputs, metric)
    elif not args.inputs:
        raise UserError("give run directories, directories of runs or glob prefixes to compare "
                        "(or --wandb ENTITY/PROJECT)")
    else:
        runs = load_local(args.inputs, metric)
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    for group, members in groups.items():
        members.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.source))
        check_group_configs(group, members)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory '{out}' ({exc.strerror}); pass another --out") from None

    summaries = {g: summarize_group(members, args.threshold) for g, members in groups.items()}
    header, rows = table_rows(summaries, metric, args.threshold)
    images = plot(groups, metric, args.threshold, out)
    md_path, json_path = out / f"table_{metric}.md", out / f"summary_{metric}.json"
    note = (f"Final = each seed's last evaluation of `{metric}`; ± is the std over seeds (ddof=1); IQM over seeds' "
            "final scores; steps/s from the training rows.\n")
    md_path.write_text(f"# eval {metric}\n\n" + markdown_table(header, rows) + "\n" + note)
    json_path.write_text(json.dumps({"metric": metric, "groups": summaries}, indent=2) + "\n")
    print(text_table(header, rows))
    print(f"drl.compare: wrote {', '.join(str(p) for p in [*images, md_path, json_path])}")
    return 0


if __name__ == "__main__":
    run_cli("drl.compare", main)
