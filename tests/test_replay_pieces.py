"""The replay's pieces on their own: the transition sampler, the sequence-start rule, the prioritizer, the entries
``add`` returns, and the checkpoint state (``drl/replay/``), against naive references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drl.replay import (
    FrameStorage,
    Prioritizer,
    ReplayBuffer,
    SequenceStarts,
    StepRecord,
    TransitionSampler,
    gather_rows,
    n_step_returns,
    stack_frames,
)
from drl.replay.sequences import time_major
from tests.test_replay import NaiveStream, check_batch_against_reference, fill
from tests.test_sequences import fill_with_states


def test_transition_sampler_on_its_own_equals_naive_reference():
    """A sampler built directly on a filled storage, uniform and through a prioritizer of its own."""
    rng = np.random.default_rng(11)
    n, gamma = 3, 0.9
    stream = NaiveStream(3, 4, rng)
    replay = ReplayBuffer(600, 3, (1, 3, 3), 4, n_step=n, gamma=gamma)
    fill(replay, stream, 400, rng)  # the rings have wrapped: oldest slots are gone
    sampler = TransitionSampler(replay.storage, n, gamma, np.random.default_rng(0))
    prioritizer = Prioritizer(sampler.num_entries)
    prioritizer.insert(np.nonzero((replay.storage.flags.flatten() & ReplayBuffer.FINAL).numpy() == 0)[0])
    for p in (None, prioritizer):
        batch = sampler.sample(128, p)
        assert check_batch_against_reference(replay, batch, stream.transitions, n, gamma) > 0


def naive_sequence_starts(firsts: list[np.ndarray], stride: int) -> list[set]:
    """Per step, the envs whose step starts a sequence: count steps since each episode's first step by hand."""
    since = [None] * len(firsts[0])
    out = []
    for first in firsts:
        starts = set()
        for e, f in enumerate(first):
            since[e] = 0 if f or since[e] is None else since[e] + 1
            if since[e] % stride == 0:
                starts.add(e)
        out.append(starts)
    return out


@pytest.mark.parametrize("stride", [1, 3, 4])
def test_sequence_starts_rule_equals_naive_counting(stride):
    rng = np.random.default_rng(stride)
    E, steps = 5, 60
    firsts = [np.ones(E, dtype=bool)] + [rng.random(E) < 0.1 for _ in range(steps - 1)]
    expected = naive_sequence_starts(firsts, stride)
    whole, split = SequenceStarts(E, stride), SequenceStarts(E, stride)
    for first, want in zip(firsts, expected):
        assert set(whole.step(first).tolist()) == want
        # the same streams stepped in two groups (a distributed learner adds one collector at a time)
        got = set()
        for streams in (np.array([3, 0]), np.array([1, 4, 2])):
            got |= set(streams[split.step(first[streams], streams)].tolist())
        assert got == want


def naive_priority(td: np.ndarray, mask: np.ndarray | None, alpha: float, eps: float, eta: float) -> np.ndarray:
    if mask is not None:  # R2D2: eta * max + (1 - eta) * mean over the sequence's loss steps
        per = []
        for b in range(td.shape[1]):
            x = [abs(td[t, b]) for t in range(td.shape[0]) if mask[t, b]] or [0.0]
            per.append(eta * max(x) + (1 - eta) * sum(x) / len(x))
        td = np.array(per)
    return (np.abs(td).astype(np.float64) + eps) ** alpha


@pytest.mark.parametrize("sequences", [False, True])
def test_prioritizer_equals_naive_priorities(sequences):
    alpha, eps, eta = 0.6, 1e-3, 0.9
    p = Prioritizer(16, alpha, eps, eta)
    naive = np.zeros(16)
    p.insert(np.arange(10))
    naive[:10] = 1.0  # the initial max priority, 1 ** alpha
    g = torch.Generator().manual_seed(0)
    entries = np.array([2, 5, 7, 11])
    td = torch.randn(6, 4, generator=g) if sequences else torch.randn(4, generator=g)
    mask = (torch.rand(6, 4, generator=g) < 0.7) if sequences else None
    p.update(entries, td, mask)
    naive[entries] = naive_priority(td.numpy(), None if mask is None else mask.numpy(), alpha, eps, eta)
    p.clear(np.array([0, 5]))
    naive[[0, 5]] = 0.0
    p.insert(np.array([12]))  # new entries get the largest priority seen
    naive[12] = (
        max(
            1.0,
            (naive_priority(td.numpy(), None if mask is None else mask.numpy(), alpha, eps, eta) ** (1 / alpha)).max(),
        )
        ** alpha
    )
    assert np.allclose(p.tree.leaves, naive, rtol=1e-12)
    drawn, prob = p.draw(4096, np.random.default_rng(1))
    assert naive[drawn].min() > 0 and np.allclose(prob, naive[drawn] / naive.sum())
    weights = p.weights(prob, 11, beta=0.5)
    expected = (11 * prob) ** -0.5
    assert np.allclose(weights, expected / expected.max(), rtol=1e-6)


def update_as_before(p: Prioritizer, entries: np.ndarray, td_errors: torch.Tensor, mask: torch.Tensor | None):
    """``Prioritizer.update`` as it was: the errors copied to the host (``.cpu()``, a device sync) and mixed there."""
    tree = p.tree
    if mask is not None:
        td = td_errors.detach().abs().float().cpu() * mask.cpu()
        count = mask.cpu().sum(0).clamp(min=1)
        td_errors = p.eta * td.max(0).values + (1 - p.eta) * td.sum(0) / count
    priority = td_errors.detach().abs().float().cpu().numpy().astype(np.float64) + p.priority_eps
    tree.update(entries, priority**p.alpha)
    tree.max_priority = max(tree.max_priority, float(priority.max()))


def priority_calls(p: Prioritizer, device: str, sequences: bool, update) -> list[np.ndarray]:
    """A run of calls in the order a training loop makes them, with TD errors (and masks) on ``device``: inserts
    (which read the largest priority an update set), updates, clears of updated entries, draws. Returns the draws
    and, after each call, the tree and its largest priority."""
    g = torch.Generator().manual_seed(5)
    rng = np.random.default_rng(2)
    seen = []
    p.insert(np.arange(40))
    for step in range(6):
        entries = rng.integers(0, 40 + 4 * step, 16)  # repeats: the last value wins
        td = (torch.randn(5, 16, generator=g) if sequences else torch.randn(16, generator=g)) * 10 ** (step - 2)
        mask = (torch.rand(5, 16, generator=g) < 0.7) if sequences else None
        update(p, entries, td.to(device), None if mask is None else mask.to(device))
        p.insert(np.arange(40 + 4 * step, 44 + 4 * step))
        seen += [p.tree.tree.copy(), np.array([p.tree.max_priority])]
        p.clear(entries[:2])
        update(p, entries[2:5], td[..., 2:5].to(device), None if mask is None else mask[:, 2:5].to(device))
        seen += [p.draw(32, rng)[0], p.tree.tree.copy()]
    return seen


@pytest.mark.parametrize("sequences", [False, True])
def test_priority_updates_equal_the_host_computation_they_replaced(sequences):
    """On the host the priorities are those of the update before it copied errors to the host itself, bit for bit."""
    got = priority_calls(Prioritizer(70, 0.6, 1e-3, 0.9), "cpu", sequences, Prioritizer.update)
    want = priority_calls(Prioritizer(70, 0.6, 1e-3, 0.9), "cpu", sequences, update_as_before)
    assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))


def check_device_priorities_equal_host_ones(device: str, sequences: bool) -> None:
    """TD errors on ``device`` give the tree, largest priority and draws that the same errors on the host give,
    whenever the tree is used (a staged CUDA update lands before the next insert, clear, draw or update)."""
    got = priority_calls(Prioritizer(70, 0.6, 1e-3, 0.9), device, sequences, Prioritizer.update)
    want = priority_calls(Prioritizer(70, 0.6, 1e-3, 0.9), "cpu", sequences, Prioritizer.update)
    assert len(got) == len(want)
    for a, b in zip(got, want):  # a mean over a sequence's steps may round differently on a GPU
        assert np.array_equal(a, b) if not sequences or a.dtype.kind == "i" else np.allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("sequences", [False, True])
def test_priorities_from_errors_on_the_training_device_equal_host_ones(sequences):
    check_device_priorities_equal_host_ones("cpu", sequences)


def test_add_returns_the_entries_it_created():
    """Transitions: the flat slot of each step (-1 for a lost one); sequences: the start entry where one starts."""
    no, yes = torch.tensor([False, False]), torch.tensor([True, True])

    def record(first, dropped=None):
        return StepRecord(
            torch.ones(2, 1, 2, 2, dtype=torch.uint8),
            first,
            torch.zeros(2),
            torch.zeros(2),
            no,
            no,
            no,
            dropped=dropped,
        )

    flat = ReplayBuffer(40, 2, (1, 2, 2), 1, prioritized=True)
    N = flat.storage.capacity
    assert flat.add(record(yes), envs=np.array([1, 0])).tolist() == [N + 0, 0]
    assert flat.add(record(no, dropped=torch.tensor([False, True]))).tolist() == [1, -1]
    assert flat.prioritizer.tree.get(np.array([N + 1])) == 0, "a lost step is no entry"
    seq = ReplayBuffer(40, 2, (1, 2, 2), 1, sequences=dict(length=4, burn_in=1, overlap=2, state_size=1))
    K = seq.sampler.starts_cap
    created = [seq.add(record(yes if t == 0 else no)).tolist() for t in range(5)]
    assert created == [[0, K], [-1, -1], [1, K + 1], [-1, -1], [2, K + 2]]  # stride 2
    assert seq.sampler.start_slot[0, :3].tolist() == [0, 2, 4]


@pytest.mark.parametrize("sequences,prioritized", [(False, False), (False, True), (True, True)])
def test_state_dict_round_trips_with_the_single_class_keys(sequences, prioritized):
    """A checkpoint's replay state loads into a fresh replay that then samples the same batch; its keys are the
    ones the single-class replay wrote (so checkpoints written before the split still load)."""

    def make():
        return ReplayBuffer(
            500,
            3,
            (1, 3, 3),
            1,
            n_step=2,
            gamma=0.9,
            prioritized=prioritized,
            seed=4,
            sequences=dict(length=6, burn_in=2, overlap=2, state_size=3) if sequences else None,
        )

    rng = np.random.default_rng(3)
    replay = make()
    fill_with_states(replay, NaiveStream(3, 1, rng), 300, rng)
    state = replay.state_dict()
    keys = {"frames", "actions", "rewards", "flags", "count", "rng"} | (
        {"tree", "max_priority"} if prioritized else set()
    )
    keys |= {"start_slot", "start_state", "start_count", "episode_step"} if sequences else set()
    assert set(state) == keys
    loaded = make()
    loaded.load_state_dict(state)
    a, b = replay.sample(32), loaded.sample(32)
    for name, value in vars(a).items():
        other = getattr(b, name)
        pairs = zip(value, other) if isinstance(value, tuple) else [(value, other)]
        for x, y in pairs:
            assert (
                torch.equal(x, y) if isinstance(x, torch.Tensor) else x is None and y is None or np.array_equal(x, y)
            ), name


def check_batch_tensors_are_written_once_for_their_target(target: str) -> None:
    """A batch's stacks and time-major fields equal the expressions they replaced (multiply, transpose, then a copy
    into pinned memory for a CUDA target), and are made contiguous, on the host, pinned exactly when the target is a
    CUDA device: ``to_device`` then sends them as they are."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (6, 4, 1, 5, 5), dtype=torch.uint8, generator=g)
    first = torch.rand(6, 4, generator=g) < 0.3
    stacked = stack_frames(frames, first, 4, torch.device(target))
    later_first = torch.zeros(6, 4, dtype=torch.bool)
    later_first[:, :-1] = first[:, 1:].flip(1).to(torch.uint8).cummax(1).values.flip(1).bool()
    assert torch.equal(stacked, (frames * (~later_first).view(6, 4, 1, 1, 1).to(torch.uint8)).flatten(1, 2))
    in_episode = torch.rand(6, 4, generator=g) < 0.8
    cases = [
        (frames, in_episode.view(6, 4, 1, 1, 1).to(torch.uint8)),  # obs
        (torch.randn(6, 4, 3, generator=g), in_episode[..., None]),  # extras
        (torch.randint(0, 8, (6, 4), dtype=torch.uint8, generator=g), in_episode),  # labels
        (torch.randn(6, 4, generator=g), None),  # returns, discounts, ...
    ]
    outputs = [stacked]
    for x, factor in cases:
        got = time_major(x, torch.device(target), factor)
        want = (x if factor is None else x * factor).transpose(0, 1).contiguous()
        assert got.dtype == want.dtype and torch.equal(got, want)
        outputs.append(got)
    for out in outputs:
        assert out.is_contiguous() and out.device.type == "cpu" and out.is_pinned() == (target == "cuda")


def test_batch_tensors_are_written_once_for_their_target():
    check_batch_tensors_are_written_once_for_their_target("cpu")


def check_stacked_frames_equal_the_masked_window(frames_device: str, target: str) -> None:
    """``FrameStorage.stacked_frames`` (a gather straight into the result, then zeroing the frames of an earlier
    episode) equals what it replaced in the transition sampler: the window gathered by ``gather_rows``, then
    ``stack_frames`` (a masked copy); it lies on the frames' device, contiguous, pinned exactly when the frames are
    on the host and the target is a CUDA device, for stacks whose slots wrap around the ring."""
    S = 4
    storage = FrameStorage(60, 3, (2, 3, 3), S, frames_device=frames_device)
    rng = np.random.default_rng(1)
    for _ in range(50):  # more slots than a ring holds: stacks wrap around
        storage.write(
            np.arange(3),
            torch.from_numpy(rng.integers(0, 256, (3, 2, 3, 3), dtype=np.uint8)).to(frames_device),
            0,
            0.0,
            0,
            None,
        )
    g = torch.Generator().manual_seed(1)
    env = rng.integers(0, 3, 32)
    newest = storage.count[env] - 1 - rng.integers(0, storage.capacity - S, 32)
    first = torch.rand(32, S, generator=g) < 0.3
    first[0] = False  # a stack with nothing to zero and one with everything but the newest frame zeroed
    first[1] = torch.tensor([False, False, False, True])
    got = storage.stacked_frames(env, newest, first, torch.device(target))
    idx = torch.from_numpy((newest[:, None] + np.arange(1 - S, 1)[None, :]) % storage.capacity)
    window = gather_rows(storage.frames, torch.from_numpy(env)[:, None], idx)
    assert torch.equal(got.cpu(), stack_frames(window, first, S).cpu())
    assert got.shape == (32, S * 2, 3, 3) and got.is_contiguous() and got.device == storage.frames.device
    assert got.is_pinned() == (got.device.type == "cpu" and target == "cuda")


def test_stacked_frames_equal_the_masked_window():
    check_stacked_frames_equal_the_masked_window("cpu", "cpu")


def check_frame_writes_and_gathers_equal_advanced_indexing(frames_device: str) -> None:
    """Frames are written through one flat slot index sent to their device (``FrameStorage.write``) and gathered
    through one flat row index (``gather_rows``, host indices): the frames and rows that advanced indexing with an
    (env, slot) index pair on that device gave, for streams written in any order and subsets (a distributed
    collector's envs, the envs that reset)."""
    storage = FrameStorage(40, 4, (2, 3, 3), 1, frames_device=frames_device)
    reference = torch.zeros_like(storage.frames, device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(30):
        envs = rng.permutation(4)[: rng.integers(1, 5)]
        frame = torch.from_numpy(rng.integers(0, 256, (len(envs), 2, 3, 3), dtype=np.uint8))
        phys = torch.from_numpy(storage.count[envs] % storage.capacity)
        reference[torch.from_numpy(envs), phys] = frame
        storage.write(envs, frame.to(frames_device), 0, 0.0, 0, None)
    assert torch.equal(storage.frames.cpu(), reference)
    e = torch.from_numpy(rng.integers(0, 4, 16))[:, None]
    idx = torch.from_numpy(rng.integers(0, storage.capacity, (16, 5)))
    gathered = gather_rows(storage.frames, e, idx)
    assert gathered.device == storage.frames.device and torch.equal(gathered.cpu(), reference[e, idx])


def test_frame_writes_and_gathers_equal_advanced_indexing():
    check_frame_writes_and_gathers_equal_advanced_indexing("cpu")


def test_transition_extras_and_labels_belong_to_the_stacks_they_go_with():
    """A transition's extras and labels are those of obs's newest frame, its next_extras those of next_obs's newest
    frame (the bootstrap slot, a final slot after a reset included): every frame carries its own id in its pixels,
    its extras and its label, and every sampled row must agree with the frames it was batched with."""
    rng = np.random.default_rng(5)
    E, n = 3, 3
    replay = ReplayBuffer(300, E, (1, 2, 2), 4, num_extras=2, n_step=n, labels=True, seed=1)
    next_id = 1

    def frames(count):
        nonlocal next_id
        ids = torch.arange(next_id, next_id + count)
        next_id += count
        frame = torch.stack([ids % 256, ids // 256, ids % 7, ids % 5], 1).to(torch.uint8).view(count, 1, 2, 2)
        return frame, torch.stack([ids.float(), -ids.float()], 1), (ids % 256).to(torch.uint8)

    first = torch.ones(E, dtype=torch.bool)
    for _ in range(400):  # the rings wrap
        frame, extras, labels = frames(E)
        final_frame, final_extras, final_labels = frames(E)
        term = torch.from_numpy(rng.random(E) < 0.1)
        trunc = torch.from_numpy(rng.random(E) < 0.05) & ~term
        reset = term | trunc
        replay.add(
            StepRecord(
                frame,
                first,
                torch.zeros(E),
                torch.ones(E),
                term,
                trunc,
                reset,
                final_frame=final_frame,
                extras=extras,
                final_extras=final_extras,
                labels=labels,
                final_labels=final_labels,
            )
        )
        first = reset
    batch = replay.sample(256)
    frame_id = lambda stacks: stacks[:, -1, 0, 0].long() + 256 * stacks[:, -1, 0, 1].long()  # noqa: E731
    assert torch.equal(batch.extras[:, 0].long(), frame_id(batch.obs))
    assert torch.equal(batch.extras[:, 1], -batch.extras[:, 0])
    assert torch.equal(batch.next_extras[:, 0].long(), frame_id(batch.next_obs))
    assert torch.equal(batch.labels, batch.obs[:, -1, 0, 0])
    assert bool((batch.discounts < 0.99**n - 1e-6).any()), "some windows end early: their bootstrap slot is nearer"


@pytest.mark.parametrize("n", [1, 3, 5])
def test_n_step_returns_equal_the_torch_computation_bit_for_bit(n):
    """``n_step_returns`` sums in numpy float32; the torch expression it replaced gives the same bits."""
    g = torch.Generator().manual_seed(n)
    rewards = torch.randn(64, 12, generator=g) * 3
    terminated = torch.rand(64, 12, generator=g) < 0.15
    done = terminated | (torch.rand(64, 12, generator=g) < 0.1)
    gamma = 0.97
    P = 12 - n + 1
    returns = torch.zeros(64, P)
    steps = torch.zeros(64, P, dtype=torch.long)
    alive = torch.ones(64, P, dtype=torch.bool)
    ended = torch.zeros(64, P, dtype=torch.bool)
    for k in range(n):
        returns += alive * (gamma**k) * rewards[:, k : k + P]
        steps += alive
        ended |= alive & terminated[:, k : k + P]
        alive &= ~done[:, k : k + P]
    discounts = torch.where(ended, 0.0, gamma ** steps.float())
    for args in ((rewards, terminated, done), (rewards.numpy(), terminated.numpy(), done.numpy())):
        got = n_step_returns(*args, n, gamma)
        for x, want in zip(got, (returns, steps, discounts)):
            assert x.dtype == want.dtype and torch.equal(x, want)
