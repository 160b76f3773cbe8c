"""``compute.overlap_env``: whether the updates run while the envs step changes speed only, never what is trained."""

from __future__ import annotations

import pytest
import torch

import drl
from drl.api import create_run_dir
from drl.metrics import read_metrics

TIMING = ("wall_time", "sps", "eval_seconds", "updates_per_s")
QUIET = ["tracking.wandb=off", "compute.threads=1", "checkpoint_interval=1000000", "log_interval=100"]


def _train(experiment: str, overrides: list[str], run_dir) -> tuple[dict, list[dict], int]:
    """The online weights, the metrics rows without timing fields and the update count of one short run."""
    cfg = drl.load_config(experiment, [*QUIET, *overrides])
    with drl.Trainer(cfg, create_run_dir(cfg, run_dir)) as trainer:
        trainer.run()
        weights = {k: v.clone() for k, v in trainer.agent.online.state_dict().items()}
        updates = trainer.agent.updates
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir / "metrics.jsonl")]
    return weights, rows, updates


@pytest.mark.parametrize(
    "experiment, overrides",
    [
        # torch-native: stepped in the caller's thread
        ("catch", ["total_steps=3000", "agent.learning_starts=500", "eval.interval=1500", "eval.episodes=8"]),
        # ALE's vector env: stepped in its own threads while the updates run
        pytest.param(
            "atari-pong",
            [
                "total_steps=600",
                "agent.learning_starts=200",
                "agent.batch_size=8",
                "replay.capacity=2000",
                "env.num_envs=2",
                "compute.bf16=off",
                "eval.interval=300",
                "eval.episodes=1",
                "eval.num_envs=1",
                "eval.max_frames=200",
            ],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_overlap_on_and_off_train_identically(tmp_path, experiment, overrides):
    """The updates a step owes sample the replay up to the previous step either way: the same weights, losses,
    episodes and evaluations, bit for bit."""
    on = _train(experiment, [*overrides, "compute.overlap_env=true"], tmp_path / "on")
    off = _train(experiment, [*overrides, "compute.overlap_env=false"], tmp_path / "off")
    assert on[2] == off[2] > 0, "both runs made the same updates"
    assert on[0].keys() == off[0].keys() and all(torch.equal(on[0][k], off[0][k]) for k in on[0])
    assert any("train/loss" in r for r in on[1]) and on[1] == off[1]
