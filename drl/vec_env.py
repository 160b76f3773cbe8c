"""The vector-env contract every world honours (Atari, Doom, torch-native, Gymnasium).

Conventions (N = number of envs stepping together):
- ``obs`` is on the training device, newest frame last, in one of two kinds: image worlds (Atari, Doom,
  torch-native, Gymnasium image spaces) give uint8 ``[N, C, H, W]``, ``C = frame_stack * frame_channels``; vector
  worlds (Gymnasium vector and Discrete spaces, e.g. CartPole) give float32 ``[N, frame_stack * D]``. Replay stores
  each kind in its own dtype. It keeps only the newest frame of each step and rebuilds stacks at sample time; a
  stack that would reach before an episode start is zero-padded (this is what ALE's own stack does at reset).
- ``extras`` are float32 ``[N, K]`` per-step inputs beside obs (Doom game variables), or ``None`` when ``K == 0``.
- ``labels`` (only from drl.envs built with ``labels=`` names, i.e. ``agent.aux.features``): uint8 ``[N]``, bit ``i`` set
  when game feature ``i`` is in view in the newest frame of obs. Training targets of an auxiliary head, never an
  input of the agent; ``None`` otherwise.
- Autoreset happens in the same step: on a step where ``reset[i]`` is true, ``obs[i]`` is already the first
  observation of env ``i``'s next episode and the last observation of the finished episode is ``final_obs[i]``.
  So no transition ever spans a reset.
- ``reward`` is the *learning* reward (clipped or shaped as configured). Reported scores are never this:
  whole-game native scores come out once per finished episode in ``episodes``.
- ``step(a)`` is ``step_async(a)`` then ``step_wait()``. Between the two the env steps on its own (ALE's C++ threads,
  Doom's worker processes) while the caller does other work, e.g. a learning update; envs that step in the
  caller's thread (torch-native) do all the work in ``step_wait``.
- ``terminated`` means "do not bootstrap" for learning (Atari counts a life loss here although the game goes on);
  ``truncated`` means "time limit: bootstrap"; ``reset`` means the env really started a new episode
  (game over or time limit). For most worlds ``reset == terminated | truncated``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from drl.errors import UserError
from drl.registry import ENV_KINDS, resolve


@dataclass
class VecStep:
    obs: torch.Tensor  # uint8 [N, C, H, W] (float32 [N, D] for vectors), on device, after autoreset
    reward: torch.Tensor  # float32 [N], learning reward
    terminated: torch.Tensor  # bool [N], no bootstrap (includes Atari life loss)
    truncated: torch.Tensor  # bool [N], time limit, bootstrap
    reset: torch.Tensor  # bool [N], a new episode started in this step
    final_obs: torch.Tensor | None = None  # as obs; rows valid where reset (None if no reset)
    extras: torch.Tensor | None = None  # float32 [N, K] or None
    final_extras: torch.Tensor | None = None
    # One dict per episode that ended in this step: {"env": i, "return": native whole-game score,
    # "length": agent steps, ...scenario measures such as "kills" or "survival_tics"}.
    episodes: list[dict] = field(default_factory=list)
    # bool [N] or None: envs whose step was lost (a crashed Doom worker restarted with a new game); their
    # ``reward`` and flags are placeholders, and replay stores no transition for them
    dropped: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # uint8 [N] game-feature bits of obs's newest frame, or None
    final_labels: torch.Tensor | None = None  # uint8 [N] those of final_obs's newest frame; rows valid where reset
    # The game's own colour screens, for videos only (``make_env(..., screens=True)``): host numpy uint8
    # [N, H, W, 3] of the frames behind ``obs`` / ``final_obs`` (``final_screen`` rows valid where reset; None
    # when the env cannot give the finished episode's last screen). Never given to the agent.
    screen: np.ndarray | None = None
    final_screen: np.ndarray | None = None


def unpack_labels(labels: torch.Tensor, num_features: int) -> torch.Tensor:
    """Label bits uint8 ``[...]`` -> float32 ``[..., num_features]`` of 0/1 (bit i -> column i)."""
    bits = torch.arange(num_features, device=labels.device)
    return ((labels.long().unsqueeze(-1) >> bits) & 1).float()


class VectorEnv(Protocol):
    num_envs: int
    num_actions: int
    frame_stack: int  # frames per observation
    frame_channels: int  # channels per frame (1 gray, 3 RGB)
    frames_per_step: int  # emulator frames per agent step (the frame skip; 1 for torch-native)
    # optional: ``emulator_fps``, the emulator's real-time frame rate (Atari 60, Doom 35) for videos
    num_extras: int  # K, 0 when there are no extra inputs
    device: torch.device
    action_names: list[str]

    def reset(self, seed: int | None = None) -> VecStep: ...  # reward/flags are zeros, reset all True
    def step(self, actions: torch.Tensor) -> VecStep: ...  # actions int64 [N] on any device
    def step_async(self, actions: torch.Tensor) -> None: ...  # start a step ...
    def step_wait(self) -> VecStep: ...  # ... and finish it
    def close(self) -> None: ...

    # optional, read through ``fault_counters`` and ``episode_summary`` below:
    # ``fault_counters() -> dict[str, int]``: counters of faults survived so far (Doom: ``worker_restarts``,
    #     ``episodes_dropped``), reported in the train rows;
    # ``summarize_episodes(episodes) -> dict``: measures over a list of finished episodes (``VecStep.episodes``)
    #     beyond the per-measure means, reported in the eval rows (Doom: ``kd``, ``frags_per_minute``).


def fault_counters(env) -> dict[str, int]:
    """``env.fault_counters()``, or {} for an env without it (one that never loses a game)."""
    counters = getattr(env, "fault_counters", None)
    return {} if counters is None else counters()


def episode_summary(env, episodes: list[dict]) -> dict:
    """``env.summarize_episodes(episodes)``, or {} for an env without it (or no env)."""
    summarize = getattr(env, "summarize_episodes", None)
    return {} if summarize is None else summarize(episodes)


class _SplitStepping(Protocol):
    def step_async(self, actions: torch.Tensor) -> None: ...
    def step_wait(self) -> VecStep: ...


class _WholeStepping(Protocol):
    _pending_actions: torch.Tensor | None

    def step(self, actions: torch.Tensor) -> VecStep: ...


class AsyncStepping:
    """``step`` for envs that implement ``step_async`` / ``step_wait``."""

    def step(self: _SplitStepping, actions: torch.Tensor) -> VecStep:
        self.step_async(actions)
        return self.step_wait()


class SyncStepping:
    """``step_async`` / ``step_wait`` for envs that step in the caller's thread (all the work is in ``step``)."""

    _pending_actions: torch.Tensor | None = None

    def step_async(self, actions: torch.Tensor) -> None:
        self._pending_actions = actions

    def step_wait(self: _WholeStepping) -> VecStep:
        actions, self._pending_actions = self._pending_actions, None
        if actions is None:
            raise RuntimeError("step_wait() without step_async()")
        return self.step(actions)


def make_env(
    cfg,
    device,
    seed: int,
    num_envs: int | None = None,
    evaluation: bool = False,
    max_frames: int | None = None,
    labels: tuple[str, ...] | list[str] = (),
    screens: bool = False,
):
    """A vector env of ``cfg.num_envs`` (or ``num_envs``) envs on ``device``, for any registered kind (``cfg`` is its
    ``env`` section). ``evaluation=True`` turns off learning-only signals (e.g. Atari's life loss as terminal);
    ``max_frames`` caps episodes (emulator frames). ``labels`` (``agent.aux.features``) asks for per-step
    game-feature bits (``VecStep.labels``); it is passed only when not empty, to kinds whose factory takes a
    ``labels`` argument (Doom). ``screens=True`` (videos) asks for the game's own colour screens
    (``VecStep.screen``) from kinds whose factory takes ``screens`` (Atari, Gym); see ``supports_screens``."""
    make = _factory(cfg.kind)
    extra: dict[str, tuple[str, ...] | bool] = {}
    if labels:
        if "labels" not in inspect.signature(make).parameters:
            labelling = [k for k in ENV_KINDS.names() if ENV_KINDS.get(k).check_features is not None]
            raise UserError(
                f"agent.aux.features needs game-feature labels, which env.kind '{cfg.kind}' does not "
                f"produce ({' and '.join(labelling)} {'does' if len(labelling) == 1 else 'do'}); "
                "set agent.aux.features=[]"
            )
        extra["labels"] = tuple(labels)
    if screens:
        if not supports_screens(cfg.kind):
            raise UserError(
                f"env.kind '{cfg.kind}' cannot record the game's own screen; record the agent's view "
                "instead (--video-view agent)"
            )
        extra["screens"] = True
    return make(
        cfg,
        num_envs=num_envs or cfg.num_envs,
        device=device,
        seed=seed,
        evaluation=evaluation,
        max_frames=max_frames,
        **extra,
    )


def supports_screens(kind: str) -> bool:
    """Whether env kind ``kind`` can give the game's own colour screens for videos (its factory takes ``screens``)."""
    return "screens" in inspect.signature(_factory(kind)).parameters


def _factory(kind: str):
    entry = ENV_KINDS.get(kind)
    entry.make = resolve(entry.make)  # registered lazily as "module:function"
    return entry.make
