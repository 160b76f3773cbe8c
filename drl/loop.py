"""The single-process training loop, shared by every agent.

One iteration: ``agent.act(obs) -> env.step(actions) -> replay.add(...) -> agent.update(replay.sample())`` as often
as ``agent.train_freq`` asks, then target sync, logging, evaluation and checkpoints on their intervals. The learn
step and those periodic tasks are ``drl.learner_core.LearnerCore``'s, which the distributed learner owns too.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from drl import segments
from drl.agent import EnvSpec, make_agent
from drl.config import Config, to_yaml
from drl.learner_core import LearnerCore, replay_arguments, set_up_runtime
from drl.replay import build_replay
from drl.schedule import linear
from drl.vec_env import fault_counters, make_env


def transitions_per_sample(cfg: Config, sampler: str) -> int:
    """Transitions one replay sample trains on: 1, or a sequence's ``sequence_length - burn_in`` steps (DRQN)."""
    return cfg.replay.sequence_length - cfg.replay.burn_in if sampler == "sequences" else 1


def replay_ratio(cfg: Config, sampler: str) -> float:
    """Transitions trained on per env step collected: ``batch_size`` samples per ``train_freq`` env steps (see
    ``transitions_per_sample``). Compare agents at equal ratios."""
    return cfg.agent.batch_size * transitions_per_sample(cfg, sampler) / cfg.agent.train_freq


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
    """One single-process training run: envs stepped here, and a ``LearnerCore`` (agent, replay, learn step,
    schedule, metrics, evaluation, checkpoints). A context manager that closes envs and workers::

        with Trainer(cfg, run_dir) as trainer:
            result = trainer.run()      # {"env_steps", "interrupted", "signal", "eval": the last evaluation row}

    ``run_dir`` must exist (``drl.learn`` and the CLI create it); ``resume_from`` is a loaded checkpoint payload;
    ``init_from`` a ``drl.segments.Parent`` (``load_parent``) whose weights a new run starts from (``cfg.init_from``
    records it).
    ``add_eval_hook(fn)``: ``fn(row)`` sees each evaluation row as written; a true return stops the run there.
    """

    def __init__(
        self, cfg: Config, run_dir: Path, resume_from: dict | None = None, init_from: segments.Parent | None = None
    ):
        self.cfg = cfg
        rt = set_up_runtime(cfg)
        self.device, self.bf16, self.threads, self.overlap_env = rt.device, rt.bf16, rt.threads, rt.overlap_env
        self.keep_freed_memory = rt.keep_freed_memory
        self.env = make_env(cfg.env, self.device, cfg.seed, labels=cfg.agent.aux.features)
        try:  # a failure below (memory, checkpoint) must not leave env workers behind
            self.step = self.env.reset(seed=cfg.seed)
            self.spec = EnvSpec.of(self.env, self.step.obs)
            self.agent = make_agent(cfg, self.spec, self.device, self.bf16, rt.generator)
            self.replay = build_replay(
                *replay_arguments(
                    cfg, self.spec, self.agent.sampler, self.device, self.env.num_envs, self.env.frame_stack
                )
            )
            self.acting_state: tuple | None = None  # the agent's state while acting (an LSTM's; None if feed-forward)
            self.core = LearnerCore(
                cfg,
                run_dir,
                rt,
                self.spec,
                self.agent,
                self.replay,
                self.env.frames_per_step,
                self._env_payload,
                resume_from,
                init_from,
            )
            self.counters = self.core.counters
            if resume_from is not None:
                self._restore_envs(resume_from)
        except BaseException:
            self.env.close()
            raise
        self.core.open_metrics(resumed=resume_from is not None)

    def add_eval_hook(self, hook) -> None:
        """``hook(row)`` sees every evaluation row; a true return stops the run (``LearnerCore.add_eval_hook``)."""
        self.core.add_eval_hook(hook)

    def _env_payload(self) -> dict:
        """What a checkpoint holds of the envs: their state, the next observation and acting state."""
        if not hasattr(self.env, "get_state"):
            return {}
        payload = {
            "env_state": self.env.get_state(),
            "env_obs": self.step.obs,
            "env_reset": self.step.reset,
        }  # the "first" flags of the next replay slot
        if self.acting_state is not None:
            payload["acting_state"] = tuple(self.acting_state)
        return payload

    def _restore_envs(self, payload: dict) -> None:
        if "env_state" in payload and hasattr(self.env, "set_state"):
            self.env.set_state(payload["env_state"])
            self.step.obs = payload["env_obs"].to(self.device)
            if "env_reset" in payload:
                self.step.reset = payload["env_reset"].to(self.device)
            if "acting_state" in payload:
                self.acting_state = tuple(x.to(self.device) for x in payload["acting_state"])
        else:  # envs that cannot restore their emulator state start fresh episodes, seeded by the step count
            self.step = self.env.reset(seed=self.cfg.seed + self.counters.env_steps)
            self.replay.end_streams()  # a saved replay's open episodes end here (no window runs into the new ones)

    # ------------------------------------------------------------------ one training run
    def run(self) -> dict:
        core, cfg, c = self.core, self.cfg, self.counters
        started = time.perf_counter() - c.wall_time
        self.last_log_time, self.last_sps_steps = time.perf_counter(), c.env_steps
        last_eval: dict = {}
        last_eval_step = -1
        self.first_flags = self.step.reset.clone()
        bar = core.open_progress_bar(cfg.name)  # closed before an error is printed (its own line)
        with StopRequested() as stop:
            core.stop = stop
            while c.env_steps < cfg.total_steps and not stop.requested:
                epsilon = self._env_step(started)
                if core.schedule.log_due(core.last_log_steps):
                    self._log(epsilon, started, last_eval)
                last_eval, last_eval_step = core.run_periodic_tasks(started, last_eval, last_eval_step)
                if core.stop_due(last_eval):
                    break
            bar.close()
            return core.finish(started, last_eval, last_eval_step)

    def _env_step(self, started: float) -> float:
        """One vector step: act, step the envs, learn what the step owes, store the step, sync the target when due.
        With ``compute.overlap_env`` the updates run while the envs step (between ``step_async`` and
        ``step_wait``), without it after the step is back; either way before the step is stored, so they sample
        the replay up to the previous step and both settings train identically. Returns the step's epsilon."""
        cfg, c, agent_cfg = self.cfg, self.counters, self.cfg.agent
        learning = c.env_steps >= agent_cfg.learning_starts
        epsilon = (
            linear(agent_cfg.eps_start, agent_cfg.eps_end, agent_cfg.eps_decay_steps, c.env_steps)
            if learning or agent_cfg.learning_starts == 0
            else 1.0
        )
        obs, extras, labels = self.step.obs, self.step.extras, self.step.labels
        state = self.acting_state if self.acting_state is not None else self.agent.initial_state(self.env.num_envs)
        actions, new_state = self.agent.act(obs, state, epsilon, extras)
        self.env.step_async(actions)
        overlap = self.overlap_env
        if overlap:  # learn while the env steps (ALE threads, Doom workers)
            self._learn(learning)
        step = self.env.step_wait()
        if not overlap:
            self._learn(learning)
        if cfg.env.reward_scale != 1.0:
            step.reward = step.reward * cfg.env.reward_scale
        self.replay.add_step(obs, self.first_flags, actions, step, extras, acting_state=state, labels=labels)
        self.acting_state = self.agent.reset_state(new_state, step.reset)
        self.first_flags, self.step = step.reset, step
        c.env_steps += self.env.num_envs
        assert self.core.bar is not None  # opened by run
        self.core.bar.update(self.env.num_envs)
        for ep in step.episodes:
            self.core.record_episode(ep, time.perf_counter() - started)
        self.core.sync_target_if_due()
        return epsilon

    def _log(self, epsilon: float, started: float, last_eval: dict) -> None:
        c, now = self.counters, time.perf_counter()
        sps = (c.env_steps - self.last_sps_steps) / (now - self.last_log_time)
        faults = fault_counters(self.env)  # e.g. Doom workers replaced after a crash or hang
        recent = self.core.write_train_row(now - started, faults, epsilon=epsilon, sps=sps)
        assert self.core.bar is not None  # opened by run
        self.core.bar.set_postfix(
            sps=f"{sps:.0f}",
            ret="-" if recent is None else f"{recent:.1f}",
            eps=f"{epsilon:.3f}",
            eval=last_eval.get("return_mean", "-"),
        )
        self.last_log_time, self.last_sps_steps = now, c.env_steps

    def _learn(self, learning: bool) -> None:
        """The updates this vector step owes (``agent.train_freq`` env steps per update), once replay is filled."""
        c = self.counters
        if not learning or len(self.replay) < self.core.fill_needed:
            return
        c.pending_updates += self.env.num_envs / self.cfg.agent.train_freq
        while c.pending_updates >= 1:
            c.pending_updates -= 1
            self.core.learn_step()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Flush metrics, finish tracking and close the envs (Doom workers included); safe to call twice."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.core.close()
        finally:
            self.env.close()


def write_run_files(cfg: Config, run_dir: Path) -> None:
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
