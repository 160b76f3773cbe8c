"""What crosses the network from a collector to the learner: a ``Chunk`` of T vector steps of its E envs, with the
initial priorities the collector computed on it, and how the learner stores a chunk in its replay.

Shapes (T vector steps, E envs of one collector, one frame ``[C, H, W]`` or ``[D]``, K extras, H LSTM units):
- ``frames``: the newest frame of each observation acted on, ``[T, E, C, H, W]`` (replay keeps one frame per step
  and rebuilds the stacks at sample time, so a collector never sends a stack);
- ``first``, ``terminated``, ``truncated``, ``reset``, ``dropped``: bool ``[T, E]``; ``actions`` int64, ``rewards``
  float32 (learning rewards, ``env.reward_scale`` applied) ``[T, E]``;
- ``final_rows`` int64 ``[F, 2]`` (t, e) with ``final_frames`` ``[F, C, H, W]``: the last frame of each episode that
  reset in the chunk (``VecStep.final_obs``), sent only for those rows (``final_extras``, ``final_labels`` too);
- ``extras`` float32 ``[T, E, K]`` (Doom game variables), ``labels`` uint8 ``[T, E]`` (game-feature bits, only with
  ``agent.aux.features``), or None;
- ``state_rows`` ``[S, 2]`` with ``states`` float32 ``[S, 2, H]``: the acting LSTM state (h, c) before step t, only
  where the replay stores a sequence start (every ``sequence_length - sequence_overlap`` steps of an episode);
- ``priorities`` float32 ``[T, E]``: the initial priority of the replay entry a step creates (a transition, or for
  sequences the sequence starting there; NaN where none), or None (the replay's max priority is used).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from drl.replay import ReplayBuffer, StepRecord, n_step_returns


@dataclass
class Chunk:
    collector: int  # index of the collector (0 .. N-1)
    incarnation: str  # new after Ray restarts the collector: its envs' streams are cut then
    pid: int  # the collector's process id
    version: int  # learner updates of the weights acted with (-1: the collector's initial ones)
    seconds: float  # time the collector spent on this chunk
    frames: torch.Tensor
    first: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    reset: torch.Tensor
    final_rows: torch.Tensor
    final_frames: torch.Tensor
    extras: torch.Tensor | None = None  # float32 [T, E, K]
    final_extras: torch.Tensor | None = None  # float32 [F, K]
    labels: torch.Tensor | None = None  # uint8 [T, E]
    final_labels: torch.Tensor | None = None  # uint8 [F]
    dropped: torch.Tensor | None = None
    state_rows: torch.Tensor | None = None
    states: torch.Tensor | None = None
    priorities: torch.Tensor | None = None
    episodes: list[dict] = field(default_factory=list)  # finished episodes ("env" is the collector's env index)
    faults: dict = field(default_factory=dict)  # env fault counters (Doom worker_restarts, ...)

    @property
    def env_steps(self) -> int:
        return int(self.rewards.numel())

    def nbytes(self) -> int:
        """Bytes of the tensors (what a chunk costs on the wire, give or take pickling)."""
        return sum(v.numel() * v.element_size() for v in vars(self).values() if isinstance(v, torch.Tensor))

    def info(self) -> ChunkInfo:
        return ChunkInfo(
            self.collector,
            self.incarnation,
            self.pid,
            self.version,
            self.seconds,
            self.env_steps,
            int(self.rewards.shape[0]),
            self.episodes,
            self.faults,
            self.nbytes(),
        )


@dataclass
class ChunkInfo:
    """What the learner reads of a chunk (its counters, episodes, faults) without its tensors: with the replay in
    its own actor the tensors go from the collector to that actor and never through the learner."""

    collector: int
    incarnation: str
    pid: int
    version: int
    seconds: float
    env_steps: int
    length: int  # T, vector steps
    episodes: list[dict]
    faults: dict
    nbytes: int


# ------------------------------------------------------------------------------------------- collector side
def td_priorities(
    q: torch.Tensor,
    actions: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    reset: torch.Tensor,
    n: int,
    gamma: float,
) -> torch.Tensor:
    """|n-step TD error| of each step of a chunk from the collector's own Q values: float32 ``[T, E]``.

    q: ``[T + 1, E, A]``, the Q values of every observation acted on plus the one after the chunk; actions,
    rewards, terminated, truncated, reset: ``[T, E]``. Approximations (see docs/distributed.md): the collector's
    (stale) online network stands in for the learner's online and target networks (Ape-X does the same), so the
    double-Q target is a plain max; windows are cut at the chunk's end and bootstrap from the observation after
    it; a window that ends at a time limit is not bootstrapped (its final observation was never acted on).
    """
    T, E = rewards.shape
    cut = truncated | reset  # the episode ends without a bootstrap we could compute
    done = cut | terminated
    done[-1] = True  # windows stop at the chunk's end
    pad = lambda x, value: torch.cat([x, torch.full((n - 1, E), value, dtype=x.dtype)]).T  # noqa: E731  [E, T+n-1]
    returns, steps, discounts = n_step_returns(
        pad(rewards.float(), 0.0), pad(terminated, False), pad(done, True), n, gamma
    )  # [E, T]
    boot = torch.arange(T)[None, :] + steps  # in [1, T]
    discounts = torch.where(cut.T.gather(1, boot - 1), 0.0, discounts)  # time limit: no bootstrap
    value = q.float().max(-1).values.T.gather(1, boot)
    q_taken = q[:T].float().gather(2, actions[..., None].long()).squeeze(2).T
    return (returns + discounts * value - q_taken).abs().T.contiguous()


def sequence_priorities(
    td: torch.Tensor, starts: torch.Tensor, reset: torch.Tensor, length: int, eta: float
) -> torch.Tensor:
    """R2D2's ``eta * max + (1 - eta) * mean`` of |TD| over each sequence starting in the chunk: ``[T, E]``, NaN
    where no sequence starts. A sequence is cut at its episode's end and at the chunk's end (an approximation for
    the sequences that run into the next chunk)."""
    T, _ = td.shape
    out = torch.full_like(td, float("nan"))
    ends = reset.numpy()
    for t, e in starts.nonzero().tolist():
        stop = min(t + length, T)
        hit = np.nonzero(ends[t:stop, e])[0]
        stop = t + hit[0] + 1 if len(hit) else stop
        x = td[t:stop, e]
        out[t, e] = eta * x.max() + (1 - eta) * x.mean()
    return out


# ------------------------------------------------------------------------------------------- learner side
def merge(chunks: list[Chunk]) -> Chunk:
    """Chunks of the same length T side by side, as one chunk of ``sum(E)`` envs (in the order given), so the
    learner stores the chunks that arrived together with T ``replay.add`` calls instead of T per chunk. A part
    that only some chunks have is filled in for the others (no final extras, no lost steps, no sequence starts,
    NaN priorities: a warm-up chunk's entries keep the replay's max priority)."""
    if len(chunks) == 1:
        return chunks[0]
    offsets = np.cumsum([0] + [c.rewards.shape[1] for c in chunks[:-1]]).tolist()

    def cat(name: str, dim: int = 1, empty=None):
        parts = [getattr(c, name) for c in chunks]
        if all(p is None for p in parts):
            return None
        return torch.cat([empty(c) if p is None else p for c, p in zip(chunks, parts)], dim)

    def rows(name: str):  # (t, e) pairs, e shifted by each chunk's env offset
        parts = [getattr(c, name) for c in chunks]
        if all(p is None for p in parts):
            return None
        return torch.cat(
            [
                torch.zeros(0, 2, dtype=torch.long) if p is None else p + torch.tensor([0, o])
                for p, o in zip(parts, offsets)
            ]
        )

    hidden = next((c.states.shape[-1] for c in chunks if c.states is not None), 0)
    k = 0 if chunks[0].extras is None else chunks[0].extras.shape[-1]
    return Chunk(
        collector=-1,
        incarnation="",
        pid=0,
        version=chunks[0].version,
        seconds=0.0,
        frames=cat("frames"),
        first=cat("first"),
        actions=cat("actions"),
        rewards=cat("rewards"),
        terminated=cat("terminated"),
        truncated=cat("truncated"),
        reset=cat("reset"),
        final_rows=rows("final_rows"),
        final_frames=cat("final_frames", 0),
        extras=cat("extras"),
        final_extras=cat("final_extras", 0, lambda c: torch.zeros(len(c.final_rows), k)),
        labels=cat("labels"),
        final_labels=cat("final_labels", 0, lambda c: torch.zeros(len(c.final_rows), dtype=torch.uint8)),
        dropped=cat("dropped", 1, lambda c: torch.zeros_like(c.reset)),
        state_rows=rows("state_rows"),
        states=cat("states", 0, lambda c: torch.zeros(0, 2, hidden)),
        priorities=cat("priorities", 1, lambda c: torch.full(c.rewards.shape, float("nan"))),
    )


def apply_to_replay(replay: ReplayBuffer, ops: list[tuple], chunks: list[Chunk]) -> None:
    """Run the learner's storage plan on ``replay``, in order: ``("end", streams)`` ends those env streams (a
    collector that Ray restarted); ``("add", positions, streams)`` stores ``chunks[positions]`` merged as the
    streams ``streams``. The same plan runs in the learner or in the replay actor."""
    for op in ops:
        if op[0] == "end":
            replay.end_streams(op[1])
        else:
            add_to_replay(replay, merge([chunks[i] for i in op[1]]), op[2])


def add_to_replay(replay: ReplayBuffer, chunk: Chunk, streams: np.ndarray) -> None:
    """Store ``chunk`` in ``replay`` as T vector steps of the streams ``streams`` (int [E]), then set the initial
    priorities of the entries it created (if the chunk has them; a uniform replay ignores them)."""
    T, E = chunk.rewards.shape
    finals: dict[int, list[tuple[int, int]]] = {}
    for row, (t, e) in enumerate(chunk.final_rows.tolist()):
        finals.setdefault(t, []).append((e, row))
    states: dict[int, list[tuple[int, int]]] = {}
    if chunk.states is not None:
        assert chunk.state_rows is not None  # set together with states
        for row, (t, e) in enumerate(chunk.state_rows.tolist()):
            states.setdefault(t, []).append((e, row))
    entries, values = [], []
    opt = lambda x, t: None if x is None else x[t]  # noqa: E731
    for t in range(T):
        final = final_extras = final_labels = state = None
        if t in finals:
            envs, rows = map(list, zip(*finals[t]))

            def spread(x):  # [F, ...] -> [E, ...]: the rows of the envs that reset at t, zeros elsewhere
                return None if x is None else x.new_zeros((E, *x.shape[1:])).index_copy_(0, torch.tensor(envs), x[rows])  # noqa: B023 (called in this iteration)

            final, final_extras, final_labels = map(
                spread, (chunk.final_frames, chunk.final_extras, chunk.final_labels)
            )
        if chunk.states is not None and t in states:
            envs, rows = map(list, zip(*states[t]))
            hc = torch.zeros(2, 1, E, chunk.states.shape[-1])
            hc[:, 0, envs] = chunk.states[rows].transpose(0, 1)
            state = (hc[0], hc[1])
        created = replay.add(
            StepRecord(
                chunk.frames[t],
                chunk.first[t],
                chunk.actions[t],
                chunk.rewards[t],
                chunk.terminated[t],
                chunk.truncated[t],
                chunk.reset[t],
                final_frame=final,
                extras=opt(chunk.extras, t),
                final_extras=final_extras,
                labels=opt(chunk.labels, t),
                final_labels=final_labels,
                dropped=opt(chunk.dropped, t),
                lstm_state=state,
            ),
            envs=streams,
        )
        if chunk.priorities is None:
            continue
        p = chunk.priorities[t].numpy()
        ok = (created >= 0) & np.isfinite(p)
        entries.append(created[ok])
        values.append(p[ok])
    if entries and sum(len(e) for e in entries):
        replay.update_priorities(np.concatenate(entries), torch.from_numpy(np.concatenate(values)))
