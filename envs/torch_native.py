"""Torch-native vector environments: each step is a few batched tensor ops on one device.

Both worlds honour ``drl.vec_env`` exactly (N = ``num_envs``):
- ``obs`` / ``final_obs``: uint8 ``[N, 1, H, W]`` on ``device``, pixels 0 or 255; ``frame_stack = 1``,
  ``frame_channels = 1``, ``num_extras = 0`` (``extras`` is always ``None``).
- ``reward``: float32 ``[N]``; ``terminated`` / ``truncated`` / ``reset``: bool ``[N]`` with
  ``reset == terminated`` and ``truncated`` always False (no time limits; episodes have a fixed length).
- Same-step autoreset: where ``reset[i]``, ``obs[i]`` is the next episode's first frame and ``final_obs[i]``
  the finished one's last frame. ``final_obs`` is ``None`` on steps where no env reset.
- ``episodes``: one ``{"env": i, "return": float, "length": int}`` per episode ended in the step; the return is
  the plain sum of that episode's rewards (rewards are the native score, nothing is clipped).

Randomness comes only from the env's own ``torch.Generator`` on ``device`` (seeded by ``seed``; ``reset(seed)``
reseeds it), so a run is a pure function of the seed and the actions. ``get_state()`` returns a dict of tensors
(the generator's state under ``"rng"``) that ``set_state()`` restores, for exact checkpoint/resume.

All envs start together on ``reset()`` and every episode has the same length, so envs stay in lockstep.
The step path has no Python loop over envs and no numpy; the only host syncs are one ``nonzero`` per step and,
on steps where episodes end, one small copy to build ``episodes``. Actions are not range-checked (that would
need a sync); pass ints in ``[0, num_actions)``.
"""

from __future__ import annotations

import torch

from drl.vec_env import SyncStepping, VecStep

__all__ = ["CatchEnv", "MemoryEnv"]


def _as_device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class _TorchEnv(SyncStepping):
    """Shared machinery: generator, episode bookkeeping, autoreset, state dicts.

    Subclasses set ``_STATE`` (names of their per-env state tensors, stored as ``self._<name>``) and implement
    ``_begin(mask)`` (start new episodes where ``mask``), ``_advance(actions) -> (reward f32 [N], done bool [N])``
    and ``_render() -> uint8 [N, 1, H, W]``.
    """

    frame_stack = 1
    frame_channels = 1
    frames_per_step = 1  # no frame skip
    num_extras = 0
    num_actions: int
    action_names: list[str]
    _STATE: tuple[str, ...] = ()

    def __init__(self, num_envs: int, device: str | torch.device, seed: int):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.device = _as_device(device)
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(int(seed))
        self._ep_return = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        self._ep_length = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
        self._all = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)

    # -- subclass hooks ------------------------------------------------------------------------------------
    def _begin(self, mask: torch.Tensor) -> None:
        raise NotImplementedError

    def _advance(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _render(self) -> torch.Tensor:
        raise NotImplementedError

    # -- contract ------------------------------------------------------------------------------------------
    def _flags(self) -> torch.Tensor:
        return torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def reset(self, seed: int | None = None) -> VecStep:
        """Start a new episode in every env (reseeding the generator first if ``seed`` is given).

        Returns obs uint8 [N, 1, H, W], zero float32 reward, False terminated/truncated, True reset."""
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._begin(self._all)
        self._ep_return.zero_()
        self._ep_length.zero_()
        return VecStep(
            obs=self._render(),
            reward=torch.zeros(self.num_envs, dtype=torch.float32, device=self.device),
            terminated=self._flags(),
            truncated=self._flags(),
            reset=self._all.clone(),
        )

    def step(self, actions: torch.Tensor) -> VecStep:
        """Advance every env by one step; ``actions`` int [N] on any device. Autoresets in the same step."""
        a = torch.as_tensor(actions).to(device=self.device, dtype=torch.int64)
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {tuple(a.shape)}")
        reward, done = self._advance(a)
        self._ep_return += reward
        self._ep_length += 1
        final_obs = None
        episodes: list[dict] = []
        idx = done.nonzero().squeeze(1)  # the one per-step sync
        if idx.numel() > 0:
            final_obs = self._render()
            info = (
                torch.stack([idx.double(), self._ep_return[idx].double(), self._ep_length[idx].double()]).cpu().tolist()
            )
            episodes = [{"env": int(i), "return": float(r), "length": int(n)} for i, r, n in zip(*info)]
            self._begin(done)
            self._ep_return.masked_fill_(done, 0.0)
            self._ep_length.masked_fill_(done, 0)
        return VecStep(
            obs=self._render(),
            reward=reward,
            terminated=done,
            truncated=self._flags(),
            reset=done.clone(),
            final_obs=final_obs,
            episodes=episodes,
        )

    def close(self) -> None:
        pass

    def get_state(self) -> dict[str, torch.Tensor]:
        """Snapshot: cloned per-env state tensors, episode accumulators and the generator state (``"rng"``)."""
        state = {name: getattr(self, "_" + name).clone() for name in self._STATE}
        state["ep_return"] = self._ep_return.clone()
        state["ep_length"] = self._ep_length.clone()
        state["rng"] = self._gen.get_state()
        return state

    def set_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a ``get_state()`` snapshot (tensors may be on any device); shapes must match ``num_envs``."""
        for name in (*self._STATE, "ep_return", "ep_length"):
            cur = getattr(self, "_" + name)
            new = torch.as_tensor(state[name])
            if new.shape != cur.shape:
                raise ValueError(f"state[{name!r}] has shape {tuple(new.shape)}, expected {tuple(cur.shape)}")
            cur.copy_(new)
        self._gen.set_state(torch.as_tensor(state["rng"]).to("cpu", torch.uint8))


class CatchEnv(_TorchEnv):
    """Catch: a ball falls down a ``height x width`` image; a bottom-row paddle must be under it when it lands.

    obs uint8 [N, 1, height, width]: ball pixel 255 (starts in row 0 at a uniformly random column, falls one row
    per step), paddle pixels 255 (``paddle_width`` wide, bottom row, starts centred at column
    ``(width - paddle_width) // 2``). Actions: 0 LEFT, 1 STAY, 2 RIGHT (paddle moves first, clamped to the border,
    then the ball falls). When the ball reaches the bottom row (after ``height - 1`` steps) the episode
    terminates with reward +1 if the paddle covers the ball's column, else -1; every other step gives 0.
    ``final_obs`` shows the ball in the bottom row. Random policy: -0.6 on the default 10x5 board (the ball's
    column is uniform and independent of the paddle, so P(catch) = paddle_width / width); optimal: +1.
    State tensors: ball_row, ball_col, paddle_col (int64 [N]).
    """

    num_actions = 3
    action_names = ["LEFT", "STAY", "RIGHT"]
    _STATE = ("ball_row", "ball_col", "paddle_col")

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        height: int = 10,
        width: int = 5,
        paddle_width: int = 1,
    ):
        if height < 2 or width < 1 or not 1 <= paddle_width <= width:
            raise ValueError(f"bad catch size: height={height} width={width} paddle_width={paddle_width}")
        super().__init__(num_envs, device, seed)
        self.height, self.width, self.paddle_width = int(height), int(width), int(paddle_width)
        n, dev = self.num_envs, self.device
        self._paddle_start = (self.width - self.paddle_width) // 2
        self._ball_row = torch.zeros(n, dtype=torch.int64, device=dev)
        self._ball_col = torch.zeros(n, dtype=torch.int64, device=dev)
        self._paddle_col = torch.zeros(n, dtype=torch.int64, device=dev)
        self._rows = torch.arange(n, device=dev)
        self._paddle_offsets = torch.arange(self.paddle_width, device=dev)
        self._begin(self._all)

    def _begin(self, mask: torch.Tensor) -> None:
        # Always draw N columns (fixed RNG consumption per call, no sync on the mask).
        cols = torch.randint(0, self.width, (self.num_envs,), generator=self._gen, device=self.device)
        self._ball_col = torch.where(mask, cols, self._ball_col)
        self._ball_row.masked_fill_(mask, 0)
        self._paddle_col.masked_fill_(mask, self._paddle_start)

    def _advance(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._paddle_col = (self._paddle_col + actions - 1).clamp_(0, self.width - self.paddle_width)
        self._ball_row += 1
        done = self._ball_row >= self.height - 1
        caught = (self._ball_col >= self._paddle_col) & (self._ball_col < self._paddle_col + self.paddle_width)
        reward = torch.where(done, caught.float() * 2.0 - 1.0, 0.0)
        return reward, done

    def _render(self) -> torch.Tensor:
        h, w = self.height, self.width
        frame = torch.zeros(self.num_envs, h * w, dtype=torch.uint8, device=self.device)
        paddle = (h - 1) * w + self._paddle_col[:, None] + self._paddle_offsets  # [N, paddle_width]
        frame.scatter_(1, paddle, 255)
        frame[self._rows, self._ball_row * w + self._ball_col] = 255
        return frame.view(self.num_envs, 1, h, w)


class MemoryEnv(_TorchEnv):
    """Memory (T-maze cue task): remember a cue shown only in the first frame, act on it ``length - 1`` steps later.

    obs uint8 [N, 1, height, width] (default 5x5), pixels 0/255. Step 0 shows the cue, drawn uniformly per env:
    cue 0 = left column lit, cue 1 = right column lit. Steps 1..length-1 show the same "corridor" frame whatever
    the cue (only the centre pixel ``(height // 2, width // 2)`` lit); the last step, ``length - 1``, also lights the
    "junction" marker ``(0, width // 2)``, meaning "choose now". Actions: 0 LEFT, 1 RIGHT (no no-op action). Actions
    before the junction do nothing and give reward 0; the action taken on the junction frame ends the episode
    (terminated) with reward +1 if it equals the cue, else -1. Episodes last ``length`` steps (default 6).
    Since the junction frame is identical for both cues, any memoryless policy scores 0 on average (chance);
    a policy that remembers the cue scores +1. ``final_obs`` repeats the junction frame. With ``length == 1`` the
    single frame shows cue and junction marker together (a reactive task).
    State tensors: cue (int64 [N], 0/1), t (int64 [N], index of the frame being shown).
    """

    num_actions = 2
    action_names = ["LEFT", "RIGHT"]
    _STATE = ("cue", "t")

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        length: int = 6,
        height: int = 5,
        width: int = 5,
    ):
        if length < 1 or height < 2 or width < 3:
            raise ValueError(f"bad memory size: length={length} height={height} width={width}")
        super().__init__(num_envs, device, seed)
        self.length, self.height, self.width = int(length), int(height), int(width)
        n, dev = self.num_envs, self.device
        cues = torch.zeros(2, 1, height, width, dtype=torch.uint8, device=dev)
        cues[0, 0, :, 0] = 255
        cues[1, 0, :, width - 1] = 255
        corridor = torch.zeros(1, height, width, dtype=torch.uint8, device=dev)
        corridor[0, height // 2, width // 2] = 255
        junction = torch.zeros(1, height, width, dtype=torch.uint8, device=dev)
        junction[0, 0, width // 2] = 255
        self._cue_frames, self._corridor_frame, self._junction_marker = cues, corridor, junction
        self._cue = torch.zeros(n, dtype=torch.int64, device=dev)
        self._t = torch.zeros(n, dtype=torch.int64, device=dev)
        self._begin(self._all)

    def _begin(self, mask: torch.Tensor) -> None:
        cues = torch.randint(0, 2, (self.num_envs,), generator=self._gen, device=self.device)
        self._cue = torch.where(mask, cues, self._cue)
        self._t.masked_fill_(mask, 0)

    def _advance(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        done = self._t >= self.length - 1
        reward = torch.where(done, (actions == self._cue).float() * 2.0 - 1.0, 0.0)
        self._t += 1
        return reward, done

    def _render(self) -> torch.Tensor:
        t = self._t.clamp(max=self.length - 1)[:, None, None, None]  # terminal frame = junction
        base = torch.where(t == 0, self._cue_frames[self._cue], self._corridor_frame)
        return torch.where(t == self.length - 1, torch.maximum(base, self._junction_marker), base)


def make_catch_env(
    cfg, *, num_envs: int, device, seed: int, evaluation: bool = False, max_frames: int | None = None
) -> CatchEnv:
    """``env.kind: catch`` (episodes have a fixed length: no time limit applies)."""
    return CatchEnv(num_envs, device=device, seed=seed, height=cfg.size)


def make_memory_env(
    cfg, *, num_envs: int, device, seed: int, evaluation: bool = False, max_frames: int | None = None
) -> MemoryEnv:
    """``env.kind: memory`` (episodes last ``cfg.size`` steps)."""
    return MemoryEnv(num_envs, device=device, seed=seed, length=cfg.size)
