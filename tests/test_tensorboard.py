"""TensorBoard: real catch runs with ``tracking.tensorboard=true`` (single-process and on Ray); the event files, read
back with TensorBoard's own reader, hold the W&B scalars of every metrics.jsonl row at its env steps."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drl.metrics import read_metrics
from tests.helpers import FAST_CATCH, ROOT

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
AXES = ("env_frames", "env_steps", "wall_time")


def train(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drl.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env or ENV,
        timeout=timeout,
    )


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def expected_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What W&B gets from metrics.jsonl (drl.tracking.wandb_names), keyed by name, at each row's env steps."""
    from drl.tracking import wandb_names

    out: dict[str, list] = {}
    for row in read_metrics(run_dir / "metrics.jsonl"):
        for name, value in wandb_names(row).items():
            if name not in AXES:
                out.setdefault(name, []).append((row["env_steps"], value))
    return out


def check_matches(run_dir: Path) -> dict:
    events, expected = scalars(run_dir / "tensorboard"), expected_scalars(run_dir)
    assert set(events) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in events[tag]] == [s for s, _ in points], tag
        assert [v for _, v in events[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-6), tag
    return events


def test_single_process_catch_run_writes_its_metrics_to_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(
        "catch",
        "total_steps=3000",
        *FAST_CATCH,
        "tracking.wandb=off",
        "tracking.tensorboard=true",
        "--run-dir",
        run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = check_matches(run_dir)
    assert {"train/loss", "train/epsilon", "train/episode_return", "eval/return_mean", "eval/return_std"} <= set(events)
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "eval"]
    assert [s for s, _ in events["eval/return_mean"]] == [r["env_steps"] for r in evals]
    assert evals[-1]["env_steps"] >= 3000


def test_a_resumed_run_continues_the_same_tensorboard_folder(tmp_path):
    run_dir = tmp_path / "run"
    first = train(
        "catch",
        "total_steps=1500",
        *FAST_CATCH,
        "tracking.wandb=off",
        "tracking.tensorboard=true",
        "--run-dir",
        run_dir,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = train("--resume", run_dir, "total_steps=3000")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = check_matches(run_dir)  # both sessions' rows, none lost or doubled
    assert events["eval/return_mean"][-1][0] >= 3000


def test_tensorboard_is_off_by_default(tmp_path):
    run_dir = tmp_path / "run"
    proc = train("catch", "total_steps=600", *FAST_CATCH, "tracking.wandb=off", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (run_dir / "tensorboard").exists()


def test_missing_tensorboard_is_one_line_naming_the_install(tmp_path):
    """A ``tensorboard`` that cannot be imported (a stand-in package that raises ImportError, first on the path)."""
    fake = tmp_path / "shadow" / "tensorboard"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named tensorboard')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)])}
    run_dir = tmp_path / "run"
    proc = train(
        "catch", "total_steps=600", "tracking.wandb=off", "tracking.tensorboard=true", "--run-dir", run_dir, env=env
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install tensorboard" in lines[0] and "tracking.tensorboard" in lines[0], lines
    assert not run_dir.exists(), "a failed start leaves no run directory"


@pytest.mark.ray
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")
def test_distributed_catch_run_writes_its_metrics_to_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(
        "catch",
        "distributed.collectors=2",
        "total_steps=4000",
        "eval.interval=2000",
        "eval.episodes=16",
        "eval.num_envs=16",
        "log_interval=1000",
        "compute.threads=1",
        "tracking.wandb=off",
        "tracking.tensorboard=true",
        "--run-dir",
        run_dir,
        env={**ENV, "DRL_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = check_matches(run_dir)
    assert {"train/updates", "eval/return_mean"} <= set(events)
