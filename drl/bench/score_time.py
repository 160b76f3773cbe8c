"""Time to a Pong score: drl's default config against SB3 DQN at its zoo hyperparameters, both taken as
(env steps to the score) / (env steps/s measured in this bench run).

The score is the same for both: the first 10 consecutive *training* episodes averaging >= 18 (training returns are
what SB3's zoo publishes). Steps to it come from training logs: drl's from the committed seed runs of
``atari-pong`` (``docs/runs/atari-pong-s*``), SB3's from the zoo's published DQN Pong training log."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

SCORE, WINDOW, FRAME_SKIP = 18.0, 10, 4
# SB3 zoo, DQN on PongNoFrameskip-v4 (buffer 10k, batch 32, train every 4, learning starts 100k, target 1k,
# lr 1e-4, eps -> 0.01 over 10% of 10M steps): its published Monitor log, DLR-RM/rl-trained-agents
# dqn/PongNoFrameskip-v4_1/0.monitor.csv (commit 83f477e), read with ``steps_to_score`` below: its first 10 games
# averaging >= 18 end at 4,085,339 emulator frames (119.5 min of its own wall-clock, on its GPU machine).
SB3_ZOO_FRAMES_TO_18 = 4_085_339
SB3_ZOO_SOURCE = "DLR-RM/rl-trained-agents dqn/PongNoFrameskip-v4_1/0.monitor.csv (SB3 zoo DQN Pong training log)"
RUNS = Path(__file__).resolve().parents[2] / "docs" / "runs"


def drl_runs(runs: Path = RUNS) -> dict[str, float | None]:
    """{run directory name: env steps to the score or None} for the committed seed runs of ``atari-pong``."""
    from drl.compare import frames_to_train_return, load_local_run

    out = {}
    for run_dir in sorted(runs.glob("atari-pong-s*")):
        if not (run_dir / "metrics.jsonl").is_file():
            continue
        run, _ = load_local_run(run_dir, "return_mean")
        frames = frames_to_train_return(np.array([f for f, _ in run.episodes]),
                                        np.array([r for _, r in run.episodes]), SCORE, WINDOW)
        out[run_dir.name] = None if frames is None else frames / FRAME_SKIP
    return out


def time_to_score(pong: dict, runs: Path = RUNS) -> dict:
    """Per device: minutes to the score for both sides and their ratio (SB3 minutes / drl minutes)."""
    seeds = drl_runs(runs)
    reached = [s for s in seeds.values() if s is not None]
    median = statistics.median([math.inf if s is None else s for s in seeds.values()]) if seeds else math.inf
    out = {}
    for device, res in pong.items():
        drl_sps, sb3_sps = res.get("drl_default", {}).get("sps"), res.get("sb3", {}).get("sps")
        row = {"score": SCORE, "window": WINDOW, "drl_runs": seeds, "sb3_source": SB3_ZOO_SOURCE,
               "sb3_steps": SB3_ZOO_FRAMES_TO_18 / FRAME_SKIP, "drl_sps": drl_sps, "sb3_sps": sb3_sps}
        if len(reached) < len(seeds):   # a run that never got there counts as infinitely slow in the median
            row["note"] = f"{len(seeds) - len(reached)} of {len(seeds)} seed runs never reached {SCORE:g}"
        if not seeds:
            row["skipped"] = f"no committed atari-pong-s* runs under {runs}"
        elif math.isinf(median):
            row["skipped"] = f"fewer than half the atari-pong-s* runs under {runs} reached {SCORE:g}"
        else:
            row["drl_steps"] = median
        if sb3_sps:
            row["sb3_minutes"] = row["sb3_steps"] / sb3_sps / 60
        if "drl_steps" in row and drl_sps:
            row["drl_minutes"] = row["drl_steps"] / drl_sps / 60
        if "drl_minutes" in row and "sb3_minutes" in row:
            row["ratio"] = row["sb3_minutes"] / row["drl_minutes"]
        out[device] = row
    return out
