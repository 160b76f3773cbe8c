"""Reliability with real processes: signals (checkpoint, exit code, no orphaned workers), exact resume,
determinism, numerical faults, safe checkpoints (safetensors + JSON, the earlier torch format with weights_only,
atomic under SIGKILL), Doom worker restarts."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from drl import checkpoint
from drl.metrics import read_metrics
from drl.processes import alive, descendants, doom_workers
from tests.helpers import ROOT, cli

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
VOLATILE = {"wall_time", "sps", "eval_seconds"}  # timings; everything else must repeat exactly


def train(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return cli("drl.train", *args, env=ENV, timeout=timeout)


def start(tmp_path: Path, *args) -> subprocess.Popen:
    out = open(tmp_path / "stdout.txt", "w")
    err = open(tmp_path / "stderr.txt", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "drl.train", *map(str, args)], cwd=ROOT, env=ENV, stdout=out, stderr=err
    )


def rows(run_dir: Path, event: str | None = None) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in read_metrics(path) if event is None or r["event"] == event]


def stable(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows(run_dir)]


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop_and_check(proc: subprocess.Popen, sig: int, run_dir: Path, tree: set[int]) -> dict:
    """Send ``sig``; the run must exit within 10 s with 128 + sig, a loadable checkpoint and no live descendant."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the run did not exit within 10 s of the signal") from None
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 128 + sig, proc.returncode
    stdout = (run_dir.parent / "stdout.txt").read_text()
    assert "interrupted, checkpoint written" in stdout, stdout
    deadline = time.monotonic() + 5
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if alive(p)], "orphaned worker processes"
    payload = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    assert payload["counters"]["env_steps"] >= max([r["env_steps"] for r in rows(run_dir)] + [1])
    return payload


# ----------------------------------------------------------------------------------------------- signals
@pytest.mark.doom
def test_sigterm_doom_run_restarts_a_killed_worker_then_checkpoints_and_leaves_no_processes(tmp_path):
    run_dir = tmp_path / "doom"
    proc = start(
        tmp_path,
        "doom-basic",
        "total_steps=1000000",
        "agent.learning_starts=200",
        "agent.batch_size=4",
        "agent.train_freq=32",
        "replay.capacity=4000",
        "log_interval=100",
        "eval.interval=1000000",
        "env.num_envs=2",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
    )
    try:
        wait_for(lambda: rows(run_dir, "train"), 180, "a first train row", proc)
        workers = doom_workers(proc.pid)
        assert len(workers) == 2, workers
        tree = set(descendants(proc.pid))
        os.kill(workers[0], signal.SIGKILL)  # a crashed worker is replaced; the run goes on and logs it
        wait_for(
            lambda: any((r.get("worker_restarts") or 0) >= 1 for r in rows(run_dir, "train")),
            120,
            "a train row with worker_restarts >= 1",
            proc,
        )
        row = [r for r in rows(run_dir, "train") if r.get("worker_restarts")][-1]
        assert row["worker_restarts"] == 1 and row["episodes_dropped"] == 1
        assert "restarting it with new games" in (tmp_path / "stderr.txt").read_text()  # the warning
        tree |= set(descendants(proc.pid))
        assert len(tree) >= 6  # forkserver, workers, engines: none may survive the run
        payload = stop_and_check(proc, signal.SIGTERM, run_dir, tree)
        assert payload["config"]["name"] == "doom-basic"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_catch_run_checkpoints_exits_130_and_resumes(tmp_path):
    run_dir = tmp_path / "catch"
    proc = start(
        tmp_path,
        "catch",
        "total_steps=10000000",
        "env.num_envs=8",
        "agent.learning_starts=200",
        "log_interval=200",
        "eval.interval=10000000",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
    )
    try:
        wait_for(lambda: len(rows(run_dir, "train")) >= 2, 120, "two train rows", proc)
        payload = stop_and_check(proc, signal.SIGINT, run_dir, set(descendants(proc.pid)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    steps = payload["counters"]["env_steps"]
    target = steps + 400
    resumed = train("--resume", run_dir, f"total_steps={target}", "eval.episodes=8", "eval.num_envs=8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert checkpoint.load(run_dir / "checkpoints" / "latest.pt")["counters"]["env_steps"] == target


def test_sigterm_during_a_long_evaluation_stops_within_10s(tmp_path):
    run_dir = tmp_path / "catch"
    proc = start(
        tmp_path,
        "catch",
        "total_steps=10000000",
        "env.num_envs=8",
        "agent.learning_starts=200",
        "log_interval=200",
        "eval.interval=400",
        "eval.episodes=100000000",
        "eval.num_envs=8",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
    )
    try:  # the train row at step 400 is written just before the (endless) evaluation starts
        wait_for(lambda: any(r["env_steps"] >= 400 for r in rows(run_dir, "train")), 120, "step 400", proc)
        time.sleep(1.0)
        payload = stop_and_check(proc, signal.SIGTERM, run_dir, set(descendants(proc.pid)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not rows(run_dir, "eval"), "a cut-short evaluation writes no row"
    assert payload["counters"]["evals"] == 0, "the resumed run evaluates at its next step instead"


# ----------------------------------------------------------------------------------------------- resume, determinism
CATCH = [
    "env.num_envs=16",
    "agent.learning_starts=1000",
    "agent.batch_size=32",
    "agent.train_freq=8",
    "agent.target_update_interval=800",
    "agent.eps_decay_steps=6000",
    "log_interval=500",
    "eval.interval=2500",
    "eval.episodes=16",
    "eval.num_envs=16",
    "checkpoint_interval=3000",
    "replay.save_in_checkpoint=true",
    "tracking.wandb=off",
]


@pytest.fixture(scope="module")
def catch_reference(tmp_path_factory) -> Path:
    """An uninterrupted catch run of 10,000 steps."""
    run_dir = tmp_path_factory.mktemp("reliability") / "reference"
    proc = train("catch", *CATCH, "total_steps=10000", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(catch_reference, tmp_path):
    run_dir = tmp_path / "resumed"
    first = train("catch", *CATCH, "total_steps=4200", "--run-dir", run_dir)  # 4208: not on any interval
    assert first.returncode == 0, first.stderr[-3000:]
    second = train("--resume", run_dir, "total_steps=10000")
    assert second.returncode == 0, second.stderr[-3000:]
    reference, resumed = stable(catch_reference), stable(run_dir)
    # the first session ended with an evaluation at its last step, which the reference does not have
    resumed = [r for r in resumed if not (r["event"] == "eval" and r["env_steps"] == 4208)]
    assert [r for r in resumed if r["event"] == "train"] == [r for r in reference if r["event"] == "train"]
    assert [r for r in resumed if r["event"] == "eval"] == [r for r in reference if r["event"] == "eval"]
    assert resumed == reference
    assert any(r.get("train/loss") is not None for r in reference)
    a = checkpoint.load(catch_reference / "checkpoints" / "latest.pt")
    b = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    counters = lambda p: {k: v for k, v in p["counters"].items() if k != "wall_time"}  # noqa: E731
    assert counters(a) == counters(b)
    assert a["agent"]["updates"] == b["agent"]["updates"]
    for key, value in a["agent"]["online"].items():
        assert torch.equal(value, b["agent"]["online"][key]), key


def test_catch_is_deterministic(catch_reference, tmp_path):
    run_dir = tmp_path / "again"
    proc = train("catch", *CATCH, "total_steps=10000", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stable(run_dir) == stable(catch_reference)
    assert max(r["env_steps"] for r in rows(run_dir)) == 10_000


def test_atari_pong_is_deterministic(tmp_path):
    small = [
        "total_steps=10000",
        "agent.learning_starts=8000",
        "agent.batch_size=8",
        "agent.train_freq=16",
        "replay.capacity=12000",
        "eval.interval=10000",
        "eval.episodes=1",
        "eval.num_envs=1",
        "eval.max_frames=2000",
        "log_interval=1000",
        "env.num_envs=4",
        "env.num_threads=1",
        "tracking.wandb=off",
    ]
    for name in ("a", "b"):
        proc = train("atari-pong", *small, "--run-dir", tmp_path / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = stable(tmp_path / "a"), stable(tmp_path / "b")
    assert a == b
    assert [r["env_steps"] for r in a if r["event"] == "train"][-1] == 10_000
    assert any(r.get("train/loss") is not None for r in a), "updates happened"


# ----------------------------------------------------------------------------------------------- numerical faults
def test_diverging_run_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "diverge"
    # a squared loss (huge Huber delta) on rewards of 1e18 overflows float32 after a few dozen updates
    proc = train(
        "catch",
        "total_steps=20000",
        "agent.learning_starts=500",
        "env.reward_scale=1e18",
        "agent.huber_delta=1e30",
        "checkpoint_interval=1000",
        "eval.interval=100000",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("drl.train: error: ") and " became " in line and "at env step " in line, line
    assert f"last good checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}" in line, line
    step = int(line.split("at env step ")[1].split()[0])
    good = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    assert 0 < good["counters"]["env_steps"] < step
    assert all(torch.isfinite(v).all() for v in good["agent"]["online"].values())


def test_non_finite_q_values_stop_the_run(tmp_path):
    run_dir = tmp_path / "q"
    proc = train(
        "catch",
        "total_steps=800",
        "agent.learning_starts=200",
        "env.num_envs=8",
        "eval.episodes=8",
        "eval.num_envs=8",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = run_dir / "checkpoints" / "latest.pt"
    payload = checkpoint.load(path)
    head_bias = [k for k in payload["agent"]["online"] if k.endswith("bias")][-1]
    payload["agent"]["online"][head_bias].fill_(float("inf"))
    checkpoint.save(path, payload)
    proc = train("--resume", run_dir, "total_steps=1600")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "q_mean became inf at env step " in line and "last good checkpoint" in line, line


# ----------------------------------------------------------------------------------------------- safe checkpoints
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text((ROOT / "experiments" / "catch.yaml").read_text() + "name: catch\n")
    marker = tmp_path / "code-ran"
    torch.save({"agent": _RunsCode(marker), "config": {"name": "catch"}}, run_dir / "checkpoints" / "latest.pt")
    proc = train("--resume", run_dir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "was refused" in lines[0] and "pickled Python objects" in lines[0], lines
    assert not marker.exists(), "loading must never run code from a checkpoint"


def test_a_checkpoint_holds_tensors_in_safetensors_and_the_rest_in_json(catch_reference):
    """No pickle record: the tensors are a plain safetensors file, everything else JSON."""
    import json
    import zipfile

    from safetensors.torch import load as load_tensors

    path = catch_reference / "checkpoints" / "latest.pt"
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["state.json", "tensors.safetensors"]
        state = json.loads(archive.read("state.json"))
        tensors = load_tensors(archive.read("tensors.safetensors"))
    assert state["format"] == "drl-checkpoint" and state["payload"]["counters"]["env_steps"] == 10_000
    payload = checkpoint.load(path)
    for key, value in payload["agent"]["online"].items():
        assert torch.equal(tensors[f"agent/online/{key}"], value), key
    assert torch.equal(tensors["replay/frames"], payload["replay"]["frames"])
    assert isinstance(payload["rng"]["python"], tuple), "tuples come back as tuples (random.setstate needs one)"
    assert all(isinstance(k, int) for k in payload["agent"]["optimizer"]["state"]), "and int keys as ints"


def test_checkpoint_round_trip_keeps_every_value_and_type(tmp_path):
    shared = torch.arange(12.0)
    payload = {
        "agent": {
            "w": torch.randn(3, 4).t(),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "mask": torch.tensor([True, False]),
            "scalar": torch.tensor(7),
            "empty": torch.zeros(0, 3),
            "view_a": shared[:8],
            "view_b": shared[4:],
        },
        "config": {"name": "catch"},
        "opt": {0: {"step": torch.tensor(3.0)}, 1: {"lr": 1e-3}},
        "rng": (3, tuple(range(5)), None),
        "big": 2**100 + 1,
        "floats": [float("nan"), float("inf"), 0.1],
        "flags": [True, False, None, "text"],
        "__odd": {"__tensor__": "not a tensor"},
    }
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, payload)
    loaded = checkpoint.load(path)
    for key, value in payload["agent"].items():
        assert loaded["agent"][key].dtype == value.dtype and torch.equal(loaded["agent"][key], value), key
    assert loaded["opt"][0]["step"] == 3.0 and loaded["opt"][1] == {"lr": 1e-3}
    assert loaded["rng"] == (3, (0, 1, 2, 3, 4), None) and loaded["big"] == 2**100 + 1
    assert loaded["floats"][0] != loaded["floats"][0] and loaded["floats"][1:] == [float("inf"), 0.1]
    assert loaded["flags"] == [True, False, None, "text"] and loaded["__odd"] == {"__tensor__": "not a tensor"}


def test_a_checkpoint_of_the_earlier_torch_format_still_loads_and_resumes_exactly(tmp_path):
    first = train("catch", *CATCH, "total_steps=2200", "--run-dir", tmp_path / "new")
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    old = tmp_path / "old" / "checkpoints" / "latest.pt"
    torch.save(checkpoint.load(old), old)  # what drl.train wrote before safetensors
    assert "state.json" not in zipfile.ZipFile(old).namelist()
    for name in ("new", "old"):
        proc = train("--resume", tmp_path / name, "total_steps=4000")
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert stable(tmp_path / "old") == stable(tmp_path / "new")
    assert max(r["env_steps"] for r in rows(tmp_path / "old")) >= 4000


@pytest.mark.parametrize(
    "edit, needle",
    [
        (
            lambda state: state["payload"]["agent"]["online"].update(
                {next(iter(state["payload"]["agent"]["online"])): {"__tensor__": "missing"}}
            ),
            "'missing'",
        ),
        (lambda state: state.update(version=99), "unknown checkpoint format"),
    ],
)
def test_a_crafted_json_record_is_refused_in_one_line(tmp_path, edit, needle):
    run_dir = tmp_path / "run"
    proc = train("catch", *CATCH, "total_steps=600", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = run_dir / "checkpoints" / "latest.pt"
    with zipfile.ZipFile(path) as archive:
        state, tensors = json.loads(archive.read("state.json")), archive.read("tensors.safetensors")
    edit(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("state.json", json.dumps(state))
        archive.writestr("tensors.safetensors", tensors)
    proc = train("--resume", run_dir, "total_steps=1200")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreadable, truncated or corrupt" in lines[0] and needle in lines[0], lines


_WRITER = """
import sys, torch
from pathlib import Path
from drl import checkpoint
path, big, i = Path(sys.argv[1]), torch.zeros(16_000_000), 0   # 64 MB per checkpoint
while True:
    i += 1
    big.fill_(i)
    checkpoint.save(path, {"agent": {"w": big}, "config": {"name": "writer"}, "i": i})
    print(i, flush=True)
"""


def test_checkpoint_writes_are_atomic_under_sigkill(tmp_path):
    path = tmp_path / "checkpoints" / "latest.pt"
    rng = random.Random(0)
    killed_mid_write = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip(), "a first checkpoint was written"
            time.sleep(rng.uniform(0.05, 0.6))
            killed_mid_write += path.with_name("latest.pt.tmp").exists()
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        payload = checkpoint.load(path)  # never partial: the last complete checkpoint
        assert payload["i"] >= 1 and bool((payload["agent"]["w"] == payload["i"]).all())
    assert killed_mid_write >= 1, "at least one kill landed while a checkpoint was being written"


def test_atari_resume_with_saved_replay_ends_the_old_episodes(tmp_path):
    """Atari cannot restore its emulator: a resumed run starts new episodes, so the saved replay's open episodes
    must end where the checkpoint was taken (no n-step window runs from the old episode into the new one)."""
    import drl
    from drl import checkpoint
    from drl.api import create_run_dir
    from drl.replay import ReplayBuffer as RB

    cfg = drl.load_config(
        "atari-pong",
        [
            "total_steps=400",
            "env.num_envs=2",
            "agent.learning_starts=100000",
            "replay.save_in_checkpoint=true",
            "replay.capacity=2000",
            "eval.episodes=1",
            "eval.num_envs=1",
            "eval.max_frames=200",
            "tracking.wandb=off",
            "compute.threads=1",
        ],
    )
    run = create_run_dir(cfg, tmp_path / "run")
    with drl.Trainer(cfg, run) as trainer:
        trainer.run()
        saved_flags, count = trainer.replay.storage.flags.clone(), trainer.replay.storage.count.copy()
    payload = checkpoint.load(run / "checkpoints" / "latest.pt")
    with drl.Trainer(cfg, run, resume_from=payload) as resumed:
        replay = resumed.replay.storage
        assert (replay.count == count).all()
        for e in range(2):
            last, before = (count[e] - 1) % replay.capacity, (count[e] - 2) % replay.capacity
            assert int(replay.flags[e, last]) & RB.FINAL, "the step whose result was lost ends the stream"
            assert int(replay.flags[e, before]) & (RB.TRUNCATED | RB.TERMINATED | RB.FINAL)
            assert int(saved_flags[e, last]) & RB.FINAL == 0  # it was an open step before the resume
        assert bool(resumed.step.reset.all())  # and the new episodes start with `first`
