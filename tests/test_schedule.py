"""The periodic tasks' rules (``drl.schedule.Schedule``) that the single-process ``Trainer`` and the distributed
``Learner`` share: the same config syncs the target after the same number of updates whether the steps arrive one
vector step at a time or a chunk at a time, and ``eval.stop_at`` reads the last evaluation."""

from __future__ import annotations

import pytest

from drl import config
from drl.schedule import Counters, Schedule


def catch_config(*overrides: str):
    return config.load("catch", ["tracking.wandb=off", *overrides])


def single_process_syncs(cfg, num_envs: int) -> list[int]:
    """Updates done at each target sync when ``num_envs`` steps come at a time (``Trainer._env_step``: the step's
    owed updates, then the sync check)."""
    c = Counters()
    schedule, updates, syncs = Schedule(cfg, c), 0, []
    while c.env_steps < cfg.total_steps:
        learning = c.env_steps >= cfg.agent.learning_starts
        c.env_steps += num_envs
        if learning:
            c.pending_updates += num_envs / cfg.agent.train_freq
            while c.pending_updates >= 1:
                c.pending_updates -= 1
                updates += 1
        if schedule.target_sync_due():
            syncs.append(updates)
    return syncs


def distributed_syncs(cfg, chunk_steps: int) -> list[int]:
    """The same when chunks of ``chunk_steps`` arrive (``Learner.insert``/``_count``: the chunk's steps from
    ``learning_starts`` on owe updates, the sync check; then ``Learner.update``: one update, the sync check)."""
    c = Counters()
    schedule, updates, syncs = Schedule(cfg, c), 0, []
    while c.env_steps < cfg.total_steps:
        before, c.env_steps = c.env_steps, c.env_steps + chunk_steps
        c.pending_updates += max(0, c.env_steps - max(before, cfg.agent.learning_starts)) / cfg.agent.train_freq
        if schedule.target_sync_due():
            syncs.append(updates)
        while c.pending_updates >= 1:
            c.pending_updates -= 1
            updates += 1
            if schedule.target_sync_due():
                syncs.append(updates)
    return syncs


@pytest.mark.parametrize(
    "overrides, exact", [([], True), (["agent.learning_starts=1500", "agent.target_update_interval=2500"], False)]
)
def test_target_syncs_happen_at_the_same_update_counts_in_both_loops(overrides, exact):
    """Exactly the same counts for catch's config; within one update where an interval ends inside an update's
    ``train_freq`` steps (a vector step or a chunk then rounds it one way or the other)."""
    cfg = catch_config(*overrides)
    reference = single_process_syncs(cfg, 1)
    assert len(reference) == cfg.total_steps // cfg.agent.target_update_interval
    for chunk_steps in (96, 256, 1000):
        got = distributed_syncs(cfg, chunk_steps)
        assert len(got) == len(reference), chunk_steps
        assert max(abs(a - b) for a, b in zip(got, reference)) <= (0 if exact else 1), (chunk_steps, got, reference)
    assert single_process_syncs(cfg, 8) == reference


def test_a_learner_owing_updates_does_not_sync_early():
    cfg = catch_config()  # train_freq 16, target_update_interval 1000
    c = Counters(env_steps=2048, pending_updates=8.5, target_syncs=1)
    schedule = Schedule(cfg, c)
    assert schedule.trained_env_steps() == 2048 - 8 * 16 and not schedule.target_sync_due()
    c.pending_updates = 2.5  # six updates later: steps up to 2016 are trained
    assert schedule.target_sync_due() and c.target_syncs == 2 and not schedule.target_sync_due()


def test_stop_at_reads_the_last_evaluation():
    assert not Schedule(catch_config(), Counters()).stop_reached({"return_mean": 1.0})  # eval.stop_at unset
    schedule = Schedule(catch_config("eval.stop_at=0.5"), Counters())
    assert not schedule.stop_reached({}) and not schedule.stop_reached({"return_mean": 0.4})
    assert schedule.stop_reached({"return_mean": 0.5})


def evaluated_at(cfg, steps: int, num_envs: int = 4) -> list[int]:
    """The run's own env steps at which ``eval_due`` says yes, stepping ``num_envs`` at a time (as ``Trainer``)."""
    c = Counters()
    schedule, due = Schedule(cfg, c), []
    while c.env_steps < steps:
        c.env_steps += num_envs
        if schedule.eval_due():
            due.append(c.env_steps)
    return due


@pytest.mark.parametrize("chain_env_steps", [0, 47_024, 240_000, 250_000, 300_000])
def test_a_segment_evaluates_where_the_chain_crosses_each_interval(chain_env_steps):
    """A naive reference: the chain's step count crosses a multiple of ``eval.interval`` during this run."""
    cfg = catch_config("eval.interval=250000")
    if chain_env_steps:
        cfg.init_from = config.InitFromConfig(
            run_dir="parent", source="weights", env_steps=chain_env_steps, chain_env_steps=chain_env_steps
        )
    got = evaluated_at(cfg, 600_000)
    expected = [
        own
        for own in range(4, 600_001, 4)
        if (chain_env_steps + own) // 250_000 > (chain_env_steps + own - 4) // 250_000
    ]
    assert got == expected and len(got) == (chain_env_steps + 600_000) // 250_000 - chain_env_steps // 250_000
    if chain_env_steps == 240_000:
        assert got[0] == 10_000  # the chain's 250k, the segment's own 10k
