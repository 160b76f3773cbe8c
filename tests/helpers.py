"""Shared pieces of the subprocess tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# a catch run of a few seconds that still trains, evaluates and logs
FAST_CATCH = [
    "eval.interval=1000",
    "eval.episodes=16",
    "eval.num_envs=16",
    "log_interval=500",
    "agent.train_freq=64",
    "agent.learning_starts=500",
    "compute.threads=1",
]


def offline_env(tmp_path: Path) -> dict:
    """No W&B mode, key or login: what a user without network or account has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        NETRC=str(tmp_path / "no-netrc"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
    )
    return env


def cli(module: str, *args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m module args...`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def run_engine_probe(script: str, cwd: Path, timeout: float = 300) -> dict:
    """Run ``script`` (Python source that ends by printing ``JSON`` + a JSON object) in a subprocess with the
    repository on the path, and return the object. ViZDoom games run there, never in the pytest process (several
    games in one process have hung for users)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")][-1][4:])
