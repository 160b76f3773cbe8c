"""The prioritized replay in its own Ray actor (``distributed.replay: actor``), and the learner's handle on it.

With ``distributed.replay: learner`` (the default) the learner process holds the replay: it fetches every chunk
from the object store and stores it between updates. With ``actor`` a ``ReplayServer`` actor holds it: chunks go
from the collectors to it through the object store without passing through the learner, which only submits the
storage plan (``chunk.apply_to_replay``), takes sampled batches (one requested ahead, so sampling overlaps the
update) and sends priority updates back. Ray runs one caller's calls to an actor in the order they were made, so
a batch is always sampled after every insert and priority update the learner sent before asking for it.
"""

from __future__ import annotations

import time
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import torch

from drl.distributed.chunk import apply_to_replay
from drl.errors import UserError
from drl.replay import build_replay


class ReplayServer:
    """A ``ReplayBuffer`` behind an actor's methods (plain Python; ``remote_class`` makes it a Ray actor)."""

    def __init__(self, kwargs: dict, sequences: dict | None):
        torch.set_num_threads(1)  # it copies and gathers rows; compute threads would only contend
        self.replay = build_replay(kwargs, sequences)

    def apply(self, ops: list[tuple], *chunks) -> tuple[float, int]:
        """Store ``chunks`` (Ray resolves the references passed here) by the plan ``ops``; returns
        (seconds it took, transitions now sampleable)."""
        t0 = time.perf_counter()
        apply_to_replay(self.replay, ops, list(chunks))
        return time.perf_counter() - t0, len(self.replay)

    def sample(self, sampler: str, batch_size: int, beta: float):
        return self.replay.sample_for(sampler, batch_size, beta=beta)

    def update_priorities(self, indices: np.ndarray, td_errors: torch.Tensor, mask: torch.Tensor | None) -> None:
        self.replay.update_priorities(indices, td_errors, mask)

    def end_streams(self, envs: np.ndarray | None) -> None:
        self.replay.end_streams(envs)

    def bytes_per_transition(self) -> float:
        return self.replay.bytes_per_transition()

    def state_dict(self) -> dict:
        return self.replay.state_dict()

    def load_state_dict(self, state: dict) -> int:
        self.replay.load_state_dict(state)
        return len(self.replay)

    def rng_state(self) -> dict:
        return self.replay.rng_state

    def set_rng_state(self, state: dict) -> None:
        self.replay.rng_state = state


def remote_class():
    """``ReplayServer`` as a Ray actor: no CPU reservation (it moves memory and must never queue for a CPU slot)
    and no restarts (the replay is its state: if it dies, the run stops)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(ReplayServer)


def batch_to(batch, device: torch.device):
    """A sampled batch (dataclass of tensors, arrays and tuples of tensors) with its tensors on ``device``."""
    if device.type == "cpu":
        return batch
    move = lambda v: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v  # noqa: E731
    values = {f.name: getattr(batch, f.name) for f in fields(batch)} if is_dataclass(batch) else {}
    return type(batch)(**{k: tuple(move(x) for x in v) if isinstance(v, tuple) else move(v) for k, v in values.items()})


class RemoteReplay:
    """The learner's replay when it lives in a ``ReplayServer`` actor: the ``ReplayBuffer`` methods the learner
    and ``drl.loop.Trainer`` call. Inserts and priority updates are sent without waiting; ``len`` is the size the
    last finished insert reported."""

    def __init__(self, kwargs: dict, sequences: dict | None):
        self.actor = remote_class().remote(kwargs, sequences)
        self._size = 0
        # the batch requested ahead: (its reference, its request)
        self._next: tuple[Any, tuple[str, int, float]] | None = None
        self.pending: list = []  # references of unfinished inserts
        self.seconds = 0.0  # the actor's time storing chunks, summed over finished inserts

    def _get(self, ref):
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            from drl.distributed.cluster import cause

            raise UserError(
                f"the replay actor died ({cause(exc)}); the run stops (its replay is lost): resume it "
                "from the last checkpoint with --resume"
            ) from None

    def apply(self, ops: list[tuple], refs: list) -> None:
        self.pending.append(self.actor.apply.remote(ops, *refs))

    def poll(self) -> None:
        """Take the results of the inserts that have finished (size, time spent)."""
        import ray

        if not self.pending:
            return
        ready, self.pending = ray.wait(self.pending, num_returns=len(self.pending), timeout=0)
        for ref in ready:
            seconds, self._size = self._get(ref)
            self.seconds += seconds

    def __len__(self) -> int:
        return self._size

    def bytes_per_transition(self) -> float:
        return self._get(self.actor.bytes_per_transition.remote())

    def sample_for(self, sampler: str, batch_size: int, beta: float = 0.4, device: torch.device | None = None):
        """This update's batch (requested during the previous update) and the request of the next one."""
        request = (sampler, batch_size, beta)
        ref = (
            self._next[0]
            if self._next is not None and self._next[1][:2] == request[:2]
            else self.actor.sample.remote(*request)
        )
        batch = self._get(ref)
        self._next = (self.actor.sample.remote(*request), request)
        return batch_to(batch, device or torch.device("cpu"))

    def update_priorities(self, indices, td_errors: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.actor.update_priorities.remote(
            indices, td_errors.detach().cpu(), None if mask is None else mask.detach().cpu()
        )

    def end_streams(self, envs: np.ndarray | None = None) -> None:
        self.actor.end_streams.remote(envs)

    def state_dict(self) -> dict:
        return self._get(self.actor.state_dict.remote())

    def load_state_dict(self, state: dict) -> None:
        self._size = self._get(self.actor.load_state_dict.remote(state))
        self._next = None

    @property
    def rng_state(self) -> dict:
        return self._get(self.actor.rng_state.remote())

    @rng_state.setter
    def rng_state(self, state: dict) -> None:
        self._get(self.actor.set_rng_state.remote(state))
        self._next = None

    def close(self) -> None:
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            pass
