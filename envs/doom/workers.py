"""Doom worker processes: each runs the games of some env rows, writes their frames and game variables into a
shared-memory file and answers the parent through a pipe; the pool that owns the processes, pipes and that file.

A worker calls ``setpgid(0, 0)``: its process group (worker + ViZDoom engines) is killed as one on failure or close.
It stays in the parent's session: in a session of its own (``setsid()``) it is a scheduler autogroup of its own
(``/proc/sys/kernel/sched_autogroup_enabled``), and deathmatch games stepped 2.2x slower with two workers on an idle
2-core machine, 5-10x slower for one game beside other trainings (docs/log.md, 2026-12-06).
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import re
import signal
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from drl import processes
from drl.envs.doom.game import DoomGame
from drl.envs.doom.settings import DoomSettings


@dataclass(frozen=True)
class SharedLayout:
    """The shared-memory file: frames uint8 [n, c, h, w], then (64-byte aligned) extras and final extras,
    float32 [n, k] each, then the game-feature bits of each frame, uint8 [n]."""

    n: int
    c: int
    h: int
    w: int
    k: int

    @property
    def frame_bytes(self) -> int:
        return self.n * self.c * self.h * self.w

    @property
    def extras_offset(self) -> int:
        return (self.frame_bytes + 63) // 64 * 64

    @property
    def labels_offset(self) -> int:
        return self.extras_offset + 2 * self.n * max(self.k, 1) * 4

    @property
    def size(self) -> int:
        return self.labels_offset + self.n

    def views(self, buf) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """frames, extras, final extras, labels."""
        frames = np.frombuffer(buf, np.uint8, self.frame_bytes, 0).reshape(self.n, self.c, self.h, self.w)
        ex = np.frombuffer(buf, np.float32, 2 * self.n * max(self.k, 1), self.extras_offset)
        ex = ex.reshape(2, self.n, max(self.k, 1))[:, :, : self.k]
        return frames, ex[0], ex[1], np.frombuffer(buf, np.uint8, self.n, self.labels_offset)


def _engine_children() -> tuple[list[int], list[str]]:
    """PIDs and instance ids of the ViZDoom engine processes started by this process."""
    pids, ids = [], []
    for pid in processes.children(os.getpid()):
        argv = processes.cmdline(pid)
        if b"+viz_instance_id" in argv:
            pids.append(pid)
            ids.append(argv[argv.index(b"+viz_instance_id") + 1].decode())
    return pids, ids


def _remove_engine_files(instance_ids) -> None:
    for iid in instance_ids:
        if not re.fullmatch(r"[A-Za-z0-9]+", iid):
            continue
        for prefix in ("ViZDoomSM", "ViZDoomMQCtr", "ViZDoomMQDoom"):
            try:
                os.unlink(f"/dev/shm/{prefix}{iid}")
            except OSError:
                pass


def worker_main(
    conn, shm_path: str, layout: SharedLayout, slots: list[int], settings: DoomSettings, seeds: list[int], workdir: str
) -> None:
    """The games of env rows ``slots``, stepped one after the other. Commands: ("step", [a per game]),
    ("reset", [seed|None per game]), ("close",); one reply per command."""
    try:
        os.setpgid(0, 0)  # own process group (worker + engine), so the parent can kill both at once
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _term)
    # The engine is a child process: it must not inherit our pipe, or the parent would never see EOF on it
    # when this worker dies while the engine lives on.
    for fd_name in os.listdir("/proc/self/fd"):
        try:
            fd = int(fd_name)
            if fd > 2:
                os.set_inheritable(fd, False)
        except (ValueError, OSError):
            pass
    games: list[DoomGame] = []
    try:
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)  # the engine writes _vizdoom.ini and crash logs to the working directory
        fd = os.open(shm_path, os.O_RDWR)
        buf = mmap.mmap(fd, layout.size)
        os.close(fd)
        frames, extras, final_extras, labels = layout.views(buf)
        for slot, seed in zip(slots, seeds):
            games.append(DoomGame(settings, seed=seed))
            frames[slot], extras[slot] = games[-1].reset()
            labels[slot] = games[-1].labels
        engine_pids, engine_ids = _engine_children()
        conn.send(("ready", os.getpid(), engine_pids, engine_ids))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # parent gone
            cmd = msg[0]
            if cmd == "step":
                results = []
                for slot, game, action in zip(slots, games, msg[1]):
                    r = game.step(action)
                    if r.done:
                        final_extras[slot] = r.extras
                        frames[slot], extras[slot] = game.reset()
                    else:
                        frames[slot], extras[slot] = r.frame, r.extras
                    labels[slot] = game.labels
                    results.append((r.reward, r.native_reward, r.terminated, r.truncated, r.done, r.episode))
                conn.send(("ok", results))
            elif cmd == "reset":
                for slot, game, seed in zip(slots, games, msg[1]):
                    frames[slot], extras[slot] = game.reset(seed)
                    labels[slot] = game.labels
                conn.send(("ok",))
            elif cmd == "close":
                break
    except SystemExit:
        pass
    except BaseException as e:  # report, then exit: the parent restarts us or raises
        try:
            conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        except Exception:
            pass
    finally:
        for game in games:
            try:
                game.close()
            except Exception:
                pass
        try:
            conn.close()
        except Exception:
            pass


class WorkerPool:
    """Process handles, pipes and the shared-memory file; closed by DoomVectorEnv.close or at exit."""

    def __init__(self, n: int):
        self.procs: list[Any] = [None] * n
        self.conns: list[Any] = [None] * n
        self.engine_ids: list[list[str]] = [[] for _ in range(n)]
        self.shm_path: str | None = None
        self.closed = False

    def kill(self, i: int) -> None:
        p, c = self.procs[i], self.conns[i]
        if c is not None:
            try:
                c.close()
            except Exception:
                pass
        if p is not None:
            _kill_group(p)
            try:
                p.join(timeout=5)
            except Exception:
                pass
        _remove_engine_files(self.engine_ids[i])
        self.procs[i], self.conns[i], self.engine_ids[i] = None, None, []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for c in self.conns:  # ask everyone first (games close in parallel) ...
            if c is not None:
                try:
                    c.send(("close",))
                except Exception:
                    pass
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            if p is not None:
                p.join(timeout=max(0.0, deadline - time.monotonic()))
        for i in range(len(self.procs)):  # ... then make sure: kill the group (worker + engine)
            self.kill(i)
        if self.shm_path:
            try:
                os.unlink(self.shm_path)
            except OSError:
                pass


def _kill_group(p) -> None:
    pid = p.pid
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)  # the worker called setpgid(0, 0): its pgid is its pid
    except (ProcessLookupError, PermissionError, OSError):
        pass
    try:
        if p.is_alive():
            p.kill()
    except Exception:
        pass


def worker_context():
    """The multiprocessing context of the workers: forkserver (spawn where there is none)."""
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without forkserver
        return mp.get_context("spawn")
    # Workers fork from the server with this module (the worker entry point, numpy, the Doom settings) already
    # imported (only effective before the server starts; "__main__" is the default preload and stays).
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx
