"""``DoomVectorEnv``: N ViZDoom games in worker processes (``forkserver`` context), frames through shared memory,
honouring ``drl.vec_env``. A worker steps its games one after the other and answers once per vector step.

Semantics (see ``drl/vec_env.py`` for the contract):
- Death is a termination; the scenario's time limit is a truncation (bootstrap); other ends (basic's monster
  killed, my_way_home's / deadly_corridor's vest reached) are terminations.
- ViZDoom renders no frame after the action that ends an episode, so ``final_obs`` repeats the last observation
  the agent saw (the previous step's ``obs``); ``final_extras`` are the game variables read after that action.
- Deathmatch (bots): the agent respawns at once when killed; that step is ``terminated`` without ``reset``
  (like an Atari life loss), the episode (and ``return``) runs on to the time limit. With
  ``settings.reset_on_respawn`` that step also sets ``reset`` (a new life: recurrent state and frame stack start
  from zeros, the replay starts a new sequence), while the game and its episode report run on.
- Episode reports (``VecStep.episodes``): ``{"env", "return" (native whole-episode reward), "length" (agent
  steps)}`` plus the scenario measures: ``kills`` (KILLCOUNT), ``survival_tics`` (episode tics),
  ``success`` (1.0 if the episode ended neither by timeout nor by death), ``frags``/``deaths``/``minutes`` (deathmatch; minutes of game time).
- Worker failure (process gone, pipe closed, engine error, or no answer within ``step_timeout`` s): the worker's
  process group (worker + engines) is killed, a new worker with new games replaces it, a warning is logged and
  ``worker_restarts`` grows. The running episodes of its games are *dropped*: not reported in ``episodes``; the
  step reports ``dropped = True`` for them (replay stores no transition: the step has no result), with placeholder
  ``reward = 0``, ``reset = True``, ``truncated = True``, ``terminated = False`` and ``final_obs`` the last
  observation seen; ``obs`` is the new game's first frame stack.

Frame stacks are kept in the main process (newest frame last, zero-padded at episode start); workers write only
the newest frame. Game variables (``extras``, ``final_extras``) are the engine's values (health 0-100+, ammo
counts, ...) times ``settings.game_variable_scale`` (default 0.01, so health 100 reaches the agent as 1.0).
With ``settings.game_features`` (training targets of the auxiliary head) ``labels`` are the bits of the features in
view in the newest frame of ``obs`` (uint8 [N], ``envs/doom/labels.py``) and ``final_labels`` those of
``final_obs``'s newest frame (the last frame seen, so the previous step's ``labels``); None when off.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import multiprocessing as mp
import multiprocessing.connection
import os
import tempfile
import time
import uuid
import weakref
from typing import TYPE_CHECKING, cast

import numpy as np

from drl.envs.doom.game import summarize_episodes
from drl.envs.doom.settings import DoomSettings, settings_from_config
from drl.envs.doom.workers import SharedLayout, WorkerPool, worker_context, worker_main

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from drl.vec_env import VecStep

logger = logging.getLogger(__name__)


def _ready(pending: dict, deadline: float) -> list[mp.connection.Connection]:
    """The connections among ``pending``'s keys that have a message, waiting until ``deadline`` (time.monotonic)."""
    return cast(
        "list[mp.connection.Connection]",  # wait() returns some of the objects it is given
        mp.connection.wait(list(pending), timeout=max(0.0, deadline - time.monotonic())),
    )


class DoomVectorEnv:
    """N ViZDoom games in worker processes (``games_per_worker`` each) behind ``drl.vec_env.VectorEnv`` (see the
    module docstring)."""

    def __init__(
        self,
        settings: DoomSettings,
        num_envs: int,
        device="cpu",
        seed: int = 0,
        step_timeout: float = 10.0,
        init_timeout: float = 120.0,
        games_per_worker: int = 1,
    ):
        import torch

        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.settings = settings
        self.num_envs = int(num_envs)
        if int(games_per_worker) < 1:
            raise ValueError(f"games_per_worker must be >= 1, got {games_per_worker}")
        # worker w steps the games of env rows slots[w] in turn: fewer workers, fewer pipe round trips per step
        g = min(int(games_per_worker), self.num_envs)
        self.games_per_worker = g
        self._slots = [list(range(w, min(w + g, self.num_envs))) for w in range(0, self.num_envs, g)]
        self.num_workers = len(self._slots)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.step_timeout = float(step_timeout)
        self.init_timeout = float(init_timeout)
        actions = settings.action_set()
        self.action_names = list(actions.names)
        self.num_actions = len(self.action_names)
        self.game_variable_names = settings.game_variable_names()
        self.game_features = settings.game_features
        self.num_extras = len(self.game_variable_names)
        self.frame_stack = settings.frame_stack
        self.frames_per_step = settings.frame_skip  # emulator tics per agent step
        self.emulator_fps = 35  # Doom's tic rate (real-time video)
        self.frame_channels = settings.frame_channels
        self.obs_shape = (self.frame_stack * self.frame_channels, settings.obs_height, settings.obs_width)
        self.worker_restarts = 0
        self.episodes_dropped = 0  # running episodes lost with a failed worker (never reported)
        self._starts = 0
        self._layout = SharedLayout(
            self.num_envs, self.frame_channels, settings.obs_height, settings.obs_width, self.num_extras
        )
        self._pool = WorkerPool(self.num_workers)
        self._finalizer = weakref.finalize(self, self._pool.close)
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        path = os.path.join(shm_dir, f"drl_doom_{os.getpid()}_{uuid.uuid4().hex[:12]}")
        with open(path, "wb") as f:
            f.truncate(self._layout.size)
        self._pool.shm_path = path
        fd = os.open(path, os.O_RDWR)
        self._mmap = mmap.mmap(fd, self._layout.size)
        os.close(fd)
        self._frames, self._extras_np, self._final_extras_np, self._labels_np = self._layout.views(self._mmap)
        self._workdir = os.path.join(tempfile.gettempdir(), f"drl_vizdoom_{os.getuid()}")
        self._ctx = worker_context()
        try:
            self._start_workers(list(range(self.num_workers)))
        except BaseException:
            self.close()
            raise
        self._fresh = True  # workers just started their first episode
        # (pending pipes, failed workers) of a step sent but not yet collected
        self._in_flight: tuple[dict, dict[int, str]] | None = None
        self._stack = torch.zeros((self.num_envs, *self.obs_shape), dtype=torch.uint8)
        self._last_extras = torch.zeros((self.num_envs, self.num_extras), dtype=torch.float32)
        self._last_labels = torch.zeros(self.num_envs, dtype=torch.uint8)

    # -- worker management
    def _worker_seed(self, i: int) -> int:
        return (self.seed * 1_000_003 + i * 7_919 + self._starts * 104_729) % (2**31)

    def _start_workers(self, indices: list[int]) -> None:
        """Start workers ``indices`` (each runs the games of its env rows ``self._slots[w]``)."""
        pending = {}
        for i in indices:
            parent, child = self._ctx.Pipe(duplex=True)
            seeds = []
            for env in self._slots[i]:
                seeds.append(self._worker_seed(env))
                self._starts += 1
            p = self._ctx.Process(
                target=worker_main,
                name=f"doom-worker-{i}",
                daemon=True,
                args=(child, self._pool.shm_path, self._layout, self._slots[i], self.settings, seeds, self._workdir),
            )
            p.start()
            child.close()
            self._pool.procs[i], self._pool.conns[i] = p, parent
            pending[parent] = i
        deadline = time.monotonic() + self.init_timeout
        while pending:
            ready = _ready(pending, deadline)
            if not ready:
                raise RuntimeError(
                    f"Doom worker(s) {sorted(pending.values())} did not start within {self.init_timeout:.0f} s"
                )
            for c in ready:
                i = pending.pop(c)
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    code = self._pool.procs[i].exitcode
                    raise RuntimeError(f"Doom worker {i} died while starting (exit code {code})") from None
                if msg[0] != "ready":
                    raise RuntimeError(f"Doom worker {i} failed to start the game: {msg[1]}\n{msg[2]}")
                self._pool.engine_ids[i] = list(msg[3])

    def _restart(self, failed: dict[int, str]) -> None:
        for i, why in sorted(failed.items()):
            pid = self._pool.procs[i].pid if self._pool.procs[i] is not None else None
            self._pool.kill(i)
            self.worker_restarts += 1
            logger.warning(
                "Doom worker %d (pid %s) %s; restarting it with new games (their running episodes are "
                "dropped: VecStep.dropped, no transition stored)",
                i,
                pid,
                why,
            )
        last_error = None
        for _attempt in range(3):
            try:
                self._start_workers(sorted(failed))
                return
            except RuntimeError as e:
                last_error = e
                for i in failed:
                    self._pool.kill(i)
        raise RuntimeError(f"could not restart Doom worker(s) {sorted(failed)}: {last_error}")

    def _exchange(self, messages: list[tuple]) -> tuple[list, dict[int, str]]:
        """Send every worker its message, then collect all answers (the workers run in parallel).
        Replies and failures are indexed by worker."""
        return self._collect(*self._send(messages))

    def _send(self, messages: list[tuple]) -> tuple[dict, dict[int, str]]:
        failed: dict[int, str] = {}
        pending = {}
        for i, msg in enumerate(messages):
            c = self._pool.conns[i]
            try:
                c.send(msg)
                pending[c] = i
            except (OSError, EOFError, ValueError):
                failed[i] = "could not be reached (pipe closed)"
        return pending, failed

    def _collect(self, pending: dict, failed: dict[int, str]) -> tuple[list, dict[int, str]]:
        replies: list = [None] * self.num_workers
        deadline = time.monotonic() + self.step_timeout
        while pending:
            ready = _ready(pending, deadline)
            if not ready:
                for i in pending.values():
                    failed[i] = f"did not answer within {self.step_timeout:g} s"
                break
            for c in ready:
                i = pending.pop(c)
                try:
                    msg = c.recv()
                except (EOFError, OSError):
                    p = self._pool.procs[i]
                    p.join(timeout=0.5)
                    failed[i] = f"died (exit code {p.exitcode})"
                    continue
                if msg[0] == "error":
                    failed[i] = f"failed: {msg[1]}"
                    continue
                replies[i] = msg
        return replies, failed

    # -- contract
    def reset(self, seed: int | None = None) -> VecStep:
        import torch

        from drl.vec_env import VecStep

        self._check_open()
        if self._in_flight is not None:  # a step was sent and never collected: drain it first
            in_flight, self._in_flight = self._in_flight, None
            _, failed = self._collect(*in_flight)
            if failed:
                self._restart(failed)
        if not (self._fresh and seed is None):
            if seed is not None:
                self.seed = int(seed)
            msgs = [
                ("reset", [None if seed is None else (self.seed * 1_000_003 + i * 7_919) % (2**31) for i in slots])
                for slots in self._slots
            ]
            _, failed = self._exchange(msgs)
            if failed:
                self._restart(failed)
        self._fresh = False
        n, c = self.num_envs, self.frame_channels
        stack = torch.zeros((n, *self.obs_shape), dtype=torch.uint8)
        stack[:, -c:] = torch.from_numpy(self._frames.copy())
        self._stack = stack
        extras = torch.from_numpy(self._extras_np.copy())
        self._last_extras = extras
        self._last_labels = torch.from_numpy(self._labels_np.copy())
        dev = self.device
        false = torch.zeros(n, dtype=torch.bool, device=dev)
        return VecStep(
            obs=stack.to(dev),
            reward=torch.zeros(n, dtype=torch.float32, device=dev),
            terminated=false,
            truncated=false.clone(),
            reset=torch.ones(n, dtype=torch.bool, device=dev),
            extras=extras.to(dev) if self.num_extras else None,
            labels=self._last_labels.to(dev) if self.game_features else None,
        )

    def step(self, actions: torch.Tensor) -> VecStep:
        # drl.vec_env.AsyncStepping.step, not inherited: importing drl.vec_env would load torch into the workers
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: torch.Tensor) -> None:
        """Send each worker its games' actions; they step while the caller works until ``step_wait``."""
        import torch

        self._check_open()
        if self._in_flight is not None:
            raise RuntimeError("step_async() twice without step_wait()")
        self._fresh = False
        acts = [int(a) for a in torch.as_tensor(actions).reshape(-1).tolist()]  # plain ints for vizdoom
        if len(acts) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(acts)}")
        bad = [a for a in acts if not 0 <= a < self.num_actions]
        if bad:
            raise ValueError(f"Doom actions must be in [0, {self.num_actions}), got {bad[0]}")
        self._in_flight = self._send([("step", [acts[i] for i in slots]) for slots in self._slots])

    def step_wait(self) -> VecStep:
        import torch

        from drl.vec_env import VecStep

        self._check_open()
        if self._in_flight is None:
            raise RuntimeError("step_wait() without step_async()")
        in_flight, self._in_flight = self._in_flight, None
        replies, failed_workers = self._collect(*in_flight)
        if failed_workers:
            self._restart(failed_workers)
        failed = {i for w in failed_workers for i in self._slots[w]}
        n, c = self.num_envs, self.frame_channels
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        reset = np.zeros(n, bool)
        respawn_resets = self.settings.reset_on_respawn  # a deathmatch death (terminated, not done): a new life
        episodes = []
        for i in sorted(failed):
            truncated[i] = reset[i] = True
            self.episodes_dropped += 1
        for w, msg in enumerate(replies):
            if w in failed_workers:
                continue
            for i, (r, _native, term, trunc, done, episode) in zip(self._slots[w], msg[1]):
                reward[i], terminated[i], truncated[i], reset[i] = r, term, trunc, done or (term and respawn_resets)
                if episode is not None:
                    episodes.append({"env": i, **episode})
        episodes.sort(key=lambda ep: ep["env"])
        frames = torch.from_numpy(self._frames.copy())
        extras = torch.from_numpy(self._extras_np.copy())
        labels = torch.from_numpy(self._labels_np.copy())
        prev = self._stack
        if self.frame_stack == 1:
            stack = frames
        else:
            stack = torch.empty_like(prev)
            stack[:, :-c] = prev[:, c:]
            stack[:, -c:] = frames
        any_reset = bool(reset.any())
        final_extras = None
        if any_reset:
            idx = torch.from_numpy(np.nonzero(reset)[0])
            if self.frame_stack > 1:
                stack[idx, :-c] = 0
            final_extras = self._last_extras.clone()
            normal = [i for i in np.nonzero(reset)[0] if i not in failed]
            if normal:
                nidx = torch.as_tensor(normal)
                final_extras[nidx] = torch.from_numpy(self._final_extras_np[normal].copy())
        self._stack = stack
        self._last_extras = extras
        final_labels, self._last_labels = self._last_labels, labels  # final_obs is the last frame seen
        dev = self.device
        has_extras, has_labels = self.num_extras > 0, bool(self.game_features)
        return VecStep(
            obs=stack.to(dev),
            reward=torch.from_numpy(reward).to(dev),
            terminated=torch.from_numpy(terminated).to(dev),
            truncated=torch.from_numpy(truncated).to(dev),
            reset=torch.from_numpy(reset).to(dev),
            final_obs=prev.to(dev) if any_reset else None,
            extras=extras.to(dev) if has_extras else None,
            final_extras=final_extras.to(dev) if (final_extras is not None and has_extras) else None,  # any_reset
            episodes=episodes,
            dropped=torch.from_numpy(np.isin(np.arange(n), sorted(failed))).to(dev) if failed else None,
            labels=labels.to(dev) if has_labels else None,
            final_labels=final_labels.to(dev) if (any_reset and has_labels) else None,
        )

    def fault_counters(self) -> dict[str, int]:
        """Workers replaced so far and the running episodes lost with them (the module doc's worker failure)."""
        return {"worker_restarts": self.worker_restarts, "episodes_dropped": self.episodes_dropped}

    summarize_episodes = staticmethod(summarize_episodes)  # kd, frags_per_minute over evaluation episodes

    def _check_open(self) -> None:
        if self._pool.closed:
            raise RuntimeError("DoomVectorEnv is closed")

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        self._finalizer()  # runs _pool.close once (also registered for interpreter exit)
        # views into the mapping must go before the mapping can be closed
        if hasattr(self, "_frames"):  # set together in __init__; a second close() finds them gone
            del self._frames, self._extras_np, self._final_extras_np, self._labels_np
        m = getattr(self, "_mmap", None)
        if m is not None:
            try:
                m.close()
            except BufferError:
                pass
            del self._mmap

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def default_games_per_worker(num_envs: int, cores: int, bots: bool) -> int:
    """As many workers as cores (at most one game each when there are enough cores); with bots, one worker per two
    cores. A bots game's client waits on its engine while the engine runs, so two bots games stepping at once on
    two cores slow each other down: on an idle 2-core Xeon, 4 deathmatch games stepped at ~115 agent steps/s in two
    workers and 210-320 in one (docs/log.md, 2026-12-06)."""
    workers = max(1, cores // 2 if bots else cores)
    return -(-num_envs // workers)


def make_doom_env(
    cfg,
    *,
    num_envs: int,
    device,
    seed: int,
    evaluation: bool = False,
    max_frames: int | None = None,
    labels: tuple[str, ...] = (),
) -> DoomVectorEnv:
    """``env.kind: doom`` (settings: ``settings_from_config``); ``env.doom.games_per_worker`` defaults to spreading
    the games over the usable cores (``default_games_per_worker``). ``max_frames`` (``eval.max_frames``, in tics)
    caps the episodes' time limit, and sets one for scenarios without (defend_the_line). ``labels``: game features whose bits each step reports
    (``agent.aux.features``)."""
    from drl.runtime import cpu_count

    settings = settings_from_config(cfg)
    games_per_worker = cfg.doom.games_per_worker  # validated (>= 1) by the config
    if games_per_worker is None:
        games_per_worker = default_games_per_worker(num_envs, cpu_count(), settings.spec.bots)
    settings.max_tics = max_frames
    if labels:
        settings = dataclasses.replace(settings, game_features=tuple(labels))
    return DoomVectorEnv(settings, num_envs, device=device, seed=seed, games_per_worker=games_per_worker)
