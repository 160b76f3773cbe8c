"""``replay`` section: replay bytes per transition from the storage the configs allocate, and SB3's buffer."""

from __future__ import annotations

from typing import cast

from drl.bench.training import SB3_HP


def _allocated_bytes(obj) -> int:
    import numpy as np
    import torch

    total = 0
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
        elif hasattr(value, "tree") and isinstance(value.tree, np.ndarray):  # SumTree
            total += value.tree.nbytes
    return total


def _atari_frames(env_cfg) -> tuple[tuple[int, int, int], int]:
    """(frame shape, extras per step) of an Atari env: one 84x84 gray frame, no extras."""
    return (1, 84, 84), 0


def _doom_frames(env_cfg) -> tuple[tuple[int, int, int], int]:
    """(frame shape, extras per step) of a Doom env, from its settings."""
    from drl.envs.doom.settings import settings_from_config

    settings = settings_from_config(env_cfg)
    return (settings.frame_channels, settings.obs_height, settings.obs_width), len(settings.game_variable_names())


def task_replay(spec: dict) -> dict:
    """Bytes per transition of the buffers the configs allocate (tensors are zero-filled lazily; nothing is
    touched here, the sizes are those of the allocated storage)."""
    from drl import config
    from drl.envs.atari_config import AtariEnvConfig
    from drl.envs.doom.config import DoomEnvConfig
    from drl.replay import ReplayBuffer

    out = {}
    for name, experiment, frames_of in (
        ("atari_84x84", "atari-pong", _atari_frames),
        ("doom_60x80", "doom-health-gathering", _doom_frames),
    ):
        cfg = config.load(experiment)
        env = cast(AtariEnvConfig | DoomEnvConfig, cfg.env)  # the experiments below are Atari and Doom
        frame_shape, num_extras = frames_of(env)
        capacity = spec.get("buffer") or cfg.replay.capacity
        sequences = (
            dict(
                length=cfg.replay.sequence_length,
                burn_in=cfg.replay.burn_in,
                overlap=cfg.replay.sequence_overlap,
                state_size=cfg.network.lstm_size,
                eta=cfg.replay.priority_eta,
            )
            if cfg.agent.algo == "drqn"
            else None
        )
        replay = ReplayBuffer(
            capacity,
            env.num_envs,
            frame_shape,
            env.frame_stack,
            num_extras,
            n_step=cfg.agent.n_step,
            gamma=cfg.agent.gamma,
            prioritized=cfg.replay.prioritized,
            sequences=sequences,
        )
        transitions = replay.storage.num_envs * replay.storage.capacity
        pieces = (replay.storage, replay.sampler, getattr(replay.sampler, "starts", None), replay.prioritizer)
        allocated = sum(_allocated_bytes(piece) for piece in pieces if piece is not None)
        out[name] = {
            "experiment": experiment,
            "transitions": transitions,
            "frame_shape": list(frame_shape),
            "frame_stack": env.frame_stack,
            "core_bytes": replay.nbytes(),
            "allocated_bytes": allocated,
            "bytes_per_transition": replay.nbytes() / transitions,
            "allocated_bytes_per_transition": allocated / transitions,
            "obs_bytes": int(env.frame_stack * frame_shape[0] * frame_shape[1] * frame_shape[2]),
        }
    if not spec.get("skip_sb3"):
        out["sb3"] = _sb3_replay_bytes(spec.get("buffer") or SB3_HP["buffer_size"])
    return out


def _sb3_replay_bytes(size: int) -> dict:
    try:
        import gymnasium as gym
        import numpy as np
        from stable_baselines3.common.buffers import ReplayBuffer as SB3Replay
    except ImportError:
        return {"skipped": "stable-baselines3 is not installed (pip install -e '.[bench]')"}
    out = {}
    for name, shape, actions in (("atari_84x84", (4, 84, 84), 6), ("doom_60x80", (4, 60, 80), 4)):
        for optimize in (False, True):
            buf = SB3Replay(
                size,
                gym.spaces.Box(0, 255, shape, np.uint8),
                gym.spaces.Discrete(actions),
                device="cpu",
                optimize_memory_usage=optimize,
                handle_timeout_termination=not optimize,
            )
            allocated = _allocated_bytes(buf)
            out[f"{name}{'_optimized' if optimize else ''}"] = {
                "transitions": size,
                "allocated_bytes": allocated,
                "bytes_per_transition": allocated / size,
            }
            del buf
    return out
