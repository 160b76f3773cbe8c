"""ViZDoom behind drl's vector-env contract: games in worker processes, frames through shared memory.

Modules:
- ``settings``: ``DoomSettings`` (scenario, action set, game variables, frame size and stacking, reward shaping,
  timeout; validated on construction), the scenario and button tables, ``settings_from_config``.
- ``game``: ``DoomGame``, one headless ``vizdoom.DoomGame`` returning resized uint8 frames and float32 game
  variables.
- ``workers``: the worker processes (each runs some games), the shared-memory layout, the pool that owns them.
- ``vec_env``: ``DoomVectorEnv`` (semantics in its docstring) and ``make_doom_env``.
"""

from drl.envs.doom.game import DoomGame
from drl.envs.doom.settings import SCENARIOS, ActionSet, DoomSettings, parse_actions
from drl.envs.doom.vec_env import DoomVectorEnv, make_doom_env

__all__ = ["ActionSet", "DoomGame", "DoomSettings", "DoomVectorEnv", "SCENARIOS", "make_doom_env", "parse_actions"]
