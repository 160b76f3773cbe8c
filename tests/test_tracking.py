"""W&B tracking: a real short training with no network goes offline by itself; its .wandb file is read back."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import pytest

from drl.metrics import read_metrics
from drl.tracking import resolve_mode, wandb_names
from drl.wandb_records import find_run_files, iter_payloads, read_run
from tests.helpers import FAST_CATCH, ROOT, offline_env


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracking")
    run_dir = tmp / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "drl.train",
            "catch",
            "total_steps=3000",
            "agent.lr=0.002",
            *FAST_CATCH,
            "--run-dir",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=offline_env(tmp),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir, proc


@pytest.mark.slow
def test_auto_goes_offline_with_one_sync_line(offline_run):
    run_dir, proc = offline_run
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "wandb" in l and "tqdm" not in l]
    sync = [l for l in lines if "wandb sync" in l]
    assert len(sync) == 1, lines
    assert "offline" in sync[0] and str(run_dir / "wandb") in sync[0]
    assert not [l for l in lines if l.startswith("wandb:")], lines  # wandb's own banner is silenced
    files = find_run_files(run_dir)
    assert len(files) == 1 and files[0].stat().st_size > 32 * 1024  # spans several 32 KiB blocks


@pytest.mark.slow
def test_offline_file_holds_config_group_metrics_and_history(offline_run):
    run_dir, _ = offline_run
    record = read_run(find_run_files(run_dir)[0])
    info = record["run"]
    assert info["project"] == "drl" and info["group"] == "catch" and info["job_type"] == "train"
    assert info["name"].startswith("catch-seed0-")
    cfg = record["config"]
    assert cfg["name"] == "catch" and cfg["seed"] == 0 and math.isclose(cfg["agent"]["lr"], 0.002)
    assert cfg["env"]["kind"] == "catch" and cfg["tracking"]["wandb"] == "auto"

    # the step axis: env_frames / env_steps defined, train/* and eval/* plotted against env_frames
    defined = {(m["name"], m["glob_name"], m["step_metric"]) for m in record["metrics"]}
    assert {
        ("env_frames", "", ""),
        ("env_steps", "", ""),
        ("", "train/*", "env_frames"),
        ("", "eval/*", "env_frames"),
    } <= defined

    rows = read_metrics(run_dir / "metrics.jsonl")
    history = record["history"]
    assert len(history) == len(rows) > 0
    names = set().union(*history)
    for name in (
        "train/loss",
        "train/q_mean",
        "train/epsilon",
        "train/sps",
        "train/episode_return",
        "train/episode_length",
        "eval/return_mean",
        "eval/return_std",
        "eval/return_median",
        "eval/length_mean",
        "env_frames",
        "env_steps",
    ):
        assert name in names, name
    frames = [h["env_frames"] for h in history]
    assert frames == [r["frames"] for r in rows] and frames == sorted(frames)
    assert [h["env_steps"] for h in history] == [r["env_steps"] for r in rows]
    for row, h in zip(rows, history):
        if row["event"] == "eval":
            assert math.isclose(h["eval/return_mean"], row["return_mean"])
        elif row["event"] == "episode":
            assert h["train/episode_return"] == row["return"] and h["train/episode_length"] == row["length"]
        elif row["event"] == "train" and row.get("train/loss") is not None:
            assert math.isclose(h["train/loss"], row["train/loss"]) and math.isclose(h["train/epsilon"], row["epsilon"])
    last_eval = [r for r in rows if r["event"] == "eval"][-1]
    assert math.isclose(record["summary"]["final/return_mean"], last_eval["return_mean"])
    assert record["summary"]["final/env_steps"] == rows[-1]["env_steps"]
    assert record["exit_code"] == 0


def test_reader_rejects_other_files(tmp_path):
    bad = tmp_path / "x.wandb"
    bad.write_bytes(b"not a wandb file")
    with pytest.raises(Exception, match="not a W&B run file"):
        list(iter_payloads(bad))


def test_row_mapping_covers_doom_measures():
    episode = {
        "event": "episode",
        "env_steps": 40,
        "frames": 160,
        "wall_time": 1.0,
        "return": 12.0,
        "length": 10,
        "kills": 3,
        "survival_tics": 500,
    }
    assert wandb_names(episode) == {
        "train/episode_return": 12.0,
        "train/episode_length": 10,
        "train/kills": 3,
        "train/survival_tics": 500,
        "env_frames": 160,
        "env_steps": 40,
        "wall_time": 1.0,
    }
    ev = {
        "event": "eval",
        "env_steps": 40,
        "frames": 160,
        "wall_time": 2.0,
        "episodes": 8,
        "returns": [1.0, 2.0],
        "return_mean": 1.5,
        "kills_mean": 2.5,
        "survival_tics_mean": 700.0,
        "eval_seconds": 0.5,
    }
    out = wandb_names(ev)
    assert out["eval/kills_mean"] == 2.5 and out["eval/survival_tics_mean"] == 700.0 and out["eval/seconds"] == 0.5
    assert "eval/returns" not in out  # lists are not scalars
    train = {
        "event": "train",
        "env_steps": 40,
        "frames": 160,
        "wall_time": 3.0,
        "epsilon": 0.5,
        "sps": 100.0,
        "recent_return": None,
        "train/loss": 0.1,
    }
    assert wandb_names(train) == {
        "train/epsilon": 0.5,
        "train/sps": 100.0,
        "train/loss": 0.1,
        "env_frames": 160,
        "env_steps": 40,
        "wall_time": 3.0,
    }


def test_auto_mode_decisions(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_mode("auto") == ("offline", "not logged in")
    assert resolve_mode("off")[0] == "off"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto")[0] == "off"
    monkeypatch.delenv("WANDB_MODE")
    # logged in through netrc, but the server does not answer: offline, within the bounded check
    (tmp_path / "netrc").write_text("machine 127.0.0.1\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    t0 = time.monotonic()
    mode, reason = resolve_mode("auto")
    assert mode == "offline" and "not reachable" in reason and time.monotonic() - t0 < 5
