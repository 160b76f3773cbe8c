"""Atari through ale-py's C++ vector env, standard DQN protocol, behind drl's vector-env contract.

ALE does: 30 no-op starts, frame skip 4 with max-pooling of the last two frames, 84x84 grayscale, 4-frame stack
(zero-padded at reset), fire on reset, the 108,000-frame cap, sticky actions, same-step autoreset.
This wrapper adds, for learning only: life loss as terminal (the game goes on; detected from ``lives``) and reward
clipping to {-1, 0, 1}; reported episode returns are whole-game, unclipped scores. Optional flicker (each frame
blanked with probability p) is applied on the device.

``screens=True`` (videos) runs a second ALE vector env in lockstep: same games, seeds and actions, so the same
trajectories (checked every step), but colour 210x160 frames without the stack. ALE is deterministic given its seed,
so this shows the game's own screen of exactly the episodes the agent plays (max-pooled over the last two emulator
frames, as the agent's frames are; flicker, an input corruption, is not drawn on it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from drl.runtime import to_device
from drl.vec_env import AsyncStepping, VecStep


def atari_games() -> list[str]:
    import ale_py.roms

    return sorted(ale_py.roms.get_all_rom_ids())


class AtariVecEnv(AsyncStepping):
    frame_channels = 1
    num_extras = 0
    emulator_fps = 60  # the Atari 2600's frame rate (real-time video)

    def __init__(
        self,
        game: str,
        num_envs: int,
        device: torch.device,
        seed: int = 0,
        frame_skip: int = 4,
        frame_stack: int = 4,
        sticky_actions: float = 0.0,
        noop_max: int = 30,
        life_loss_terminal: bool = True,
        clip_rewards: bool = True,
        max_episode_frames: int = 108_000,
        flicker: float = 0.0,
        num_threads: int = 0,
        screens: bool = False,
    ):
        from ale_py.vector_env import AtariVectorEnv
        from gymnasium.spaces import Discrete

        self.num_envs, self.device, self.frame_stack = num_envs, torch.device(device), frame_stack
        self.frames_per_step = frame_skip  # emulator frames per agent step
        self.life_loss_terminal, self.clip_rewards, self.flicker = life_loss_terminal, clip_rewards, flicker
        common: dict[str, Any] = dict(
            num_threads=num_threads,
            repeat_action_probability=sticky_actions,
            max_num_frames_per_episode=max_episode_frames,
            autoreset_mode="SameStep",
            frameskip=frame_skip,
            maxpool=True,
            noop_max=noop_max,
            episodic_life=False,
            reward_clipping=False,
            use_fire_reset=True,
        )
        self.env = AtariVectorEnv(
            game, num_envs, img_height=84, img_width=84, grayscale=True, stack_num=frame_stack, **common
        )
        # the same games in colour at full size, stepped with the same actions (videos only)
        self.screen_env = (
            AtariVectorEnv(game, num_envs, img_height=210, img_width=160, grayscale=False, stack_num=1, **common)
            if screens
            else None
        )
        action_space = self.env.single_action_space
        assert isinstance(action_space, Discrete)  # ALE's actions: indices into the game's action set
        self.num_actions = int(action_space.n)
        self.action_names = [f"action_{i}" for i in range(self.num_actions)]
        self.seed = seed
        self.flicker_rng = torch.Generator(device=self.device).manual_seed(seed + 7919)
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._lives = np.zeros(num_envs, dtype=np.int64)
        self._in_flight = False

    def _obs(self, obs: np.ndarray, keep: torch.Tensor | None = None) -> torch.Tensor:
        out = to_device(torch.from_numpy(obs), self.device)
        if keep is not None:
            out = out * keep[:, :, None, None].to(torch.uint8)
        return out

    def _flicker_step(self, reset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each frame is blanked with probability p, once: the keep-mask history shifts with the frame stack, so
        a frame looks the same in every stack that holds it (and in replay, which keeps only the newest)."""
        n = self.num_envs
        draw = lambda: torch.rand(n, generator=self.flicker_rng, device=self.device) >= self.flicker  # noqa: E731
        final = torch.cat([self._keep[:, 1:], draw()[:, None]], dim=1)
        if reset is None:
            return final, final
        fresh = torch.ones_like(final)  # older frames of a new episode are zero padding anyway
        fresh[:, -1] = draw()
        return torch.where(reset[:, None], fresh, final), final

    def reset(self, seed: int | None = None) -> VecStep:
        seed = self.seed if seed is None else seed
        if self._in_flight:  # collect a step that was sent and never received before resetting
            self.env.recv()
            if self.screen_env is not None:
                self.screen_env.recv()
            self._in_flight = False
        obs, info = self.env.reset(seed=seed)
        screen = self.screen_env.reset(seed=seed)[0][:, -1] if self.screen_env is not None else None
        self._returns[:], self._lengths[:] = 0, 0
        self._lives = np.asarray(info["lives"]).copy()
        n = self.num_envs
        keep = None
        if self.flicker > 0:
            self._keep = torch.ones(n, self.frame_stack, dtype=torch.bool, device=self.device)
            keep, _ = self._flicker_step(torch.ones(n, dtype=torch.bool, device=self.device))
            self._keep = keep
        false = torch.zeros(n, dtype=torch.bool, device=self.device)
        return VecStep(
            obs=self._obs(obs, keep),
            reward=torch.zeros(n, device=self.device),
            terminated=false,
            truncated=false.clone(),
            reset=torch.ones(n, dtype=torch.bool, device=self.device),
            screen=screen,
        )

    def step_async(self, actions: torch.Tensor) -> None:
        """ALE's threads step the games; ``step_wait`` collects (the GIL is free meanwhile)."""
        if self._in_flight:
            raise RuntimeError("step_async() twice without step_wait()")
        ale_actions = actions.cpu().numpy().astype(np.int32)
        self.env.send(ale_actions)
        if self.screen_env is not None:
            self.screen_env.send(ale_actions)
        self._in_flight = True

    def step_wait(self) -> VecStep:
        if not self._in_flight:  # ALE's recv would wait forever
            raise RuntimeError("step_wait() without step_async()")
        obs, reward, terminated, truncated, info = self.env.recv()
        screen = final_screen = None
        if self.screen_env is not None:
            screen, screen_reward, screen_terminated, _, screen_info = self.screen_env.recv()
            if not (np.array_equal(screen_reward, reward) and np.array_equal(screen_terminated, terminated)):
                raise RuntimeError("Atari screen env went out of step with the agent's env")
            screen = screen[:, -1]
            final_screen = screen_info["final_obs"][:, -1] if "final_obs" in screen_info else None
        self._in_flight = False
        reward = np.asarray(reward, dtype=np.float64)
        reset = terminated | truncated
        self._returns += reward
        self._lengths += 1
        lives = np.asarray(info["lives"])
        learn_terminal = terminated.copy()
        if self.life_loss_terminal:
            learn_terminal |= (lives < self._lives) & ~reset
        self._lives = lives.copy()
        episodes = []
        for i in np.nonzero(reset)[0]:
            episodes.append({"env": int(i), "return": float(self._returns[i]), "length": int(self._lengths[i])})
            self._returns[i], self._lengths[i] = 0.0, 0
        learn_reward = np.sign(reward) if self.clip_rewards else reward
        dev = self.device
        keep = keep_final = None
        if self.flicker > 0:
            keep, keep_final = self._flicker_step(torch.as_tensor(reset, device=dev))
            self._keep = keep
        final_obs = self._obs(info["final_obs"], keep_final) if reset.any() else None
        return VecStep(
            obs=self._obs(obs, keep),
            reward=torch.as_tensor(learn_reward, dtype=torch.float32, device=dev),
            terminated=torch.as_tensor(learn_terminal, device=dev),
            truncated=torch.as_tensor(truncated & ~terminated, device=dev),
            reset=torch.as_tensor(reset, device=dev),
            final_obs=final_obs,
            episodes=episodes,
            screen=screen,
            final_screen=final_screen,
        )

    def close(self) -> None:
        self.env.close()
        if self.screen_env is not None:
            self.screen_env.close()


def make_atari_env(
    cfg,
    *,
    num_envs: int,
    device: torch.device,
    seed: int,
    evaluation: bool = False,
    max_frames: int | None = None,
    screens: bool = False,
) -> AtariVecEnv:
    """``env.kind: atari``; an unknown ``env.game`` is a one-line error naming the closest ROMs."""
    import difflib

    from drl.config import ConfigError

    games = atari_games()
    if cfg.game not in games:
        close = difflib.get_close_matches(cfg.game, games, n=3)
        raise ConfigError(
            f"unknown Atari game '{cfg.game}' (env.game); "
            + (f"did you mean {', '.join(close)}?" if close else "use an ale-py ROM name like pong")
        )
    return AtariVecEnv(
        cfg.game,
        num_envs,
        device,
        seed=seed,
        frame_skip=cfg.frame_skip,
        frame_stack=cfg.frame_stack,
        sticky_actions=cfg.sticky_actions,
        noop_max=cfg.noop_max,
        life_loss_terminal=cfg.life_loss_terminal and not evaluation,
        clip_rewards=cfg.clip_rewards,
        max_episode_frames=max_frames or cfg.max_episode_frames,
        flicker=cfg.flicker,
        num_threads=cfg.num_threads,
        screens=screens,
    )
