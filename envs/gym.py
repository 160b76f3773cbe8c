"""Any Gymnasium environment with Discrete actions, stepped by Gymnasium's own vector API, behind drl's contract.

``env.kind: gym`` with ``env.id`` (any registered id: ``CartPole-v1``, ``MinAtar/Breakout-v1``, a user's own) and
``env.kwargs`` (passed to ``gymnasium.make``). ``env.vectorization``: ``sync`` (all envs in this process) or
``async`` (one subprocess each, stepping while the learner updates). Gymnasium autoresets in the same step
(``AutoresetMode.SAME_STEP``), so a finished episode's last observation arrives as ``final_obs``, as the contract asks.

Observations become one of two kinds, each stored in replay in its own dtype:
- images: uint8 or bool ``Box`` of rank 2 or 3 -> uint8 ``[C, H, W]`` (Gymnasium's ``[H, W, C]`` is transposed;
  rank 2 gets one channel; bool pixels become 0 / 255), for the CNN encoders;
- vectors: any other ``Box`` -> float32 ``[D]`` (flattened), and ``Discrete`` -> one-hot float32, for ``mlp``.
``frame_stack`` stacks the last observations along the first axis (zeros before an episode's start).
Episode reports carry the env's own (unscaled) return and length. One agent step is one env step.
"""

from __future__ import annotations

import importlib
from typing import cast

import numpy as np
import torch

from drl.config import ConfigError
from drl.runtime import to_device
from drl.vec_env import VecStep

# namespaces whose package registers its ids only when asked: namespace -> (module, function, pip extra)
_NAMESPACE_HOOKS = {"MinAtar": ("minatar.gym", "register_envs", "minatar")}


def _register_namespace(env_id: str) -> None:
    import gymnasium as gym

    namespace = env_id.split("/", 1)[0] if "/" in env_id else None
    if namespace not in _NAMESPACE_HOOKS or env_id in gym.registry:
        return
    module, function, extra = _NAMESPACE_HOOKS[namespace]
    try:
        getattr(importlib.import_module(module), function)()
    except ImportError:
        raise ConfigError(
            f"env.id '{env_id}' needs the {namespace} package; install it with pip install -e '.[{extra}]'"
        ) from None


def observation_layout(space) -> tuple[str, tuple[int, ...]]:
    """("image", (C, H, W)) or ("vector", (D,)) for a Gymnasium observation space; anything else is an error."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return "vector", (int(space.n),)
    if isinstance(space, spaces.Box):
        shape = tuple(space.shape)
        if space.dtype in (np.uint8, np.bool_) and len(shape) in (2, 3):
            if len(shape) == 2:
                return "image", (1, *shape)
            channels_first = shape[0] <= 4 < shape[-1]  # Gymnasium's images are [H, W, C] unless clearly not
            return "image", shape if channels_first else (shape[2], shape[0], shape[1])
        return "vector", (int(np.prod(shape)),)
    raise ConfigError(
        f"observation space {space} is not supported (env.id); drl takes Box images or vectors and "
        "Discrete observations: wrap the env with a gymnasium ObservationWrapper"
    )


class GymVecEnv:
    """``gymnasium.vector`` env -> ``drl.vec_env`` contract (obs as torch tensors on ``device``)."""

    frames_per_step = 1
    num_extras = 0

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: torch.device,
        seed: int = 0,
        kwargs: dict | None = None,
        vectorization: str = "sync",
        frame_stack: int = 1,
        max_episode_steps: int | None = None,
        screens: bool = False,
    ):
        import gymnasium as gym
        from gymnasium import spaces

        _register_namespace(env_id)
        if env_id not in gym.registry:
            import difflib

            close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
            raise ConfigError(
                f"unknown Gymnasium id '{env_id}' (env.id); "
                + (f"did you mean {', '.join(close)}? " if close else "")
                + "register it first (a module in `imports` that calls gymnasium.register)"
            )
        make_kwargs = dict(kwargs or {})
        if max_episode_steps is not None:
            make_kwargs["max_episode_steps"] = max_episode_steps
        self.screens = screens  # videos: each env's own render() after every step (not the finished episode's last)
        if screens:
            make_kwargs["render_mode"] = "rgb_array"
        # what make_vec builds for vectorization sync / async (typed as the VectorEnv base, which has no call())
        self.vector = cast(
            "gym.vector.SyncVectorEnv | gym.vector.AsyncVectorEnv",
            gym.make_vec(
                env_id,
                num_envs=num_envs,
                vectorization_mode=vectorization,
                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                **make_kwargs,
            ),
        )
        action_space = self.vector.single_action_space
        if not isinstance(action_space, spaces.Discrete):
            self.vector.close()
            raise ConfigError(
                f"env.id '{env_id}' has action space {action_space}; drl's agents take Discrete "
                "actions only (discretize it with a gymnasium ActionWrapper)"
            )
        self.obs_kind, frame_shape = observation_layout(self.vector.single_observation_space)
        self.num_envs, self.device, self.frame_stack = num_envs, torch.device(device), frame_stack
        self.num_actions = int(action_space.n)
        self.action_start = int(action_space.start)
        self.action_names = [f"action_{i}" for i in range(self.num_actions)]
        self.frame_channels = frame_shape[0]
        self.frame_shape = frame_shape
        self._space = self.vector.single_observation_space
        self._stack = torch.zeros(
            num_envs,
            frame_stack * frame_shape[0],
            *frame_shape[1:],
            dtype=torch.uint8 if self.obs_kind == "image" else torch.float32,
            device=self.device,
        )
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self._seed = seed
        self._pending: np.ndarray | None = None

    # ---------------------------------------------------------------- observations
    def _frames(self, obs) -> torch.Tensor:
        """A batch of raw observations [N, ...] -> frames [N, *frame_shape] on the device."""
        from gymnasium import spaces

        obs = np.asarray(obs)
        if isinstance(self._space, spaces.Discrete):
            onehot = np.zeros((len(obs), self.frame_shape[0]), dtype=np.float32)
            onehot[np.arange(len(obs)), obs.astype(np.int64) - int(self._space.start)] = 1.0
            return to_device(torch.from_numpy(onehot), self.device)
        if self.obs_kind == "vector":
            return to_device(torch.from_numpy(obs.reshape(len(obs), -1).astype(np.float32)), self.device)
        if obs.dtype == np.bool_:
            obs = obs.astype(np.uint8) * 255
        if obs.ndim == 3:  # [N, H, W]
            obs = obs[:, None]
        elif tuple(obs.shape[1:]) != self.frame_shape:  # [N, H, W, C] -> [N, C, H, W]
            obs = obs.transpose(0, 3, 1, 2)
        return to_device(torch.from_numpy(np.ascontiguousarray(obs)), self.device)

    def _push(self, stack: torch.Tensor, frames: torch.Tensor, restart: torch.Tensor | None) -> torch.Tensor:
        """Shift ``frames`` in as the newest; rows where ``restart`` begin from zeros (an episode start)."""
        c = self.frame_shape[0]
        if self.frame_stack == 1:
            return frames.clone()
        older = stack[:, c:]
        if restart is not None:
            older = older * (~restart).view(-1, *([1] * (older.dim() - 1))).to(older.dtype)
        return torch.cat([older, frames], dim=1)

    # ---------------------------------------------------------------- the contract
    def reset(self, seed: int | None = None) -> VecStep:
        obs, _ = self.vector.reset(seed=self._seed if seed is None else seed)
        self._returns[:] = 0
        self._lengths[:] = 0
        n = self.num_envs
        self._stack = self._push(
            torch.zeros_like(self._stack), self._frames(obs), torch.ones(n, dtype=torch.bool, device=self.device)
        )
        zeros = torch.zeros(n, dtype=torch.bool, device=self.device)
        return VecStep(
            obs=self._stack,
            reward=torch.zeros(n, device=self.device),
            terminated=zeros,
            truncated=zeros.clone(),
            reset=torch.ones(n, dtype=torch.bool, device=self.device),
            screen=self._screens(),
        )

    def _screens(self) -> np.ndarray | None:
        """uint8 [N, H, W, 3] from each env's ``render()`` (``render_mode="rgb_array"``), or None when off."""
        if not self.screens:
            return None
        return np.stack([np.asarray(frame, dtype=np.uint8)[..., :3] for frame in self.vector.call("render")])

    def step_async(self, actions: torch.Tensor) -> None:
        env_actions = actions.detach().cpu().numpy().astype(np.int64) + self.action_start
        if hasattr(self.vector, "step_async"):
            self.vector.step_async(env_actions)
        self._pending = env_actions

    def step_wait(self) -> VecStep:
        if self._pending is None:
            raise RuntimeError("step_wait() without step_async()")
        actions, self._pending = self._pending, None
        if hasattr(self.vector, "step_wait"):
            obs, reward, terminated, truncated, info = self.vector.step_wait()
        else:
            obs, reward, terminated, truncated, info = self.vector.step(actions)
        reward = np.asarray(reward, dtype=np.float64)
        done = np.logical_or(terminated, truncated)
        self._returns += reward
        self._lengths += 1
        episodes = [
            {"env": int(i), "return": float(self._returns[i]), "length": int(self._lengths[i])}
            for i in np.nonzero(done)[0]
        ]
        self._returns[done] = 0
        self._lengths[done] = 0
        reset = torch.from_numpy(done).to(self.device)
        final_obs = None
        if done.any():  # same-step autoreset: obs[i] already starts the next episode, info holds the last one
            final = np.stack([info["final_obs"][i] if done[i] else obs[i] for i in range(self.num_envs)])
            final_obs = self._push(self._stack, self._frames(final), None)
        self._stack = self._push(self._stack, self._frames(obs), reset)
        return VecStep(
            obs=self._stack,
            reward=torch.from_numpy(reward.astype(np.float32)).to(self.device),
            terminated=torch.from_numpy(np.asarray(terminated, dtype=bool)).to(self.device),
            truncated=torch.from_numpy(np.asarray(truncated & ~terminated, dtype=bool)).to(self.device),
            reset=reset,
            final_obs=final_obs,
            episodes=episodes,
            screen=self._screens(),
        )

    def step(self, actions: torch.Tensor) -> VecStep:
        self.step_async(actions)
        return self.step_wait()

    def close(self) -> None:
        self.vector.close()


def make_gym_env(
    cfg,
    *,
    num_envs: int,
    device,
    seed: int,
    evaluation: bool = False,
    max_frames: int | None = None,
    screens: bool = False,
) -> GymVecEnv:
    """``env.kind: gym``. In evaluation ``max_frames`` (agent steps here) caps episodes that have a longer limit
    or none."""
    limit = cfg.max_episode_steps
    if evaluation and max_frames:
        import gymnasium as gym

        _register_namespace(cfg.id)
        registered = gym.registry[cfg.id].max_episode_steps if cfg.id in gym.registry else None
        own = limit or registered
        limit = min(own, max_frames) if own else max_frames
    return GymVecEnv(
        cfg.id,
        num_envs,
        device,
        seed=seed,
        kwargs=cfg.kwargs,
        vectorization=cfg.vectorization,
        frame_stack=cfg.frame_stack,
        max_episode_steps=limit,
        screens=screens,
    )
