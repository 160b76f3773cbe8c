"""The sequence sampler (DRQN, R2D2): stored LSTM states at sequence starts, windows of ``length + n_step`` slots.

Where sequences start (``SequenceStarts``): at an episode's first step and every ``length - overlap`` steps after it.
At each start the sampler keeps the start's logical slot and the acting LSTM state (h, c) *before* the agent saw
that step's frame; its entries are those starts, ``env * K + k`` (K starts kept per stream, a ring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drl.replay.priorities import Prioritizer
from drl.replay.storage import FINAL, FrameStorage, flag_bits, stack_frames
from drl.replay.transitions import n_step_returns, rejection_sample
from drl.runtime import empty_for_transfer, to_device


def time_major(x: torch.Tensor, target: torch.device, factor: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` [B, W, ...] (times ``factor``, which broadcasts to it) as a contiguous [W, B, ...] on x's device, written
    once, where its copy to ``target`` starts from (pinned for a CUDA target: ``empty_for_transfer``)."""
    x_t = x.transpose(0, 1)
    if factor is None:
        return empty_for_transfer(x_t.shape, x.dtype, x.device, target).copy_(x_t)
    factor_t = factor.transpose(0, 1)
    shape = torch.broadcast_shapes(x_t.shape, factor_t.shape)
    return torch.mul(x_t, factor_t, out=empty_for_transfer(shape, torch.result_type(x, factor), x.device, target))


@dataclass
class SequenceBatch:
    """Time-major sequences for recurrent agents. W = sequence_length + n_step slots are unrolled; losses use
    positions [burn_in, sequence_length) where ``mask`` is true."""

    obs: torch.Tensor  # [W, B, S*C, H, W] (or [W, B, S*D]); slots after the episode's end are zero padding
    actions: torch.Tensor  # int64 [W, B]
    returns: torch.Tensor  # float32 [T, B] n-step returns from each position
    bootstrap: torch.Tensor  # int64 [T, B] position p + n' of the bootstrap observation
    discounts: torch.Tensor  # float32 [T, B]
    mask: torch.Tensor  # bool [T, B]: a real step of the sequence's episode, past burn-in
    state: tuple  # stored LSTM state (h, c) at the sequence start, each [1, B, hidden]
    weights: torch.Tensor  # float32 [B]
    indices: np.ndarray  # [B] flat start-entry ids, for priority updates
    episode_start: np.ndarray  # bool [B] on the host: the sequence starts its episode, so its zero state is exact
    extras: torch.Tensor | None = None  # float32 [W, B, K]
    labels: torch.Tensor | None = None  # uint8 [W, B] game-feature bits of obs (0 in the padding)


class SequenceStarts:
    """The sequence-start rule, per stream: a sequence starts at an episode's first step and every ``stride``
    steps after it. The replay and the distributed collectors (which send the acting state only there) share it."""

    def __init__(self, num_streams: int, stride: int):
        self.stride = stride
        self.episode_step = np.zeros(num_streams, dtype=np.int64)  # steps seen in the current episode

    def step(self, first: np.ndarray, streams: np.ndarray | None = None) -> np.ndarray:
        """One step of the streams ``streams`` (default all; ``first`` bool [E']: the step begins an episode).
        Returns the rows of ``first`` whose step starts a sequence."""
        ids = np.arange(len(self.episode_step)) if streams is None else streams
        self.episode_step[ids[first]] = 0
        rows = np.nonzero(self.episode_step[ids] % self.stride == 0)[0]
        self.episode_step[ids] += 1
        return rows


class SequenceSampler:
    """Records sequence starts as steps are stored and draws sequences from ``storage`` with ``rng``."""

    kind = "sequences"

    @staticmethod
    def starts_per_stream(slots_per_stream: int, stride: int) -> int:
        """K: the sequence starts kept per stream (twice what the ring's slots can start, at least 8)."""
        return max(2 * slots_per_stream // stride, 8)

    def __init__(
        self,
        storage: FrameStorage,
        n_step: int,
        gamma: float,
        rng: np.random.Generator,
        length: int,
        burn_in: int,
        overlap: int,
        state_size: int,
    ):
        if not 0 <= burn_in < length or not 0 <= overlap < length:
            raise ValueError("need 0 <= burn_in < sequence_length and 0 <= overlap < sequence_length")
        self.storage, self.n_step, self.gamma, self.rng = storage, n_step, gamma, rng
        self.seq_len, self.burn_in, self.stride = length, burn_in, length - overlap
        E, K = storage.num_envs, self.starts_per_stream(storage.capacity, self.stride)
        self.starts_cap, self.num_entries = K, E * K
        self.starts = SequenceStarts(E, self.stride)
        self.start_slot = torch.full((E, K), -1, dtype=torch.int64)  # logical slot of each stored start
        self.start_state = torch.zeros(E, K, 2, state_size)  # (h, c) before the start frame was seen
        self.start_count = np.zeros(E, dtype=np.int64)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.start_slot, self.start_state))

    def on_steps(
        self, envs: np.ndarray, logical: np.ndarray, lost: np.ndarray, first: np.ndarray, state: tuple | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step slots were written at (envs, logical), acted on from ``state`` ((h, c), each [1, E', hidden], or
        None): records the starts among them. Returns (start entry per row, -1 where none; entries to clear)."""
        rows = self.starts.step(first, envs)
        entries = np.full(len(envs), -1, dtype=np.int64)
        if not len(rows):
            return entries, rows
        starts = envs[rows]
        k = self.start_count[starts] % self.starts_cap
        e_t, k_t = torch.from_numpy(starts), torch.from_numpy(k)
        self.start_slot[e_t, k_t] = torch.from_numpy(logical[rows])
        if state is not None:
            h, c = (x.detach().to("cpu", torch.float32)[0, torch.from_numpy(rows)] for x in state)
            self.start_state[e_t, k_t] = torch.stack([h, c], dim=1)
        self.start_count[starts] += 1
        entries[rows] = starts * self.starts_cap + k
        return entries, rows[:0]

    def on_final_slots(self, envs: np.ndarray, logical: np.ndarray) -> np.ndarray:
        """A start on a final slot is never valid (``FrameStorage.valid``): no entry to clear."""
        return envs[:0]

    def _draw(self, batch_size: int, prioritizer: Prioritizer | None):
        """Draw (env, k, probability) of starts whose whole window is stored."""
        S, K, storage = self.storage.stack, self.starts_cap, self.storage
        after = self.seq_len + self.n_step - 1

        def propose(need: int):
            if prioritizer is not None:
                leaf, prob = prioritizer.draw(need, self.rng)
                env, k = leaf // K, leaf % K
            else:
                env = self.rng.integers(0, storage.num_envs, need)
                k = np.floor(self.rng.random(need) * np.minimum(self.start_count[env], K)).astype(np.int64)
                prob = np.ones(need)
            slot = self.start_slot[torch.from_numpy(env), torch.from_numpy(k)].numpy()
            return env, k, prob, (slot >= 0) & storage.valid(env, np.maximum(slot, 0), before=S - 1, after=after)

        return rejection_sample(batch_size, propose, "complete sequence")

    def sample(
        self,
        batch_size: int,
        prioritizer: Prioritizer | None = None,
        beta: float = 0.4,
        device: torch.device | str = "cpu",
    ) -> SequenceBatch:
        S, n, T, K = self.storage.stack, self.n_step, self.seq_len, self.starts_cap
        W = T + n
        env, k, prob = self._draw(batch_size, prioritizer)
        slot = self.start_slot[torch.from_numpy(env), torch.from_numpy(k)].numpy()
        B = len(env)
        frames, flags, rewards, actions, extras, labels = self.storage.window(env, slot, np.arange(-(S - 1), W))
        term, done, first = flag_bits(flags)
        final = ((flags & FINAL) > 0)[:, S - 1 :]  # [B, W]
        beyond = torch.zeros(B, W, dtype=torch.bool)  # slots of the next episode
        beyond[:, 1:] = final[:, :-1].to(torch.uint8).cummax(1).values.bool()
        if S == 1:
            obs = frames
        else:  # rebuild a stack for every position: windows of S slots ending at each position
            win = frames.unfold(1, S, 1).movedim(-1, 2)  # [B, W, S, *frame_shape]
            obs = stack_frames(win.flatten(0, 1), first.unfold(1, S, 1).flatten(0, 1), S)
            obs = obs.view(B, W, *obs.shape[1:])
        in_episode = to_device((~beyond).view(B, W, *([1] * (obs.dim() - 2))).to(obs.dtype), obs.device)
        returns, steps, discounts = n_step_returns(
            rewards[:, S - 1 :], term[:, S - 1 :], done[:, S - 1 :], n, self.gamma
        )
        returns, steps, discounts = returns[:, :T], steps[:, :T], discounts[:, :T]
        position = torch.arange(T)[None, :]
        # burn-in is needed only when the stored state is stale; an episode's first sequence starts from zeros
        starts_episode = first[:, S - 1 : S]
        mask = ((position >= self.burn_in) | starts_episode) & ~beyond[:, :T] & ~final[:, :T]
        state = self.start_state[torch.from_numpy(env), torch.from_numpy(k)]  # [B, 2, hidden]
        weights = (
            prioritizer.weights(prob, int(np.minimum(self.start_count, K).sum()), beta)
            if prioritizer is not None
            else np.ones(B, dtype=np.float32)
        )
        device = torch.device(device)
        to = lambda t: to_device(t, device)  # noqa: E731
        tm = lambda t, factor=None: to(time_major(t, device, factor))  # noqa: E731
        batch = SequenceBatch(
            obs=tm(obs, in_episode),
            actions=tm(actions[:, S - 1 :].long()),
            returns=tm(returns),
            bootstrap=tm(position + steps),
            discounts=tm(discounts),
            mask=tm(mask),
            state=(to(state[:, 0][None].contiguous()), to(state[:, 1][None].contiguous())),
            weights=to(torch.from_numpy(np.asarray(weights, dtype=np.float32))),
            indices=env * K + k,
            episode_start=starts_episode[:, 0].numpy(),
        )
        if self.storage.num_extras:
            batch.extras = tm(extras[:, S - 1 :], (~beyond)[..., None])
        if labels is not None:
            batch.labels = tm(labels[:, S - 1 :], ~beyond)
        return batch

    def state_dict(self) -> dict:
        return dict(
            start_slot=self.start_slot,
            start_state=self.start_state,
            start_count=torch.from_numpy(self.start_count.copy()),
            episode_step=torch.from_numpy(self.starts.episode_step.copy()),
        )

    def load_state_dict(self, state: dict) -> None:
        self.start_slot.copy_(state["start_slot"])
        self.start_state.copy_(state["start_state"])
        self.start_count = state["start_count"].numpy().copy()
        self.starts.episode_step = state["episode_step"].numpy().copy()
