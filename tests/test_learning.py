"""Learning: DQN solves the torch-native catch task within a CI-sized budget, fixed seed."""
from __future__ import annotations

from drl import config
from drl.loop import Trainer


def test_dqn_learns_catch(tmp_path):
    cfg = config.load("catch", ["total_steps=20000", "seed=0", "eval.interval=5000"])
    trainer = Trainer(cfg, tmp_path)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    # random play scores -0.6; a solved catch scores +1 on every episode
    assert result["eval"]["return_mean"] >= 0.9, result
