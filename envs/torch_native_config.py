"""``env:`` of ``env.kind: catch`` and ``env.kind: memory`` (the envs: ``drl.envs.torch_native``). A module of its
own, so validating a config imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drl.config import EnvSection


class CatchEnvConfig(EnvSection):
    kind: Literal["catch"] = "catch"
    size: int = Field(10, ge=3, le=84)  # board height in pixels (the width is 5)


class MemoryEnvConfig(EnvSection):
    kind: Literal["memory"] = "memory"
    size: int = Field(10, ge=3, le=84)  # corridor length (steps per episode)
