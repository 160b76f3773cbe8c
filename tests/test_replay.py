"""Replay against a naive reference: stacks, n-step windows, terminals, truncations, life losses, resets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drl.replay import ReplayBuffer, StepRecord

H = W = 3


class NaiveStream:
    """A fake vector env written the obvious way: per env, a deque-style zero-padded stack and a list of
    transitions (obs stack, action, reward, term, trunc, next obs stack) recorded as the agent saw them."""

    def __init__(self, num_envs, stack, rng, p_term=0.05, p_trunc=0.03, p_life=0.05):
        self.E, self.S, self.rng = num_envs, stack, rng
        self.p = (p_term, p_trunc, p_life)
        self.frame_id = 0
        self.stacks = [self._fresh() for _ in range(num_envs)]
        self.transitions = [[] for _ in range(num_envs)]

    def _frame(self):
        self.frame_id += 1  # unique content per frame
        return torch.from_numpy(self.rng.integers(1, 256, (1, H, W), dtype=np.uint8))

    def _fresh(self):
        s = torch.zeros(self.S, 1, H, W, dtype=torch.uint8)
        s[-1] = self._frame()
        return s

    def obs(self):
        return torch.stack([s.flatten(0, 1) for s in self.stacks])

    def step(self, actions):
        E = self.E
        reward = torch.from_numpy(self.rng.normal(size=E).astype(np.float32))
        u = self.rng.random((3, E))
        game_over = torch.from_numpy(u[0] < self.p[0])
        trunc = torch.from_numpy(u[1] < self.p[1]) & ~game_over
        life = torch.from_numpy(u[2] < self.p[2]) & ~game_over & ~trunc
        term = game_over | life
        reset = game_over | trunc
        final = torch.zeros(E, self.S, H, W, dtype=torch.uint8)
        for e in range(E):
            before = self.stacks[e].flatten(0, 1).clone()
            nxt = torch.cat([self.stacks[e][1:], self._frame()[None]])
            self.transitions[e].append(
                dict(
                    obs=before,
                    action=int(actions[e]),
                    reward=float(reward[e]),
                    term=bool(term[e]),
                    trunc=bool(trunc[e]),
                    reset=bool(reset[e]),
                    next=nxt.flatten(0, 1),
                )
            )
            if reset[e]:
                final[e] = nxt.flatten(0, 1)
                self.stacks[e] = self._fresh()
            else:
                self.stacks[e] = nxt
        return reward, term, trunc, reset, final


def naive_target(transitions, t, n, gamma):
    """Hand n-step: sum rewards until n steps or the first terminated/truncated step (inclusive)."""
    ret, k = 0.0, 0
    while True:
        tr = transitions[t + k]
        ret += gamma**k * tr["reward"]
        k += 1
        if tr["term"]:
            return ret, 0.0, tr["next"]
        if tr["trunc"] or k == n:
            return ret, gamma**k, tr["next"]


def fill(replay, stream, steps, rng):
    first = torch.ones(stream.E, dtype=torch.bool)
    for _ in range(steps):
        obs = stream.obs()
        actions = torch.from_numpy(rng.integers(0, 6, stream.E))
        reward, term, trunc, reset, final = stream.step(actions)
        replay.add(StepRecord(obs[:, -1:], first, actions, reward, term, trunc, reset, final[:, -1:]))
        first = reset


@pytest.mark.parametrize(
    "stack,n,prioritized,capacity",
    [(4, 3, False, 100_000), (4, 1, False, 100_000), (2, 5, True, 100_000), (4, 3, False, 90), (1, 3, True, 70)],
)
def test_sampled_transitions_equal_naive_reference(stack, n, prioritized, capacity):
    rng = np.random.default_rng(stack * 10 + n)
    E, steps, gamma = 3, 400, 0.9
    stream = NaiveStream(E, stack, rng)
    replay = ReplayBuffer(capacity, E, (1, H, W), stack, n_step=n, gamma=gamma, prioritized=prioritized, seed=1)
    fill(replay, stream, steps, rng)
    batch = replay.sample(256)
    cut = check_batch_against_reference(replay, batch, stream.transitions, n, gamma)
    assert cut > 0, "the sample should contain windows cut by a terminal or truncation"
    # small batches, some with no window cut short and some with one: the next stacks sit n slots on or fewer, and
    # both must match the reference
    cuts = [check_batch_against_reference(replay, replay.sample(4), stream.transitions, n, gamma) for _ in range(60)]
    assert min(cuts) == 0 and max(cuts) > 0, "the small batches should include uncut and cut ones"


def check_batch_against_reference(replay, batch, transitions, n, gamma) -> int:
    """Each sampled transition equals the naive one: stack, action, n-step return, discount, bootstrap obs.
    ``transitions[e]`` lists dicts (obs, action, reward, term, trunc, reset, next) as the env showed them.
    Returns how many sampled windows were cut short by an episode end."""
    storage = replay.storage
    env = batch.indices // storage.capacity
    logical = storage.logical_from_phys(env, batch.indices % storage.capacity)
    cut = 0
    for b in range(len(env)):
        e = int(env[b])
        t = _transition_index(transitions[e], int(logical[b]))
        tr = transitions[e][t]
        ret, disc, nxt = naive_target(transitions[e], t, n, gamma)
        assert torch.equal(batch.obs[b].cpu(), tr["obs"]), f"stack mismatch env {e} t {t}"
        assert int(batch.actions[b]) == tr["action"]
        assert float(batch.returns[b]) == pytest.approx(ret, rel=1e-5, abs=1e-5)
        assert float(batch.discounts[b]) == pytest.approx(disc, rel=1e-6)
        if disc > 0:  # the bootstrap observation matters only when the target bootstraps
            assert torch.equal(batch.next_obs[b].cpu(), nxt), f"next stack mismatch env {e} t {t}"
        cut += disc != pytest.approx(gamma**n)
    return cut


def _transition_index(transitions, logical):
    """Map a logical slot of env e to its transition number: one slot per step, plus one final slot after
    every reset."""
    slot = 0
    for t, tr in enumerate(transitions):
        if slot == logical:
            return t
        slot += 1 + tr["reset"]
        if slot > logical:
            raise AssertionError(f"logical slot {logical} is a final slot; it must never be sampled")
    raise AssertionError("slot beyond the stream")


def test_no_sampled_window_starts_on_final_slot_and_bytes_per_transition():
    rng = np.random.default_rng(0)
    stream = NaiveStream(2, 4, rng, p_term=0.2, p_trunc=0.2)
    replay = ReplayBuffer(10_000, 2, (1, 84, 84), 4, n_step=3)
    first = torch.ones(2, dtype=torch.bool)
    for _ in range(200):
        obs = torch.zeros(2, 4, 84, 84, dtype=torch.uint8)
        reward, term, trunc, reset, final = stream.step(torch.zeros(2))
        replay.add(
            StepRecord(
                obs[:, -1:],
                first,
                torch.zeros(2, dtype=torch.long),
                reward,
                term,
                trunc,
                reset,
                torch.zeros(2, 1, 84, 84, dtype=torch.uint8),
            )
        )
        first = reset
    batch = replay.sample(512)
    flags = replay.storage.flags.flatten()[torch.from_numpy(batch.indices)]
    assert not ((flags & ReplayBuffer.FINAL) > 0).any()
    # one 84x84 frame + action + reward + flags: well under the 7.1 KB target
    assert replay.bytes_per_transition() <= 7100
    assert replay.bytes_per_transition() >= 84 * 84


@pytest.mark.parametrize("how", ["dropped step", "end_streams (resume)", "end_streams + prioritized"])
def test_a_cut_stream_is_never_sampled_across(how):
    """A crashed Doom worker's lost step (``dropped``) and a resume that cannot restore the env
    (``end_streams``) end the stream: the step without a result is never sampled, the one before it bootstraps
    from its frame (truncated), and no n-step window runs into the new episode."""
    gamma, n = 0.5, 3
    replay = ReplayBuffer(1000, 1, (1, 1, 1), 1, n_step=n, gamma=gamma, prioritized="prioritized" in how, seed=0)
    frame = lambda t: torch.full((1, 1, 1, 1), t + 1, dtype=torch.uint8)  # noqa: E731  frame of step t holds t+1
    no = torch.tensor([False])

    def add(t, first, dropped=None, reset=no):
        replay.add(
            StepRecord(
                frame(t),
                torch.tensor([first]),
                torch.tensor([t % 3]),
                torch.tensor([float(t)]),
                no,
                reset,
                reset,
                final_frame=frame(t + 1),
                dropped=dropped,
            )
        )

    for t in range(5):
        add(t, t == 0)
    if how == "dropped step":  # step 5 was lost with its worker; the env restarted with a new game
        add(5, False, dropped=torch.tensor([True]), reset=torch.tensor([True]))
        lost, new_start = 5, 6
    else:  # step 4's result was never stored: the run stopped and resumed
        replay.end_streams()
        lost, new_start = 4, 5
    for t in range(new_start, new_start + 8):
        add(t, t == new_start)
    batch = replay.sample(512)
    starts = (batch.obs.flatten() - 1).tolist()
    assert lost not in starts and set(starts) == set(range(lost)) | set(range(new_start, new_start + 8 - n))
    for b, t in enumerate(starts):
        if t < lost:  # old episode: cut at the lost step, bootstrapped from its frame
            k = min(n, lost - t)
            assert float(batch.returns[b]) == pytest.approx(sum(gamma**i * (t + i) for i in range(k)))
            assert float(batch.discounts[b]) == pytest.approx(gamma**k)
            assert int(batch.next_obs[b].flatten()[0]) == t + k + 1
        else:  # new episode: full windows only
            assert float(batch.discounts[b]) == pytest.approx(gamma**n)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(capacity=1000, num_envs=4, frame_shape=(1, 84, 84), frame_stack=4, n_step=3),
        dict(capacity=10, num_envs=3, frame_shape=(1, 6, 5), frame_stack=4, n_step=5, num_extras=2, prioritized=True),
        dict(capacity=500, num_envs=2, frame_shape=(3, 4, 4), frame_stack=1, frame_dtype=torch.float32),
    ],
)
def test_memory_estimates_equal_what_the_buffer_allocates(kwargs):
    """The free-memory checks run before allocating: their byte counts must be the buffer's own."""
    replay = ReplayBuffer(**kwargs)
    static = {k: kwargs.get(k, d) for k, d in (("n_step", 1), ("frame_dtype", torch.uint8))}
    assert replay.storage.frames.numel() * replay.storage.frames.element_size() == ReplayBuffer.frames_bytes(
        kwargs["capacity"], kwargs["num_envs"], kwargs["frame_shape"], kwargs["frame_stack"], **static
    )
    assert replay.nbytes() == ReplayBuffer.bytes_needed(**kwargs)
