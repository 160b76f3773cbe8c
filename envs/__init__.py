"""The worlds. ``make_env`` builds a vector env (drl.vec_env contract) from an ``EnvConfig``."""
from __future__ import annotations

import difflib

import torch

from drl.config import ConfigError, EnvConfig


def make_env(cfg: EnvConfig, device: torch.device, seed: int, num_envs: int | None = None,
             evaluation: bool = False, max_episode_frames: int | None = None):
    """``evaluation=True`` turns off learning-only signals (life loss as terminal)."""
    num_envs = num_envs or cfg.num_envs
    if cfg.kind == "atari":
        from envs.atari import AtariVecEnv, atari_games
        games = atari_games()
        if cfg.game not in games:
            close = difflib.get_close_matches(cfg.game, games, n=3)
            raise ConfigError(f"unknown Atari game '{cfg.game}' (env.game); "
                              + (f"did you mean {', '.join(close)}?" if close else "use an ale-py ROM name like pong"))
        return AtariVecEnv(cfg.game, num_envs, device, seed=seed, frame_skip=cfg.frame_skip,
                           frame_stack=cfg.frame_stack, sticky_actions=cfg.sticky_actions, noop_max=cfg.noop_max,
                           life_loss_terminal=cfg.life_loss_terminal and not evaluation,
                           clip_rewards=cfg.clip_rewards,
                           max_episode_frames=max_episode_frames or cfg.max_episode_frames,
                           flicker=cfg.flicker, num_threads=cfg.num_threads)
    if cfg.kind == "catch":
        from envs.torch_native import CatchEnv
        return CatchEnv(num_envs, device=device, seed=seed, height=cfg.size)
    if cfg.kind == "memory":
        from envs.torch_native import MemoryEnv
        return MemoryEnv(num_envs, device=device, seed=seed, length=cfg.size)
    if cfg.kind == "doom":
        from envs.doom import make_doom_from_config
        return make_doom_from_config(cfg, num_envs, device, seed)
    raise ConfigError(f"unknown env.kind '{cfg.kind}'")
