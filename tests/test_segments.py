"""Training in segments (drl/segments.py) on real short runs of catch (DQN) and memory (DRQN): every run leaves a
bf16 weights.safetensors; ``drl.train --init-from RUN_DIR [--init-optimizer]`` starts a new run from a parent's
checkpoint (exact) or weights file (bf16); ``drl.compare --chain`` draws the segments as one run on the summed axis;
bad input is one line, exit 2, and writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

import drl
from drl import checkpoint, compare, segments
from drl.loop import linear
from drl.metrics import read_metrics
from tests.helpers import FAST_CATCH, ROOT

pytestmark = pytest.mark.slow

SMALL = [*FAST_CATCH, "tracking.wandb=off"]
PARENT_STEPS = 3000


def cli(module: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    """A catch run and a memory run of 3,000 steps each: checkpoint and weights.safetensors at the end."""
    tmp = tmp_path_factory.mktemp("segments")
    out = {}
    for name in ("catch", "memory"):
        proc = cli("drl.train", name, f"total_steps={PARENT_STEPS}", *SMALL, "--run-dir", tmp / name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = tmp / name
    return out


def online_of(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / "checkpoints" / "latest.pt")["agent"]["online"]


def test_weights_file_is_the_final_online_network_in_bf16(parents):
    for name, run_dir in parents.items():
        payload = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
        path = run_dir / "weights.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            stored = {k: f.get_tensor(k) for k in f.keys()}
        online = payload["agent"]["online"]
        assert stored.keys() == online.keys()
        for key, value in online.items():
            assert stored[key].dtype == (torch.bfloat16 if value.is_floating_point() else value.dtype), key
            assert torch.equal(stored[key], value.to(stored[key].dtype)), key
        steps = payload["counters"]["env_steps"]
        assert meta["format"] == "drl-segment-weights" and meta["experiment"] == name
        assert int(meta["env_steps"]) == int(meta["chain_env_steps"]) == steps >= PARENT_STEPS
        assert (
            json.loads(meta["obs_shape"]) == payload["obs_shape"] and int(meta["num_actions"]) == payload["num_actions"]
        )
        assert json.loads(meta["network"])["agent.algo"] == ("drqn" if name == "memory" else "dqn")
        assert len(meta["config_sha256"]) == 64
        params = sum(v.numel() for v in online.values())
        assert path.stat().st_size < 2 * params + 8192  # bf16 plus header and metadata


def test_init_from_checkpoint_sets_both_networks_exactly_with_a_fresh_optimizer_and_an_empty_replay(parents, tmp_path):
    parent_dir = parents["catch"]
    parent = segments.load_parent(parent_dir)
    assert parent.source == "checkpoint" and parent.optimizer is None
    cfg = drl.load_config("catch", [*SMALL, "total_steps=2000", "agent.eps_start=0.2"])
    cfg.init_from = parent.record()
    expected = online_of(parent_dir)
    (tmp_path / "child").mkdir()
    with drl.Trainer(cfg, tmp_path / "child", init_from=parent) as trainer:
        state = trainer.agent.state_dict()
        for net in ("online", "target"):
            assert state[net].keys() == expected.keys()
            assert all(torch.equal(state[net][k], expected[k]) for k in expected), net
        assert state["optimizer"]["state"] == {} and trainer.agent.updates == 0  # Adam starts fresh
        assert len(trainer.replay) == 0 and trainer.counters.env_steps == 0
    assert cfg.init_from.env_steps == cfg.init_from.chain_env_steps == parent.env_steps >= PARENT_STEPS


def test_init_optimizer_takes_adams_state_but_the_new_learning_rate(parents, tmp_path):
    parent_dir = parents["catch"]
    saved = checkpoint.load(parent_dir / "checkpoints" / "latest.pt")["agent"]["optimizer"]
    assert saved["state"], "the parent made updates"
    parent = segments.load_parent(parent_dir, optimizer=True)
    cfg = drl.load_config("catch", [*SMALL, "agent.lr=5e-4"])
    cfg.init_from = parent.record()
    assert cfg.init_from.optimizer
    (tmp_path / "child").mkdir()
    with drl.Trainer(cfg, tmp_path / "child", init_from=parent) as trainer:
        loaded = trainer.agent.optimizer.state_dict()
        assert loaded["state"].keys() == saved["state"].keys()
        for index, moments in saved["state"].items():
            for key, value in moments.items():
                assert torch.equal(loaded["state"][index][key].cpu(), value), (index, key)
        assert [g["lr"] for g in loaded["param_groups"]] == [5e-4]
        assert len(trainer.replay) == 0 and trainer.agent.updates == 0


def test_recurrent_run_starts_from_a_committed_weights_file(parents, tmp_path):
    """What a segment commits (config.yaml, metrics.jsonl, weights.safetensors; no checkpoint) starts the next."""
    source = parents["memory"]
    committed = tmp_path / "committed" / source.name
    committed.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl", "weights.safetensors"):
        shutil.copy(source / name, committed / name)
    parent = segments.load_parent(committed)
    assert parent.source == "weights" and parent.path == committed / "weights.safetensors"
    fp32 = online_of(source)
    assert any(k.startswith("lstm.") for k in fp32)
    cfg = drl.load_config("memory", [*SMALL, "total_steps=2000"])
    cfg.init_from = parent.record()
    (tmp_path / "inproc").mkdir()
    with drl.Trainer(cfg, tmp_path / "inproc", init_from=parent) as trainer:
        state = trainer.agent.state_dict()
        for net in ("online", "target"):
            for key, value in fp32.items():
                got = state[net][key]
                assert got.dtype == value.dtype and torch.equal(got, value.to(torch.bfloat16).to(value.dtype)), key
                assert torch.allclose(got, value, rtol=2**-8, atol=0), key  # bf16 rounding only
        assert state["optimizer"]["state"] == {} and len(trainer.replay) == 0

    # the CLI: a new run with its own counter; the parent is recorded; rows carry the chain's steps
    child = tmp_path / "child"
    proc = cli("drl.train", "memory", *SMALL, "total_steps=2000", "--init-from", committed, "--run-dir", child)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"started from {committed / 'weights.safetensors'}" in proc.stdout
    recorded = yaml.safe_load((child / "config.yaml").read_text())["init_from"]
    assert recorded == {
        "run_dir": str(committed),
        "source": "weights",
        "env_steps": parent.env_steps,
        "chain_env_steps": parent.env_steps,
        "optimizer": False,
    }
    rows = read_metrics(child / "metrics.jsonl")
    assert rows and all(r["chain_env_steps"] == parent.env_steps + r["env_steps"] for r in rows)
    assert max(r["env_steps"] for r in rows) < 2100, "the env-step counter started at 0"
    meta = safe_open(str(child / "weights.safetensors"), framework="pt").metadata()
    assert int(meta["chain_env_steps"]) == parent.env_steps + int(meta["env_steps"])

    # the optimizer state is only in a checkpoint
    proc = cli(
        "drl.train", "memory", *SMALL, "--init-from", committed, "--init-optimizer", "--run-dir", tmp_path / "not-made"
    )
    one_line_error(proc, "--init-optimizer", "only a checkpoint holds", "checkpoints/latest.pt")
    assert not (tmp_path / "not-made").exists()


def test_a_chain_of_two_catch_segments_is_one_curve_on_the_summed_axis(parents, tmp_path):
    first = parents["catch"]
    second = tmp_path / "seg2"
    proc = cli(
        "drl.train",
        "catch",
        *SMALL,
        "total_steps=2000",
        "agent.eps_start=0.2",
        "--init-from",
        first,
        "--run-dir",
        second,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load((second / "config.yaml").read_text())
    cut = checkpoint.load(first / "checkpoints" / "latest.pt")["counters"]["env_steps"]
    assert cfg["init_from"] == {
        "run_dir": str(first),
        "source": "checkpoint",
        "env_steps": cut,
        "chain_env_steps": cut,
        "optimizer": False,
    }
    rows = read_metrics(second / "metrics.jsonl")
    assert all(r["chain_env_steps"] == cut + r["env_steps"] for r in rows)
    # the ε schedule restarts at the new run's step 0, from the eps_start given (ε = 1 while the replay fills)
    a = cfg["agent"]
    train = [r for r in rows if r["event"] == "train" and r["env_steps"] - 32 >= a["learning_starts"]]
    assert train
    for r in train:
        low, high = (
            linear(a["eps_start"], a["eps_end"], a["eps_decay_steps"], s) for s in (r["env_steps"], r["env_steps"] - 32)
        )
        assert low - 1e-12 <= r["epsilon"] <= high + 1e-12, r

    # drl.compare --chain: one run whose steps and frames are the sums (catch: one frame per step)
    out = tmp_path / "out"
    proc = cli("drl.compare", "--chain", first, second, "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evals1 = [r for r in read_metrics(first / "metrics.jsonl") if r["event"] == "eval" and r["env_steps"] <= cut]
    evals2 = [r for r in read_metrics(second / "metrics.jsonl") if r["event"] == "eval"]
    summary = json.loads((out / "summary_return_mean.json").read_text())["groups"]["catch"]
    assert summary["num_runs"] == 1 and summary["runs"] == [f"{first} -> {second}"]
    assert summary["final_env_steps_mean"] == cut + evals2[-1]["env_steps"]
    assert summary["final_values"] == [evals2[-1]["return_mean"]]
    assert f"{cut + evals2[-1]['env_steps']:,}" in proc.stdout
    run = compare.load_chain([str(first), str(second)], "return_mean")
    frames, values = compare.eval_curve(run)  # what the curves figure draws
    assert frames.tolist() == [r["frames"] for r in evals1] + [cut + r["frames"] for r in evals2]
    assert values.tolist() == [r["return_mean"] for r in evals1 + evals2]
    assert [s for s, _, _ in run.evals] == [r["env_steps"] for r in evals1] + [cut + r["env_steps"] for r in evals2]
    episodes1 = [r for r in read_metrics(first / "metrics.jsonl") if r["event"] == "episode" and r["frames"] <= cut]
    episodes2 = [r for r in rows if r["event"] == "episode"]
    assert [f for f, _ in run.episodes] == [r["frames"] for r in episodes1] + [cut + r["frames"] for r in episodes2]

    # a segment whose parent is not the segment listed before it
    one_line_error(
        cli("drl.compare", "--chain", second, second, "--out", out),
        "was started from",
        "not from the segment listed before it",
    )
    one_line_error(cli("drl.compare", "--chain", second, first, "--out", out), "was not started from another run")
    one_line_error(cli("drl.compare", "--chain", first, tmp_path / "nope", "--out", out), "not a run directory")


def test_init_from_errors_are_one_line_and_write_nothing(parents, tmp_path):
    parent = parents["catch"]
    new = tmp_path / "new"
    (tmp_path / "empty").mkdir()
    cases = [
        (["catch", "--init-from", tmp_path / "nope"], ["no such run directory"]),
        (["catch", "--init-from", tmp_path / "empty"], ["no weights there", "weights.safetensors"]),
        (
            ["catch", "network.hidden=32", "--init-from", parent],
            ["does not fit this config", "network.hidden is 64 there, 32 here", "must match the parent's network"],
        ),
        (
            ["catch", "env.size=8", "--init-from", parent],
            ["observations (1, 10, 5) there, (1, 8, 5) here", "must match the parent's network"],
        ),
        (
            ["catch", "agent.algo=drqn", "--init-from", parent],
            ["agent.algo is dqn there, drqn here", "must match the parent's network"],
        ),
        (["--resume", parent, "--init-from", parent], ["--init-from", "--resume", "one of them"]),
        (["catch", "--init-optimizer"], ["add --init-from"]),
        (["catch", "init_from.run_dir=x"], ["written by --init-from"]),
    ]
    for args, needles in cases:
        one_line_error(cli("drl.train", *args, *SMALL, "--run-dir", new), *needles)
        assert not new.exists(), args
    assert (parent / "checkpoints" / "latest.pt").is_file() and (parent / "weights.safetensors").is_file()
