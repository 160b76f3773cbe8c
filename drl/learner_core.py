"""What every training run owns, whichever loop feeds its replay: the agent and its replay, the learn step, the
counters and their ``Schedule``, metrics, evaluation and checkpoints.

``drl.loop.Trainer`` steps envs of its own; ``drl.distributed.learner.Learner`` stores the chunks collectors send.
Each builds its agent and replay (``set_up_runtime`` first, before any env or network), then a ``LearnerCore``
around them, and calls its learn step and periodic tasks from its own loop.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from drl import checkpoint, runtime, segments
from drl.agent import Agent, EnvSpec
from drl.config import Config
from drl.errors import TrainingDiverged, UserError, require
from drl.evaluation import evaluate, summarize
from drl.metrics import MetricsWriter
from drl.replay import ReplayBuffer
from drl.schedule import Counters, Schedule, linear
from drl.tracking import TensorBoardTracker, WandbTracker
from drl.vec_env import make_env

if TYPE_CHECKING:  # drl.loop imports this module
    from drl.loop import StopRequested


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    threads: int
    generator: torch.Generator  # the agent's acting draws
    overlap_env: bool  # the single-process loop's (drl.loop): updates while the envs step
    keep_freed_memory: bool  # freed tensors' memory stays in the heap (drl.runtime.keep_freed_memory)


def set_up_runtime(cfg: Config) -> Runtime:
    """Device, precision, threads and seeds, before any env or network is made."""
    keep_freed_memory = runtime.keep_freed_memory(cfg.compute)  # before the first tensors
    device = runtime.resolve_device(cfg.device)
    bf16 = runtime.use_bf16(cfg.compute, device)
    threads = runtime.configure_threads(cfg.compute)
    runtime.seed_everything(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    overlap_env = runtime.use_overlap_env(cfg.compute, cfg.env, device, threads)
    if cfg.tracking.tensorboard:  # before any env starts: a missing package is one line, nothing to close
        require("torch.utils.tensorboard", "tracking.tensorboard", "tensorboard", "tensorboard")
    return Runtime(device, bf16, threads, generator, overlap_env, keep_freed_memory)


def replay_arguments(
    cfg: Config, spec: EnvSpec, sampler: str, device: torch.device, num_envs: int, frame_stack: int
) -> tuple[dict, dict | None]:
    """``ReplayBuffer`` keyword arguments and its ``sequences`` (None for transitions) for ``num_envs`` env
    streams; checks first that the replay fits in free memory."""
    frame_shape = (spec.obs_shape[0] // frame_stack, *spec.obs_shape[1:])
    _check_replay_memory(cfg, spec, sampler, device, num_envs, frame_shape, frame_stack)
    kwargs = dict(
        capacity=cfg.replay.capacity,
        num_envs=num_envs,
        frame_shape=frame_shape,
        frame_stack=frame_stack,
        num_extras=spec.num_extras,
        n_step=cfg.agent.n_step,
        gamma=cfg.agent.gamma,
        prioritized=cfg.replay.prioritized,
        alpha=cfg.replay.alpha,
        priority_eps=cfg.replay.priority_eps,
        seed=cfg.seed,
        frame_dtype=spec.obs_dtype,
        labels=bool(cfg.agent.aux.features),
        frames_device=device if cfg.replay.frames_on_device else None,
    )
    sequences = (
        None
        if sampler != "sequences"
        else dict(
            length=cfg.replay.sequence_length,
            burn_in=cfg.replay.burn_in,
            overlap=cfg.replay.sequence_overlap,
            state_size=cfg.network.lstm_size,
            eta=cfg.replay.priority_eta,
        )
    )
    return kwargs, sequences


def _check_replay_memory(
    cfg: Config, spec: EnvSpec, sampler: str, device: torch.device, num_envs: int, frame_shape: tuple, frame_stack: int
) -> None:
    """Refuse a replay buffer that does not fit in free memory, before allocating it."""
    needed = ReplayBuffer.bytes_needed(
        cfg.replay.capacity,
        num_envs,
        frame_shape,
        frame_stack,
        cfg.agent.n_step,
        spec.num_extras,
        cfg.replay.prioritized,
        cfg.replay.sequence_length - cfg.replay.sequence_overlap if sampler == "sequences" else None,
        cfg.network.lstm_size,
        frame_dtype=spec.obs_dtype,
        labels=bool(cfg.agent.aux.features),
    )
    if cfg.replay.frames_on_device and device.type == "cuda":  # the frames go to GPU memory, the rest stays
        frames = ReplayBuffer.frames_bytes(
            cfg.replay.capacity, num_envs, frame_shape, frame_stack, cfg.agent.n_step, spec.obs_dtype
        )
        gpu_free = torch.cuda.mem_get_info(device)[0]
        if frames > gpu_free:
            raise UserError(
                f"replay.frames_on_device: replay.capacity={cfg.replay.capacity} needs "
                f"{frames / 2**30:.1f} GiB of GPU memory but only {gpu_free / 2**30:.1f} GiB are free; "
                "lower replay.capacity or set replay.frames_on_device=false"
            )
        needed -= frames
    free = runtime.available_memory()
    if free is not None and needed > free:
        raise UserError(
            f"replay.capacity={cfg.replay.capacity} needs {needed / 2**30:.1f} GiB but only "
            f"{free / 2**30:.1f} GiB are free; lower replay.capacity"
        )


def scalars_to_floats(values: list) -> list[float]:
    """Python floats of scalar stats: 0-dim tensors (any device and dtype) and numbers, in order. The tensors of
    each (device, dtype) are stacked and copied to the host at once: one device sync for all of them, where
    ``float`` of each would sync once per value. The floats are those ``float(value)`` gives."""
    floats: list = list(values)
    groups: dict[tuple, list[int]] = {}
    for i, value in enumerate(values):
        if isinstance(value, torch.Tensor):
            groups.setdefault((value.device, value.dtype), []).append(i)
        else:
            floats[i] = float(value)
    for positions in groups.values():
        for i, x in zip(positions, torch.stack([values[i].reshape(()) for i in positions]).tolist()):
            floats[i] = float(x)
    return floats


class LearnStep:
    """One gradient update: sample a batch (importance exponent beta annealed over ``total_steps``), update the
    agent, give the replay the new priorities and keep the update's stats as the agent returned them (tensors stay
    on the device: turning each into a float would wait for the update to finish, once per stat and update).

    ``collect()`` turns the kept stats into floats in ``stats`` (the train row's means, a checkpoint's
    ``train_stats``) and stops the run (``on_diverged(value, name, env_steps, update)``) at the first update whose
    loss, Q or gradient norm was not finite, naming that update. ``LearnerCore`` collects before each train row,
    evaluation and checkpoint, so no checkpoint holds weights that a non-finite update made."""

    def __init__(
        self,
        cfg: Config,
        agent: Agent,
        replay,
        device: torch.device,
        counters: Counters,
        on_diverged: Callable[[float, str, int, int], None],
    ):
        self.cfg, self.agent, self.replay, self.device, self.counters = cfg, agent, replay, device, counters
        self.on_diverged = on_diverged
        self.stats: dict[str, list[float]] = {}  # update stats since the last train row, as floats (``collect``)
        self.uncollected: list[tuple[dict, int, int]] = []  # (stats, env_steps, update) of updates not collected

    def __call__(self) -> None:
        cfg = self.cfg
        beta = linear(cfg.replay.beta_start, 1.0, cfg.total_steps, self.counters.env_steps)
        batch = self.replay.sample_for(self.agent.sampler, cfg.agent.batch_size, beta=beta, device=self.device)
        stats = self.agent.update(batch)
        self.replay.update_priorities(batch.indices, stats.pop("td_error"), getattr(batch, "mask", None))
        kept = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in stats.items()}
        self.uncollected.append((kept, self.counters.env_steps, self.agent.updates))

    def collect(self) -> None:
        """Append the stats of the updates since the last call to ``stats`` as floats (one device sync for all of
        them), then check them in update order: a non-finite loss, Q or gradient norm stops the run."""
        updates, self.uncollected = self.uncollected, []
        floats = iter(scalars_to_floats([value for stats, _, _ in updates for value in stats.values()]))
        rows = [({key: next(floats) for key in stats}, env_steps, update) for stats, env_steps, update in updates]
        for row, _, _ in rows:
            for key, value in row.items():
                self.stats.setdefault(key, []).append(value)
        for row, env_steps, update in rows:
            for key in ("q_mean", "loss", "grad_norm"):  # NaN weights would follow a bad gradient
                if key in row and not math.isfinite(row[key]):
                    self.on_diverged(row[key], key, env_steps, update)


class LearnerCore:
    """A run's learning side, shared by both loops: agent, replay, ``counters``, ``schedule``, ``learn_step``,
    metrics and trackers, evaluation (an eval env of its own) and checkpoints.

    ``checkpoint_extras()`` returns what the owning loop adds to each checkpoint (its envs' state, its collectors).
    The owner restores those parts itself after this restores the rest from ``resume_from``; ``init_from`` is a
    ``drl.segments.Parent`` whose weights a new run starts from. The owner then calls ``open_metrics``.
    ``add_eval_hook(fn)``: ``fn(row)`` sees each evaluation row as written; a true return stops the run there.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        rt: Runtime,
        spec: EnvSpec,
        agent: Agent,
        replay,
        frames_per_step: int,
        checkpoint_extras: Callable[[], dict],
        resume_from: dict | None = None,
        init_from: segments.Parent | None = None,
    ):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device, self.bf16, self.threads, self.generator = rt.device, rt.bf16, rt.threads, rt.generator
        self.spec, self.agent, self.replay, self.frames_per_step = spec, agent, replay, frames_per_step
        self.checkpoint_extras = checkpoint_extras
        self.counters = Counters()
        self.schedule = Schedule(cfg, self.counters)
        self.learn_step = LearnStep(cfg, agent, replay, rt.device, self.counters, self.diverged)
        self.fill_needed = min(cfg.agent.learning_starts, cfg.replay.capacity) or cfg.agent.batch_size
        # loop state that a checkpoint carries, so a resumed run continues exactly (see checkpoint_payload)
        self.last_log_steps = 0  # env_steps of the last train row
        self.recent_returns: deque = deque(maxlen=20)
        self.eval_env = None
        self.eval_hooks: list = []  # add_eval_hook
        self.stop_early = False  # set by an eval hook: the run ends after this step
        self.stop: StopRequested | None = None  # the running loop's
        self.bar: tqdm | None = None  # the running loop's progress bar
        if resume_from is not None:
            self.restore(resume_from)
        elif init_from is not None:  # drl.train --init-from: weights (and optimizer) only
            segments.start_from(agent, init_from, cfg, spec.obs_shape, spec.num_actions, spec.num_extras)

    def open_metrics(self, resumed: bool) -> None:
        """metrics.jsonl and the trackers its rows go to: W&B (``self.tracker``) and TensorBoard."""
        cfg = self.cfg
        self.tracker = None if cfg.tracking.wandb == "off" else WandbTracker(cfg, self.run_dir)
        self.tensorboard = (
            TensorBoardTracker(self.run_dir, self.counters.env_steps if resumed else None)
            if cfg.tracking.tensorboard
            else None
        )
        self.metrics = MetricsWriter(
            self.run_dir,
            self.frames_per_step,
            trackers=[self.tracker, self.tensorboard],
            chain_offset=cfg.init_from.chain_env_steps if cfg.init_from is not None else None,
        )

    def add_eval_hook(self, hook) -> None:
        """``hook(row)`` is called with every evaluation row (as written to metrics.jsonl: ``env_steps``,
        ``return_mean``, ...); when it returns true the run stops after that step, writes its checkpoint and
        returns ``stopped_early=True`` (a sweep's pruner uses this)."""
        self.eval_hooks.append(hook)

    def open_progress_bar(self, desc: str) -> tqdm:
        self.bar = tqdm(
            total=self.cfg.total_steps,
            initial=self.counters.env_steps,
            unit="step",
            dynamic_ncols=True,
            smoothing=0.05,
            mininterval=1.0,
            desc=desc,
        )
        return self.bar

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self) -> dict:
        """What ``save_checkpoint`` writes; the update stats are collected first (a non-finite update stops the
        run here, before any checkpoint holds its weights)."""
        self.learn_step.collect()
        spec = self.spec
        payload = {
            "agent": self.agent.state_dict(),
            "counters": asdict(self.counters),
            "config": self.cfg.model_dump(),
            "obs_shape": list(spec.obs_shape),
            "obs_dtype": str(spec.obs_dtype).removeprefix("torch."),
            "num_extras": spec.num_extras,
            "num_actions": spec.num_actions,
            "rng": runtime.rng_state(),
            "generator": self.generator.get_state(),
            "replay_rng": self.replay.rng_state,
            "loop": {
                "last_log_steps": self.last_log_steps,
                "train_stats": self.learn_step.stats,
                "recent_returns": list(self.recent_returns),
            },
            **self.checkpoint_extras(),
        }
        if self.cfg.replay.save_in_checkpoint:
            payload["replay"] = self.replay.state_dict()
        return payload

    def save_checkpoint(self) -> Path:
        """``checkpoints/latest.pt`` and, beside it, the small bf16 ``weights.safetensors`` of the online network (the
        file a segment commits and the next one starts from: ``drl/segments.py``); both describe the same step."""
        path = self.run_dir / "checkpoints" / "latest.pt"
        payload = self.checkpoint_payload()
        checkpoint.save(path, payload)
        online = payload["agent"].get("online") if isinstance(payload["agent"], dict) else None
        if isinstance(online, dict):
            spec = self.spec
            segments.save_weights(
                self.run_dir / segments.WEIGHTS,
                online,
                self.cfg,
                self.counters.env_steps,
                spec.obs_shape,
                spec.obs_dtype,
                spec.num_actions,
                spec.num_extras,
                self.frames_per_step,
            )
        self.counters.checkpoints += 1
        return path

    def restore(self, payload: dict) -> None:
        """Agent, counters, random states, replay and loop state from a checkpoint payload."""
        fix = "resume with the config the run was started with"
        checkpoint.check_fits(payload, self.spec.obs_shape, self.spec.num_actions, fix)
        checkpoint.load_agent_state(self.agent, payload, fix)
        for key, value in asdict(Counters(**payload["counters"])).items():  # in place: the schedule reads them
            setattr(self.counters, key, value)
        runtime.set_rng_state(payload["rng"])
        self.generator.set_state(payload["generator"])
        self.replay.rng_state = payload["replay_rng"]
        if "replay" in payload:
            self.replay.load_state_dict(payload["replay"])
        loop = payload.get("loop", {})
        self.last_log_steps = loop.get("last_log_steps", self.counters.env_steps)
        self.learn_step.stats.update({k: list(v) for k, v in loop.get("train_stats", {}).items()})
        self.recent_returns.extend(loop.get("recent_returns", []))

    # ------------------------------------------------------------------ what both loops do on their way
    def sync_target_if_due(self) -> None:
        if self.schedule.target_sync_due():
            self.agent.sync_target()

    def record_episode(self, episode: dict, wall: float, **fields) -> None:
        """Count a finished episode and write its row (``fields`` first, e.g. the collector that played it)."""
        self.counters.episodes += 1
        self.recent_returns.append(episode["return"])
        self.metrics.write(
            "episode", self.counters.env_steps, wall, **fields, **{k: v for k, v in episode.items() if k != "env"}
        )

    def write_train_row(self, wall: float, faults: dict, **fields) -> float | None:
        """The train row (the owner's ``fields``, the counts, the update stats' means since the last row, the env
        workers' ``faults``); returns the recent mean return (None before any episode)."""
        c = self.counters
        self.learn_step.collect()
        recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
        means = {f"train/{k}": float(np.mean(v)) for k, v in self.learn_step.stats.items()}
        self.metrics.write(
            "train",
            c.env_steps,
            wall,
            **fields,
            episodes=c.episodes,
            recent_return=recent,
            updates=self.agent.updates,
            **means,
            **faults,
        )
        self.learn_step.stats.clear()
        self.last_log_steps = c.env_steps
        return recent

    def run_periodic_tasks(self, started: float, last_eval: dict, last_eval_step: int) -> tuple[dict, int]:
        """Evaluate and checkpoint where their intervals are crossed; returns the last evaluation and its step."""
        c = self.counters
        if self.schedule.eval_due():
            evaluation = self.run_evaluation(time.perf_counter() - started)
            if evaluation:
                last_eval, last_eval_step = evaluation, c.env_steps
            else:  # cut short by a stop request: the resumed run evaluates instead
                last_eval = evaluation
                self.schedule.eval_cut_short()
        if self.schedule.checkpoint_due():
            c.wall_time = time.perf_counter() - started
            self.save_checkpoint()
            self.schedule.checkpoint_written()
        return last_eval, last_eval_step

    def stop_due(self, last_eval: dict) -> bool:
        """An eval hook asked to stop, or the last evaluation reached ``eval.stop_at``."""
        if self.stop_early:
            return True
        if self.schedule.stop_reached(last_eval):
            tqdm.write(
                f"drl: evaluation reached eval.stop_at={self.cfg.eval.stop_at:g} at step {self.counters.env_steps:,}"
            )
            return True
        return False

    def finish(self, started: float, last_eval: dict, last_eval_step: int) -> dict:
        """The end of ``run`` (under its StopRequested: a signal now cuts the final evaluation short but the
        checkpoint is written): a final evaluation unless this step has one, the checkpoint, the result."""
        c, stop = self.counters, self.stop
        assert stop is not None  # finish is called by a running loop
        if not stop.requested and last_eval_step != c.env_steps:
            last_eval = self.run_evaluation(time.perf_counter() - started)
        c.wall_time = time.perf_counter() - started
        self.save_checkpoint()
        return {
            "env_steps": c.env_steps,
            "interrupted": stop.requested,
            "signal": stop.signum,
            "eval": last_eval,
            "stopped_early": self.stop_early,
        }

    def run_evaluation(self, wall: float) -> dict:
        self.learn_step.collect()  # a run whose weights went non-finite stops instead of evaluating them
        cfg = self.cfg
        if self.eval_env is None:
            self.eval_env = make_env(
                cfg.env,
                self.device,
                cfg.seed + 10_000,
                num_envs=cfg.eval.num_envs,
                evaluation=True,
                max_frames=cfg.eval.max_frames,
                labels=cfg.agent.aux.features,
            )
        t0 = time.perf_counter()
        # Each evaluation is a pure function of the weights and the step: its own seeds, and a generator of its
        # own, so evaluating never moves the training RNG (a resumed run continues exactly).
        seed = cfg.seed + 10_000 + self.counters.env_steps
        train_generator = self.agent.generator
        self.agent.generator = torch.Generator(device=self.device).manual_seed(seed)
        stop = self.stop
        try:
            episodes = evaluate(
                self.agent,
                self.eval_env,
                cfg.eval.episodes,
                cfg.eval.epsilon,
                seed=seed,
                stop=None if stop is None else (lambda: stop.requested),
            )
        finally:
            self.agent.generator = train_generator
        if len(episodes) < cfg.eval.episodes:
            return {}  # interrupted
        summary = summarize(episodes, self.eval_env)
        row = self.metrics.write(
            "eval",
            self.counters.env_steps,
            wall,
            episodes=len(episodes),
            eval_seconds=time.perf_counter() - t0,
            returns=[ep["return"] for ep in episodes],
            **summary,
        )
        tqdm.write(
            f"[eval] step {self.counters.env_steps:,}: return {summary['return_mean']:.2f} "
            f"± {summary['return_std']:.2f} (median {summary['return_median']:.1f}, n={len(episodes)})"
        )
        for hook in self.eval_hooks:
            if hook(row):
                self.stop_early = True
        return summary

    def diverged(self, value: float, what: str, env_steps: int, update: int) -> None:
        """Stop the run: update ``update``, made at ``env_steps``, gave a non-finite ``what``."""
        if self.bar is not None:
            self.bar.close()
        latest = self.run_dir / "checkpoints" / "latest.pt"
        where = f"last good checkpoint: {latest}" if latest.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"{what} became {value} at env step {env_steps} (update {update}); {where}. Lower agent.lr (or "
            "env.reward_scale) and resume or restart"
        )

    def close(self) -> None:
        """Flush metrics, finish tracking and close the eval env."""
        self.metrics.close()
        c = self.counters
        for tracker in self.metrics.trackers:
            tracker.finish({"env_steps": c.env_steps, "episodes": c.episodes, "wall_time": c.wall_time})
        if self.eval_env is not None:
            self.eval_env.close()
