"""End to end: ``python -m drl.train atari-pong`` (tiny budget) writes its run files; ``--resume`` continues."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from drl import checkpoint, runtime
from drl.metrics import read_metrics

pytestmark = pytest.mark.slow

SMALL = [
    "total_steps=400",
    "agent.learning_starts=200",
    "agent.batch_size=8",
    "replay.capacity=2000",
    "eval.interval=400",
    "eval.episodes=1",
    "eval.num_envs=1",
    "eval.max_frames=400",
    "log_interval=100",
    "checkpoint_interval=200",
    "env.num_envs=2",
    "tracking.wandb=off",
]


def train(*args):
    return subprocess.run([sys.executable, "-m", "drl.train", *args], capture_output=True, text=True, timeout=300)


def test_atari_pong_run_writes_metrics_checkpoint_and_resumes(tmp_path):
    run_dir = tmp_path / "pong"
    proc = train("atari-pong", *SMALL, "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["name"] == "atari-pong" and cfg["total_steps"] == 400 and cfg["env"]["game"] == "pong"
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert {r["event"] for r in rows} >= {"train", "eval"}
    assert all({"env_steps", "frames", "wall_time"} <= r.keys() for r in rows)
    assert all(r["frames"] == 4 * r["env_steps"] for r in rows)
    evals = [r for r in rows if r["event"] == "eval"]
    assert evals[-1]["env_steps"] == 400 and -21 <= evals[-1]["return_mean"] <= 21
    assert any(r.get("train/loss") is not None for r in rows), "updates happened after learning_starts"
    ckpt = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["counters"]["env_steps"] == 400
    updates_before = ckpt["agent"]["updates"]

    # a second run into the same directory is refused, nothing is overwritten
    proc = train("atari-pong", *SMALL, "--run-dir", str(run_dir))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert (run_dir / "checkpoints" / "latest.pt").exists()

    proc = train("--resume", str(run_dir), "total_steps=800")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["counters"]["env_steps"] == 800
    assert ckpt["agent"]["updates"] > updates_before
    rows2 = read_metrics(run_dir / "metrics.jsonl")
    assert len(rows2) > len(rows) and rows2[: len(rows)] == rows, "resume appends, never rewrites"
    steps = [r["env_steps"] for r in rows2 if r["event"] == "train"]
    assert steps == sorted(steps) and steps[-1] > 400
    walls = [r["wall_time"] for r in rows2]
    assert walls[-1] > walls[len(rows) - 1], "wall-clock continues across the resume"

    # sessions.jsonl: one line per start of training, with its command, starting step and machine
    first, second = (json.loads(line) for line in (run_dir / "sessions.jsonl").read_text().splitlines())
    assert first["command"] == shlex.join(
        ["python", "-m", "drl.train", "atari-pong", *SMALL, "--run-dir", str(run_dir)]
    )
    assert second["command"] == shlex.join(["python", "-m", "drl.train", "--resume", str(run_dir), "total_steps=800"])
    assert (first["start_env_steps"], second["start_env_steps"]) == (0, 400)
    assert first["machine"]["cpu"] == runtime.machine_info()["cpu"] and first["machine"]["cores"] == os.cpu_count()
    assert first["device"] == "cpu" and first["bf16"] == runtime.cpu_has_bf16()


def test_resume_of_missing_directory_is_one_line_error(tmp_path):
    proc = train("--resume", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such run directory" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.doom
def test_doom_basic_drqn_run_writes_metrics_and_checkpoint(tmp_path):
    run_dir = tmp_path / "doom"
    proc = train(
        "doom-basic",
        "total_steps=480",
        "agent.learning_starts=240",
        "agent.train_freq=32",
        "agent.batch_size=4",
        "replay.capacity=4000",
        "eval.interval=480",
        "eval.episodes=2",
        "eval.num_envs=2",
        "log_interval=120",
        "env.num_envs=2",
        "tracking.wandb=off",
        "--run-dir",
        str(run_dir),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    evals = [r for r in rows if r["event"] == "eval"]
    assert evals and "kills_mean" in evals[-1] and evals[-1]["episodes"] == 2
    assert any(r.get("train/loss") is not None for r in rows)
    ckpt = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["counters"]["env_steps"] == 480 and ckpt["config"]["agent"]["algo"] == "drqn"
    assert any(k.startswith("lstm.") for k in ckpt["agent"]["online"])


def test_flickering_pong_drqn_runs(tmp_path):
    run_dir = tmp_path / "flicker"
    proc = train(
        "atari-pong-flicker",
        "total_steps=480",
        "agent.learning_starts=240",
        "agent.batch_size=4",
        "replay.capacity=4000",
        "eval.interval=480",
        "eval.episodes=1",
        "eval.num_envs=1",
        "eval.max_frames=400",
        "env.num_envs=2",
        "tracking.wandb=off",
        "--run-dir",
        str(run_dir),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["counters"]["env_steps"] == 480 and ckpt["obs_shape"] == [1, 84, 84]
