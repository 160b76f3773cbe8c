"""The worlds. Each env kind registers its config section and its factory here (``drl.registry``);
``make_env`` builds a vector env (``drl.vec_env`` contract) for any registered kind."""
from __future__ import annotations

import inspect

from drl import config as _config
from drl.errors import UserError
from drl.registry import ENV_KINDS, register_env, resolve

register_env("atari", _config.AtariEnvConfig, "drl.envs.atari:make_atari_env")
register_env("doom", _config.DoomEnvConfig, "drl.envs.doom:make_doom_env")
register_env("gym", _config.GymEnvConfig, "drl.envs.gym:make_gym_env")
register_env("catch", _config.CatchEnvConfig, "drl.envs.torch_native:make_catch_env")
register_env("memory", _config.MemoryEnvConfig, "drl.envs.torch_native:make_memory_env")


def make_env(cfg: _config.EnvSection, device, seed: int, num_envs: int | None = None, evaluation: bool = False,
             max_frames: int | None = None, labels: tuple[str, ...] | list[str] = (), screens: bool = False):
    """A vector env of ``cfg.num_envs`` (or ``num_envs``) envs on ``device``. ``evaluation=True`` turns off
    learning-only signals (e.g. Atari's life loss as terminal); ``max_frames`` caps episodes (emulator frames).
    ``labels`` (``agent.aux.features``) asks for per-step game-feature bits (``VecStep.labels``); it is passed
    only when not empty, to kinds whose factory takes a ``labels`` argument (Doom). ``screens=True`` (videos) asks
    for the game's own colour screens (``VecStep.screen``) from kinds whose factory takes ``screens`` (Atari, Gym);
    see ``supports_screens``."""
    entry = ENV_KINDS.get(cfg.kind)
    entry.make = resolve(entry.make)  # registered lazily as "module:function"
    extra = {}
    if labels:
        if "labels" not in inspect.signature(entry.make).parameters:
            raise UserError(f"agent.aux.features needs game-feature labels, which env.kind '{cfg.kind}' does not "
                            "produce (doom does); set agent.aux.features=[]")
        extra["labels"] = tuple(labels)
    if screens:
        if not supports_screens(cfg.kind):
            raise UserError(f"env.kind '{cfg.kind}' cannot record the game's own screen; record the agent's view "
                            "instead (--video-view agent)")
        extra["screens"] = True
    return entry.make(cfg, num_envs=num_envs or cfg.num_envs, device=device, seed=seed, evaluation=evaluation,
                      max_frames=max_frames, **extra)


def supports_screens(kind: str) -> bool:
    """Whether env kind ``kind`` can give the game's own colour screens for videos (its factory takes ``screens``)."""
    entry = ENV_KINDS.get(kind)
    entry.make = resolve(entry.make)
    return "screens" in inspect.signature(entry.make).parameters
