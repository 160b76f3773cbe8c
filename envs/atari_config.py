"""``env:`` of ``env.kind: atari`` (the env: ``drl.envs.atari``). A module of its own, so validating a config
imports no torch or ale-py."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drl.config import EnvSection


class AtariEnvConfig(EnvSection):
    kind: Literal["atari"] = "atari"
    game: str = "pong"  # Atari ROM name (lower case), e.g. pong, breakout
    frame_skip: int = Field(4, ge=1, le=16)  # emulator frames per agent step (max-pooled over the last 2)
    frame_stack: int = Field(4, ge=1, le=16)  # frames per observation
    sticky_actions: float = Field(0.0, ge=0.0, le=1.0)  # 0.25 = Machado et al. protocol
    noop_max: int = Field(30, ge=0)  # up to this many no-op frames at each reset
    life_loss_terminal: bool = True  # learning only; reported scores are whole games
    clip_rewards: bool = True  # learning only (sign of the reward); scores are unclipped
    max_episode_frames: int = Field(108_000, ge=1)  # time limit in emulator frames, a truncation (bootstrapped)
    flicker: float = Field(0.0, ge=0.0, le=1.0)  # probability a frame is fully blanked (partial observability)
    num_threads: int = Field(0, ge=0)  # ALE worker threads, 0 = one per core

    def stepping(self) -> Literal["threads"]:
        return "threads"  # ALE's C++ vector env
