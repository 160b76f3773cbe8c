"""Where one training run's speed went, read from its own files: ``python -m drl.bench.run_speed RUN_DIR
[--gpu-util FILE] [--score X]``.

From ``metrics.jsonl``: env steps/s while the replay fills (acting and env stepping only, no updates) against
while learning (``drl.compare.learning_sps``: the train rows logged wholly after learning started), updates/s
while learning, and the first evaluation whose mean return reaches ``--score`` (env steps, minutes of the run's
wall clock, evaluations included). With ``--gpu-util``, a log of GPU utilisation taken beside the run, one
``epoch_seconds,utilization_percent,memory_used_mib`` line per sample (``scripts/gpu_check.sh`` writes it from
``nvidia-smi``), the median utilisation over the samples taken while learning, placed on the run's clock through
``sessions.jsonl``'s start time. Then which part bounds the run: the GPU (busy >= 80 % while learning), the envs
(learning keeps >= 80 % of the fill's rate) or, neither, the host side of learning (replay sampling, Python,
kernel launches; on a CPU, the updates themselves)."""

from __future__ import annotations

import argparse
import statistics
from datetime import datetime
from pathlib import Path

from drl.compare import learning_sps
from drl.errors import UserError
from drl.metrics import read_metrics, read_sessions

BUSY = 0.8  # a share of the GPU's time, or of the fill's env steps/s, that counts as saturated


def read_gpu_util(path: Path) -> list[tuple[float, float]]:
    """(epoch seconds, utilisation %) per sample line ``epoch_seconds,utilization_percent[,...]``; lines that are
    not two numbers (a failed ``nvidia-smi`` call) are skipped."""
    samples = []
    for line in path.read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        try:
            samples.append((float(fields[0]), float(fields[1])))
        except (IndexError, ValueError):
            continue
    return samples


def run_start(run_dir: Path, sessions: list[dict]) -> float:
    """Epoch seconds at which the run's only session started; its train rows' wall_time counts from there."""
    if len(sessions) != 1:
        raise UserError(
            f"{run_dir} was trained in {len(sessions)} sessions; a GPU-utilisation log can be placed on the clock "
            "of a run trained in one session only: leave out --gpu-util"
        )
    return datetime.fromisoformat(sessions[0]["started"].replace("Z", "+00:00")).timestamp()


def summarize(run_dir: Path, gpu_util: Path | None = None, score: float | None = None) -> dict:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; pass a directory written by drl.train")
    rows, sessions = list(read_metrics(metrics)), read_sessions(run_dir)
    train = [r for r in rows if r.get("event") == "train" and isinstance(r.get("sps"), (int, float))]
    filling = [r["sps"] for r in train if not r.get("updates")]
    learning = learning_sps([(r["sps"], r.get("updates")) for r in train])
    learning_rows = [r for r in train if r.get("updates")]
    updates_per_s = [
        (b["updates"] - a["updates"]) / (b["wall_time"] - a["wall_time"])
        for a, b in zip(learning_rows, learning_rows[1:])
        if b["wall_time"] > a["wall_time"]
    ]
    out: dict = {
        "fill_sps": statistics.median(filling) if filling else None,
        "learning_sps": statistics.median(learning) if learning else None,
        "updates_per_s": statistics.median(updates_per_s) if updates_per_s else None,
        "env_steps": train[-1]["env_steps"] if train else 0,
        "device": sessions[-1].get("device") if sessions else None,
    }
    if score is not None:
        hit = next((r for r in rows if r.get("event") == "eval" and r.get("return_mean", -float("inf")) >= score), None)
        out["score"] = score
        out["score_env_steps"] = hit["env_steps"] if hit else None
        out["score_minutes"] = hit["wall_time"] / 60 if hit else None
    if gpu_util is not None:
        if not gpu_util.is_file():
            raise UserError(f"no GPU-utilisation log at {gpu_util}; pass the file scripts/gpu_check.sh wrote")
        start = run_start(run_dir, sessions)
        # learning spans from the first train row that counted updates to the last train row
        window = (start + learning_rows[0]["wall_time"], start + train[-1]["wall_time"]) if learning_rows else None
        busy = [util for t, util in read_gpu_util(gpu_util) if window and window[0] <= t <= window[1]]
        out["gpu_util_samples"] = len(busy)
        out["gpu_util_median"] = statistics.median(busy) if busy else None
    out["bound"] = bound(out)
    return out


def bound(summary: dict) -> str:
    """Which part limits the run's speed while learning, in words (see the module docstring)."""
    fill, learn, util = summary["fill_sps"], summary["learning_sps"], summary.get("gpu_util_median")
    if learn is None:
        return "unknown: no train row was logged wholly while learning"
    kept = f"learning keeps {learn / fill:.0%} of the env steps/s of the replay fill (no updates)" if fill else ""
    if util is not None and util >= 100 * BUSY:
        return f"the GPU: busy {util:.0f} % of the time while learning"
    if fill is not None and learn >= BUSY * fill:
        return f"the envs: {kept}"
    if str(summary.get("device", "")).startswith("cpu"):
        return f"the updates (on the CPU): {kept or 'no fill rows to compare'}"
    busy = f"the GPU is busy {util:.0f} % of the time while learning; " if util is not None else ""
    return f"the learning step's host side (replay sampling, Python, kernel launches): {busy}{kept}".rstrip("; ")


def format_summary(s: dict) -> str:
    def num(x, unit=""):
        return "-" if x is None else f"{x:,.1f}{unit}"

    lines = [
        f"env steps/s filling the replay: {num(s['fill_sps'])}; while learning: {num(s['learning_sps'])}",
        f"updates/s while learning: {num(s['updates_per_s'])}",
    ]
    if "score" in s:
        reached = (
            f"{s['score_env_steps']:,} env steps, {s['score_minutes']:.1f} min"
            if s["score_env_steps"] is not None
            else f"not reached in {s['env_steps']:,} env steps"
        )
        lines.append(f"first evaluation >= {s['score']:g}: {reached}")
    if "gpu_util_median" in s:
        lines.append(
            f"GPU utilisation while learning: median {num(s['gpu_util_median'], ' %')} ({s['gpu_util_samples']} samples)"
        )
    lines.append(f"bound by {s['bound']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m drl.bench.run_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--gpu-util", type=Path, help="epoch_seconds,utilization_percent[,...] lines taken beside the run"
    )
    parser.add_argument("--score", type=float, help="report the first evaluation whose mean return reaches this")
    args = parser.parse_args(argv)
    print(format_summary(summarize(args.run_dir, args.gpu_util, args.score)))
    return 0


if __name__ == "__main__":
    from drl.cli import run_cli

    run_cli("drl.bench.run_speed", main)
