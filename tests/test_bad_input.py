"""Bad input: every case is one line on stderr naming the problem and the fix, exit code 2, no traceback
(``--debug`` shows it), and nothing already written is lost. Real ``python -m drl.train`` subprocesses."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from drl import config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY_CATCH = [
    "total_steps=600",
    "agent.learning_starts=200",
    "agent.batch_size=16",
    "env.num_envs=8",
    "eval.interval=600",
    "eval.episodes=8",
    "eval.num_envs=8",
    "log_interval=200",
    "tracking.wandb=off",
]


def train(*args, env: dict | None = None, timeout: float = 120):
    full_env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "drl.train", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=timeout,
    )


def one_line_error(proc, *needles: str) -> str:
    """Exit 2, exactly one stderr line ``drl.train: error: ...`` holding every needle, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    line = lines[0]
    assert line.startswith("drl.train: error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def catch_run(tmp_path_factory) -> Path:
    """A real, finished tiny catch run (config.yaml, metrics.jsonl, checkpoints/latest.pt)."""
    run_dir = tmp_path_factory.mktemp("bad_input") / "catch"
    proc = train("catch", *TINY_CATCH, "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture
def run_copy(catch_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(catch_run, dest)
    return dest


# ----------------------------------------------------------------------------------------------- names and keys
def test_unknown_experiment(tmp_path):
    one_line_error(
        train("atari-pongg", f"output_dir={tmp_path}"),
        "unknown experiment 'atari-pongg'",
        "did you mean atari-pong?",
        "catch",
    )
    assert not list(tmp_path.iterdir())


def test_unknown_config_key_suggests_closest():
    one_line_error(train("catch", "agent.lrr=1e-4"), "unknown config key 'agent.lrr'", "did you mean agent.lr")


def test_unknown_config_section_suggests_closest():
    one_line_error(train("catch", "networkk.hidden=32"), "unknown config key 'networkk'", "network.hidden")


def test_wrong_type():
    one_line_error(train("catch", "agent.batch_size=abc"), "agent.batch_size has the wrong type: expected int", "'abc'")


def test_value_for_a_section():
    one_line_error(train("catch", "agent=3"), "config key 'agent' is a section", "agent.<field>=")


def test_override_without_equals():
    one_line_error(train("catch", "lr"), "override 'lr' must look like key=value")


def test_debug_shows_the_traceback():
    proc = train("catch", "agent.lrr=1e-4", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


# ----------------------------------------------------------------------------------------------- ranges
def test_lr_not_positive():
    one_line_error(train("catch", "agent.lr=0"), "agent.lr must be > 0.0 (got 0)")


def test_negative_lr():
    one_line_error(train("catch", "agent.lr=-1e-3"), "agent.lr must be > 0.0")


def test_gamma_zero():
    one_line_error(train("catch", "agent.gamma=0"), "agent.gamma must be > 0.0")


def test_gamma_above_one():
    one_line_error(train("catch", "agent.gamma=1.5"), "agent.gamma must be <= 1.0")


def test_batch_larger_than_buffer():
    one_line_error(
        train("catch", "replay.capacity=16", "agent.batch_size=64"),
        "agent.batch_size (64) is larger than replay.capacity (16)",
        "lower agent.batch_size",
    )


def test_n_step_below_one():
    one_line_error(train("catch", "agent.n_step=0"), "agent.n_step must be >= 1")


def test_num_envs_below_one():
    one_line_error(train("catch", "env.num_envs=0"), "env.num_envs must be >= 1")


def test_eval_episodes_below_one():
    one_line_error(train("catch", "eval.episodes=0"), "eval.episodes must be >= 1")


def test_total_steps_below_one():
    one_line_error(train("catch", "total_steps=0"), "total_steps must be >= 1")


@pytest.mark.doom
def test_sequence_length_not_above_burn_in():
    one_line_error(
        train("doom-basic", "replay.sequence_length=8", "replay.burn_in=8"),
        "replay.sequence_length (8) must be above replay.burn_in (8)",
        "lower burn_in",
    )


def test_eps_start_above_one():
    one_line_error(train("catch", "agent.eps_start=1.5"), "agent.eps_start must be <= 1.0")


def test_eps_end_negative():
    one_line_error(train("catch", "agent.eps_end=-0.1"), "agent.eps_end must be >= 0.0")


def test_eval_epsilon_above_one():
    one_line_error(train("catch", "eval.epsilon=2"), "eval.epsilon must be <= 1.0")


@pytest.mark.ray
def test_frames_on_device_with_the_replay_in_its_own_actor():
    one_line_error(
        train("catch", "distributed.collectors=2", "distributed.replay=actor", "replay.frames_on_device=true"),
        "replay.frames_on_device",
        "distributed.replay=actor",
        "use one or the other",
    )


# ----------------------------------------------------------------------------------------------- set-up errors
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(tmp_path):
    one_line_error(
        train("catch", "device=cuda", "--run-dir", tmp_path / "run"), "device=cuda", "no CUDA device", "use device=cpu"
    )
    assert not (tmp_path / "run").exists(), "a run that never started leaves no run directory"


def test_unknown_atari_game(tmp_path):
    one_line_error(
        train("atari-pong", "env.game=pongg", "--run-dir", tmp_path / "run"),
        "unknown Atari game 'pongg'",
        "did you mean pong",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.doom
def test_unknown_doom_scenario(tmp_path):
    one_line_error(
        train("doom-basic", "env.doom.scenario=basik", "--run-dir", tmp_path / "run"),
        "unknown Doom scenario 'basik'",
        "did you mean basic?",
        "health_gathering",
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.doom
def test_unknown_doom_button(tmp_path):
    one_line_error(
        train("doom-basic", "env.doom.buttons=attack;jumpp", "--run-dir", tmp_path / "run"),
        "unknown Doom button 'jumpp'",
        "did you mean jump?",
    )


@pytest.mark.doom
def test_bad_doom_games_per_worker(tmp_path):
    one_line_error(
        train("doom-basic", "env.doom.games_per_worker=0", "--run-dir", tmp_path / "run"),
        "env.doom.games_per_worker must be >= 1 (got 0)",
    )


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("env:\n  kind: catch\nagent: {lr: [1, 2\n")
    one_line_error(train(bad), "malformed YAML", "bad.yaml", "line", "fix the syntax")


def test_missing_yaml_file(tmp_path):
    one_line_error(train(tmp_path / "nope.yaml"), "nope.yaml", "does not exist")


def test_replay_larger_than_free_memory(tmp_path):
    line = one_line_error(
        train("catch", "replay.capacity=1000000000000", "--run-dir", tmp_path / "run"),
        "replay.capacity=1000000000000 needs",
        "GiB but only",
        "GiB are free",
        "lower replay.capacity",
    )
    assert float(line.split("needs ")[1].split(" GiB")[0]) > 50_000  # 57 B per slot, computed before allocating
    assert not (tmp_path / "run").exists()


def test_bad_seeds_list():
    one_line_error(train("catch", "--seeds", "0,x"), "--seeds '0,x' must be comma-separated integers")
    one_line_error(train("catch", "--seeds", "0,,1"), "--seeds '0,,1' must be comma-separated integers")


def test_conv_encoder_on_vector_observations(tmp_path):
    one_line_error(
        train("cartpole", "network.encoder=nature", "--run-dir", tmp_path / "run"),
        "network.encoder=nature is a convolutional encoder for image observations",
        "observations have shape (4,)",
        "set network.encoder=mlp for vector observations",
    )
    assert not (tmp_path / "run").exists()


def test_conv_encoder_larger_than_the_frames(tmp_path):
    one_line_error(
        train("catch", "network.encoder=nature", "--run-dir", tmp_path / "run"),
        "network.encoder=nature does not fit observations of shape (1, 10, 5)",
        "Kernel size can't be greater than actual input size",
        "network.encoder=small",
    )
    assert not (tmp_path / "run").exists()


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")


@pytest.mark.ray
@needs_ray
def test_nothing_listens_at_the_cluster_address(tmp_path):
    started = time.monotonic()
    proc = train(
        "catch",
        "distributed.collectors=2",
        "distributed.address=127.0.0.1:1",
        "--run-dir",
        tmp_path / "run",
        timeout=60,
    )
    seconds = time.monotonic() - started
    one_line_error(
        proc,
        "cannot join the Ray cluster at distributed.address=127.0.0.1:1",
        "nothing listens there",
        "Connection refused",
        "ray start --head --port=1",
        "leave distributed.address unset to let drl start a local cluster",
    )
    assert seconds < 30, f"took {seconds:.0f} s"
    assert not (tmp_path / "run").exists()


@pytest.mark.ray
@needs_ray
def test_cluster_address_that_is_not_ray(tmp_path):
    """A port that accepts connections but never answers like Ray's GCS (gRPC): refused after the probe's 5 s."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # the kernel accepts connections; nothing ever answers
        address = f"127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        proc = train(
            "catch",
            "distributed.collectors=2",
            f"distributed.address={address}",
            "--run-dir",
            tmp_path / "run",
            timeout=60,
        )
        seconds = time.monotonic() - started
    one_line_error(
        proc,
        f"distributed.address={address}",
        "accepts connections but is not a Ray cluster",
        "ray start --head",
        "leave distributed.address unset",
    )
    assert seconds < 30, f"took {seconds:.0f} s"
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------- run directories
def test_existing_run_directory_is_refused(run_copy):
    before = snapshot(run_copy)
    one_line_error(train("catch", *TINY_CATCH, "--run-dir", run_copy), "already exists", "--resume", "--overwrite")
    assert snapshot(run_copy) == before


def test_overwrite_that_fails_to_start_keeps_the_old_run(run_copy):
    before = snapshot(run_copy)
    one_line_error(train("atari-pong", "env.game=pongg", "--run-dir", run_copy, "--overwrite"), "pongg")
    assert snapshot(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["run"], "no moved-aside copy is left behind"


def test_unwritable_output_directory_under_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    one_line_error(
        train("catch", f"output_dir={blocker / 'runs'}"),
        "cannot create run directory",
        "Not a directory",
        "set output_dir=",
    )


def test_unwritable_output_directory_in_proc():
    one_line_error(train("catch", "--run-dir", "/proc/drl-test-run"), "cannot create run directory", "writable folder")


def test_resume_missing_directory(tmp_path):
    one_line_error(train("--resume", tmp_path / "nope"), "no such run directory", "config.yaml")


# ----------------------------------------------------------------------------------------------- checkpoints
def test_resume_without_checkpoint(run_copy):
    (run_copy / "checkpoints" / "latest.pt").unlink()
    before = snapshot(run_copy)
    one_line_error(train("--resume", run_copy), "latest.pt' does not exist")
    assert snapshot(run_copy) == before


def test_resume_truncated_checkpoint(run_copy):
    ckpt = run_copy / "checkpoints" / "latest.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    before = snapshot(run_copy)
    one_line_error(
        train("--resume", run_copy), "unreadable, truncated or corrupt", "use an earlier checkpoint or start a new run"
    )
    assert snapshot(run_copy) == before, "the corrupted file and metrics.jsonl are left as they were"


def test_resume_garbled_checkpoint(run_copy):
    ckpt = run_copy / "checkpoints" / "latest.pt"
    data = bytearray(ckpt.read_bytes())
    middle = len(data) // 2  # inside tensor data: torch.load alone would load it silently
    data[middle : middle + 256] = bytes(256)
    ckpt.write_bytes(bytes(data))
    before = snapshot(run_copy)
    one_line_error(train("--resume", run_copy), "truncated or corrupt", "CRC")
    assert snapshot(run_copy) == before


def test_resume_unreadable_checkpoint(run_copy):
    ckpt = run_copy / "checkpoints" / "latest.pt"
    ckpt.unlink()
    ckpt.mkdir()  # tests run as root, so permissions cannot make a file unreadable
    one_line_error(train("--resume", run_copy), "unreadable", "Is a directory")


def test_resume_with_another_network_size(run_copy):
    cfg_path = run_copy / "config.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    data["network"]["hidden"] = 32
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    before = snapshot(run_copy)
    one_line_error(
        train("--resume", run_copy),
        "checkpoint does not fit this network",
        "resume with the config the run was started with",
    )
    assert snapshot(run_copy) == before


def test_resume_override_of_network_size_keeps_config(run_copy):
    before = snapshot(run_copy)
    one_line_error(train("--resume", run_copy, "network.hidden=32"), "does not fit this network")
    assert snapshot(run_copy) == before, "a failed resume does not rewrite config.yaml"


def test_resume_checkpoint_of_another_experiment(run_copy, tmp_path):
    other = tmp_path / "memory-run"
    (other / "checkpoints").mkdir(parents=True)
    cfg = config.load("memory", ["tracking.wandb=off"])
    (other / "config.yaml").write_text(config.to_yaml(cfg))
    shutil.copy(run_copy / "checkpoints" / "latest.pt", other / "checkpoints" / "latest.pt")
    before = snapshot(other)
    one_line_error(train("--resume", other), "checkpoint belongs to experiment 'catch', not 'memory'")
    assert snapshot(other) == before


# ----------------------------------------------------------------------------------------------- tracking
def test_unreachable_wandb_falls_back_and_the_run_completes(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(
        "catch",
        *[o for o in TINY_CATCH if not o.startswith("tracking.")],
        "tracking.wandb=auto",
        "--run-dir",
        run_dir,
        env={"WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_API_KEY": "fake", "WANDB_MODE": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not reachable" in proc.stderr or "tracking off" in proc.stderr
    assert (run_dir / "checkpoints" / "latest.pt").exists() and (run_dir / "metrics.jsonl").stat().st_size > 0
