"""The learn step (``drl.learner_core.LearnStep``): update stats kept as tensors and turned into floats only when a
train row, evaluation or checkpoint needs them, against the per-update ``float`` it replaced; non-finite updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import drl
from drl.api import create_run_dir
from drl.errors import TrainingDiverged
from drl.learner_core import scalars_to_floats
from drl.metrics import read_metrics
from drl.schedule import linear


def filled_trainer(
    tmp_path, name: str, device: str = "cpu", overrides: tuple = (), experiment: str = "catch"
) -> drl.Trainer:
    """A Trainer (catch, DQN, unless told) whose replay holds 608 steps and whose agent has made no update yet."""
    cfg = drl.load_config(
        experiment,
        [
            f"device={device}",
            "total_steps=600",
            "agent.learning_starts=600",
            "eval.interval=100000",
            "eval.episodes=8",
            "eval.num_envs=8",
            "tracking.wandb=off",
            "compute.threads=1",
            *overrides,
        ],
    )
    trainer = drl.Trainer(cfg, create_run_dir(cfg, tmp_path / name))
    trainer.run()
    assert trainer.agent.updates == 0
    return trainer


def reference_update_stats(trainer: drl.Trainer, updates: int) -> dict[str, list[float]]:
    """The learn step as it was: each stat turned into a float after every update."""
    cfg, replay, agent = trainer.cfg, trainer.replay, trainer.agent
    stats: dict[str, list[float]] = {}
    for _ in range(updates):
        beta = linear(cfg.replay.beta_start, 1.0, cfg.total_steps, trainer.counters.env_steps)
        batch = replay.sample_for(agent.sampler, cfg.agent.batch_size, beta=beta, device=trainer.device)
        update = agent.update(batch)
        replay.update_priorities(batch.indices, update.pop("td_error"), getattr(batch, "mask", None))
        for key, value in update.items():
            stats.setdefault(key, []).append(float(value))
    return stats


def check_train_row_means_equal_floats_of_the_kept_stats(tmp_path, device: str, overrides: tuple = ()) -> None:
    """The learn step keeps each update's stats as tensors on ``device``; the train row holds the means of
    ``float`` of each of them."""
    with filled_trainer(tmp_path, "kept", device, overrides) as trainer:
        core = trainer.core
        for _ in range(5):
            core.learn_step()
        assert core.learn_step.stats == {}, "nothing is turned into a float before a row needs it"
        kept = [stats for stats, _, _ in core.learn_step.uncollected]
        assert len(kept) == 5 and all(v.device.type == trainer.device.type for stats in kept for v in stats.values())
        expected = {key: [float(stats[key]) for stats in kept] for key in kept[0]}
        core.write_train_row(1.0, {})
        assert core.learn_step.stats == {} and core.learn_step.uncollected == [], "the row took them"
        row = [r for r in read_metrics(core.run_dir / "metrics.jsonl") if r["event"] == "train"][-1]
        assert {"train/loss", "train/q_mean", "train/grad_norm"} <= set(row)
        for key, values in expected.items():
            assert row[f"train/{key}"] == float(np.mean(values)), key


def test_train_row_means_equal_floats_of_the_kept_stats(tmp_path):
    check_train_row_means_equal_floats_of_the_kept_stats(tmp_path, "cpu")


@pytest.mark.parametrize("prioritized", [False, True])
def test_collected_stats_equal_those_of_a_float_per_update(tmp_path, prioritized):
    """Two identical runs: one learns through ``LearnStep`` (stats collected at the train row), the other turns
    every stat into a float after each update, as the learn step did. The floats, the train row's means, the
    weights and the priorities are the same, bit for bit."""
    overrides = (f"replay.prioritized={str(prioritized).lower()}",)
    updates = 7
    with filled_trainer(tmp_path, "reference", overrides=overrides) as reference:
        expected = reference_update_stats(reference, updates)
        reference_weights = reference.agent.online.state_dict()
        prioritizer = reference.replay.prioritizer
        reference_leaves = None if prioritizer is None else prioritizer.tree.leaves.copy()
    with filled_trainer(tmp_path, "learn_step", overrides=overrides) as trainer:
        core = trainer.core
        for _ in range(updates):
            core.learn_step()
        core.learn_step.collect()
        assert core.learn_step.stats == expected
        core.write_train_row(1.0, {})
        row = [r for r in read_metrics(core.run_dir / "metrics.jsonl") if r["event"] == "train"][-1]
        for key, values in expected.items():
            assert row[f"train/{key}"] == float(np.mean(values)), key
        for name, value in trainer.agent.online.state_dict().items():
            assert torch.equal(value, reference_weights[name]), name
        if reference_leaves is not None:
            assert np.array_equal(trainer.replay.prioritizer.tree.leaves, reference_leaves)


def test_scalars_to_floats_equals_float_of_each():
    values = [
        torch.tensor(0.1),
        torch.tensor(1 / 3, dtype=torch.float64),
        torch.tensor(2.5, dtype=torch.bfloat16),
        torch.tensor([7]),
        torch.tensor(2**40 + 1),  # an int64 count: exact, not rounded through float32
        np.float32(0.3),
        4,
        float("nan"),
    ]
    got = scalars_to_floats(values)
    want = [float(v) for v in values]
    assert got[:-1] == want[:-1] and math.isnan(got[-1])
    assert all(type(x) is float for x in got)
    assert scalars_to_floats([]) == []


def test_a_non_finite_update_stops_the_run_naming_that_update_before_a_checkpoint_holds_it(tmp_path):
    """The check waits for the next train row, evaluation or checkpoint, and still names the update that went
    non-finite (its env step and number), not the one at which it was found; no checkpoint is written."""
    with filled_trainer(tmp_path, "diverge") as trainer:
        core, c = trainer.core, trainer.counters
        latest = core.run_dir / "checkpoints" / "latest.pt"
        written = latest.stat().st_mtime_ns
        for _ in range(3):
            core.learn_step()
        head_bias = trainer.agent.online.head.advantage[2].bias
        with torch.no_grad():
            head_bias.fill_(float("inf"))
        c.env_steps += 32
        bad_step = c.env_steps
        for _ in range(2):
            core.learn_step()
            c.env_steps += 32
        with pytest.raises(TrainingDiverged) as error:
            core.save_checkpoint()
        message = str(error.value)
        assert f"q_mean became inf at env step {bad_step} (update 4); last good checkpoint: {latest}" in message
        assert latest.stat().st_mtime_ns == written
