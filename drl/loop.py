"""The training loop, shared by every agent.

One iteration: ``agent.act(obs) -> env.step(actions) -> replay.add(...) -> agent.update(replay.sample())`` as often
as ``agent.train_freq`` asks, then target sync, logging, evaluation and checkpoints on their intervals.
"""
from __future__ import annotations

import math
import signal
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from drl import checkpoint, runtime, segments
from drl.agent import EnvSpec, make_agent
from drl.config import Config, to_yaml
from drl.errors import TrainingDiverged, UserError, require
from drl.metrics import MetricsWriter
from drl.replay import ReplayBuffer, build_replay
from drl.tracking import TensorBoardTracker, WandbTracker
from drl.vec_env import unpack_labels
from drl.envs import make_env


@dataclass
class Counters:
    env_steps: int = 0          # agent steps, summed over envs
    episodes: int = 0
    pending_updates: float = 0.0
    target_syncs: int = 0
    evals: int = 0
    checkpoints: int = 0
    wall_time: float = 0.0      # seconds of training, carried across resumes


def linear(start: float, end: float, duration: int, step: int) -> float:
    return end + (start - end) * max(0.0, 1.0 - step / duration)


def transitions_per_sample(cfg: Config, sampler: str) -> int:
    """Transitions one replay sample trains on: 1, or a sequence's ``sequence_length - burn_in`` steps (DRQN)."""
    return cfg.replay.sequence_length - cfg.replay.burn_in if sampler == "sequences" else 1


def replay_ratio(cfg: Config, sampler: str) -> float:
    """Transitions trained on per env step collected: ``batch_size`` samples per ``train_freq`` env steps (see
    ``transitions_per_sample``). Compare agents at equal ratios."""
    return cfg.agent.batch_size * transitions_per_sample(cfg, sampler) / cfg.agent.train_freq


def evaluate(agent, env, episodes: int, epsilon: float, on_step=None, seed: int | None = None,
             stop=None) -> list[dict]:
    """Play whole episodes with epsilon-greedy; each env contributes a fixed quota so short episodes are not favoured.

    ``on_step(step)``, if given, sees the reset ``VecStep`` and every stepped one (e.g. to record video frames).
    ``seed`` reseeds the env's reset; ``stop()``, if given and true, ends early (fewer episodes are returned).
    When the env gives game-feature labels, each episode also reports ``aux_accuracy``: the fraction of its
    frames' features the agent's game-feature head (``agent.predict_features``) got right.
    """
    quota = np.full(env.num_envs, episodes // env.num_envs)
    quota[: episodes % env.num_envs] += 1
    results: list[dict] = []
    step = env.reset(seed=seed)
    if on_step is not None:
        on_step(step)
    state = agent.initial_state(env.num_envs)
    correct = frames = None   # per env, since its episode started: summed accuracy of the head, frames seen
    while len(results) < episodes and not (stop is not None and stop()):
        if step.labels is not None:
            predicted = agent.predict_features(step.obs, step.extras)                  # bool [N, F]
            hit = (predicted == unpack_labels(step.labels, predicted.shape[1]).bool()).float().mean(1)
            correct, frames = (hit, torch.ones_like(hit)) if correct is None else (correct + hit, frames + 1)
        actions, state = agent.act(step.obs, state, epsilon, step.extras)
        step = env.step(actions)
        if on_step is not None:
            on_step(step)
        state = agent.reset_state(state, step.reset)
        for ep in step.episodes:
            if correct is not None:
                ep["aux_accuracy"] = float(correct[ep["env"]] / frames[ep["env"]])
            if quota[ep["env"]] > 0:
                quota[ep["env"]] -= 1
                results.append(ep)
        if correct is not None:
            correct, frames = correct.masked_fill(step.reset, 0.0), frames.masked_fill(step.reset, 0.0)
    return results


def summarize(episodes: list[dict]) -> dict:
    """Mean of every episode measure (``<measure>_mean``; return also median, std, min, max); with frags and deaths
    (deathmatch) also ``kd`` and ``frags_per_minute``, from the totals over all the episodes."""
    out = {}
    for key in episodes[0]:
        if key == "env":
            continue
        values = np.array([ep[key] for ep in episodes], dtype=np.float64)
        prefix = "return" if key == "return" else key
        out[f"{prefix}_mean"] = float(values.mean())
        if key == "return":
            out["return_median"] = float(np.median(values))
            out["return_std"] = float(values.std())
            out["return_min"], out["return_max"] = float(values.min()), float(values.max())
    totals = {key: sum(ep[key] for ep in episodes) for key in ("frags", "deaths", "minutes") if key in episodes[0]}
    if "frags" in totals and "deaths" in totals:   # over all the episodes, as Lample & Chaplot report them
        out["kd"] = totals["frags"] / max(totals["deaths"], 1)
    if "frags" in totals and totals.get("minutes"):
        out["frags_per_minute"] = totals["frags"] / totals["minutes"]
    return out


class StopRequested:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, checkpoints and exits (``signum`` says which)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run: envs, agent, replay, metrics. A context manager that closes envs and workers::

        with Trainer(cfg, run_dir) as trainer:
            result = trainer.run()      # {"env_steps", "interrupted", "signal", "eval": the last evaluation row}

    ``run_dir`` must exist (``drl.learn`` and the CLI create it); ``resume_from`` is a loaded checkpoint payload;
    ``init_from`` a ``drl.segments.Parent`` (``load_parent``) whose weights a new run starts from (``cfg.init_from``
    records it).
    ``add_eval_hook(fn)``: ``fn(row)`` sees each evaluation row as written; a true return stops the run there.
    """

    def __init__(self, cfg: Config, run_dir: Path, resume_from: dict | None = None,
                 init_from: segments.Parent | None = None):
        self._set_up_runtime(cfg, run_dir)
        self.env = make_env(cfg.env, self.device, cfg.seed, labels=cfg.agent.aux.features)
        self.eval_env = None
        try:  # a failure below (memory, checkpoint) must not leave env workers behind
            first = self.env.reset(seed=cfg.seed)
            self.spec = EnvSpec.of(self.env, first.obs)
            self.obs_shape = self.spec.obs_shape
            self.agent = make_agent(cfg, self.spec, self.device, self.bf16, self.generator)
            self.replay = build_replay(*self.replay_arguments())
            self.fill_needed = min(cfg.agent.learning_starts, cfg.replay.capacity) or cfg.agent.batch_size
            self.step = first
            # loop state that a checkpoint carries, so a resumed run continues exactly (see checkpoint_payload)
            self.acting_state = None            # the agent's state while acting (an LSTM's; None if feed-forward)
            self.last_log_steps = 0             # env_steps of the last train row
            self.train_stats: dict[str, list[float]] = {}  # update stats since the last train row
            self.recent_returns: deque = deque(maxlen=20)
            if resume_from is not None:
                self._restore(resume_from)
            elif init_from is not None:
                self.start_from(init_from)
        except BaseException:
            self.env.close()
            raise
        self._open_metrics(resumed=resume_from is not None)

    def _set_up_runtime(self, cfg: Config, run_dir: Path) -> None:
        """Device, precision, threads, seeds, counters and the acting generator (before any env or network)."""
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.device = runtime.resolve_device(cfg.device)
        self.bf16 = runtime.use_bf16(cfg.compute, self.device)
        self.threads = runtime.configure_threads(cfg.compute)
        runtime.seed_everything(cfg.seed)
        self.counters = Counters()
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.eval_hooks: list = []      # add_eval_hook
        self.stop_early = False         # set by an eval hook: the run ends after this step
        if cfg.tracking.tensorboard:    # before any env starts: a missing package is one line, nothing to close
            require("torch.utils.tensorboard", "tracking.tensorboard", "tensorboard", "tensorboard")

    def _open_metrics(self, resumed: bool) -> None:
        """metrics.jsonl and the trackers its rows go to: W&B (``self.tracker``) and TensorBoard."""
        cfg = self.cfg
        self.tracker = None if cfg.tracking.wandb == "off" else WandbTracker(cfg, self.run_dir)
        self.tensorboard = TensorBoardTracker(self.run_dir, self.counters.env_steps if resumed else None) \
            if cfg.tracking.tensorboard else None
        self.metrics = MetricsWriter(self.run_dir, self.env.frames_per_step, trackers=[self.tracker, self.tensorboard],
                                     chain_offset=cfg.init_from.chain_env_steps if cfg.init_from is not None else None)

    def add_eval_hook(self, hook) -> None:
        """``hook(row)`` is called with every evaluation row (as written to metrics.jsonl: ``env_steps``,
        ``return_mean``, ...); when it returns true the run stops after that step, writes its checkpoint and
        returns ``stopped_early=True`` (a sweep's pruner uses this)."""
        self.eval_hooks.append(hook)

    def _check_replay_memory(self, frame_shape: tuple) -> None:
        """Refuse a replay buffer that does not fit in free memory, before allocating it."""
        cfg = self.cfg
        needed = ReplayBuffer.bytes_needed(
            cfg.replay.capacity, self.env.num_envs, frame_shape, self.env.frame_stack, cfg.agent.n_step,
            self.env.num_extras, cfg.replay.prioritized,
            cfg.replay.sequence_length - cfg.replay.sequence_overlap if self.agent.sampler == "sequences" else None,
            cfg.network.lstm_size, frame_dtype=self.spec.obs_dtype, labels=bool(cfg.agent.aux.features))
        on_gpu = cfg.replay.frames_on_device and self.device.type == "cuda"
        if on_gpu:   # the frames go to GPU memory, the rest stays on the host
            frames = ReplayBuffer.frames_bytes(cfg.replay.capacity, self.env.num_envs, frame_shape,
                                               self.env.frame_stack, cfg.agent.n_step, self.spec.obs_dtype)
            gpu_free = torch.cuda.mem_get_info(self.device)[0]
            if frames > gpu_free:
                raise UserError(f"replay.frames_on_device: replay.capacity={cfg.replay.capacity} needs "
                                f"{frames / 2**30:.1f} GiB of GPU memory but only {gpu_free / 2**30:.1f} GiB are free; "
                                "lower replay.capacity or set replay.frames_on_device=false")
            needed -= frames
        free = runtime.available_memory()
        if free is not None and needed > free:
            raise UserError(f"replay.capacity={cfg.replay.capacity} needs {needed / 2**30:.1f} GiB but only "
                            f"{free / 2**30:.1f} GiB are free; lower replay.capacity")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_payload(self) -> dict:
        payload = {"agent": self.agent.state_dict(), "counters": asdict(self.counters),
                   "config": self.cfg.model_dump(), "obs_shape": list(self.obs_shape),
                   "obs_dtype": str(self.spec.obs_dtype).removeprefix("torch."), "num_extras": self.spec.num_extras,
                   "num_actions": self.env.num_actions, "rng": runtime.rng_state(),
                   "generator": self.generator.get_state(), "replay_rng": self.replay.rng_state,
                   "loop": {"last_log_steps": self.last_log_steps, "train_stats": self.train_stats,
                            "recent_returns": list(self.recent_returns)}}
        if hasattr(self.env, "get_state"):
            payload["env_state"] = self.env.get_state()
            payload["env_obs"] = self.step.obs
            payload["env_reset"] = self.step.reset          # the "first" flags of the next replay slot
            if self.acting_state is not None:
                payload["acting_state"] = tuple(self.acting_state)
        if self.cfg.replay.save_in_checkpoint:
            payload["replay"] = self.replay.state_dict()
        return payload

    def replay_arguments(self) -> tuple[dict, dict | None]:
        """``ReplayBuffer`` keyword arguments and its ``sequences`` (None for transitions), from the config and
        the env; checks first that the replay fits in free memory."""
        cfg, env = self.cfg, self.env
        frame_shape = (self.obs_shape[0] // env.frame_stack, *self.obs_shape[1:])
        self._check_replay_memory(frame_shape)
        kwargs = dict(capacity=cfg.replay.capacity, num_envs=env.num_envs, frame_shape=frame_shape,
                      frame_stack=env.frame_stack, num_extras=env.num_extras, n_step=cfg.agent.n_step,
                      gamma=cfg.agent.gamma, prioritized=cfg.replay.prioritized, alpha=cfg.replay.alpha,
                      priority_eps=cfg.replay.priority_eps, seed=cfg.seed, frame_dtype=self.spec.obs_dtype,
                      labels=bool(cfg.agent.aux.features),
                      frames_device=self.device if cfg.replay.frames_on_device else None)
        sequences = None if self.agent.sampler != "sequences" else dict(
            length=cfg.replay.sequence_length, burn_in=cfg.replay.burn_in, overlap=cfg.replay.sequence_overlap,
            state_size=cfg.network.lstm_size, eta=cfg.replay.priority_eta)
        return kwargs, sequences

    def save_checkpoint(self) -> Path:
        """``checkpoints/latest.pt`` and, beside it, the small bf16 ``weights.safetensors`` of the online network (the
        file a segment commits and the next one starts from: ``drl/segments.py``); both describe the same step."""
        path = self.run_dir / "checkpoints" / "latest.pt"
        payload = self.checkpoint_payload()
        checkpoint.save(path, payload)
        online = payload["agent"].get("online") if isinstance(payload["agent"], dict) else None
        if isinstance(online, dict):
            segments.save_weights(self.run_dir / segments.WEIGHTS, online, self.cfg, self.counters.env_steps,
                                  self.obs_shape, self.spec.obs_dtype, self.env.num_actions, self.spec.num_extras,
                                  self.env.frames_per_step)
        self.counters.checkpoints += 1
        return path

    def start_from(self, parent: segments.Parent) -> None:
        """A new run from another run's weights (``drl.train --init-from``): online and target networks (and the
        optimizer with ``parent.optimizer``) from ``parent``; counters, replay and schedules stay this run's own."""
        segments.start_from(self.agent, parent, self.cfg, self.obs_shape, self.env.num_actions, self.spec.num_extras)

    def _restore(self, payload: dict) -> None:
        fix = "resume with the config the run was started with"
        checkpoint.check_fits(payload, self.obs_shape, self.env.num_actions, fix)
        checkpoint.load_agent_state(self.agent, payload, fix)
        self.counters = Counters(**payload["counters"])
        runtime.set_rng_state(payload["rng"])
        self.generator.set_state(payload["generator"])
        self.replay.rng_state = payload["replay_rng"]
        if "replay" in payload:
            self.replay.load_state_dict(payload["replay"])
        loop = payload.get("loop", {})
        self.last_log_steps = loop.get("last_log_steps", self.counters.env_steps)
        self.train_stats = {k: list(v) for k, v in loop.get("train_stats", {}).items()}
        self.recent_returns.extend(loop.get("recent_returns", []))
        if "env_state" in payload and hasattr(self.env, "set_state"):
            self.env.set_state(payload["env_state"])
            self.step.obs = payload["env_obs"].to(self.device)
            if "env_reset" in payload:
                self.step.reset = payload["env_reset"].to(self.device)
            if "acting_state" in payload:
                self.acting_state = tuple(x.to(self.device) for x in payload["acting_state"])
        else:  # envs that cannot restore their emulator state start fresh episodes, seeded by the step count
            self.step = self.env.reset(seed=self.cfg.seed + self.counters.env_steps)
            self.replay.end_streams()   # a saved replay's open episodes end here (no window runs into the new ones)

    # ------------------------------------------------------------------ one training run
    def run(self) -> dict:
        cfg, c = self.cfg, self.counters
        agent_cfg = cfg.agent
        num_envs = self.env.num_envs
        started = time.perf_counter() - c.wall_time
        last_log_time, last_sps_steps = time.perf_counter(), c.env_steps
        last_eval: dict = {}
        last_eval_step = -1
        train_stats = self.train_stats
        first_flags = self.step.reset.clone()
        state = self.acting_state
        if state is None:
            state = self.agent.initial_state(num_envs)
        overlap = cfg.compute.overlap_env
        bar = tqdm(total=cfg.total_steps, initial=c.env_steps, unit="step", dynamic_ncols=True, smoothing=0.05,
                   mininterval=1.0, desc=cfg.name)
        self._bar = bar  # closed before an error is printed (so the message gets its own line)
        with StopRequested() as stop:
            self._stop = stop
            while c.env_steps < cfg.total_steps and not stop.requested:
                learning = c.env_steps >= agent_cfg.learning_starts
                epsilon = (linear(agent_cfg.eps_start, agent_cfg.eps_end, agent_cfg.eps_decay_steps, c.env_steps)
                           if learning or agent_cfg.learning_starts == 0 else 1.0)
                obs, extras, labels = self.step.obs, self.step.extras, self.step.labels
                actions, new_state = self.agent.act(obs, state, epsilon, extras)
                self.env.step_async(actions)
                if overlap:  # learn while the env steps (ALE threads, Doom workers): replay up to the last step
                    self._learn(learning, beta=linear(cfg.replay.beta_start, 1.0, cfg.total_steps, c.env_steps))
                step = self.env.step_wait()
                if cfg.env.reward_scale != 1.0:
                    step.reward = step.reward * cfg.env.reward_scale
                self.replay.add_step(obs, first_flags, actions, step, extras, acting_state=state, labels=labels)
                new_state = self.agent.reset_state(new_state, step.reset)
                state, first_flags, self.step = new_state, step.reset, step
                self.acting_state = state
                c.env_steps += num_envs
                bar.update(num_envs)
                for ep in step.episodes:
                    c.episodes += 1
                    self.recent_returns.append(ep["return"])
                    self.metrics.write("episode", c.env_steps, time.perf_counter() - started,
                                       **{k: v for k, v in ep.items() if k != "env"})
                if not overlap:
                    self._learn(learning, beta=linear(cfg.replay.beta_start, 1.0, cfg.total_steps, c.env_steps))
                if c.env_steps // agent_cfg.target_update_interval > c.target_syncs:
                    c.target_syncs = c.env_steps // agent_cfg.target_update_interval
                    self.agent.sync_target()

                # ---- logging, evaluation, checkpoints
                now = time.perf_counter()
                if c.env_steps - self.last_log_steps >= cfg.log_interval:
                    sps = (c.env_steps - last_sps_steps) / (now - last_log_time)
                    recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
                    means = {f"train/{k}": float(np.mean(v)) for k, v in train_stats.items()}
                    faults = {k: getattr(self.env, k) for k in ("worker_restarts", "episodes_dropped")
                              if hasattr(self.env, k)}  # Doom workers replaced after a crash or hang
                    self.metrics.write("train", c.env_steps, now - started, epsilon=epsilon, sps=sps,
                                       episodes=c.episodes, recent_return=recent, updates=self.agent.updates,
                                       **means, **faults)
                    bar.set_postfix(sps=f"{sps:.0f}", ret="-" if recent is None else f"{recent:.1f}",
                                    eps=f"{epsilon:.3f}", eval=last_eval.get("return_mean", "-"))
                    train_stats.clear()
                    last_log_time, last_sps_steps, self.last_log_steps = now, c.env_steps, c.env_steps
                last_eval, last_eval_step = self.evaluate_and_checkpoint(started, last_eval, last_eval_step)
                if self.stop_early:
                    break
                if cfg.eval.stop_at is not None and last_eval.get("return_mean", -math.inf) >= cfg.eval.stop_at:
                    tqdm.write(f"drl: evaluation reached eval.stop_at={cfg.eval.stop_at:g} at step {c.env_steps:,}")
                    break
            bar.close()
            # still under StopRequested: a signal now cuts the final evaluation short but the checkpoint is written
            if not stop.requested and last_eval_step != c.env_steps:
                last_eval = self.run_evaluation(time.perf_counter() - started)
            c.wall_time = time.perf_counter() - started
            self.save_checkpoint()
        return {"env_steps": c.env_steps, "interrupted": stop.requested, "signal": stop.signum, "eval": last_eval,
                "stopped_early": self.stop_early}

    def evaluate_and_checkpoint(self, started: float, last_eval: dict, last_eval_step: int) -> tuple[dict, int]:
        """Evaluate and checkpoint where their intervals are crossed; returns the last evaluation and its step."""
        c, cfg = self.counters, self.cfg
        if c.env_steps // cfg.eval.interval > c.evals:
            c.evals = c.env_steps // cfg.eval.interval
            evaluation = self.run_evaluation(time.perf_counter() - started)
            if evaluation:
                last_eval, last_eval_step = evaluation, c.env_steps
            else:  # cut short by a stop request: the resumed run evaluates instead
                last_eval = evaluation
                c.evals -= 1
        if c.env_steps // cfg.checkpoint_interval > c.checkpoints:
            c.wall_time = time.perf_counter() - started
            self.save_checkpoint()
            c.checkpoints = c.env_steps // cfg.checkpoint_interval
        return last_eval, last_eval_step

    def _learn(self, learning: bool, beta: float) -> None:
        """The updates this vector step owes (``agent.train_freq`` env steps per update), once replay is filled."""
        c, agent_cfg, train_stats = self.counters, self.cfg.agent, self.train_stats
        if not learning or len(self.replay) < self.fill_needed:
            return
        c.pending_updates += self.env.num_envs / agent_cfg.train_freq
        while c.pending_updates >= 1:
            c.pending_updates -= 1
            batch = self.replay.sample_for(self.agent.sampler, agent_cfg.batch_size, beta=beta, device=self.device)
            stats = self.agent.update(batch)
            self.replay.update_priorities(batch.indices, stats.pop("td_error"), getattr(batch, "mask", None))
            for key, value in stats.items():
                train_stats.setdefault(key, []).append(float(value))
            for key in ("q_mean", "loss", "grad_norm"):  # NaN weights would follow a bad gradient
                if key in train_stats and not math.isfinite(train_stats[key][-1]):
                    self._diverged(train_stats[key][-1], key)

    def run_evaluation(self, wall: float) -> dict:
        if self.eval_env is None:
            self.eval_env = make_env(self.cfg.env, self.device, self.cfg.seed + 10_000,
                                     num_envs=self.cfg.eval.num_envs, evaluation=True,
                                     max_frames=self.cfg.eval.max_frames, labels=self.cfg.agent.aux.features)
        t0 = time.perf_counter()
        # Each evaluation is a pure function of the weights and the step: its own seeds, and a generator of its
        # own, so evaluating never moves the training RNG (a resumed run continues exactly).
        seed = self.cfg.seed + 10_000 + self.counters.env_steps
        train_generator = self.agent.generator
        self.agent.generator = torch.Generator(device=self.device).manual_seed(seed)
        stop = getattr(self, "_stop", None)
        try:
            episodes = evaluate(self.agent, self.eval_env, self.cfg.eval.episodes, self.cfg.eval.epsilon, seed=seed,
                                stop=None if stop is None else (lambda: stop.requested))
        finally:
            self.agent.generator = train_generator
        if len(episodes) < self.cfg.eval.episodes:
            return {}  # interrupted
        summary = summarize(episodes)
        row = self.metrics.write("eval", self.counters.env_steps, wall, episodes=len(episodes),
                                 eval_seconds=time.perf_counter() - t0, returns=[ep["return"] for ep in episodes],
                                 **summary)
        tqdm.write(f"[eval] step {self.counters.env_steps:,}: return {summary['return_mean']:.2f} "
                   f"± {summary['return_std']:.2f} (median {summary['return_median']:.1f}, n={len(episodes)})")
        for hook in self.eval_hooks:
            if hook(row):
                self.stop_early = True
        return summary

    def _diverged(self, value: float, what: str = "loss") -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.close()
        latest = self.run_dir / "checkpoints" / "latest.pt"
        where = f"last good checkpoint: {latest}" if latest.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(f"{what} became {value} at env step {self.counters.env_steps} (update "
                               f"{self.agent.updates}); {where}. Lower agent.lr (or env.reward_scale) and resume "
                               "or restart")

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Flush metrics, finish tracking and close the envs (Doom workers included); safe to call twice."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.metrics.close()
        c = self.counters
        for tracker in self.metrics.trackers:
            tracker.finish({"env_steps": c.env_steps, "episodes": c.episodes, "wall_time": c.wall_time})
        for env in (self.env, self.eval_env):
            if env is not None:
                env.close()


def write_run_files(cfg: Config, run_dir: Path) -> None:
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
