"""Frame storage: one ring per env stream, one frame per step, stacks rebuilt at sample time.

Each slot holds ONE frame (the newest frame of the observation the agent acted on) plus the action taken, the
learning reward, and the terminated / truncated flags of that step. Two more flags describe the stream itself:
- ``first``: the frame is the first of an episode, so a stack rebuilt at or after it is zero-padded before it
  (exactly what the environments' own stacks do after a reset);
- ``final``: the slot holds only the last frame of an episode that just reset (from ``VecStep.final_obs``); it is
  the bootstrap frame of a truncated episode, never the start of a transition.

A stream therefore reads ``f0 a0 r0 | f1 a1 r1 | ... | f_T-1 a_T-1 r_T-1 (done) | f_T (final) | f0' ...``: no
transition spans a reset, and a truncated episode still has its next observation. A life loss (Atari) is a
``terminated`` step inside an episode: it cuts the n-step return but not the stack, as in the environment.

Slots are addressed by (env, logical index); logical indices grow forever and map to ``index % capacity``; the
flat slot id ``env * capacity + index % capacity`` names a slot across streams. With ``labels=True`` each slot also
keeps its frame's game-feature bits (one uint8, ``VecStep.labels``).

Frames live on the host unless ``frames_device`` names another device (``replay.frames_on_device``: CUDA training
then gathers and stacks batches on the GPU instead of copying them over); everything else stays on the host.
"""

from __future__ import annotations

import numpy as np
import torch

from drl.runtime import empty_for_transfer, to_device

TERMINATED, TRUNCATED, FIRST, FINAL = 1, 2, 4, 8  # bits of a slot's flags


def gather_rows(t: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``t[i, j]`` for a contiguous ``t`` [I, J, ...] (on any device) and broadcastable int64 index tensors on the
    host, as one ``index_select`` of whole rows (25x faster than advanced indexing for a batch of 84x84 frames). The
    flat row index is computed on the host and goes to t's device as one asynchronous copy (``to_device``)."""
    flat = i * t.shape[1] + j
    rows = to_device(flat.reshape(-1), t.device)
    return t.flatten(0, 1).index_select(0, rows).view(*flat.shape, *t.shape[2:])


def earlier_episode(first):
    """bool [B, S]: which positions of stacks whose slots carry the ``first`` flags [B, S] (oldest to newest, a host
    tensor or numpy array) belong to an earlier episode than the newest frame, i.e. lie before the latest episode
    start; a stack zeroes them. Computed in numpy (a few tiny ops: several times cheaper than torch's), returned
    as a numpy array."""
    first = np.asarray(first, dtype=bool)
    earlier = np.zeros(first.shape, dtype=bool)
    if first.shape[1] > 1:  # an episode start strictly after position p, up to the newest position S-1
        earlier[:, :-1] = np.logical_or.accumulate(first[:, :0:-1], axis=1)[:, ::-1]
    return earlier


def stack_frames(
    frames: torch.Tensor, first: torch.Tensor, stack: int, target: torch.device | None = None
) -> torch.Tensor:
    """frames [B, S, *frame_shape] ending at the frame of interest, first bool [B, S] -> [B, S*C, ...], on frames'
    device, written where a copy to ``target`` (default: that device) starts from (``empty_for_transfer``).

    Frames before the latest ``first`` flag (looking back from the newest) belong to an earlier episode and
    are zeroed (``earlier_episode``).
    """
    B, S = first.shape
    keep = torch.from_numpy(~earlier_episode(first))
    keep = to_device(keep.view(B, S, *([1] * (frames.dim() - 2))).to(frames.dtype), frames.device)
    out = empty_for_transfer(frames.shape, frames.dtype, frames.device, target or frames.device)
    return torch.mul(frames, keep, out=out).flatten(1, 2)


def flag_bits(flags):
    """(terminated, done = terminated or truncated, first) bool tensors (or numpy arrays) of a flags tensor (array)."""
    term = (flags & TERMINATED) > 0
    return term, term | ((flags & TRUNCATED) > 0), (flags & FIRST) > 0


class FrameStorage:
    """Per-env rings of frames, actions, rewards, flags (and extras, labels).

    ``capacity`` is in slots over all envs: each env stream gets ``slots(...) // num_envs`` of them (``self.capacity``).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: tuple,
        frame_stack: int,
        n_step: int = 1,
        num_extras: int = 0,
        frame_dtype: torch.dtype = torch.uint8,
        labels: bool = False,
        frames_device: str | torch.device | None = None,
    ):
        self.num_envs, self.frame_shape, self.stack, self.num_extras = (
            num_envs,
            tuple(frame_shape),
            frame_stack,
            num_extras,
        )
        self.capacity = FrameStorage.slots(capacity, num_envs, frame_stack, n_step) // num_envs
        E, N = num_envs, self.capacity
        self.frames_device = torch.device(frames_device or "cpu")
        self.frames = torch.zeros(E, N, *frame_shape, dtype=frame_dtype, device=self.frames_device)
        self.actions = torch.zeros(E, N, dtype=torch.int16)
        self.rewards = torch.zeros(E, N, dtype=torch.float32)
        self.flags = torch.zeros(E, N, dtype=torch.uint8)  # bit 0 terminated, 1 truncated, 2 first, 3 final
        self.extras = torch.zeros(E, N, num_extras, dtype=torch.float32) if num_extras else None
        self.labels = torch.zeros(E, N, dtype=torch.uint8) if labels else None  # game-feature bits per frame
        self.count = np.zeros(E, dtype=np.int64)  # slots ever written per env (next logical index)
        self.env_ids = np.arange(E)

    @staticmethod
    def slots(capacity: int, num_envs: int, frame_stack: int, n_step: int) -> int:
        """Slots allocated: ``capacity`` split into one ring per env, each long enough for a frame stack and n steps."""
        return num_envs * max(capacity // num_envs, frame_stack + n_step + 2)

    @staticmethod
    def frames_bytes(
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, ...],
        frame_stack: int,
        n_step: int = 1,
        frame_dtype: torch.dtype = torch.uint8,
    ) -> int:
        """Bytes of the frame store alone (what ``replay.frames_on_device`` puts in GPU memory)."""
        frame_bytes = int(np.prod(frame_shape)) * torch.empty(0, dtype=frame_dtype).element_size()
        return FrameStorage.slots(capacity, num_envs, frame_stack, n_step) * frame_bytes

    def nbytes(self) -> int:
        tensors = [self.frames, self.actions, self.rewards, self.flags]
        tensors += [t for t in (self.extras, self.labels) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def __len__(self) -> int:
        return int(np.minimum(self.count, self.capacity).sum())

    def flat(self, env: np.ndarray, logical: np.ndarray) -> np.ndarray:
        """Flat slot ids ``env * capacity + logical % capacity``."""
        return env * self.capacity + logical % self.capacity

    # ---------------------------------------------------------------- writing
    def write(self, envs: np.ndarray, frame, action, reward, flags, extras, labels=None) -> np.ndarray:
        """Append one slot to each stream ``envs`` (rows in that order); returns the slots' logical indices.

        frame is already on ``frames_device``; action, reward and flags are host arrays or scalars (numpy, or torch
        tensors on the host), written through numpy views of their rings: for the few rows of a vector step that is
        several times cheaper than torch's indexing. The frames' slots go to ``frames_device`` as one flat index,
        copied asynchronously (``to_device``)."""
        logical = self.count[envs].copy()
        phys = logical % self.capacity
        slots = to_device(torch.from_numpy(self.flat(envs, logical)), self.frames_device)
        self.frames.flatten(0, 1).index_copy_(0, slots, frame.to(self.frames.dtype))
        self.actions.numpy()[envs, phys] = action
        self.rewards.numpy()[envs, phys] = reward
        self.flags.numpy()[envs, phys] = flags
        if self.extras is not None or self.labels is not None:
            e, p = torch.from_numpy(envs), torch.from_numpy(phys)
            if self.extras is not None:
                self.extras[e, p] = extras
            if self.labels is not None:
                if labels is None:
                    raise ValueError(
                        "this replay stores game-feature labels (agent.aux.features) but the step has none"
                    )
                self.labels[e, p] = labels
        self.count[envs] += 1
        return logical

    def truncate_last(self, envs: np.ndarray) -> None:
        """Mark the last stored step of each env truncated (bootstrapped from the slot after it), unless it
        already ends its episode or is a final slot."""
        envs = envs[self.count[envs] > 0]
        if len(envs):
            e, last = torch.from_numpy(envs), torch.from_numpy((self.count[envs] - 1) % self.capacity)
            flags = self.flags[e, last]
            open_step = (flags & (FINAL | TERMINATED | TRUNCATED)) == 0
            self.flags[e, last] = torch.where(open_step, flags | TRUNCATED, flags)

    def end_streams(self, envs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every stream ``envs`` (default all) stops here, its next observation unknown: the last stored step
        becomes a ``final`` slot, the bootstrap frame of the step before it, which is marked truncated.

        Returns (env, logical) of the slots that became final (they no longer start a transition)."""
        ids = self.env_ids if envs is None else np.asarray(envs, dtype=np.int64)
        envs = ids[self.count[ids] > 0]
        if not len(envs):
            return envs, envs
        e, last = torch.from_numpy(envs), torch.from_numpy((self.count[envs] - 1) % self.capacity)
        was_final = (self.flags[e, last] & FINAL) > 0
        self.flags[e, last] = self.flags[e, last] | FINAL
        ended = envs[~was_final.numpy()]
        ended_slots = self.count[ended] - 1
        self.count[ended] -= 1  # truncate_last looks at the step before the new final slot
        self.truncate_last(ended[self.count[ended] > 0])
        self.count[ended] += 1
        return ended, ended_slots

    # ---------------------------------------------------------------- reading
    def logical_from_phys(self, env: np.ndarray, phys: np.ndarray) -> np.ndarray:
        oldest = np.maximum(self.count[env] - self.capacity, 0)
        return oldest + (phys - oldest) % self.capacity

    def valid(self, env: np.ndarray, logical: np.ndarray, before: int, after: int) -> np.ndarray:
        """Slot can start a window reaching ``before`` slots back and ``after`` slots ahead, and is no final slot."""
        oldest = np.maximum(self.count[env] - self.capacity, 0)
        ok = (logical - before >= oldest) & (logical + after <= self.count[env] - 1)
        flags = self.flags.numpy()[env, logical % self.capacity]
        return ok & ((flags & FINAL) == 0)

    def window(self, env: np.ndarray, logical: np.ndarray, offsets: np.ndarray):
        """Gather slots env[b], logical[b] + offsets -> frames [B, W, C, H, W], flags/rewards/actions [B, W] (host
        tensors, from ``fields``), extras [B, W, K] and labels [B, W] (None when not stored)."""
        e = torch.from_numpy(env)[:, None]
        idx = torch.from_numpy((logical[:, None] + offsets[None, :]) % self.capacity)
        extras = None if self.extras is None else gather_rows(self.extras, e, idx)
        labels = None if self.labels is None else self.labels[e, idx]
        flags, rewards, actions = map(torch.from_numpy, self.fields(env, logical, offsets))
        return gather_rows(self.frames, e, idx), flags, rewards, actions, extras, labels

    def fields(self, env: np.ndarray, logical: np.ndarray, offsets: np.ndarray):
        """Flags, rewards and actions of slots env[b], logical[b] + offsets: numpy arrays [B, W] (copies, gathered
        through numpy views of the host rings: for a batch's few hundred slots several times cheaper than torch)."""
        e, idx = env[:, None], (logical[:, None] + offsets[None, :]) % self.capacity
        return self.flags.numpy()[e, idx], self.rewards.numpy()[e, idx], self.actions.numpy()[e, idx]

    def stacked_frames(self, env: np.ndarray, newest: np.ndarray, first, target: torch.device) -> torch.Tensor:
        """Frame stacks [B, S*C, H, W] ending at slots (env[b], newest[b]), whose S slots carry the ``first`` flags
        [B, S] (a numpy array or host tensor), frames of an earlier episode zeroed: what ``stack_frames`` makes of a
        gathered window, but gathered straight into the result (one ``index_select`` of the B*S frames, into pinned
        memory for a CUDA target), zeroing only the few frames that need it instead of multiplying every frame by a
        mask (the masked copy of a window took longer than gathering it)."""
        B, S = first.shape
        slots = self.flat(env[:, None], newest[:, None] + np.arange(1 - S, 1)[None, :])
        rows = to_device(torch.from_numpy(slots.reshape(-1)), self.frames_device)
        out = empty_for_transfer((B * S, *self.frame_shape), self.frames.dtype, self.frames_device, target)
        torch.index_select(self.frames.flatten(0, 1), 0, rows, out=out)
        zero = np.flatnonzero(earlier_episode(first))
        if len(zero):
            out[to_device(torch.from_numpy(zero), self.frames_device)] = 0
        return out.view(B, S, *self.frame_shape).flatten(1, 2)

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        state = {
            "frames": self.frames.cpu(),
            "actions": self.actions,
            "rewards": self.rewards,
            "flags": self.flags,
            "count": torch.from_numpy(self.count.copy()),
        }
        if self.extras is not None:
            state["extras"] = self.extras
        if self.labels is not None:
            state["labels"] = self.labels
        return state

    def load_state_dict(self, state: dict) -> None:
        for key in (
            ("frames", "actions", "rewards", "flags")
            + (("extras",) if self.num_extras else ())
            + (("labels",) if self.labels is not None else ())
        ):
            getattr(self, key).copy_(state[key])
        self.count = state["count"].numpy().copy()
