"""Learning: DQN solves the torch-native catch task within a CI-sized budget, fixed seed."""

from __future__ import annotations

import pytest

from drl import config
from drl.loop import Trainer
from drl.metrics import read_metrics


@pytest.mark.slow  # trains catch to its score
def test_dqn_learns_catch_and_stops_at_the_first_evaluation_that_reaches_stop_at(tmp_path):
    cfg = config.load(
        "catch", ["total_steps=40000", "seed=0", "eval.interval=2500", "eval.stop_at=0.9", "tracking.wandb=off"]
    )
    trainer = Trainer(cfg, tmp_path)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    # random play scores -0.6; a solved catch scores +1 on every episode
    assert result["eval"]["return_mean"] >= 0.9, result
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["event"] == "eval"]
    assert result["env_steps"] < 40000 and evals[-1]["env_steps"] == result["env_steps"], (result, evals)
    assert all(r["return_mean"] < 0.9 for r in evals[:-1]), evals


def train_memory(algo: str, tmp_path) -> float:
    cfg = config.load(
        "memory", [f"agent.algo={algo}", "total_steps=12000", "seed=0", "eval.interval=6000", "tracking.wandb=off"]
    )
    (tmp_path / algo).mkdir()
    trainer = Trainer(cfg, tmp_path / algo)
    try:
        return trainer.run()["eval"]["return_mean"]
    finally:
        trainer.close()


def test_drqn_remembers_the_cue_while_dqn_stays_at_chance(tmp_path):
    # the cue is visible only at the first step; a memoryless policy scores 0 on average, memory scores +1
    assert train_memory("drqn", tmp_path) >= 0.9
    assert abs(train_memory("dqn", tmp_path)) <= 0.5
