"""The learner of a distributed run: prioritized replay fed by the collectors' chunks, updates on the training
device, weights published through the Ray object store, and the usual metrics, evaluation and checkpoints. The
replay lives in this process or, with ``distributed.replay: actor``, in its own actor (``replay_server``).

``Learner`` owns a ``drl.learner_core.LearnerCore``, as the single-process ``drl.loop.Trainer`` does: the same
learn step, target sync, logging, evaluation, checkpoints and ``eval.stop_at``; its loop stores chunks where the
Trainer steps envs. The collectors' N x E envs are one replay stream each (collector i owns streams
``i*E .. i*E+E-1``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from drl import runtime
from drl.agent import EnvSpec, make_agent
from drl.checkpoint import CheckpointError
from drl.config import Config
from drl.distributed.chunk import ChunkInfo, apply_to_replay
from drl.distributed.cluster import Cluster, CollectorPool, require_ray
from drl.distributed.replay_server import RemoteReplay
from drl.errors import UserError
from drl.learner_core import LearnerCore, Runtime, replay_arguments, set_up_runtime
from drl.loop import StopRequested, transitions_per_sample
from drl.replay import ReplayBuffer, build_replay

if TYPE_CHECKING:  # ray is imported where it is used
    from ray import ObjectRef


class Learner:
    """A distributed training run (``distributed.collectors > 0``); used like ``Trainer``::

        with Learner(cfg, run_dir) as learner:
            result = learner.run()   # {"env_steps", "interrupted", "signal", "eval"}

    ``cfg`` is not changed: the learner trains on a copy (``self.cfg``, prioritized replay with
    ``distributed.prioritized``), which is the config to write to config.yaml.
    """

    def __init__(self, cfg: Config, run_dir: Path, resume_from: dict | None = None, init_from=None):
        require_ray(cfg.distributed.address)
        cfg = self.cfg = cfg.model_copy(deep=True)
        dist = cfg.distributed
        if dist.prioritized:
            cfg.replay.prioritized = True  # Ape-X / R2D2
        rt = set_up_runtime(cfg)
        self.device, self.bf16, self.threads = rt.device, rt.bf16, rt.threads
        self.keep_freed_memory = rt.keep_freed_memory
        self.cluster = Cluster(dist, runtime.cpu_count())
        self.pool: CollectorPool
        self.replay: ReplayBuffer | RemoteReplay
        try:  # a failure below must not leave actors or a local cluster behind
            env_steps = 0 if resume_from is None else resume_from["counters"]["env_steps"]
            self.pool = CollectorPool(cfg, Path(run_dir), env_steps)  # a resumed run's collectors play new episodes
            self._set_up(rt, Path(run_dir), resume_from, init_from)
        except BaseException:
            if hasattr(self, "pool"):
                self.pool.close()
            replay = getattr(self, "replay", None)
            if isinstance(replay, RemoteReplay):
                replay.close()
            self.cluster.shutdown()
            raise
        self.core.open_metrics(resumed=resume_from is not None)
        self.counters = self.core.counters
        self.incarnations = [info["incarnation"] for info in self.pool.infos]
        self.weights: list = []  # [ObjectRef] of the newest published weights
        self.version = -1  # learner updates at that publication
        self.published = 0

    def _set_up(self, rt: Runtime, run_dir: Path, resume_from: dict | None, init_from) -> None:
        """Agent, replay (one stream per collector env) and the core, from what the collectors report."""
        cfg, info = self.cfg, self.pool.infos[0]
        E = info["num_envs"]
        self.num_streams = cfg.distributed.collectors * E
        self.spec = EnvSpec(
            tuple(info["obs_shape"]), getattr(torch, info["obs_dtype"]), info["num_actions"], info["num_extras"]
        )
        self.streams = [np.arange(i * E, (i + 1) * E) for i in range(cfg.distributed.collectors)]
        self.chunk_env_steps = E * info["chunk_vector_steps"]  # agent steps per chunk (all collectors alike)
        self.agent = make_agent(cfg, self.spec, rt.device, rt.bf16, rt.generator)
        self.replay = self._make_replay(info["chunk_vector_steps"], info["frame_stack"])
        self.restarts = 0
        if resume_from is not None:
            saved = resume_from.get("replay")
            if saved is not None and saved["frames"].shape[0] != self.num_streams:
                raise CheckpointError(
                    f"the checkpoint's replay holds {saved['frames'].shape[0]} env streams, this "
                    f"run has {self.num_streams} (collectors x envs); resume with the config the "
                    "run was started with"
                )
            self.restarts = resume_from.get("distributed", {}).get("collector_restarts", 0)
        self.core = LearnerCore(
            cfg,
            run_dir,
            rt,
            self.spec,
            self.agent,
            self.replay,
            info["frames_per_step"],
            self._checkpoint_extras,
            resume_from,
            init_from,
        )

    def _make_replay(self, chunk_vector_steps: int, frame_stack: int) -> ReplayBuffer | RemoteReplay:
        cfg, streams = self.cfg, self.num_streams
        kwargs, sequences = replay_arguments(cfg, self.spec, self.agent.sampler, self.device, streams, frame_stack)
        per_stream = cfg.replay.capacity // streams
        if per_stream < 4 * chunk_vector_steps:
            raise UserError(
                f"replay.capacity={cfg.replay.capacity} leaves {per_stream} slots to each of the "
                f"{streams} env streams, under 4 chunks of {chunk_vector_steps} steps; raise "
                "replay.capacity or lower distributed.chunk_steps or distributed.collectors"
            )
        if cfg.distributed.replay == "actor":
            return RemoteReplay(kwargs, sequences)
        return build_replay(kwargs, sequences)

    def _checkpoint_extras(self) -> dict:
        return {
            "distributed": {
                "collectors": self.cfg.distributed.collectors,
                "streams": self.num_streams,
                "collector_restarts": self.restarts,
            }
        }

    def add_eval_hook(self, hook) -> None:
        """``hook(row)`` sees every evaluation row; a true return stops the run (``LearnerCore.add_eval_hook``)."""
        self.core.add_eval_hook(hook)

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        core, cfg, c, dist = self.core, self.cfg, self.counters, self.cfg.distributed
        started = time.perf_counter() - c.wall_time
        last_eval: dict = {}
        last_eval_step = -1
        self.window = _Window(dist.collectors, c.env_steps, self.agent.updates)
        bar = core.open_progress_bar(f"{cfg.name} ({dist.collectors} collectors)")
        with StopRequested() as stop:
            core.stop = stop
            self.publish()
            while c.env_steps < cfg.total_steps and not stop.requested:
                self.feed()
                t0 = time.perf_counter()
                arrivals = self.pool.poll(timeout=0.0 if self.owes_update() else 0.05)
                self.window.wait += time.perf_counter() - t0
                if arrivals:
                    self.insert(arrivals, time.perf_counter() - started)
                    bar.update(sum(info.env_steps for info, _ in arrivals))
                if isinstance(self.replay, RemoteReplay):
                    self.replay.poll()
                if self.owes_update():
                    self.update()
                if core.schedule.log_due(core.last_log_steps):
                    self.log(time.perf_counter(), started, last_eval)
                last_eval, last_eval_step = core.run_periodic_tasks(started, last_eval, last_eval_step)
                if core.stop_due(last_eval):
                    break
            bar.close()
            self.pool.close()  # the collectors stop here; evaluation and the checkpoint need none of them
            return core.finish(started, last_eval, last_eval_step)

    def learning(self) -> bool:
        return self.counters.env_steps >= self.cfg.agent.learning_starts and len(self.replay) >= self.core.fill_needed

    def owes_update(self) -> bool:
        """free: update whenever replay is ready (Ape-X); ratio: one update per agent.train_freq steps inserted."""
        return self.learning() and (self.cfg.distributed.pace == "free" or self.counters.pending_updates >= 1)

    def feed(self) -> None:
        """Queue ``collect`` calls on idle collectors with the newest weights. Under ``pace: ratio`` none while the
        learner owes more than a round of chunks' updates, so collecting never runs ahead of learning; none
        beyond what ``total_steps`` still needs."""
        cfg, c, pool = self.cfg, self.counters, self.pool
        per_chunk = self.chunk_env_steps
        behind = c.pending_updates > per_chunk * pool.count / cfg.agent.train_freq
        if cfg.distributed.pace == "ratio" and behind and self.learning():  # (a refilling replay never waits)
            return
        explore = c.env_steps < cfg.agent.learning_starts
        queued = per_chunk * len(pool.pending)
        for i in range(pool.count):
            for _ in range(pool.idle(i)):
                if c.env_steps + queued >= cfg.total_steps:
                    return
                pool.submit(i, self.weights, self.version, explore)
                queued += per_chunk

    def insert(self, arrivals: list[tuple[ChunkInfo, ObjectRef]], wall: float) -> None:
        """Store the chunks that arrived together (``(info, chunk reference)``, in the order collected), count
        them, write episode rows.

        Chunks are stored in rounds, each round one merged write per chunk length holding at most one chunk per
        collector (so a collector's chunks stay in order); a collector that Ray restarted has its streams cut
        first. The plan runs here on the fetched chunks, or in the replay actor, to which only references go."""
        t0 = time.perf_counter()
        infos = [info for info, _ in arrivals]
        ops: list[tuple] = []
        for group in _rounds(infos):
            for k in group:
                if infos[k].incarnation != self.incarnations[infos[k].collector]:
                    ops.append(("end", self.streams[infos[k].collector]))
                    self._restarted(infos[k])
            for length in sorted({infos[k].length for k in group}):
                same = [k for k in group if infos[k].length == length]
                ops.append(("add", same, np.concatenate([self.streams[infos[k].collector] for k in same])))
        refs = [ref for _, ref in arrivals]
        if isinstance(self.replay, RemoteReplay):
            self.replay.apply(ops, refs)
        else:
            import ray

            apply_to_replay(self.replay, ops, ray.get(refs))
        seconds = (time.perf_counter() - t0) / len(arrivals)
        for chunk in infos:
            self._count(chunk.env_steps)
            self.window.add_chunk(chunk, self.agent.updates, seconds)
            for ep in chunk.episodes:
                self.core.record_episode(ep, wall, collector=chunk.collector)
        self.core.sync_target_if_due()  # by trained env steps: none of the steps whose updates are still owed

    def _count(self, env_steps: int) -> None:
        """Count a stored chunk's steps. Under ``pace: ratio`` those from ``agent.learning_starts`` on (once the
        replay holds enough to learn) owe an update per ``agent.train_freq``, as a single-process run's do."""
        cfg, c = self.cfg, self.counters
        before, c.env_steps = c.env_steps, c.env_steps + env_steps
        if cfg.distributed.pace == "ratio" and len(self.replay) >= self.core.fill_needed:
            c.pending_updates += max(0, c.env_steps - max(before, cfg.agent.learning_starts)) / cfg.agent.train_freq

    def _restarted(self, chunk: ChunkInfo) -> None:
        """Ray restarted this chunk's collector (its envs' streams end in the replay: their next steps are new
        episodes)."""
        i = chunk.collector
        self.restarts += 1
        tqdm.write(
            f"[collector {i}] restarted by Ray (pid {self.pool.pids[i]} -> {chunk.pid}); "
            f"{self.restarts} restart(s) so far"
        )
        self.incarnations[i] = chunk.incarnation
        self.pool.pids[i] = chunk.pid
        self.pool.write_pids()

    def update(self) -> None:
        """One gradient update; then the target sync and the weight publication when they are due."""
        cfg, c, t0 = self.cfg, self.counters, time.perf_counter()
        self.core.learn_step()
        if cfg.distributed.pace == "ratio":
            c.pending_updates -= 1
        self.core.sync_target_if_due()  # at the trained env steps where a single-process run syncs
        if self.agent.updates - self.version >= cfg.distributed.weights_interval:
            self.publish()
        self.window.update_seconds += time.perf_counter() - t0

    def publish(self) -> None:
        """Put the acting weights in the object store; collectors fetch them with their next call."""
        import ray

        self.weights = [ray.put(self.agent.acting_weights())]
        self.version = self.agent.updates
        self.published += 1

    def log(self, now: float, started: float, last_eval: dict) -> None:
        c = self.counters
        faults: dict[str, int] = {}  # the env's fault counters (drl.vec_env.fault_counters), summed over chunks
        for counters in self.window.faults:
            for name, value in (counters or {}).items():
                faults[name] = int(faults.get(name, 0) + value)
        row = self.window.row(
            now,
            c.env_steps,
            self.agent.updates,
            self.cfg.agent.batch_size * transitions_per_sample(self.cfg, self.agent.sampler),
        )
        if isinstance(self.replay, RemoteReplay):  # the replay actor's time storing chunks
            row["replay_actor_share"] = (self.replay.seconds - self.window.actor_seconds) / max(
                now - self.window.t0, 1e-9
            )
            self.window.actor_seconds = self.replay.seconds
        recent = self.core.write_train_row(
            now - started,
            faults,
            collector_restarts=self.restarts,
            collectors_alive=sum(self.pool.alive),
            weights_published=self.published,
            **row,
        )
        assert self.core.bar is not None  # opened by run
        self.core.bar.set_postfix(
            sps=f"{row['sps']:.0f}",
            ups=f"{row['updates_per_s']:.1f}",
            ret="-" if recent is None else f"{recent:.1f}",
            eval=last_eval.get("return_mean", "-"),
        )
        self.window = _Window(self.cfg.distributed.collectors, c.env_steps, self.agent.updates, now, self.window)

    def __enter__(self) -> Learner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Flush metrics, finish tracking, stop the collectors, the replay actor and a cluster started here."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.core.close()
        finally:
            self.pool.close()
            if isinstance(self.replay, RemoteReplay):
                self.replay.close()
            self.cluster.shutdown()


def _rounds(infos: list[ChunkInfo]) -> list[list[int]]:
    """The chunks' indices in rounds, each holding at most one chunk per collector, in the order they came."""
    rounds: list[list[int]] = []
    seen: dict[int, int] = {}
    for k, info in enumerate(infos):
        r = seen[info.collector] = seen.get(info.collector, -1) + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(k)
    return rounds


class _Window:
    """Throughput, weight lag and where the learner's time went since the last train row."""

    def __init__(self, collectors: int, env_steps: int, updates: int, now: float | None = None, last=None):
        self.t0 = time.perf_counter() if now is None else now
        self.env_steps0, self.updates0 = env_steps, updates
        self.steps = [0] * collectors
        self.lags: list[int] = []
        self.insert_seconds = self.update_seconds = self.wait = 0.0
        self.chunk_bytes = 0
        self.faults = last.faults if last is not None else [None] * collectors
        self.actor_seconds = last.actor_seconds if last is not None else 0.0  # replay actor's, at t0

    def add_chunk(self, chunk: ChunkInfo, updates: int, seconds: float) -> None:
        self.steps[chunk.collector] += chunk.env_steps
        if chunk.version >= 0:
            self.lags.append(updates - chunk.version)
        self.insert_seconds += seconds
        self.chunk_bytes += chunk.nbytes
        self.faults[chunk.collector] = chunk.faults

    def row(self, now: float, env_steps: int, updates: int, transitions_per_update: int) -> dict:
        """Rates over the window; ``replay_ratio`` counts transitions trained on per env step, as
        ``drl.loop.replay_ratio`` does (a DRQN sequence counts its steps after burn-in)."""
        dt = max(now - self.t0, 1e-9)
        sps = (env_steps - self.env_steps0) / dt
        ups = (updates - self.updates0) / dt
        collector_sps = [round(s / dt, 1) for s in self.steps]
        return {
            "sps": sps,
            "updates_per_s": ups,
            "insert_rate": sps,
            "replay_ratio": ups * transitions_per_update / sps if sps else None,
            "collector_sps": collector_sps,
            "collector_sps_mean": float(np.mean(collector_sps)),
            "collector_sps_min": float(min(collector_sps)),
            "weight_lag_mean": float(np.mean(self.lags)) if self.lags else None,
            "weight_lag_max": max(self.lags) if self.lags else None,
            "insert_share": self.insert_seconds / dt,
            "update_share": self.update_seconds / dt,
            "wait_share": self.wait / dt,
            "chunk_mb_per_s": self.chunk_bytes / dt / 2**20,
        }
