"""Distributed training (``drl/distributed``, ``distributed.collectors=N``).

Without Ray: a collector's chunks stored by the learner give the same replay as the single-process path (frames,
flags, sequence starts and their LSTM states), initial priorities are the n-step TD errors they claim to be,
collectors act at the single-process acting precision, a resumed run's collectors play from new seeds, and
``distributed.collectors`` without Ray installed is a one-line error. On a local Ray cluster (skipped without Ray;
a few tens of seconds each on 2 cores): catch solved with 2 collectors, the memory task solved with DRQN sequences
sent through Ray, a collector that cannot start (one line), a killed collector restarted while training goes on,
SIGINT (exit 130, checkpoint, no Ray process left) and --resume (collectors on new seeds), and eval.stop_at ending
a run (with target syncs counted in env steps, as in a single-process run).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from drl import checkpoint, config
from drl.distributed.chunk import add_to_replay, merge, td_priorities
from drl.distributed.collector import Collector, apex_epsilon
from drl.metrics import read_metrics
from drl.processes import alive, descendants
from drl.replay import ReplayBuffer, n_step_returns
from drl.vec_env import make_env
from tests.helpers import ROOT, cli

pytestmark = pytest.mark.ray

ENV = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "DRL_THREADS": "1"}
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed (pip install -e '.[ray]'): no local cluster to test on",
)
FAST = ["distributed.collectors=2", "compute.threads=1", "tracking.wandb=off", "eval.interval=10000"]


# ------------------------------------------------------------------------------------------------- no Ray
def test_apex_epsilons():
    assert apex_epsilon(0, 1) == 0.4
    eps = [apex_epsilon(i, 8) for i in range(8)]
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4**8)
    assert all(a > b for a, b in zip(eps, eps[1:]))


def test_td_priorities_are_n_step_td_errors():
    T, E, A, n, gamma = 9, 3, 4, 3, 0.9
    g = torch.Generator().manual_seed(0)
    q = torch.randn(T + 1, E, A, generator=g)
    actions = torch.randint(0, A, (T, E), generator=g)
    rewards = torch.randn(T, E, generator=g)
    terminated = torch.rand(T, E, generator=g) < 0.15
    truncated = (torch.rand(T, E, generator=g) < 0.1) & ~terminated
    reset = terminated | truncated
    got = td_priorities(q, actions, rewards, terminated, truncated, reset, n, gamma)
    for t in range(T):
        for e in range(E):
            ret, k, boot = 0.0, 0, True
            while k < n and t + k < T:
                ret += gamma**k * float(rewards[t + k, e])
                k += 1
                if terminated[t + k - 1, e] or truncated[t + k - 1, e]:
                    boot = False  # terminated: no bootstrap; time limit: not computable at the collector
                    break
            value = gamma**k * float(q[t + k, e].max()) if boot else 0.0
            assert float(got[t, e]) == pytest.approx(abs(ret + value - float(q[t, e, actions[t, e]])), abs=1e-5)
    # the replay's own n-step helper agrees on the windows that fit in the chunk
    returns, _, _ = n_step_returns(rewards.T, terminated.T, reset.T, n, gamma)
    assert returns.shape == (E, T - n + 1)


def _recording_collector(experiment: str, overrides: list[str]):
    """A collector in this process whose env steps and acting inputs are recorded (for a reference replay)."""
    cfg = config.load(experiment, ["tracking.wandb=off", "distributed.collectors=1", *overrides])
    cfg.replay.prioritized = True
    col = Collector(cfg.model_dump(), 0, 1)
    inputs, steps = [], []
    act, env_step = col._act, col.env.step

    def recording_act(obs, extras, epsilon):
        state = None if col.state is None else tuple(x.clone() for x in col.state)
        inputs.append((obs.clone(), col.first.clone(), state, extras))
        actions, new_state, q = act(obs, extras, epsilon)
        inputs[-1] += (actions.clone(),)
        return actions, new_state, q

    def recording_step(actions):
        step = env_step(actions)
        steps.append(step)
        return step

    col._act, col.env.step = recording_act, recording_step
    return cfg, col, inputs, steps


def sequence_arguments(cfg, sequences: bool) -> dict | None:
    """The replay's sequence arguments for a recurrent agent's config (None for transitions)."""
    if not sequences:
        return None
    return dict(
        length=cfg.replay.sequence_length,
        burn_in=cfg.replay.burn_in,
        overlap=cfg.replay.sequence_overlap,
        state_size=cfg.network.lstm_size,
        eta=cfg.replay.priority_eta,
    )


@pytest.mark.parametrize("experiment", ["catch", "memory"])
def test_chunks_make_the_same_replay_as_the_single_process_path(experiment):
    cfg, col, inputs, steps = _recording_collector(experiment, ["distributed.chunk_steps=96", "env.num_envs=8"])
    E, frame_shape = col.env.num_envs, (col.channels, *col.spec.obs_shape[1:])

    def buffer(streams: int) -> ReplayBuffer:
        return ReplayBuffer(
            2000 * streams,
            streams,
            frame_shape,
            1,
            n_step=cfg.agent.n_step,
            gamma=cfg.agent.gamma,
            prioritized=True,
            alpha=cfg.replay.alpha,
            sequences=sequence_arguments(cfg, col.sequences),
        )

    ref, dist = buffer(E), buffer(3 * E)
    streams = np.arange(E, 2 * E)  # this collector's streams sit between two others
    chunks = [col.collect([], -1, explore=False) for _ in range(3)]
    for chunk in chunks:
        add_to_replay(dist, chunk, streams)
    for (obs, first, state, extras, actions), step in zip(inputs, steps):
        ref.add_step(obs, first, actions, step, extras, acting_state=state)
    assert sum(c.env_steps for c in chunks) == len(steps) * E == 3 * 96
    assert sum(len(c.episodes) for c in chunks) > 0 and int(ref.storage.flags.bitwise_and(ref.FINAL).sum()) > 0
    for name in ("frames", "actions", "rewards", "flags"):
        assert torch.equal(getattr(dist.storage, name)[streams], getattr(ref.storage, name)), name
    assert (dist.storage.count[streams] == ref.storage.count).all() and dist.storage.count[:E].sum() == 0
    if col.sequences:
        d, r = dist.sampler, ref.sampler
        assert (d.start_count[streams] == r.start_count).all() and r.start_count.sum() > 0
        assert torch.equal(d.start_slot[streams], r.start_slot)
        assert torch.equal(d.start_state[streams], r.start_state)
        assert float(r.start_state.abs().sum()) > 0  # real LSTM states, not zeros
    # the collector's priorities replaced the replay's max priority on every entry the chunks created
    leaves = dist.prioritizer.tree.leaves
    for chunk in chunks:
        assert chunk.priorities is not None and torch.isfinite(chunk.priorities).any()
    expected = np.concatenate([c.priorities.numpy().ravel() for c in chunks])
    expected = (expected[np.isfinite(expected)].astype(np.float64) + cfg.replay.priority_eps) ** cfg.replay.alpha
    assert np.allclose(np.sort(leaves[leaves > 0]), np.sort(expected), rtol=1e-5)


@pytest.mark.parametrize("experiment", ["catch", "memory"])
def test_merged_chunks_are_stored_like_chunks_one_by_one(experiment):
    """The learner stores the chunks that arrive together as one write; a warm-up chunk (no priorities, random
    actions) may sit beside a chunk with priorities."""
    cfg = config.load(
        experiment, ["tracking.wandb=off", "distributed.collectors=2", "env.num_envs=4", "distributed.chunk_steps=40"]
    )
    cfg.replay.prioritized = True
    cols = [Collector(cfg.model_dump(), i, 2) for i in range(2)]
    E, frame_shape = 4, (cols[0].channels, *cols[0].spec.obs_shape[1:])
    buffers = []
    for _ in range(2):
        buffers.append(
            ReplayBuffer(
                1000 * 2 * E,
                2 * E,
                frame_shape,
                1,
                n_step=cfg.agent.n_step,
                prioritized=True,
                sequences=sequence_arguments(cfg, cols[0].sequences),
            )
        )
    one_by_one, merged = buffers
    streams = [np.arange(E), np.arange(E, 2 * E)]
    for r in range(4):
        chunks = [cols[0].collect([], -1, explore=r == 0), cols[1].collect([], -1, explore=False)]
        for chunk, ids in zip(chunks, streams):
            add_to_replay(one_by_one, chunk, ids)
        add_to_replay(merged, merge(chunks[::-1]), np.concatenate(streams[::-1]))
    for name in ("frames", "actions", "rewards", "flags"):
        assert torch.equal(getattr(merged.storage, name), getattr(one_by_one.storage, name)), name
    if cols[0].sequences:
        for name in ("start_slot", "start_state"):
            assert torch.equal(getattr(merged.sampler, name), getattr(one_by_one.sampler, name)), name
    assert np.array_equal(merged.prioritizer.tree.leaves, one_by_one.prioritizer.tree.leaves)


@pytest.mark.parametrize("experiment", ["catch", "memory"])
def test_collectors_act_at_the_single_process_acting_precision(experiment):
    """A single-process run acts in float32 on a CPU even where it trains under bf16 autocast
    (``compute.act_bf16=auto``). So does a collector: its actions and the priorities it computes from its Q values
    are, bit for bit, those of a collector that trains in float32, and differ from those of one that acts under
    bf16 (``compute.act_bf16=on``). ``compute.bf16=on`` trains under bf16 on any CPU."""
    precisions = {
        "bf16 training": ["compute.bf16=on"],
        "fp32": ["compute.bf16=off"],
        "bf16 acting": ["compute.bf16=on", "compute.act_bf16=on"],
    }
    chunks = {}
    for name, overrides in precisions.items():
        cfg = config.load(
            experiment,
            ["tracking.wandb=off", "distributed.collectors=1", "distributed.chunk_steps=64", "env.num_envs=8"]
            + ["compute.channels_last=off", *overrides],  # one memory layout: fp32 would pick NHWC on a CPU
        )
        col = Collector(cfg.model_dump(), 0, 1)
        assert col.error is None and col.priorities, col.error
        chunks[name] = [col.collect([], -1) for _ in range(2)]
    same = lambda a, b: torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0))  # noqa: E731  (NaN: no entry)
    for bf16_training, fp32, bf16_acting in zip(*chunks.values()):
        assert bf16_training.priorities is not None and torch.isfinite(bf16_training.priorities).any()
        assert torch.equal(bf16_training.actions, fp32.actions)
        assert same(bf16_training.priorities, fp32.priorities)
        assert not same(bf16_acting.priorities, fp32.priorities)  # the precisions are told apart


def test_a_resumed_runs_collectors_play_new_episodes():
    """A new run's collector i plays from ``seed + 100_003 * (i + 1)``; a resumed run's, started at the checkpoint's
    env steps, from that plus the steps: new episodes, not the ones the run started with."""
    cfg = config.load(
        "catch",
        ["tracking.wandb=off", "seed=3", "distributed.collectors=2", "env.num_envs=8", "distributed.chunk_steps=64"],
    )
    new, resumed = Collector(cfg.model_dump(), 1, 2), Collector(cfg.model_dump(), 1, 2, env_steps=5120)
    assert new.info()["seed"] == 3 + 100_003 * 2 and resumed.info()["seed"] == 3 + 100_003 * 2 + 5120
    for col in (new, resumed):  # the recorded seed is the one its envs play
        env = make_env(cfg.env, torch.device("cpu"), col.seed, num_envs=8)
        assert torch.equal(col.step.obs, env.reset(seed=col.seed).obs)
    first, first_resumed = new.collect([], -1), resumed.collect([], -1)
    assert not torch.equal(first.frames, first_resumed.frames)


def test_without_ray_the_key_is_a_one_line_error(tmp_path):
    fake = tmp_path / "site" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    run_dir = tmp_path / "run"
    env = {**ENV, "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "drl.train", "catch", "distributed.collectors=2", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "ray" in lines[0], proc.stderr
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------------- Ray
def train(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return cli("drl.train", *args, env=ENV, timeout=timeout)


def start(tmp_path: Path, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "drl.train", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        stdout=open(tmp_path / "stdout.txt", "w"),
        stderr=open(tmp_path / "stderr.txt", "w"),
    )


def rows(run_dir: Path, event: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [r for r in read_metrics(path) if r["event"] == event] if path.exists() else []


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@needs_ray
def test_catch_is_solved_with_two_collectors(tmp_path):
    run_dir = tmp_path / "run"
    proc = train("catch", *FAST, "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = rows(run_dir, "eval")[-1]
    assert final["return_mean"] >= 0.9, final
    train_rows = rows(run_dir, "train")
    last = train_rows[-1]
    assert len(last["collector_sps"]) == 2 and last["collector_restarts"] == 0 and last["insert_rate"] > 0
    assert any(r["weight_lag_mean"] is not None for r in train_rows) and last["updates"] > 0
    assert {r["collector"] for r in rows(run_dir, "episode")} == {0, 1}
    assert config.load_run_config(run_dir).replay.prioritized  # Ape-X: prioritized replay


@needs_ray
def test_eval_stop_at_ends_a_distributed_run_and_target_syncs_count_env_steps(tmp_path):
    """Catch's returns are -1 or +1, so ``eval.stop_at=-1`` ends the run at its first evaluation. The target was
    synced once per ``target_update_interval`` trained env steps, as in a single-process run (not once per
    ``target_update_interval / train_freq`` updates)."""
    run_dir = tmp_path / "run"
    proc = train("catch", *FAST, "eval.stop_at=-1", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evals = rows(run_dir, "eval")
    cfg = config.load_run_config(run_dir)
    assert len(evals) == 1 and cfg.eval.interval <= evals[0]["env_steps"] < cfg.total_steps, evals
    assert "evaluation reached eval.stop_at=-1" in proc.stdout
    counters = checkpoint.load(run_dir / "checkpoints" / "latest.pt")["counters"]
    assert counters["env_steps"] == evals[0]["env_steps"]
    trained = counters["env_steps"] - math.floor(counters["pending_updates"]) * cfg.agent.train_freq
    assert counters["target_syncs"] == trained // cfg.agent.target_update_interval > 0


@needs_ray
def test_catch_is_solved_on_a_running_cluster_with_the_replay_in_its_own_actor(tmp_path):
    """``ray start --head`` as a user would, then ``distributed.address`` joins it (the run leaves it running) and
    ``distributed.replay=actor`` keeps the replay in a Ray actor: chunks go there, batches come back."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    log = tmp_path / "head.txt"
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=3",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
        ],
        env=ENV,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, f"ray start --head failed: {log.read_text()[-1500:]}"
            assert time.monotonic() < deadline, "ray start --head did not come up in 180 s"
            time.sleep(0.5)
        run_dir = tmp_path / "run"
        proc = train(
            "catch", *FAST, f"distributed.address=127.0.0.1:{port}", "distributed.replay=actor", "--run-dir", run_dir
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"joined the Ray cluster at 127.0.0.1:{port} (1 node(s), 3 CPUs)" in proc.stdout
        assert head.poll() is None  # the cluster outlives the run that joined it
        assert rows(run_dir, "eval")[-1]["return_mean"] >= 0.9, rows(run_dir, "eval")[-1]
        train_rows = rows(run_dir, "train")
        assert train_rows[-1]["updates"] > 0 and {r["collector"] for r in rows(run_dir, "episode")} == {0, 1}
        # single log windows can read 0 (5 of 29 in one run under load): the actor must have stored in some window
        assert (
            all(r["replay_actor_share"] >= 0 for r in train_rows)
            and max(r["replay_actor_share"] for r in train_rows) > 0
        )
        assert config.load_run_config(run_dir).distributed.replay == "actor"
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: stopping it stops the node's processes
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


@needs_ray
def test_memory_task_is_solved_with_drqn_sequences_through_ray(tmp_path):
    run_dir = tmp_path / "run"
    proc = train("memory", *FAST, "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = config.load_run_config(run_dir)
    assert cfg.agent.algo == "drqn"
    assert rows(run_dir, "eval")[-1]["return_mean"] >= 0.9, rows(run_dir, "eval")[-1]
    # the replay ratio counts a sequence's trained steps (after burn-in), as drl.loop.replay_ratio does
    r = next(r for r in reversed(rows(run_dir, "train")) if r["replay_ratio"])
    steps_per_sequence = cfg.replay.sequence_length - cfg.replay.burn_in
    assert steps_per_sequence > 1
    assert r["replay_ratio"] == pytest.approx(r["updates_per_s"] * cfg.agent.batch_size * steps_per_sequence / r["sps"])


@needs_ray
def test_a_collector_that_cannot_start_is_a_one_line_error(tmp_path):
    run_dir = tmp_path / "run"
    proc = train(
        "atari-pong",
        "env.game=pongg",
        "distributed.collectors=1",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        "drl.train: error: collector 0 could not start: unknown Atari game 'pongg' (env.game); did you mean pong?"
    ]
    assert not run_dir.exists()


@needs_ray
def test_a_killed_collector_is_restarted_and_training_finishes(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, "catch", *FAST, "total_steps=80000", "eval.interval=40000", "--run-dir", run_dir)
    wait_for(lambda: len(rows(run_dir, "train")) >= 2, 240, "training rows", proc)
    pids = json.loads((run_dir / "collectors.json").read_text())["pids"]
    os.kill(pids[1], signal.SIGKILL)
    assert proc.wait(timeout=600) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert rows(run_dir, "train")[-1]["collector_restarts"] >= 1
    after = json.loads((run_dir / "collectors.json").read_text())["pids"]
    assert after[0] == pids[0] and after[1] != pids[1]
    assert "restarted by Ray" in (tmp_path / "stdout.txt").read_text()
    assert rows(run_dir, "eval")[-1]["env_steps"] >= 80000


@needs_ray
def test_sigint_stops_everything_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(tmp_path, "catch", *FAST, "total_steps=1000000", "--run-dir", run_dir)
    wait_for(lambda: any(r["updates"] > 0 for r in rows(run_dir, "train")), 240, "learner updates", proc)
    tree = set(descendants(proc.pid))  # raylet, GCS, collectors, ...
    assert len(tree) >= 3
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert time.monotonic() - t0 < 30
    assert "interrupted, checkpoint written" in (tmp_path / "stdout.txt").read_text()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in tree if alive(p)], "Ray processes left behind"
    payload = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
    steps = payload["counters"]["env_steps"]
    assert steps > 0 and payload["distributed"]["collectors"] == 2
    seeds = lambda: json.loads((run_dir / "collectors.json").read_text())["seeds"]  # noqa: E731
    assert seeds() == [100_003, 200_006]  # seed 0's collectors 0 and 1
    resumed = train("--resume", run_dir, f"total_steps={steps + 5000}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert seeds() == [100_003 + steps, 200_006 + steps]  # the resumed run's collectors play new episodes
    assert rows(run_dir, "eval")[-1]["env_steps"] >= steps + 5000
    assert rows(run_dir, "train")[-1]["updates"] > payload["agent"]["updates"]
