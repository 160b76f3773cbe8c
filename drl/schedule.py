"""When a training run's periodic tasks fall due: target sync, train rows, evaluation, checkpoints and the stop
rule, decided from the run's counters alone. The single-process ``Trainer`` asks after each vector step, the
distributed ``Learner`` after each chunk it stores and each update, so the same config syncs, logs, evaluates,
checkpoints and stops at the same env steps in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from drl.config import Config


@dataclass
class Counters:
    env_steps: int = 0  # agent steps, summed over envs
    episodes: int = 0
    pending_updates: float = 0.0
    target_syncs: int = 0
    evals: int = 0
    checkpoints: int = 0
    wall_time: float = 0.0  # seconds of training, carried across resumes


def linear(start: float, end: float, duration: int, step: int) -> float:
    return end + (start - end) * max(0.0, 1.0 - step / duration)


class Schedule:
    """The periodic tasks' rules, read off (and counted in) ``counters``; every interval is in agent steps."""

    def __init__(self, cfg: Config, counters: Counters):
        self.cfg, self.counters = cfg, counters

    def trained_env_steps(self) -> int:
        """Env steps whose updates are done: those collected less the whole updates still owed
        (``agent.train_freq`` steps each). A single-process run owes no whole update when it asks; a distributed
        learner owes a chunk's updates right after storing it and works them off one by one."""
        c = self.counters
        return c.env_steps - math.floor(c.pending_updates) * self.cfg.agent.train_freq

    def target_sync_due(self) -> bool:
        """True once per ``agent.target_update_interval`` trained env steps (counted in ``target_syncs``)."""
        c = self.counters
        syncs = self.trained_env_steps() // self.cfg.agent.target_update_interval
        if syncs > c.target_syncs:
            c.target_syncs = syncs
            return True
        return False

    def log_due(self, last_log_steps: int) -> bool:
        return self.counters.env_steps - last_log_steps >= self.cfg.log_interval

    def eval_due(self) -> bool:
        """True once per ``eval.interval`` env steps of the chain: a plain run's own steps, a segment's (started
        with ``--init-from``) counted on from its parent's ``chain_env_steps``, so a chain evaluates at every
        multiple of the interval whichever segment crosses it. ``evals`` counts this run's crossings (see
        ``eval_cut_short``)."""
        c, interval, offset = self.counters, self.cfg.eval.interval, self.cfg.chain_offset
        crossed = (offset + c.env_steps) // interval - offset // interval
        if crossed > c.evals:
            c.evals = crossed
            return True
        return False

    def eval_cut_short(self) -> None:
        """A stop request ended the evaluation early: the resumed run evaluates instead."""
        self.counters.evals -= 1

    def checkpoint_due(self) -> bool:
        return self.counters.env_steps // self.cfg.checkpoint_interval > self.counters.checkpoints

    def checkpoint_written(self) -> None:
        self.counters.checkpoints = self.counters.env_steps // self.cfg.checkpoint_interval

    def stop_reached(self, last_eval: dict) -> bool:
        """``eval.stop_at``: the last evaluation's mean return reached it."""
        stop_at = self.cfg.eval.stop_at
        return stop_at is not None and last_eval.get("return_mean", -math.inf) >= stop_at
