"""The vector-env contract's split step: ``step_async`` + work + ``step_wait`` gives exactly what ``step`` gives."""

from __future__ import annotations

import pytest
import torch

from drl import config
from drl.vec_env import make_env

EXPERIMENTS = {
    "catch": ("catch", []),
    "atari": ("atari-pong", ["env.max_episode_frames=200"]),
    "doom": ("doom-basic", []),
    "gym": ("cartpole", ["env.vectorization=async"]),
}


def _fields(step):
    return [step.obs, step.reward, step.terminated, step.truncated, step.reset, step.final_obs, step.extras]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.doom) if k == "doom" else k for k in EXPERIMENTS])
def test_split_step_equals_step(kind):
    experiment, overrides = EXPERIMENTS[kind]
    cfg = config.load(experiment, ["env.num_envs=3", *overrides]).env
    envs = [make_env(cfg, torch.device("cpu"), seed=4) for _ in range(2)]
    try:
        gen = torch.Generator().manual_seed(0)
        a, b = envs[0].reset(seed=4), envs[1].reset(seed=4)
        resets = 0
        for _ in range(150):
            actions = torch.randint(0, envs[0].num_actions, (3,), generator=gen)
            a = envs[0].step(actions)
            envs[1].step_async(actions)
            torch.randn(256, 256) @ torch.randn(256, 256)  # the learner's work while the env steps
            b = envs[1].step_wait()
            for x, y in zip(_fields(a), _fields(b)):
                assert (x is None and y is None) or torch.equal(x, y)
            assert a.episodes == b.episodes
            resets += int(a.reset.sum())
        assert resets > 0, "the streams should cross episode ends"
        with pytest.raises(RuntimeError, match="step_wait"):
            envs[1].step_wait()
    finally:
        for env in envs:
            env.close()
