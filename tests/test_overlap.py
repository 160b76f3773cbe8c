"""``compute.overlap_env``: whether the updates run while the envs step changes speed only, never what is trained."""

from __future__ import annotations

import pytest
import torch

import drl
from drl import runtime
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


CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    "experiment, overrides, device, threads, cores, overlap",
    [
        ("catch", [], CPU, 1, 2, False),  # stepped in the caller's thread: nothing to overlap
        ("catch", [], CUDA, 2, 2, False),
        ("cartpole", [], CPU, 1, 2, False),  # Gymnasium sync: the caller's thread too
        ("cartpole", ["env.vectorization=async"], CPU, 2, 2, True),  # worker processes
        ("atari-pong", [], CPU, 2, 2, True),  # ALE's threads beside torch on every core (measured faster here)
        ("atari-pong", ["env.num_envs=1"], CPU, 2, 2, True),
        ("atari-pong", [], CPU, 1, 2, True),  # a core torch leaves free
        ("atari-pong", [], CPU, 16, 16, True),
        ("atari-pong", [], CUDA, 16, 16, True),  # the update on the GPU, the envs on the CPU
        ("doom-health-gathering", [], CPU, 2, 2, True),  # worker processes
        ("doom-health-gathering", ["compute.overlap_env=off"], CPU, 1, 2, False),  # set: as set
        ("catch", ["compute.overlap_env=on"], CPU, 2, 2, True),
    ],
)
def test_auto_overlap_follows_where_the_env_steps(experiment, overrides, device, threads, cores, overlap):
    cfg = drl.load_config(experiment, overrides)
    assert runtime.use_overlap_env(cfg.compute, cfg.env, device, threads, cores) is overlap


def test_overlap_env_reads_yaml_booleans_and_defaults_to_auto():
    assert drl.load_config("catch").compute.overlap_env == "auto"
    assert [drl.load_config("catch", [f"compute.overlap_env={v}"]).compute.overlap_env for v in ("true", "false")] == [
        "on",
        "off",
    ]


@pytest.mark.slow
def test_a_run_reports_the_compute_settings_it_resolved(tmp_path):
    """config.yaml keeps the settings (auto); the start line, sessions.jsonl and the Trainer say what overlap_env and
    keep_freed_memory resolved to (keep_freed_memory: on where the C library is glibc)."""
    import json

    import yaml

    from tests.helpers import FAST_CATCH, cli, offline_env

    run_dir = tmp_path / "run"
    proc = cli(
        "drl.train", "catch", *FAST_CATCH, "total_steps=600", "tracking.wandb=off", "--run-dir", run_dir,
        env=offline_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    glibc = runtime.glibc_malloc()
    # catch steps in the caller's thread
    assert f"threads, overlap_env False, keep_freed_memory {glibc}, replay" in proc.stdout
    compute = yaml.safe_load((run_dir / "config.yaml").read_text())["compute"]
    assert compute["overlap_env"] == compute["keep_freed_memory"] == "auto"
    assert json.loads((run_dir / "sessions.jsonl").read_text().splitlines()[0])["keep_freed_memory"] is glibc
    cfg = drl.load_config("atari-pong", ["compute.threads=1", "replay.capacity=1000", "tracking.wandb=off"])
    with drl.Trainer(cfg, create_run_dir(cfg, tmp_path / "pong")) as trainer:  # ALE beside one torch thread
        assert trainer.overlap_env is (runtime.cpu_count() > 1)


def test_compare_does_not_call_runs_that_differ_in_overlap_alone_a_mix(capsys):
    """Runs made with overlap_env: true and with auto trained alike: drl.compare groups them without a warning, but
    still warns about a learning setting."""
    from drl.compare import Run, check_group_configs

    def run(**compute) -> Run:
        return Run("pong", 0, "dir", config={"compute": {"overlap_env": True, **compute}, "agent": {"lr": 1e-4}})

    check_group_configs("pong", [run(), run(overlap_env="auto")])
    assert capsys.readouterr().err == ""
    check_group_configs("pong", [run(), run(bf16="off")])
    assert "differ in compute.bf16" in capsys.readouterr().err
