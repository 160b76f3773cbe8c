"""Shared pieces of the subprocess tests."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a catch run of a few seconds that still trains, evaluates and logs
FAST_CATCH = ["eval.interval=1000", "eval.episodes=16", "eval.num_envs=16", "log_interval=500",
              "agent.train_freq=64", "agent.learning_starts=500", "compute.threads=1"]


def offline_env(tmp_path: Path) -> dict:
    """No W&B mode, key or login: what a user without network or account has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(NETRC=str(tmp_path / "no-netrc"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"))
    return env
