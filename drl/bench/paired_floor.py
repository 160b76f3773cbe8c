"""The Pong loop floor measured inside a drl training run, in short blocks between drl's own, so that the share of
the floor compares figures taken seconds apart.

This VM's speed drifts by 10-50 % between minutes: an update floor measured in the ``update`` section and a drl run
timed in the ``pong`` section minutes later can differ by that much for no reason of drl's (2026-12-07, epyc-bf16:
one command timed 103, 161 and 120 env steps/s within half an hour, and drl's update took 23.1 ms in its loop and
14.8 ms in a tight loop seconds later). ``PairedFloor`` pauses drl's clock every ``block_s`` seconds of training and
times, in the same process, a few plain-torch floor updates (``drl.bench.floor``), greedy forwards at the run's
``num_envs`` and steps of a second env of the same kind. Each block gives drl's steps/s since the last block and the
floor's, from the same minute; the bench reports the median over blocks (``drl.bench.report.loop_floors``).

The floor is a sum of parts each timed in a tight loop. A loop that interleaves them pays for it (caches and threads
go cold between parts: on epyc-bf16 a plain-torch loop of exactly these parts ran at 84-91 % of their sum), so each
block also runs that plain loop, in drl's order, and the bench judges the floor's targets only where the plain loop
reaches them.
"""

from __future__ import annotations

import time

import torch

from drl.bench.floor import floor_act_fn, floor_update_fn
from drl.bench.measure import replace_methods, sync, time_calls


class PairedFloor:
    """Times floor blocks for ``trainer`` (a ``drl.loop.Trainer``); call ``maybe_block()`` once per vector step,
    before acting. ``paused`` is the seconds spent in blocks (drl's clock leaves them out); ``blocks`` one dict per
    block: the floor parts in ms (``update_ms``, ``act_ms``, ``env_step_ms``), drl's ``drl_sps`` over the
    training since the block before, and drl's own update and replay sample in that training (``drl_update_ms``,
    ``drl_sample_ms``: wall time per call, the caller's view; on CUDA without a sync, so only meaningful on a CPU),
    which say how much of the gap to the floor is the update and how much the rest of drl's loop; ``plain_loop_ms``
    the ms per update of a plain-torch loop of the floor's parts (``_plain_loop``)."""

    def __init__(self, trainer, block_s: float = 2.0, updates: int = 4, steps: int = 16):
        from drl.vec_env import make_env

        cfg, dev = trainer.cfg, trainer.device
        self.trainer, self.block_s, self.updates, self.steps = trainer, block_s, updates, steps
        self.num_envs = trainer.env.num_envs
        self.updates_per_step = self.num_envs / cfg.agent.train_freq  # as drl's loop owes them
        self.overlap = trainer.overlap_env
        num_actions = trainer.env.num_actions
        self.update = floor_update_fn(dev, cfg.agent.batch_size, trainer.bf16, num_actions, double=cfg.agent.double)
        self.act = floor_act_fn(dev, self.num_envs, bool(getattr(trainer.agent, "act_bf16", False)), num_actions)
        self.env = make_env(cfg.env, dev, cfg.seed + 1)  # a second env of the run's kind, stepped at random
        self.env.reset(seed=cfg.seed + 1)
        self.actions = torch.Generator().manual_seed(cfg.seed)
        for first_call in (self.update, self.act, self._env_step):  # first calls allocate
            first_call()
        self.blocks: list[dict] = []
        self.paused = 0.0
        self.drl_calls = {"update": [0.0, 0], "sample": [0.0, 0]}  # seconds and calls since the last block
        replace_methods(trainer.agent, update=self._timed(trainer.agent.update, "update"))
        replace_methods(trainer.replay, sample_for=self._timed(trainer.replay.sample_for, "sample"))
        self.since: tuple[float, int] | None = None  # (time, env steps) where drl's current block began

    def _timed(self, call, name: str):
        """``call`` with its wall time added to ``drl_calls[name]``."""
        totals = self.drl_calls[name]

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                totals[0] += time.perf_counter() - t0
                totals[1] += 1

        return timed

    def _drl_ms(self, name: str) -> float | None:
        """drl's mean ms per ``name`` call since the last block (None if none), and the count starts again."""
        totals = self.drl_calls[name]
        seconds, calls = totals
        totals[:] = [0.0, 0]  # in place: the timed callables hold this list
        return 1000.0 * seconds / calls if calls else None

    def _step_async(self) -> None:
        """Start a step of the second env with random actions."""
        self.env.step_async(torch.randint(0, self.env.num_actions, (self.num_envs,), generator=self.actions))

    def _env_step(self) -> None:
        self._step_async()
        self.env.step_wait()

    def _plain_loop(self, updates: int) -> float:
        """ms per update of a plain-torch loop of the floor's parts in drl's order: per vector step a greedy forward
        and an env step, with the updates the step owes (``num_envs / train_freq`` each, as drl counts them) between
        ``step_async`` and ``step_wait`` where drl overlaps them (``compute.overlap_env``), else after the step."""
        pending, done = 0.0, 0
        sync(self.trainer.device)
        t0 = time.perf_counter()
        while done < updates:
            self.act()
            self._step_async()
            pending += self.updates_per_step
            owed = int(pending)
            pending -= owed
            for _ in range(owed if self.overlap else 0):
                self.update()
            self.env.step_wait()
            for _ in range(0 if self.overlap else owed):
                self.update()
            done += owed
        sync(self.trainer.device)
        return (time.perf_counter() - t0) * 1000.0 / done

    def start(self) -> None:
        """drl's clock starts now (the first vector step at ``learning_starts``); drl's calls before it are not
        counted."""
        for totals in self.drl_calls.values():
            totals[:] = [0.0, 0]
        self.since = (time.perf_counter(), self.trainer.counters.env_steps)

    def maybe_block(self, final: bool = False) -> None:
        """A floor block if ``block_s`` seconds of drl training passed since the last one (``final``: at the end of
        the run, whatever the time, if drl trained since the last block)."""
        if self.since is None:
            return
        now, steps = time.perf_counter(), self.trainer.counters.env_steps
        t0, s0 = self.since
        if steps == s0 or (now - t0 < self.block_s and not final):
            return
        sync(self.trainer.device)
        now = time.perf_counter()
        block = {
            "drl_sps": (steps - s0) / (now - t0),
            "drl_update_ms": self._drl_ms("update"),
            "drl_sample_ms": self._drl_ms("sample"),
            # ms per call, each after one untimed call (the floor's steady state, not a cold start)
            "update_ms": time_calls(self.update, self.updates, 1, self.trainer.device),
            "act_ms": time_calls(self.act, self.steps, 1, self.trainer.device),
            "env_step_ms": time_calls(self._env_step, self.steps, 1, self.trainer.device),
            "plain_loop_ms": self._plain_loop(self.updates),
        }
        self.blocks.append(block)
        after = time.perf_counter()
        self.paused += after - now
        self.since = (after, steps)

    def close(self) -> None:
        self.env.close()
