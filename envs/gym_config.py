"""``env:`` of ``env.kind: gym`` (the env: ``drl.envs.gym``). A module of its own, so validating a config imports
no torch or Gymnasium."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from drl.config import EnvSection


class GymEnvConfig(EnvSection):
    """Any Gymnasium environment with a Discrete action space, stepped by Gymnasium's own vector API."""

    kind: Literal["gym"] = "gym"
    id: str  # a registered id, e.g. CartPole-v1, MinAtar/Breakout-v1
    kwargs: dict[str, Any] = Field(default_factory=dict)  # passed to gymnasium.make
    vectorization: Literal["sync", "async"] = "sync"  # async: one subprocess per env
    frame_stack: int = Field(1, ge=1, le=16)  # observations stacked along the first axis
    max_episode_steps: int | None = Field(None, ge=1)  # time limit (a truncation); None: the env's own

    def stepping(self) -> Literal["caller", "processes"]:
        return "processes" if self.vectorization == "async" else "caller"
