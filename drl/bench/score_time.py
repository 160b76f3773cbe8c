"""Time to a Pong score: drl's default config against SB3 DQN at its zoo hyperparameters, both taken as
(env steps to the score) / (env steps/s measured in this bench run).

The score is the same for both: the first 10 consecutive *training* episodes averaging >= 18 (training returns are
what SB3's zoo publishes). Steps to it come from training logs: drl's from the committed runs under ``docs/runs``
whose learning settings (env, network, agent, replay) are those of today's ``atari-pong`` experiment, whatever their
directory is called, so the figure follows the default when it changes; SB3's from the zoo's published DQN Pong
training log. The runs' folder is an argument (``python -m drl.bench --runs DIR``; the repository's is docs/runs):
nothing here reads the checkout."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

SCORE, WINDOW, FRAME_SKIP = 18.0, 10, 4
BUDGET = 400_000  # agent steps: a run that ends earlier without the score (stopped, eval.stop_at) is left out
# SB3 zoo, DQN on PongNoFrameskip-v4 (buffer 10k, batch 32, train every 4, learning starts 100k, target 1k,
# lr 1e-4, eps -> 0.01 over 10% of 10M steps): its published Monitor log, DLR-RM/rl-trained-agents
# dqn/PongNoFrameskip-v4_1/0.monitor.csv (commit 83f477e), read with ``steps_to_score`` below: its first 10 games
# averaging >= 18 end at 4,085,339 emulator frames (119.5 min of its own wall-clock, on its GPU machine).
SB3_ZOO_FRAMES_TO_18 = 4_085_339
SB3_ZOO_SOURCE = "DLR-RM/rl-trained-agents dqn/PongNoFrameskip-v4_1/0.monitor.csv (SB3 zoo DQN Pong training log)"


LEARNING_SECTIONS = ("env", "network", "agent", "replay")  # what decides the curve; seed, name, compute do not


def runs_of_default(runs: Path, experiment: str = "atari-pong") -> list[Path]:
    """The run directories under ``runs`` trained with ``experiment``'s current learning settings."""
    from drl.config import ConfigError, load, load_run_config

    if not runs.is_dir():  # an installed package without the repository's docs/runs
        return []
    default = load(experiment).model_dump(include=set(LEARNING_SECTIONS))
    found = []
    for run_dir in sorted(
        p for p in runs.iterdir() if (p / "metrics.jsonl").is_file() and (p / "config.yaml").is_file()
    ):
        try:
            config = load_run_config(run_dir)
        except ConfigError:  # a run of an env kind or agent that is not installed here
            continue
        if config.model_dump(include=set(LEARNING_SECTIONS)) == default:
            found.append(run_dir)
    return found


def drl_runs(runs: Path) -> tuple[dict[str, float | None], list[str]]:
    """({run directory name: env steps to the score or None}, [runs stopped early]) for the committed runs of the
    default ``atari-pong``. None means "not within BUDGET agent steps". A run that ended before BUDGET without the
    score (stopped, ``eval.stop_at``) says nothing about whether that seed gets there: it is listed apart."""
    from drl.compare import frames_to_train_return, load_local_run

    out: dict[str, float | None] = {}
    stopped_early: list[str] = []
    for run_dir in runs_of_default(runs):
        run, _ = load_local_run(run_dir, "return_mean")
        frames = np.array([f for f, _ in run.episodes])
        reached = frames_to_train_return(frames, np.array([r for _, r in run.episodes]), SCORE, WINDOW)
        if reached is not None:
            out[run_dir.name] = reached / FRAME_SKIP
        elif len(frames) and frames[-1] / FRAME_SKIP >= BUDGET:
            out[run_dir.name] = None
        else:
            stopped_early.append(run_dir.name)
    return out, stopped_early


def time_to_score(pong: dict, runs: Path) -> dict:
    """Per device: minutes to the score for both sides and their ratio (SB3 minutes / drl minutes)."""
    seeds, stopped_early = drl_runs(runs)
    reached = [s for s in seeds.values() if s is not None]
    median = statistics.median([math.inf if s is None else s for s in seeds.values()]) if seeds else math.inf
    out = {}
    for device, res in pong.items():
        drl_sps, sb3_sps = res.get("drl_default", {}).get("sps"), res.get("sb3", {}).get("sps")
        row = {
            "score": SCORE,
            "window": WINDOW,
            "drl_runs": seeds,
            "sb3_source": SB3_ZOO_SOURCE,
            "sb3_steps": SB3_ZOO_FRAMES_TO_18 / FRAME_SKIP,
            "drl_sps": drl_sps,
            "sb3_sps": sb3_sps,
        }
        if len(reached) < len(seeds):  # a run that never got there counts as infinitely slow in the median
            row["note"] = f"{len(seeds) - len(reached)} of {len(seeds)} seed runs never reached {SCORE:g}"
        if stopped_early:  # leaving them out would keep the fast seeds that got there before their stop
            row["stopped_early"] = stopped_early
            row["skipped"] = (
                f"{len(stopped_early)} of {len(seeds) + len(stopped_early)} committed runs of the default atari-pong "
                f"config under {runs} stopped (e.g. eval.stop_at) before {WINDOW} training games averaging "
                f"{SCORE:g} and before {BUDGET:,} agent steps: the median is unknown; train them on to {BUDGET:,}"
            )
        elif not seeds:
            row["skipped"] = f"no committed runs of the default atari-pong config under {runs}"
        elif math.isinf(median):
            row["skipped"] = f"fewer than half the default atari-pong runs under {runs} reached {SCORE:g}"
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
