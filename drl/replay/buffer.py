"""The replay the training loop holds: frame storage, one sampler (transitions or sequences), optional priorities.

``ReplayBuffer`` composes the pieces and keeps their order of work in one place: a vector step (``StepRecord``) is
written to the storage, the sampler turns the slots written into entries (transitions, or sequence starts), and the
prioritizer gives new entries the largest priority seen so far. ``add`` returns the entries each row created, so a
caller (``drl.distributed.chunk``) can set their initial priorities without looking inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drl.replay import storage as slot_flags
from drl.replay.priorities import Prioritizer
from drl.replay.sequences import SequenceBatch, SequenceSampler
from drl.replay.storage import FrameStorage
from drl.replay.transitions import TransitionBatch, TransitionSampler
from drl.runtime import to_device
from drl.sumtree import SumTree


@dataclass
class StepRecord:
    """One vector step of E' env streams, as the replay stores it (all tensors have E' rows).

    frame: [E', C, H, W] (or [E', D]), the newest frame of the obs acted on; first: bool, that obs began an episode;
    action, reward, terminated, truncated: the step's results; reset: bool, the env reset in this step, in which
    case final_frame (newest frame of ``VecStep.final_obs``, with final_extras / final_labels) is stored after it
    as a ``final`` slot (other rows of the final_* tensors are ignored).
    dropped: bool or None, the step was lost (``VecStep.dropped``, a crashed Doom worker): its frame is stored as a
    ``final`` slot ending the stream (the bootstrap of the step before, now truncated), so no made-up transition
    is ever sampled.
    lstm_state: the agent's (h, c), each [1, E', hidden], *before* it saw ``frame`` (kept at sequence starts).
    labels / final_labels: uint8 game-feature bits of frame / final_frame (needed when the replay stores labels).
    """

    frame: torch.Tensor
    first: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    reset: torch.Tensor
    final_frame: torch.Tensor | None = None
    extras: torch.Tensor | None = None
    final_extras: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    final_labels: torch.Tensor | None = None
    dropped: torch.Tensor | None = None
    lstm_state: tuple | None = None

    @classmethod
    def of_vec_step(
        cls,
        obs: torch.Tensor,
        first: torch.Tensor,
        actions: torch.Tensor,
        step,
        channels: int,
        extras: torch.Tensor | None = None,
        lstm_state: tuple | None = None,
        labels: torch.Tensor | None = None,
    ) -> StepRecord:
        """``obs``/``extras``/``labels`` were acted on with ``actions`` and gave ``step`` (a VecStep); a frame is
        the last ``channels`` channels of a stacked obs."""
        final = None if step.final_obs is None else step.final_obs[:, -channels:]
        return cls(
            obs[:, -channels:],
            first,
            actions,
            step.reward,
            step.terminated,
            step.truncated,
            step.reset,
            final_frame=final,
            extras=extras,
            final_extras=step.final_extras,
            labels=labels,
            final_labels=step.final_labels,
            dropped=step.dropped,
            lstm_state=lstm_state,
        )


class ReplayBuffer:
    """Frame replay shared by DQN (transitions) and DRQN (``sequences``: ``SequenceSampler``'s length, burn_in,
    overlap and state_size).

    ``capacity`` is in transitions over all envs (each env stream gets ``capacity // num_envs`` slots).
    """

    TERMINATED, TRUNCATED, FIRST, FINAL = (
        slot_flags.TERMINATED,
        slot_flags.TRUNCATED,
        slot_flags.FIRST,
        slot_flags.FINAL,
    )

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, int, int],
        frame_stack: int,
        num_extras: int = 0,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        priority_eps: float = 1e-6,
        device: str | torch.device = "cpu",
        seed: int = 0,
        frame_dtype: torch.dtype = torch.uint8,
        labels: bool = False,
        frames_device: str | torch.device | None = None,
        sequences: dict | None = None,
    ):
        self.storage = FrameStorage(
            capacity, num_envs, frame_shape, frame_stack, n_step, num_extras, frame_dtype, labels, frames_device
        )
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.sampler: TransitionSampler | SequenceSampler
        if sequences is None:
            self.sampler, eta = TransitionSampler(self.storage, n_step, gamma, self.rng), 0.9
        else:
            sequences = dict(sequences)
            eta = sequences.pop("eta", 0.9)
            self.sampler = SequenceSampler(self.storage, n_step, gamma, self.rng, **sequences)
        self.prioritizer = Prioritizer(self.sampler.num_entries, alpha, priority_eps, eta) if prioritized else None

    frames_bytes = staticmethod(FrameStorage.frames_bytes)  # the frame store alone (replay.frames_on_device)

    @staticmethod
    def bytes_needed(
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, ...],
        frame_stack: int,
        n_step: int = 1,
        num_extras: int = 0,
        prioritized: bool = False,
        sequence_stride: int | None = None,
        state_size: int = 0,
        frame_dtype: torch.dtype = torch.uint8,
        labels: bool = False,
    ) -> int:
        """Bytes a buffer with these arguments allocates (computed before allocating anything)."""
        slots = FrameStorage.slots(capacity, num_envs, frame_stack, n_step)
        total = FrameStorage.frames_bytes(capacity, num_envs, frame_shape, frame_stack, n_step, frame_dtype)
        total += slots * (2 + 4 + 1 + 4 * num_extras + labels)  # action, reward, flags, extras, labels
        starts = 0
        if sequence_stride:
            starts = num_envs * SequenceSampler.starts_per_stream(slots // num_envs, sequence_stride)
            total += starts * (8 + 8 * state_size)  # start slot + (h, c) float32
        if prioritized:
            total += 16 * SumTree.padded_size(starts or slots)  # float64 sum tree (2P nodes)
        return total

    def nbytes(self) -> int:
        """Bytes allocated: frames, per-slot fields, stored LSTM states and the sum tree."""
        return (
            self.storage.nbytes()
            + self.sampler.nbytes()
            + (0 if self.prioritizer is None else self.prioritizer.nbytes())
        )

    def bytes_per_transition(self) -> float:
        return self.nbytes() / (self.storage.num_envs * self.storage.capacity)

    def __len__(self) -> int:
        return len(self.storage)

    # ---------------------------------------------------------------- writing
    def add(self, step: StepRecord, envs: np.ndarray | None = None) -> np.ndarray:
        """Store one vector step of all envs, or of the streams ``envs`` (int [E'], one per row; drl.distributed
        adds one collector's envs at a time). Returns int64 [E'], the entry each row created (a transition, or the
        sequence starting there), -1 where none."""
        cpu = lambda t: t.detach().to("cpu")  # noqa: E731
        maybe_cpu = lambda t: None if t is None else cpu(t)  # noqa: E731
        host = lambda t: cpu(t).numpy()  # noqa: E731  (a vector step's few flags: numpy is cheaper than torch)
        ids = self.storage.env_ids if envs is None else np.asarray(envs, dtype=np.int64)
        first, terminated, truncated, reset = (
            host(step.first),
            host(step.terminated),
            host(step.truncated),
            host(step.reset),
        )
        flags = (
            terminated.astype(np.uint8) * self.TERMINATED
            | truncated.astype(np.uint8) * self.TRUNCATED
            | first.astype(np.uint8) * self.FIRST
        )
        lost = np.zeros(len(ids), dtype=bool) if step.dropped is None else host(step.dropped).astype(bool)
        if lost.any():  # the step has no result: its frame only ends the stream (see StepRecord)
            flags[lost] = self.FINAL
            reset = reset & ~lost
            self.storage.truncate_last(ids[lost])
        on_frames = lambda t: to_device(t.detach(), self.storage.frames_device)  # noqa: E731
        logical = self.storage.write(
            ids,
            on_frames(step.frame),
            host(step.action),
            host(step.reward.float()),
            flags,
            maybe_cpu(step.extras),
            maybe_cpu(step.labels),
        )
        entries, cleared = self.sampler.on_steps(ids, logical, lost, first, step.lstm_state)
        if self.prioritizer is not None:
            self.prioritizer.insert(entries[entries >= 0])
            self.prioritizer.clear(cleared)
        done = reset.nonzero()[0]
        if len(done):
            assert step.final_frame is not None, "a step that resets an env carries its final frame"
            sel = torch.from_numpy(done)
            pick = lambda t: None if t is None else cpu(t)[sel]  # noqa: E731
            final = on_frames(step.final_frame[to_device(sel, step.final_frame.device)])
            logical = self.storage.write(
                ids[done],
                final,
                0,
                0.0,
                self.FINAL,
                pick(step.final_extras),
                pick(step.final_labels),
            )
            self._clear(ids[done], logical)
        return entries

    def add_step(
        self,
        obs: torch.Tensor,
        first: torch.Tensor,
        actions: torch.Tensor,
        step,
        extras: torch.Tensor | None = None,
        acting_state: tuple | None = None,
        labels: torch.Tensor | None = None,
    ) -> np.ndarray:
        """``add`` of a VecStep ``step`` that followed acting on ``obs`` (see ``StepRecord.of_vec_step``)."""
        return self.add(
            StepRecord.of_vec_step(obs, first, actions, step, self.storage.frame_shape[0], extras, acting_state, labels)
        )

    def end_streams(self, envs: np.ndarray | None = None) -> None:
        """Every env's stream stops here, its next observation unknown (a resumed run whose envs cannot restore
        their state starts new episodes): the last stored step becomes a ``final`` slot, the bootstrap frame of
        the step before it, which is marked truncated. So no n-step window or sequence runs from the old episode
        into the new one, and the step whose result was lost is never sampled. ``envs``: only these streams
        (default all; e.g. those of a distributed collector that was restarted)."""
        self._clear(*self.storage.end_streams(envs))

    def _clear(self, envs: np.ndarray, logical: np.ndarray) -> None:
        """The slots (envs, logical) became final: their entries can no longer be drawn."""
        if self.prioritizer is not None:
            self.prioritizer.clear(self.sampler.on_final_slots(envs, logical))

    # ---------------------------------------------------------------- sampling
    def sample(
        self, batch_size: int, beta: float = 0.4, device: torch.device | None = None
    ) -> TransitionBatch | SequenceBatch:
        """A batch of the sampler's kind (transitions or sequences) on ``device`` (default: the replay's)."""
        return self.sampler.sample(batch_size, self.prioritizer, beta, device or self.device)

    def sample_for(
        self, sampler: str, batch_size: int, beta: float = 0.4, device: torch.device | None = None
    ) -> TransitionBatch | SequenceBatch:
        """The batch an agent's ``sampler`` names: ``"transitions"`` or ``"sequences"``."""
        if sampler not in ("transitions", "sequences"):
            raise ValueError(f"unknown replay sampler '{sampler}' (an agent's sampler is 'transitions' or 'sequences')")
        if sampler != self.sampler.kind:
            raise ValueError(f"this replay samples {self.sampler.kind}, not {sampler}")
        return self.sample(batch_size, beta, device)

    def update_priorities(self, indices: np.ndarray, td_errors: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """td_errors [B] for transitions; [T, B] with ``mask`` for sequences (see ``Prioritizer.update``)."""
        if self.prioritizer is not None:
            self.prioritizer.update(indices, td_errors, mask)

    @property
    def rng_state(self) -> dict:
        """The sampling generator's state (checkpoints)."""
        return dict(self.rng.bit_generator.state)  # a dict (numpy's stub says Mapping)

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    # ---------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        """One flat dict (the keys of the single-class replay before it, so older checkpoints still load)."""
        state = {**self.storage.state_dict(), "rng": self.rng.bit_generator.state}
        if self.prioritizer is not None:
            state.update(self.prioritizer.state_dict())
        return {**state, **self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.storage.load_state_dict(state)
        self.rng.bit_generator.state = state["rng"]
        if self.prioritizer is not None:
            self.prioritizer.load_state_dict(state)
        self.sampler.load_state_dict(state)


def build_replay(kwargs: dict, sequences: dict | None = None) -> ReplayBuffer:
    """``ReplayBuffer(**kwargs, sequences=sequences)`` (the arguments come from ``drl.learner_core.replay_arguments``; the
    distributed learner and the replay actor build theirs the same way)."""
    return ReplayBuffer(**kwargs, sequences=sequences)
