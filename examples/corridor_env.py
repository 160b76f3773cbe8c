"""A custom environment kind, registered from a user's module: a 1-D corridor, stepped as tensor ops.

The agent starts at cell 0 of ``length`` cells and moves LEFT (0) or RIGHT (1); reaching the last cell ends the
episode with reward +1 (terminated); after ``4 * length`` steps it is cut off (truncated, reward 0). Observations
are one-hot float32 vectors ``[length]`` (so the ``mlp`` encoder reads them). Optimal return: 1.

Use it from the CLI (``imports: [examples.corridor_env]`` in examples/corridor.yaml, or ``--import``) or from
Python (examples/train_from_python.py). Everything drl needs is here: a config section, a vector env honouring
``drl.vec_env`` and a factory.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import drl
from drl.config import EnvSection
from drl.vec_env import SyncStepping, VecStep


class CorridorConfig(EnvSection):
    kind: Literal["corridor"] = "corridor"
    length: int = Field(8, ge=2, le=1000)  # cells; the goal is the last one


class CorridorEnv(SyncStepping):
    num_actions, frame_stack, num_extras, frames_per_step = 2, 1, 0, 1
    action_names = ["LEFT", "RIGHT"]

    def __init__(self, num_envs: int, length: int, device: torch.device, max_steps: int | None = None):
        self.num_envs, self.length, self.device = num_envs, length, torch.device(device)
        self.frame_channels = length  # a vector "frame" of `length` numbers
        self.max_steps = max_steps or 4 * length
        self.position = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.returns = torch.zeros(num_envs, device=self.device)

    def _obs(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.position, self.length).float()

    def reset(self, seed: int | None = None) -> VecStep:
        self.position.zero_(), self.steps.zero_(), self.returns.zero_()
        flags = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return VecStep(
            self._obs(), torch.zeros(self.num_envs, device=self.device), flags, flags.clone(), torch.ones_like(flags)
        )

    def step(self, actions: torch.Tensor) -> VecStep:
        self.position = (self.position + actions.to(self.device) * 2 - 1).clamp(0, self.length - 1)
        self.steps += 1
        terminated = self.position == self.length - 1
        truncated = ~terminated & (self.steps >= self.max_steps)
        reward = terminated.float()
        self.returns += reward
        done = terminated | truncated
        episodes = [
            {"env": int(i), "return": float(self.returns[i]), "length": int(self.steps[i])}
            for i in done.nonzero().flatten()
        ]
        final_obs = self._obs() if bool(done.any()) else None
        self.position[done], self.steps[done], self.returns[done] = 0, 0, 0.0
        return VecStep(self._obs(), reward, terminated, truncated, done, final_obs=final_obs, episodes=episodes)

    def close(self) -> None:
        pass


def make_corridor(
    cfg: CorridorConfig, *, num_envs: int, device, seed: int, evaluation: bool = False, max_frames: int | None = None
) -> CorridorEnv:
    return CorridorEnv(num_envs, cfg.length, device, max_steps=min(max_frames, 4 * cfg.length) if max_frames else None)


drl.register_env("corridor", CorridorConfig, make_corridor)
