"""``env:`` of ``env.kind: doom`` (the env: ``drl.envs.doom``). Plain pydantic: validating a config starts no
game."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from drl.config import EnvSection, Section


class DoomSettingsConfig(Section):
    """``env.doom``: the ViZDoom game (checked against the engine's scenarios and buttons when the env starts)."""

    scenario: str = "health_gathering"  # basic, defend_the_center, deathmatch, ... (envs/doom)
    resolution: str = "RES_160X120"  # render size (a vizdoom ScreenResolution name)
    obs_height: int = Field(60, ge=1)  # observation size after the block-mean downscale
    obs_width: int = Field(80, ge=1)
    gray: bool = True  # 1 gray channel, or 3 (RGB)
    buttons: str | None = None  # action set, e.g. "turn_lr+attack;move_forward"; None: scenario's
    game_variables: list[str] | None = None  # extra inputs, e.g. [health, ammo]; None: scenario's; []: none
    game_variable_scale: float = Field(0.01, gt=0)  # the agent sees game variables x this (health 100 -> 1.0)
    shaping: dict[str, float] = Field(default_factory=dict)  # learning-reward terms, e.g. {frag: 1, death: -1}
    timeout: int | None = Field(None, ge=1)  # episode limit in tics; None: the scenario's
    num_bots: int = Field(7, ge=0)  # deathmatch only: bots added at each episode start
    doom_skill: int | None = Field(None, ge=1, le=5)  # None: the scenario's
    games_per_worker: int | None = Field(None, ge=1)  # games per worker process; None: default_games_per_worker
    crosshair: bool = False  # draw the crosshair (Arnold's deathmatch agents see it)
    reset_on_respawn: bool = False  # deathmatch: a death starts a new life (zero LSTM state)

    @field_validator("game_variables", mode="before")
    @classmethod
    def _split_names(cls, value):  # "health,ammo" on the command line
        return (
            [v for v in str(value).replace(";", ",").replace("+", ",").split(",") if v.strip()]
            if isinstance(value, str)
            else value
        )


class DoomEnvConfig(EnvSection):
    kind: Literal["doom"] = "doom"
    frame_skip: int = Field(4, ge=1, le=16)  # tics per agent step (the action is repeated)
    frame_stack: int = Field(1, ge=1, le=16)  # frames per observation (1 for DRQN, 4 for feed-forward DQN)
    doom: DoomSettingsConfig = Field(default_factory=DoomSettingsConfig)

    def stepping(self) -> Literal["processes"]:
        return "processes"  # the games run in worker processes
