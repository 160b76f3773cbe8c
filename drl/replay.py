"""Replay: one frame storage, rebuilt stacks, n-step windows; uniform or prioritized sampling.

Storage is circular per env stream. Each slot holds ONE uint8 frame (the newest frame of the observation the agent
acted on) plus the action taken, the learning reward, and the terminated / truncated flags of that step. Two more
flags describe the stream itself:
- ``first``: the frame is the first of an episode, so a stack rebuilt at or after it is zero-padded before it
  (exactly what the environments' own stacks do after a reset);
- ``final``: the slot holds only the last frame of an episode that just reset (from ``VecStep.final_obs``); it is
  the bootstrap frame of a truncated episode, never the start of a transition.

A stream therefore reads ``f0 a0 r0 | f1 a1 r1 | ... | f_T-1 a_T-1 r_T-1 (done) | f_T (final) | f0' ...``: no
transition spans a reset, and a truncated episode still has its next observation. A life loss (Atari) is a
``terminated`` step inside an episode: it cuts the n-step return but not the stack, as in the environment.

Slots are addressed by (env, logical index); logical indices grow forever and map to ``index % capacity``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drl.sumtree import SumTree, importance_weights


@dataclass
class TransitionBatch:
    obs: torch.Tensor          # uint8 [B, S*C, H, W]
    actions: torch.Tensor      # int64 [B]
    returns: torch.Tensor      # float32 [B], discounted n-step sum of learning rewards
    next_obs: torch.Tensor     # uint8 [B, S*C, H, W], observation n' steps later (n' <= n, shorter at an episode end)
    discounts: torch.Tensor    # float32 [B], gamma^n' if the target bootstraps, 0 after a termination
    weights: torch.Tensor      # float32 [B], importance weights (ones when uniform)
    indices: np.ndarray        # [B] flat slot ids (env * capacity + physical index), for priority updates
    extras: torch.Tensor | None = None
    next_extras: torch.Tensor | None = None


class ReplayBuffer:
    """Frame replay shared by DQN (transitions) and DRQN (sequences).

    ``capacity`` is in transitions over all envs (each env stream gets ``capacity // num_envs`` slots).
    """

    def __init__(self, capacity: int, num_envs: int, frame_shape: tuple[int, int, int], frame_stack: int,
                 num_extras: int = 0, n_step: int = 1, gamma: float = 0.99, prioritized: bool = False,
                 alpha: float = 0.6, priority_eps: float = 1e-6, device: str | torch.device = "cpu",
                 seed: int = 0):
        self.num_envs, self.frame_shape, self.stack = num_envs, tuple(frame_shape), frame_stack
        self.n_step, self.gamma, self.num_extras = n_step, gamma, num_extras
        self.capacity = max(capacity // num_envs, frame_stack + n_step + 2)
        self.device = torch.device(device)
        E, N = num_envs, self.capacity
        self.frames = torch.zeros(E, N, *frame_shape, dtype=torch.uint8)
        self.actions = torch.zeros(E, N, dtype=torch.int16)
        self.rewards = torch.zeros(E, N, dtype=torch.float32)
        self.flags = torch.zeros(E, N, dtype=torch.uint8)   # bit 0 terminated, 1 truncated, 2 first, 3 final
        self.extras = torch.zeros(E, N, num_extras, dtype=torch.float32) if num_extras else None
        self.count = np.zeros(E, dtype=np.int64)            # slots ever written per env (next logical index)
        self.rng = np.random.default_rng(seed)
        self.prioritized, self.alpha, self.priority_eps = prioritized, alpha, priority_eps
        self.tree = SumTree(E * N) if prioritized else None
        self._env_ids = np.arange(E)

    TERMINATED, TRUNCATED, FIRST, FINAL = 1, 2, 4, 8

    # ---------------------------------------------------------------- writing
    def nbytes(self) -> int:
        tensors = [self.frames, self.actions, self.rewards, self.flags] + ([self.extras] if self.num_extras else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def bytes_per_transition(self) -> float:
        return self.nbytes() / (self.num_envs * self.capacity)

    def __len__(self) -> int:
        return int(np.minimum(self.count, self.capacity).sum())

    def _write(self, envs: np.ndarray, frame, action, reward, flags, extras) -> None:
        phys = torch.from_numpy(self.count[envs] % self.capacity)
        e = torch.from_numpy(envs)
        self.frames[e, phys] = frame
        self.actions[e, phys] = action
        self.rewards[e, phys] = reward
        self.flags[e, phys] = flags
        if self.num_extras:
            self.extras[e, phys] = extras
        if self.prioritized:
            is_transition = (flags & self.FINAL) == 0
            self.tree.update(envs * self.capacity + phys.numpy(),
                             np.where(is_transition.numpy(), self.tree.max_priority ** self.alpha, 0.0))
        self.count[envs] += 1

    def add(self, frame: torch.Tensor, first: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
            terminated: torch.Tensor, truncated: torch.Tensor, reset: torch.Tensor,
            final_frame: torch.Tensor | None = None, extras: torch.Tensor | None = None,
            final_extras: torch.Tensor | None = None) -> None:
        """Store one vector step for all envs.

        frame: uint8 [E, C, H, W], newest frame of the obs acted on; first: bool [E], that obs began an episode;
        action/reward/terminated/truncated: [E] results of the step; reset: bool [E], the env reset in this step,
        in which case final_frame[e] (newest frame of VecStep.final_obs) is stored as a ``final`` slot.
        """
        cpu = lambda t: None if t is None else t.detach().to("cpu")  # noqa: E731
        first, terminated, truncated, reset = cpu(first), cpu(terminated), cpu(truncated), cpu(reset)
        flags = (terminated.to(torch.uint8) * self.TERMINATED | truncated.to(torch.uint8) * self.TRUNCATED
                 | first.to(torch.uint8) * self.FIRST)
        self._write(self._env_ids, cpu(frame), cpu(action).to(torch.int16), cpu(reward).float(), flags, cpu(extras))
        done = reset.numpy().nonzero()[0]
        if len(done):
            sel = torch.from_numpy(done)
            self._write(done, cpu(final_frame)[sel], 0, 0.0, torch.full((len(done),), self.FINAL, dtype=torch.uint8),
                        None if final_extras is None else cpu(final_extras)[sel])

    def add_step(self, obs: torch.Tensor, first: torch.Tensor, actions: torch.Tensor, step,
                 extras: torch.Tensor | None = None) -> None:
        """Store a vector step: ``obs``/``extras`` were acted on with ``actions`` and gave ``step`` (a VecStep)."""
        c = self.frame_shape[0]
        final = None if step.final_obs is None else step.final_obs[:, -c:]
        self.add(obs[:, -c:], first, actions, step.reward, step.terminated, step.truncated, step.reset, final,
                 extras, step.final_extras)

    # ---------------------------------------------------------------- sampling helpers
    def _logical_from_phys(self, env: np.ndarray, phys: np.ndarray) -> np.ndarray:
        oldest = np.maximum(self.count[env] - self.capacity, 0)
        return oldest + (phys - oldest) % self.capacity

    def _valid(self, env: np.ndarray, logical: np.ndarray, before: int, after: int) -> np.ndarray:
        """Slot can start a window reaching ``before`` slots back and ``after`` slots ahead, and is no final slot."""
        oldest = np.maximum(self.count[env] - self.capacity, 0)
        ok = (logical - before >= oldest) & (logical + after <= self.count[env] - 1)
        flags = self.flags[torch.from_numpy(env), torch.from_numpy(logical % self.capacity)].numpy()
        return ok & ((flags & self.FINAL) == 0)

    def _draw(self, batch_size: int, before: int, after: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw (env, logical, probability) for valid window starts; uniform or proportional to priority."""
        envs, logicals, probs = [], [], []
        need = batch_size
        for _ in range(1000):
            if self.prioritized:
                leaf = self.tree.sample(need, self.rng)
                env, phys = leaf // self.capacity, leaf % self.capacity
                logical = self._logical_from_phys(env, phys)
                prob = self.tree.get(leaf) / self.tree.total
            else:
                env = self.rng.integers(0, self.num_envs, need)
                hi = self.count[env] - 1 - after
                lo = np.maximum(self.count[env] - self.capacity, 0) + before
                logical = lo + np.floor(self.rng.random(need) * np.maximum(hi - lo + 1, 0)).astype(np.int64)
                prob = np.full(need, 1.0)
            ok = self._valid(env, logical, before, after)
            envs.append(env[ok]), logicals.append(logical[ok]), probs.append(prob[ok])
            need -= int(ok.sum())
            if need <= 0:
                break
        else:
            raise RuntimeError("replay holds no valid window yet; raise agent.learning_starts")
        take = lambda xs: np.concatenate(xs)[:batch_size]  # noqa: E731
        return take(envs), take(logicals), take(probs)

    def _window(self, env: np.ndarray, logical: np.ndarray, offsets: np.ndarray):
        """Gather slots env[b], logical[b] + offsets -> frames [B, W, C, H, W], flags/rewards/actions [B, W]."""
        e = torch.from_numpy(env)[:, None]
        idx = torch.from_numpy((logical[:, None] + offsets[None, :]) % self.capacity)
        extras = self.extras[e, idx] if self.num_extras else None
        return self.frames[e, idx], self.flags[e, idx], self.rewards[e, idx], self.actions[e, idx], extras

    @staticmethod
    def stack_frames(frames: torch.Tensor, first: torch.Tensor, stack: int) -> torch.Tensor:
        """frames [B, S, C, H, W] ending at the frame of interest, first bool [B, S] -> uint8 [B, S*C, H, W].

        Frames before the latest ``first`` flag (looking back from the newest) belong to an earlier episode and
        are zeroed.
        """
        B, S = first.shape
        # keep[b, p] = no episode start strictly after position p (up to the newest position S-1)
        later_first = torch.zeros(B, S, dtype=torch.bool)
        if S > 1:
            rev = first[:, 1:].flip(1).to(torch.uint8).cummax(1).values.flip(1).bool()
            later_first[:, :-1] = rev
        frames = frames * (~later_first).view(B, S, *([1] * (frames.dim() - 2))).to(frames.dtype)
        return frames.flatten(1, 2)

    # ---------------------------------------------------------------- transitions (DQN)
    def sample(self, batch_size: int, beta: float = 0.4, device: torch.device | None = None) -> TransitionBatch:
        S, n = self.stack, self.n_step
        env, logical, prob = self._draw(batch_size, before=S - 1, after=n)
        frames, flags, rewards, actions, extras = self._window(env, logical, np.arange(-(S - 1), n + 1))
        B = len(env)
        term = (flags & self.TERMINATED) > 0
        done = term | ((flags & self.TRUNCATED) > 0)
        first = (flags & self.FIRST) > 0
        # n-step window starts at position S-1; it stops after the first done step (inclusive)
        done_w = done[:, S - 1:S - 1 + n]
        alive_before = torch.ones(B, n, dtype=torch.bool)
        alive_before[:, 1:] = ~(done_w[:, :-1].to(torch.uint8).cummax(1).values.bool())
        steps = alive_before.sum(1)                                               # n' in [1, n]
        disc = self.gamma ** torch.arange(n, dtype=torch.float32)
        returns = (rewards[:, S - 1:S - 1 + n] * disc * alive_before).sum(1)
        last = S - 2 + steps                                                      # position of the last step used
        ended_terminal = term.gather(1, last[:, None]).squeeze(1)
        discounts = torch.where(ended_terminal, 0.0, self.gamma ** steps.float())
        rows = torch.arange(B)[:, None]
        obs = self.stack_frames(frames[:, :S], first[:, :S], S)
        nxt = (steps[:, None] + torch.arange(S)[None, :])                       # positions n'..n'+S-1
        next_obs = self.stack_frames(frames[rows, nxt], first[rows, nxt], S)
        weights = (importance_weights(prob, len(self), beta) if self.prioritized
                   else np.ones(B, dtype=np.float32))
        dev = device or self.device
        to = lambda t: t.to(dev, non_blocking=True)  # noqa: E731
        batch = TransitionBatch(
            obs=to(obs), actions=to(actions[:, S - 1].long()), returns=to(returns), next_obs=to(next_obs),
            discounts=to(discounts), weights=to(torch.from_numpy(np.asarray(weights, dtype=np.float32))),
            indices=env * self.capacity + logical % self.capacity)
        if self.num_extras:
            batch.extras = to(extras[:, S - 1])
            batch.next_extras = to(extras[rows.squeeze(1), S - 1 + steps])
        return batch

    def update_priorities(self, indices: np.ndarray, td_errors: torch.Tensor) -> None:
        if not self.prioritized:
            return
        p = td_errors.detach().abs().float().cpu().numpy().astype(np.float64) + self.priority_eps
        self.tree.update(indices, p ** self.alpha)
        self.tree.max_priority = max(self.tree.max_priority, float(p.max()))

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        state = {"frames": self.frames, "actions": self.actions, "rewards": self.rewards, "flags": self.flags,
                 "count": torch.from_numpy(self.count.copy()),
                 "rng": self.rng.bit_generator.state}
        if self.num_extras:
            state["extras"] = self.extras
        if self.prioritized:
            state["tree"] = torch.from_numpy(self.tree.tree.copy())
            state["max_priority"] = self.tree.max_priority
        return state

    def load_state_dict(self, state: dict) -> None:
        for key in ("frames", "actions", "rewards", "flags") + (("extras",) if self.num_extras else ()):
            getattr(self, key).copy_(state[key])
        self.count = state["count"].numpy().copy()
        self.rng.bit_generator.state = state["rng"]
        if self.prioritized:
            self.tree.tree[:] = state["tree"].numpy()
            self.tree.max_priority = state["max_priority"]
