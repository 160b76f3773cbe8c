"""The n-step transition sampler (DQN): windows of ``frame_stack + n_step`` slots around a drawn start slot.

Its entries are the transitions' flat slot ids (``env * capacity + index``); a final slot is no entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drl.errors import UserError
from drl.replay.priorities import Prioritizer
from drl.replay.storage import FrameStorage, flag_bits
from drl.runtime import to_device


def n_step_returns(rewards, terminated, done, n: int, gamma: float):
    """n-step returns for every start position of a window.

    rewards/terminated/done: [B, W] per slot (done = terminated or truncated), host tensors or numpy arrays. For
    each start p in [0, W-n]: ``returns`` = sum_{k<n'} gamma^k r_{p+k}, where the window stops after n steps or
    after the first done step; ``steps`` = n' (so the bootstrap observation sits at slot p + n'); ``discounts`` =
    gamma^n', or 0 when the last step taken terminated. All outputs are tensors [B, W-n+1] (float32, int64,
    float32). The sums run in numpy on float32 (the same operations as torch's, several times cheaper at a batch's
    size); ``discounts`` take torch's ``pow``.
    """
    rewards = np.asarray(rewards, dtype=np.float32)
    terminated, done = np.asarray(terminated, dtype=bool), np.asarray(done, dtype=bool)
    B, W = rewards.shape
    P = W - n + 1
    returns = np.zeros((B, P), dtype=np.float32)
    steps = np.zeros((B, P), dtype=np.int64)
    alive = np.ones((B, P), dtype=bool)
    ended_terminal = np.zeros((B, P), dtype=bool)
    for k in range(n):
        returns += alive.astype(np.float32) * np.float32(gamma**k) * rewards[:, k : k + P]
        steps += alive
        ended_terminal |= alive & terminated[:, k : k + P]
        alive &= ~done[:, k : k + P]
    steps_t = torch.from_numpy(steps)
    discounts = torch.where(torch.from_numpy(ended_terminal), 0.0, gamma ** steps_t.float())
    return torch.from_numpy(returns), steps_t, discounts


def rejection_sample(batch_size: int, propose, what: str) -> tuple[np.ndarray, ...]:
    """Call ``propose(need) -> (env, index, probability, ok)`` until ``batch_size`` valid draws are collected."""
    parts, need = [], batch_size
    for _ in range(1000):
        env, index, prob, ok = propose(need)
        if need == batch_size and ok.all():  # the usual case: every draw of the first proposal is valid
            return env, index, prob
        parts.append((env[ok], index[ok], prob[ok]))
        need -= int(ok.sum())
        if need <= 0:
            break
    else:
        raise UserError(
            f"replay holds no {what} after 1000 draws; raise agent.learning_starts (or lower replay.sequence_length)"
        )
    return tuple(np.concatenate(column)[:batch_size] for column in zip(*parts))


@dataclass
class TransitionBatch:
    obs: torch.Tensor  # [B, S*C, H, W] uint8 images, or [B, S*D] float32 vectors
    actions: torch.Tensor  # int64 [B]
    returns: torch.Tensor  # float32 [B], discounted n-step sum of learning rewards
    next_obs: torch.Tensor  # like obs: the observation n' steps later (n' <= n, shorter at an episode end)
    discounts: torch.Tensor  # float32 [B], gamma^n' if the target bootstraps, 0 after a termination
    weights: torch.Tensor  # float32 [B], importance weights (ones when uniform)
    indices: np.ndarray  # [B] flat slot ids (env * capacity + physical index), for priority updates
    extras: torch.Tensor | None = None
    next_extras: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # uint8 [B] game-feature bits of obs's newest frame


class TransitionSampler:
    """Draws n-step transitions from ``storage`` with ``rng``, uniformly or through a ``Prioritizer``."""

    kind = "transitions"

    def __init__(self, storage: FrameStorage, n_step: int, gamma: float, rng: np.random.Generator):
        self.storage, self.n_step, self.gamma, self.rng = storage, n_step, gamma, rng
        self.num_entries = storage.num_envs * storage.capacity

    def nbytes(self) -> int:
        return 0

    def on_steps(
        self, envs: np.ndarray, logical: np.ndarray, lost: np.ndarray, first: np.ndarray, state: tuple | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Step slots were written at (envs, logical): (entry per row, -1 for a lost step; entries to clear)."""
        slots = self.storage.flat(envs, logical)
        return np.where(lost, -1, slots), slots[lost]

    def on_final_slots(self, envs: np.ndarray, logical: np.ndarray) -> np.ndarray:
        """Slots at (envs, logical) are final now: the entries to clear."""
        return self.storage.flat(envs, logical)

    def _draw(self, batch_size: int, before: int, after: int, prioritizer: Prioritizer | None):
        """Draw (env, logical, probability) for valid window starts; uniform or proportional to priority."""
        storage = self.storage

        def propose(need: int):
            if prioritizer is not None:
                leaf, prob = prioritizer.draw(need, self.rng)
                env, phys = leaf // storage.capacity, leaf % storage.capacity
                logical = storage.logical_from_phys(env, phys)
            else:
                env = self.rng.integers(0, storage.num_envs, need)
                hi = storage.count[env] - 1 - after
                lo = np.maximum(storage.count[env] - storage.capacity, 0) + before
                logical = lo + np.floor(self.rng.random(need) * np.maximum(hi - lo + 1, 0)).astype(np.int64)
                prob = np.full(need, 1.0)
            return env, logical, prob, storage.valid(env, logical, before, after)

        return rejection_sample(batch_size, propose, "valid window")

    def sample(
        self,
        batch_size: int,
        prioritizer: Prioritizer | None = None,
        beta: float = 0.4,
        device: torch.device | str = "cpu",
    ) -> TransitionBatch:
        storage, S, n = self.storage, self.storage.stack, self.n_step
        env, logical, prob = self._draw(batch_size, S - 1, n, prioritizer)
        B = len(env)
        flags, rewards, actions = storage.fields(env, logical, np.arange(-(S - 1), n + 1))  # numpy [B, S+n]
        term, done, first = flag_bits(flags)
        returns, steps, discounts = n_step_returns(
            rewards[:, S - 1 : S - 1 + n], term[:, S - 1 : S - 1 + n], done[:, S - 1 : S - 1 + n], n, self.gamma
        )
        returns, steps, discounts = returns[:, 0], steps[:, 0], discounts[:, 0]
        bootstrap = logical + steps.numpy()  # the slot of next_obs's newest frame, n' <= n slots later
        # obs: the stack ending at the start slot (window positions 0..S-1); next_obs: the one ending at bootstrap;
        # both gathered by one index_select, rows [0, B) and [B, 2B)
        next_first = first[np.arange(B)[:, None], steps.numpy()[:, None] + np.arange(S)[None, :]]
        device = torch.device(device)
        stacks = storage.stacked_frames(
            np.concatenate([env, env]),
            np.concatenate([logical, bootstrap]),
            np.concatenate([first[:, :S], next_first]),
            device,
        )
        weights = (
            prioritizer.weights(prob, len(storage), beta) if prioritizer is not None else np.ones(B, dtype=np.float32)
        )
        to = lambda t: to_device(t, device)  # noqa: E731
        batch = TransitionBatch(
            obs=to(stacks[:B]),
            actions=to(torch.from_numpy(actions[:, S - 1].astype(np.int64))),
            returns=to(returns),
            next_obs=to(stacks[B:]),
            discounts=to(discounts),
            weights=to(torch.from_numpy(np.asarray(weights, dtype=np.float32))),
            indices=storage.flat(env, logical),
        )
        e = torch.from_numpy(env)
        at = lambda slot: torch.from_numpy(slot % storage.capacity)  # noqa: E731
        if storage.extras is not None:
            batch.extras = to(storage.extras[e, at(logical)])
            batch.next_extras = to(storage.extras[e, at(bootstrap)])
        if storage.labels is not None:
            batch.labels = to(storage.labels[e, at(logical)])
        return batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
