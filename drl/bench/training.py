"""``pong`` and ``doom`` sections: env steps/s of full training after ``learning_starts``, drl against SB3 DQN
(the SB3 side optional), the runs alternating ``--repeats`` times; the child tasks and their summary."""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from drl.bench.measure import note_descendants, quiet_trainer, sync

# SB3 DQN's Atari hyperparameters, applied to both sides of the same-hyperparameter comparison
SB3_HP: dict[str, Any] = dict(
    buffer_size=100_000,
    batch_size=32,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=1_000,
    learning_rate=1e-4,
    gamma=0.99,
    exploration_fraction=0.1,
    exploration_final_eps=0.05,
    max_grad_norm=10.0,
)


def _drl_same_hp_overrides(total: int, buffer: int | None = None) -> list[str]:
    """drl's atari-pong with SB3's DQN: one env, 1-step vanilla (non-double) DQN, the same schedule."""
    hp = SB3_HP
    return [
        "env.num_envs=1",
        f"agent.batch_size={hp['batch_size']}",
        f"agent.train_freq={hp['train_freq']}",
        f"agent.target_update_interval={hp['target_update_interval']}",
        f"replay.capacity={buffer or hp['buffer_size']}",
        f"agent.lr={hp['learning_rate']}",
        f"agent.gamma={hp['gamma']}",
        "agent.n_step=1",
        "agent.double=false",
        f"agent.eps_end={hp['exploration_final_eps']}",
        f"agent.eps_decay_steps={max(1, int(hp['exploration_fraction'] * total))}",
        f"agent.max_grad_norm={hp['max_grad_norm']}",
        "network.dueling=false",
    ]


def _flipped_overlap(experiment: str, overrides: list[str]) -> str:
    """The override that steps the envs the other way from what ``compute.overlap_env: auto`` picks here."""
    from drl import config, runtime

    cfg = config.load(experiment, overrides)
    device = runtime.resolve_device(cfg.device)
    auto = runtime.use_overlap_env(cfg.compute, cfg.env, device, runtime.thread_count(cfg.compute))
    return f"compute.overlap_env={'off' if auto else 'on'}"


def task_drl_train(spec: dict) -> dict:
    """drl training: time from the first iteration at ``learning_starts`` to the end, ``steps`` env steps later;
    ``flip_overlap``: with env stepping overlapped the other way from auto's choice."""
    ls, steps, device = spec["learning_starts"], spec["steps"], spec["device"]
    total = ls + steps
    overrides = [*spec.get("overrides", []), f"total_steps={total}", f"agent.learning_starts={ls}", f"device={device}"]
    if spec.get("same_hp"):
        overrides = [*_drl_same_hp_overrides(total, spec.get("buffer")), *overrides]
    elif spec.get("buffer"):
        overrides.append(f"replay.capacity={spec['buffer']}")
    if spec.get("flip_overlap"):
        overrides.append(_flipped_overlap(spec["experiment"], overrides))
    with tempfile.TemporaryDirectory(prefix="drl-bench-") as run_dir:
        trainer = quiet_trainer(spec["experiment"], overrides, run_dir)
        floor = None
        try:
            agent = trainer.agent
            mark: dict[str, float] = {}
            act = agent.act
            t_start = time.perf_counter()
            if spec.get("paired_floor"):  # the loop floor timed in blocks between drl's (drl.bench.paired_floor)
                from drl.bench.paired_floor import PairedFloor

                floor = PairedFloor(trainer)

            def timed_act(*args, **kwargs):  # first call at or past learning_starts starts the clock
                if not mark and trainer.counters.env_steps >= ls:
                    sync(trainer.device)
                    mark.update(t0=time.perf_counter(), s0=trainer.counters.env_steps, u0=agent.updates)
                    if floor is not None:
                        floor.start()
                elif floor is not None:
                    floor.maybe_block()
                return act(*args, **kwargs)

            agent.act = timed_act
            trainer.run()
            if floor is not None:
                floor.maybe_block(final=True)
            sync(trainer.device)
            t1 = time.perf_counter()
            seconds = t1 - mark["t0"] - (floor.paused if floor is not None else 0.0)  # drl's own time
            cfg = trainer.cfg
            result = {
                "sps": (trainer.counters.env_steps - mark["s0"]) / seconds,
                "fill_sps": mark["s0"] / (mark["t0"] - t_start),
                "updates_per_s": (agent.updates - mark["u0"]) / seconds,
                "timed_steps": trainer.counters.env_steps - mark["s0"],
                "seconds": seconds,
                "updates": agent.updates - mark["u0"],
                "device": str(trainer.device),
                "bf16": trainer.bf16,
                "threads": trainer.threads,
                "overlap_env": trainer.overlap_env,
                "num_envs": cfg.env.num_envs,
                "batch_size": cfg.agent.batch_size,
                "buffer": cfg.replay.capacity,
                "train_freq": cfg.agent.train_freq,
                "n_step": cfg.agent.n_step,
                "double": cfg.agent.double,
                "algo": cfg.agent.algo,
                "overrides": overrides,
            }
            if floor is not None:
                result["paired_floor_blocks"] = floor.blocks
        finally:
            note_descendants()
            if floor is not None:
                floor.close()
            trainer.close()
    return result


def sb3_threads() -> int:
    """drl's thread rule for SB3 too (``drl.runtime.configure_threads``: DRL_THREADS, else every usable core)."""
    from drl import runtime
    from drl.config import ComputeConfig

    return runtime.configure_threads(ComputeConfig.model_validate({}))  # defaults; mypy reads Field(0) as required


def _sb3_clock(start: int):
    from stable_baselines3.common.callbacks import BaseCallback

    class Clock(BaseCallback):
        """Starts the clock once ``start`` env steps were taken (SB3 trains once num_timesteps > learning_starts)."""

        def __init__(self):
            super().__init__()
            self.t0 = self.s0 = None

        def _on_step(self) -> bool:
            if self.t0 is None and self.num_timesteps >= start:
                self.t0, self.s0 = time.perf_counter(), self.num_timesteps
            return True

    return Clock()


def _sb3_learn(env, spec: dict, sb3_device: str) -> dict:
    import torch
    from stable_baselines3 import DQN

    threads = sb3_threads()
    ls, steps = spec["learning_starts"], spec["steps"]
    hp = {**SB3_HP, "buffer_size": spec.get("buffer") or SB3_HP["buffer_size"]}
    model = DQN(
        "CnnPolicy", env, learning_starts=ls, optimize_memory_usage=False, device=sb3_device, seed=0, verbose=0, **hp
    )
    clock = _sb3_clock(ls)
    t_start = time.perf_counter()
    model.learn(total_timesteps=ls + steps, callback=clock)
    if torch.device(sb3_device).type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    done = model.num_timesteps - clock.s0
    assert model.observation_space.shape is not None  # a Box of frames
    env.close()
    return {
        "sps": done / (t1 - clock.t0),
        "fill_sps": clock.s0 / (clock.t0 - t_start),
        "timed_steps": done,
        "seconds": t1 - clock.t0,
        "updates": model._n_updates,
        "device": str(model.device),
        "bf16": False,
        "threads": threads,
        "num_envs": 1,
        "batch_size": SB3_HP["batch_size"],
        "buffer": hp["buffer_size"],
        "train_freq": SB3_HP["train_freq"],
        "n_step": 1,
        "double": False,
        "algo": "sb3-dqn",
        "obs_shape": list(model.observation_space.shape),
    }


def task_sb3_pong(spec: dict) -> dict:
    import ale_py
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0), n_stack=4)
    return _sb3_learn(env, spec, spec["device"])


def _doom_gym_env(frame_skip: int = 4, height: int = 60, width: int = 80):
    """vizdoom's own gymnasium env, health_gathering rendered 160x120 GRAY8 (as drl renders it), resized to
    ``height`` x ``width`` (area) and reduced to the screen; actions passed as Python ints (ViZDoom #574)."""
    import cv2
    import gymnasium as gym
    import numpy as np
    import vizdoom.gymnasium_wrapper  # noqa: F401 - registers the Vizdoom*-v1 ids

    class Screen60x80(gym.Wrapper):
        def __init__(self, env):
            super().__init__(env)
            self.observation_space = gym.spaces.Box(0, 255, (height, width, 1), np.uint8)

        def _obs(self, obs):
            screen = obs["screen"]
            if screen.shape[-1] == 3:
                screen = cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY)
            return cv2.resize(screen, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, 1)

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return self._obs(obs), info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(int(action))
            return self._obs(obs), reward, terminated, truncated, info

    return Screen60x80(
        gym.make(
            "VizdoomHealthGathering-v1", frame_skip=frame_skip, screen_resolution="RES_160X120", screen_format="GRAY8"
        )
    )


def task_sb3_doom(spec: dict) -> dict:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env = VecFrameStack(make_vec_env(_doom_gym_env, n_envs=1, seed=0), n_stack=4)
    return _sb3_learn(env, spec, spec["device"])


def _summary(samples: list[dict]) -> dict:
    """Median steps/s over repeats, every sample kept, peak memory the largest seen."""
    good = [s for s in samples if "error" not in s]
    if not good:
        return {"error": samples[0]["error"] if samples else "not run", "samples": samples}
    sps = [s["sps"] for s in good]
    per_sample = ("sps", "fill_sps", "seconds", "timed_steps", "updates_per_s", "task_seconds", "updates")
    keep = {k: v for k, v in good[0].items() if k not in (*per_sample, "paired_floor_blocks")}
    out = {
        "sps": statistics.median(sps),
        "sps_samples": sps,
        "sps_min": min(sps),
        "sps_max": max(sps),
        "updates_per_s": statistics.median([s.get("updates_per_s", s["updates"] / s["seconds"]) for s in good]),
        "fill_sps": statistics.median([s["fill_sps"] for s in good]),
        **keep,
    }
    for key in ("peak_rss_mb", "peak_rss_children_mb", "cuda_peak_mb"):
        values = [s[key] for s in good if key in s]
        if values:
            out[key] = max(values)
    blocks = [b for s in good for b in s.get("paired_floor_blocks", [])]
    if blocks:  # every repeat's floor blocks (drl.bench.paired_floor)
        out["paired_floor_blocks"] = blocks
    if len(good) < len(samples):
        out["failed_samples"] = [s["error"] for s in samples if "error" in s]
    return out


def _ratio(a: dict, b: dict) -> float | None:
    return a["sps"] / b["sps"] if "sps" in a and "sps" in b and b["sps"] > 0 else None


def sb3_status(skip: bool) -> str | None:
    """None if SB3 runs, else why not."""
    if skip:
        return "skipped (--skip-sb3)"
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return "stable-baselines3 is not installed (pip install -e '.[bench]')"
    return None


def bench_training(run, devices: list[str], args, sb3_skip: str | None, ls: int) -> tuple[dict, dict]:
    """The ``pong`` and ``doom`` sections (those in ``--only``) on every device: ``{device: results}`` each."""
    pong: dict[str, dict] = {}
    doom: dict[str, dict] = {}
    for device in devices:
        common = {"learning_starts": ls, "steps": args.steps, "device": device, "buffer": args.buffer}
        flipped = {"flip_overlap": True}  # the same run, env stepping overlapped the other way from auto's choice
        paired = {"paired_floor": True}  # the loop floor timed beside drl, in the same process
        same_hp = {"task": "drl_train", "experiment": "atari-pong", "same_hp": True, **common}
        drqn = {"task": "drl_train", "experiment": "doom-health-gathering", **common}
        pong_specs = {
            "drl_same_hp": {**same_hp, **paired},
            "drl_same_hp_overlap_flipped": {**same_hp, **paired, **flipped},  # paused alike: a fair comparison
            "drl_default": {"task": "drl_train", "experiment": "atari-pong", **common, **paired},
        }
        doom_specs = {"drl_drqn": drqn, "drl_drqn_overlap_flipped": {**drqn, **flipped}}
        if sb3_skip is None:
            pong_specs["sb3"] = {"task": "sb3_pong", **common}
            doom_specs["sb3"] = {"task": "sb3_doom", **common}
        for section, specs, out in (("pong", pong_specs, pong), ("doom", doom_specs, doom)):
            if section not in args.only:
                continue
            print(
                f"[{section} / {device}] {' / '.join(specs)} alternating, {args.repeats} repeat(s), "
                f"{args.steps} steps after learning_starts={ls}",
                flush=True,
            )
            samples: dict[str, list] = {name: [] for name in specs}
            for r in range(args.repeats):
                for name, spec in specs.items():
                    samples[name].append(run(spec, f"{section}/{device}/{name} #{r + 1}"))
            res: dict[str, Any] = {name: _summary(s) for name, s in samples.items()}
            if sb3_skip is not None:
                res["sb3"] = {"skipped": sb3_skip}
            if section == "pong":
                res["ratio_same_hp_vs_sb3"] = _ratio(res["drl_same_hp"], res["sb3"])
                res["ratio_default_vs_sb3"] = _ratio(res["drl_default"], res["sb3"])
                res["ratio_same_hp_per_repeat"] = _paired(samples["drl_same_hp"], samples.get("sb3"))
                res.update(overlap_comparison(res["drl_same_hp"], res["drl_same_hp_overlap_flipped"]))
            else:
                res["ratio_drqn_vs_sb3"] = _ratio(res["drl_drqn"], res["sb3"])
                res["ratio_per_repeat"] = _paired(samples["drl_drqn"], samples.get("sb3"))
                res.update(overlap_comparison(res["drl_drqn"], res["drl_drqn_overlap_flipped"]))
            out[device] = res
    return pong, doom


def overlap_comparison(auto: dict, flipped: dict) -> dict:
    """``overlap_gain`` (steps/s with env stepping overlapped / without), what ``compute.overlap_env: auto`` chose
    (``overlap_auto``) and whether that was the faster of the two here (``overlap_auto_faster``)."""
    if "sps" not in auto or "sps" not in flipped:
        return {}
    chose_on = auto["overlap_env"]
    on, off = (auto, flipped) if chose_on else (flipped, auto)
    gain = on["sps"] / off["sps"]
    return {"overlap_gain": gain, "overlap_auto": chose_on, "overlap_auto_faster": gain >= 1 if chose_on else gain <= 1}


def _paired(a: list[dict], b: list[dict] | None) -> list[float] | None:
    if not b:
        return None
    return [x["sps"] / y["sps"] for x, y in zip(a, b) if "sps" in x and "sps" in y]
