"""CUDA: the training path on a GPU, where the machine has one (skipped elsewhere; ``scripts/gpu_check.sh`` runs
these on a lent GPU machine). Each test compares against the CPU path or a learning threshold, never a timing."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from drl import config
from drl.envs.atari import AtariVecEnv
from drl.loop import Trainer
from drl.replay import Prioritizer, ReplayBuffer
from tests.test_learn_step import check_train_row_means_equal_floats_of_the_kept_stats, filled_trainer
from tests.test_replay import NaiveStream, fill
from tests.test_replay_pieces import (
    check_batch_tensors_are_written_once_for_their_target,
    check_device_priorities_equal_host_ones,
    check_frame_writes_and_gathers_equal_advanced_indexing,
    check_stacked_frames_equal_the_masked_window,
)
from tests.test_sequences import (
    HIDDEN,
    batch_on,
    check_burn_in_cut_from_host_rows_equals_device_nonzero,
    check_channels_last_drqn_gets_channels_last_sequences,
    fill_with_states,
    make_drqn,
    sequence_batch,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@contextmanager
def no_host_sync():
    """Inside, any call that makes the host wait for the GPU (``.item()``, a blocking copy, ``nonzero``, a stream
    sync) raises (``torch.cuda.set_sync_debug_mode``); waiting on a CUDA event is allowed."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def train(experiment: str, overrides: list[str], run_dir) -> tuple[dict, Trainer]:
    cfg = config.load(experiment, ["device=cuda", "seed=0", "tracking.wandb=off", *overrides])
    trainer = Trainer(cfg, run_dir)
    try:
        return trainer.run(), trainer
    finally:
        trainer.close()


@pytest.mark.parametrize("frames_on_device", [False, True])
def test_dqn_learns_catch_on_cuda(tmp_path, frames_on_device):
    result, trainer = train(
        "catch", ["total_steps=20000", "eval.interval=5000", f"replay.frames_on_device={frames_on_device}"], tmp_path
    )
    assert trainer.device.type == "cuda" and trainer.replay.storage.frames.is_cuda == frames_on_device
    assert result["eval"]["return_mean"] >= 0.9, result


@pytest.mark.parametrize("frames_on_device", [False, True])
def test_drqn_remembers_the_cue_on_cuda(tmp_path, frames_on_device):
    """cuDNN's fused LSTM under bf16 autocast (CUDA's default precision here): the recurrent learning test."""
    result, _ = train(
        "memory",
        ["agent.algo=drqn", "total_steps=12000", "eval.interval=6000", f"replay.frames_on_device={frames_on_device}"],
        tmp_path,
    )
    assert result["eval"]["return_mean"] >= 0.9, result


def filled_replay(sequences: bool, frames_device=None, stack: int | None = None) -> ReplayBuffer:
    """A replay of 3 streams of small frames after 300 steps (sequences: stack 1 unless given, else stack 4)."""
    rng = np.random.default_rng(0)
    stack = stack or (1 if sequences else 4)
    replay = ReplayBuffer(
        500,
        3,
        (1, 3, 3),
        stack,
        n_step=3,
        gamma=0.9,
        seed=1,
        frames_device=frames_device,
        sequences=dict(length=8, burn_in=2, overlap=4, state_size=HIDDEN) if sequences else None,
    )
    if sequences:
        fill_with_states(replay, NaiveStream(3, stack, rng), 300, rng)
    else:
        fill(replay, NaiveStream(3, stack, rng), 300, rng)
    return replay


@pytest.mark.parametrize("frames_on_cuda", [False, True])
@pytest.mark.parametrize("sequences", [False, True])
def test_replay_samples_the_same_batch_onto_cuda_as_onto_the_cpu(sequences, frames_on_cuda):
    """Host replay sampled onto CUDA, and replay whose frames live on CUDA (``replay.frames_on_device``), give
    the batch the all-CPU replay gives, value for value."""
    filled = lambda frames_device=None: filled_replay(sequences, frames_device)  # noqa: E731
    on_cpu = filled().sample(64, device=torch.device("cpu"))
    on_cuda = filled("cuda" if frames_on_cuda else None).sample(64, device=torch.device("cuda"))
    compared = 0
    for name, value in vars(on_cpu).items():
        pairs = zip(value, getattr(on_cuda, name)) if isinstance(value, tuple) else [(value, getattr(on_cuda, name))]
        for a, b in pairs:
            if isinstance(a, torch.Tensor):
                assert b.is_cuda and torch.equal(a, b.cpu()), name
                compared += 1
            elif isinstance(a, np.ndarray):
                assert np.array_equal(a, b), name
    assert compared >= 5


def test_atari_vector_env_hands_the_cpu_frames_to_cuda():
    envs = [AtariVecEnv("pong", 4, torch.device(d), seed=3, num_threads=1) for d in ("cpu", "cuda")]
    steps = [env.reset(seed=3) for env in envs]
    rng = np.random.default_rng(0)
    try:
        for _ in range(50):
            assert steps[1].obs.is_cuda and steps[1].obs.dtype == torch.uint8 and steps[1].obs.shape == (4, 4, 84, 84)
            assert torch.equal(steps[0].obs, steps[1].obs.cpu())
            assert torch.equal(steps[0].reward, steps[1].reward.cpu())
            actions = torch.from_numpy(rng.integers(0, envs[0].num_actions, 4))
            steps = [env.step(actions) for env in envs]
    finally:
        for env in envs:
            env.close()


@pytest.mark.parametrize("prioritized", [False, True])
def test_learn_step_keeps_stats_on_cuda_and_the_train_row_holds_their_floats(tmp_path, prioritized):
    check_train_row_means_equal_floats_of_the_kept_stats(
        tmp_path, "cuda", (f"replay.prioritized={str(prioritized).lower()}",)
    )


@pytest.mark.parametrize("sequences", [False, True])
def test_priorities_from_cuda_errors_equal_host_ones(sequences):
    check_device_priorities_equal_host_ones("cuda", sequences)


def test_a_priority_update_on_cuda_makes_the_host_wait_for_nothing():
    """The errors are mixed on the GPU and copied to pinned memory asynchronously; the next update (or draw) puts
    them in the tree after waiting on their copy's event, not on the stream."""
    p = Prioritizer(64, 0.6, 1e-3, 0.9)
    p.insert(np.arange(64))
    td, mask = torch.randn(5, 32, device="cuda"), torch.rand(5, 32, device="cuda") < 0.7
    with no_host_sync():
        p.update(np.arange(32), td, mask)
        p.update(np.arange(32, 64), td, mask)
        assert p._staged is not None
    want = Prioritizer(64, 0.6, 1e-3, 0.9)
    want.insert(np.arange(64))
    for entries in (np.arange(32), np.arange(32, 64)):
        want.update(entries, td.cpu(), mask.cpu())
    assert np.allclose(p.tree.leaves, want.tree.leaves, rtol=1e-6) and p._staged is None


def test_batch_tensors_for_cuda_are_written_once_into_pinned_memory():
    check_batch_tensors_are_written_once_for_their_target("cuda")


@pytest.mark.parametrize("sequences", [False, True])
def test_sampling_onto_cuda_copies_no_batch_sized_tensor_into_pinned_memory(sequences):
    """The frame stacks (the bulk of a batch) are made in pinned memory; only small fields are pinned by a copy."""
    replay = filled_replay(sequences, stack=2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        batch = replay.sample(64, device=torch.device("cuda"))
    pins = [e for e in prof.events() if e.name == "aten::_pin_memory"]  # a copy (pin_memory of a pinned one is not)
    assert pins, "the small fields are still pinned by a copy: the profiler must see it"
    largest = max(math.prod(shape) for e in pins for shape in e.input_shapes if shape)
    assert largest < batch.obs.numel() // 2


def test_frame_writes_and_gathers_on_cuda_equal_advanced_indexing():
    check_frame_writes_and_gathers_equal_advanced_indexing("cuda")


@pytest.mark.parametrize("frames_device", ["cpu", "cuda"])
def test_stacked_frames_for_cuda_equal_the_masked_window(frames_device):
    check_stacked_frames_equal_the_masked_window(frames_device, "cuda")


@pytest.mark.parametrize("frames_on_cuda", [False, True])
@pytest.mark.parametrize("sequences", [False, True])
def test_replay_adds_and_samples_onto_cuda_make_the_host_wait_for_nothing(sequences, frames_on_cuda):
    """Steps from the host stored in replay (frames on CUDA or not) and batches sampled onto CUDA: every index and
    mask goes to the GPU as an asynchronous copy from pinned memory, none as a blocking copy."""
    replay = filled_replay(sequences, "cuda" if frames_on_cuda else None, stack=2)
    rng = np.random.default_rng(1)
    with no_host_sync():
        if sequences:
            fill_with_states(replay, NaiveStream(3, 2, rng), 20, rng)
        else:
            fill(replay, NaiveStream(3, 2, rng), 20, rng)
        batches = [replay.sample(32, device=torch.device("cuda")) for _ in range(3)]
    assert all(b.obs.is_cuda for b in batches)


def test_channels_last_drqn_gets_channels_last_sequences_on_cuda():
    """(``atari-pong-gpu`` sets compute.channels_last=on.) cuDNN's kernels need not be deterministic: close values."""
    check_channels_last_drqn_gets_channels_last_sequences("cuda", exact=False)


@pytest.mark.parametrize(
    "keep", [[False] * 5, [True, False, False, True, False], [True] * 5], ids=["none", "some", "all"]
)
def test_burn_in_cut_on_cuda_from_host_rows_equals_device_nonzero(keep):
    """cuDNN's backward need not be deterministic: close values."""
    check_burn_in_cut_from_host_rows_equals_device_nonzero("cuda", keep, exact=False)


def test_a_drqn_update_with_a_burn_in_cut_makes_the_host_wait_for_nothing():
    """The burn-in's kept rows are found on the host: no ``keep.any()`` or ``nonzero`` on the GPU's values."""
    agent = make_drqn(burn_in=3, device="cuda")
    batch = batch_on(sequence_batch(agent, T=7, B=5, burn_in=3), "cuda")
    batch.episode_start = np.array([True, False, False, True, False])
    agent.update(batch)  # first-call set-up (cuDNN, optimizer state) outside
    with no_host_sync():
        stats = agent.update(batch)
    assert {"loss", "q_mean", "grad_norm", "td_error"} <= set(stats)


@pytest.mark.parametrize(
    "experiment,frames_on_device", [("catch", False), ("catch", True), ("memory", False), ("memory", True)]
)
def test_a_learn_step_on_cuda_makes_the_host_wait_for_nothing(tmp_path, experiment, frames_on_device):
    """Sample (prioritized), update, priorities and stats: the host queues a learn step's work and goes on; it
    waits only on the previous update's priority copy (a CUDA event), and for the stats at the train row."""
    with filled_trainer(
        tmp_path,
        "run",
        "cuda",
        ("replay.prioritized=true", f"replay.frames_on_device={str(frames_on_device).lower()}"),
        experiment,
    ) as trainer:
        trainer.core.learn_step()  # first-call set-up outside
        with no_host_sync():
            for _ in range(3):
                trainer.core.learn_step()
        trainer.core.write_train_row(1.0, {})
        assert trainer.agent.updates == 4 and len(trainer.core.learn_step.stats["loss"]) == 4
