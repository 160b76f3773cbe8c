"""``python -m drl.bench [--quick] [--steps N] [--repeats R] [--out bench.json] [--skip-sb3]``: measured speed.

Everything is measured when it runs; no figure is written in. Sections:

1. ``pong``: env steps/s of full DQN training on Pong after ``learning_starts`` (acting + env + replay + updates),
   drl with SB3's hyperparameters (1 env, batch 32, train every 4, buffer 100k, target 1k, 1-step vanilla DQN),
   drl's own ``atari-pong`` config, and SB3 DQN (CnnPolicy, ``make_atari_env`` + 4-frame stack), run in turn
   A, B, C, A, B, C, ... ``--repeats`` times so that machine drift hits all of them alike.
2. ``doom``: the same for ViZDoom health_gathering (60x80 gray, frame skip 4): drl's ``doom-health-gathering``
   DRQN vs SB3 DQN through vizdoom's gymnasium env (resized to 60x80 gray, 4-frame stack).
3. ``update``: the raw update floor (one Nature-CNN double-DQN update in plain torch: online fwd+bwd, online and
   target fwd on the next obs, Huber, Adam, grad clip) at batch 32 and 64, fp32 and bf16 autocast, against
   drl's time per update in its loop (``replay.sample`` + ``agent.update`` + priority update + stat reads).
4. ``replay``: replay bytes per transition from the tensors actually allocated (Atari 84x84, Doom 60x80), and
   SB3's buffer for comparison.
5. ``vecenv``: vector-env steps/s with random actions, delivered as drl ``VecStep`` tensors on the device.
6. ``memory``: peak RSS of every measurement's process (and of its child processes, e.g. Doom workers).

Each measurement runs in its own fresh process (``--task``), so peaks, thread settings and emulator state never
leak between them. Where CUDA is available the drl figures (and SB3's) are also taken with ``device=cuda``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT_TAG = "DRL_BENCH_RESULT "
SECTIONS = ("pong", "doom", "update", "replay", "vecenv")

TARGETS = {  # from the issue; compared with measured values only
    "pong_dqn_vs_sb3": 4.0,        # drl DQN env steps/s >= 4x SB3 DQN on Pong (same hyperparameters)
    "update_share": 0.90,          # drl update >= 90% of the plain-torch floor's speed (floor_ms / drl_ms)
    "atari_vecenv_sps": 2700.0,    # AtariVecEnv steps/s (best env count)
    "doom_vecenv_sps": 5000.0,     # DoomVectorEnv steps/s (best env count)
    "doom_drqn_vs_sb3": 2.0,       # drl DRQN env steps/s >= 2x SB3 DQN on Doom
}

# SB3 DQN's Atari hyperparameters, applied to both sides of the same-hyperparameter comparison
SB3_HP = dict(buffer_size=100_000, batch_size=32, train_freq=4, gradient_steps=1, target_update_interval=1_000,
              learning_rate=1e-4, gamma=0.99, exploration_fraction=0.1, exploration_final_eps=0.05,
              max_grad_norm=10.0)


def _drl_same_hp_overrides(total: int, buffer: int | None = None) -> list[str]:
    """drl's atari-pong with SB3's DQN: one env, 1-step vanilla (non-double) DQN, the same schedule."""
    hp = SB3_HP
    return ["env.num_envs=1", f"agent.batch_size={hp['batch_size']}", f"agent.train_freq={hp['train_freq']}",
            f"agent.target_update_interval={hp['target_update_interval']}",
            f"replay.capacity={buffer or hp['buffer_size']}",
            f"agent.lr={hp['learning_rate']}", f"agent.gamma={hp['gamma']}", "agent.n_step=1", "agent.double=false",
            f"agent.eps_end={hp['exploration_final_eps']}",
            f"agent.eps_decay_steps={max(1, int(hp['exploration_fraction'] * total))}",
            f"agent.max_grad_norm={hp['max_grad_norm']}", "network.dueling=false"]


# ============================================================================================ machine
def machine_info() -> dict:
    import torch

    from drl import runtime

    cpu, flags = "unknown", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1]
    except OSError:
        pass
    flag_set = set(flags.split())
    info = {
        "cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "cpu_bf16_native": runtime.cpu_has_bf16(), "amx": bool({"amx_bf16", "amx_tile"} & flag_set),
        "avx512_bf16": "avx512_bf16" in flag_set, "drl_threads_env": os.environ.get("DRL_THREADS"),
        "cuda": torch.cuda.is_available(),
    }
    if info["cuda"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_bf16"] = torch.cuda.is_bf16_supported()
    for name in ("stable_baselines3", "ale_py", "vizdoom", "gymnasium", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - optional
            info[name] = None
    return info


# ============================================================================================ child tasks
_CHILD_PEAK_MB = [0.0]


def note_descendants() -> float:
    """Sum of the peak RSS (VmHWM) of every live descendant process (e.g. Doom workers, which a forkserver
    forks, so RUSAGE_CHILDREN never sees them); call it before closing what started them. MiB."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in mine}
        mine |= frontier
    total = 0.0
    for pid in mine:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except (OSError, ValueError):
            continue
    _CHILD_PEAK_MB[0] = max(_CHILD_PEAK_MB[0], total)
    return total


def _self_peak_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the address space, so it starts afresh at exec; ru_maxrss (the
    fallback) carries the parent's peak over a fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peaks() -> dict:
    """Peak resident memory of this process and of its child processes, in MiB (Linux reports KiB): children are
    the larger of the largest waited-for child and the summed peaks of live descendants seen by
    ``note_descendants``."""
    out = {"peak_rss_mb": _self_peak_mb(),
           "peak_rss_children_mb": max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                                       _CHILD_PEAK_MB[0])}
    try:
        import torch
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001
        pass
    return out


def _sync(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _threads() -> int:
    """Same thread rule for drl and SB3: DRL_THREADS, else every usable core."""
    import torch
    n = int(os.environ.get("DRL_THREADS", 0)) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def _trainer(experiment: str, overrides: list[str], run_dir: str):
    """A drl Trainer with evaluation, checkpoints and tracking out of the way."""
    from drl import config
    from drl.loop import Trainer

    cfg = config.load(experiment, ["tracking.wandb=off", "eval.interval=1000000000",
                                   "checkpoint_interval=1000000000", *overrides])
    trainer = Trainer(cfg, run_dir)
    trainer.run_evaluation = lambda wall: {}      # run() evaluates at its end: not part of training speed
    trainer.save_checkpoint = lambda: None
    return trainer


def task_drl_train(spec: dict) -> dict:
    """drl training: time from the first iteration at ``learning_starts`` to the end, ``steps`` env steps later."""
    ls, steps, device = spec["learning_starts"], spec["steps"], spec["device"]
    total = ls + steps
    overrides = [*spec.get("overrides", []), f"total_steps={total}", f"agent.learning_starts={ls}",
                 f"device={device}"]
    if spec.get("same_hp"):
        overrides = [*_drl_same_hp_overrides(total, spec.get("buffer")), *overrides]
    elif spec.get("buffer"):
        overrides.append(f"replay.capacity={spec['buffer']}")
    with tempfile.TemporaryDirectory(prefix="drl-bench-") as run_dir:
        trainer = _trainer(spec["experiment"], overrides, run_dir)
        try:
            agent, mark = trainer.agent, {}
            act = agent.act
            t_start = time.perf_counter()

            def timed_act(*args, **kwargs):   # first call at or past learning_starts starts the clock
                if not mark and trainer.counters.env_steps >= ls:
                    _sync(trainer.device)
                    mark.update(t0=time.perf_counter(), s0=trainer.counters.env_steps, u0=agent.updates)
                return act(*args, **kwargs)

            agent.act = timed_act
            trainer.run()
            _sync(trainer.device)
            t1 = time.perf_counter()
            cfg = trainer.cfg
            result = {
                "sps": (trainer.counters.env_steps - mark["s0"]) / (t1 - mark["t0"]),
                "fill_sps": mark["s0"] / (mark["t0"] - t_start),
                "updates_per_s": (agent.updates - mark["u0"]) / (t1 - mark["t0"]),
                "timed_steps": trainer.counters.env_steps - mark["s0"], "seconds": t1 - mark["t0"],
                "updates": agent.updates - mark["u0"], "device": str(trainer.device), "bf16": trainer.bf16,
                "threads": trainer.threads, "num_envs": cfg.env.num_envs, "batch_size": cfg.agent.batch_size,
                "buffer": cfg.replay.capacity,
                "train_freq": cfg.agent.train_freq, "n_step": cfg.agent.n_step, "double": cfg.agent.double,
                "algo": cfg.agent.algo, "overrides": overrides,
            }
        finally:
            note_descendants()
            trainer.close()
    return result


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

    threads = _threads()
    ls, steps = spec["learning_starts"], spec["steps"]
    hp = {**SB3_HP, "buffer_size": spec.get("buffer") or SB3_HP["buffer_size"]}
    model = DQN("CnnPolicy", env, learning_starts=ls, optimize_memory_usage=False, device=sb3_device, seed=0,
                verbose=0, **hp)
    clock = _sb3_clock(ls)
    t_start = time.perf_counter()
    model.learn(total_timesteps=ls + steps, callback=clock)
    if torch.device(sb3_device).type == "cuda":
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    done = model.num_timesteps - clock.s0
    env.close()
    return {"sps": done / (t1 - clock.t0), "fill_sps": clock.s0 / (clock.t0 - t_start), "timed_steps": done,
            "seconds": t1 - clock.t0, "updates": model._n_updates, "device": str(model.device), "bf16": False,
            "threads": threads, "num_envs": 1, "batch_size": SB3_HP["batch_size"], "buffer": hp["buffer_size"],
            "train_freq": SB3_HP["train_freq"], "n_step": 1, "double": False, "algo": "sb3-dqn",
            "obs_shape": list(model.observation_space.shape)}


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

    return Screen60x80(gym.make("VizdoomHealthGathering-v1", frame_skip=frame_skip,
                                screen_resolution="RES_160X120", screen_format="GRAY8"))


def task_sb3_doom(spec: dict) -> dict:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env = VecFrameStack(make_vec_env(_doom_gym_env, n_envs=1, seed=0), n_stack=4)
    return _sb3_learn(env, spec, spec["device"])


# -------------------------------------------------------------------------------------------- update floor
def _floor_update_fn(device, batch: int, bf16: bool, num_actions: int = 6):
    """One plain-torch Nature-CNN double-DQN update on fixed uint8 batches already on the device."""
    import copy
    from contextlib import nullcontext

    import torch
    import torch.nn.functional as F
    from torch import nn

    net = nn.Sequential(nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
                        nn.Linear(512, num_actions)).to(device)
    target = copy.deepcopy(net).requires_grad_(False)
    try:
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1.5e-4, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1.5e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    obs = torch.randint(0, 256, (batch, 4, 84, 84), generator=g, dtype=torch.uint8).to(device)
    nxt = torch.randint(0, 256, (batch, 4, 84, 84), generator=g, dtype=torch.uint8).to(device)
    actions = torch.randint(0, num_actions, (batch,), generator=g).to(device)
    rewards = torch.randn(batch, generator=g).to(device)
    discounts = torch.full((batch,), 0.99).to(device)
    cast = (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)) if bf16 else nullcontext
    params = list(net.parameters())

    def update():
        with cast():
            q = net(obs.float().div_(255.0)).float()
            with torch.no_grad():
                x = nxt.float().div_(255.0)
                best = net(x).float().argmax(1, keepdim=True)
                y = rewards + discounts * target(x).float().gather(1, best).squeeze(1)
        loss = F.huber_loss(q.gather(1, actions[:, None]).squeeze(1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()

    return update


def _time_calls(fn, n: int, warmup: int, device) -> float:
    """Milliseconds per call of ``fn`` over ``n`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) * 1000 / n


def task_update(spec: dict) -> dict:
    """Floor vs drl, alternating floor / drl blocks ``repeats`` times per (batch, precision)."""
    device, n, warmup, fill, repeats = spec["device"], spec["updates"], spec["warmup"], spec["fill"], spec["repeats"]
    with tempfile.TemporaryDirectory(prefix="drl-bench-") as run_dir:
        # fill drl's replay through its own loop (no updates: learning starts at the last step)
        trainer = _trainer("atari-pong", [f"total_steps={fill}", f"agent.learning_starts={fill}",
                                          f"device={device}",
                                          *([f"replay.capacity={spec['buffer']}"] if spec.get("buffer") else [])],
                           run_dir)
        try:
            trainer.run()
            agent, replay, dev = trainer.agent, trainer.replay, trainer.device
            default_bf16 = trainer.bf16

            def drl_update_fn(batch_size: int):
                def one():  # what the loop does per update (drl/loop.py "learning")
                    batch = replay.sample(batch_size, beta=0.4, device=dev)
                    stats, td = agent.update(batch)
                    replay.update_priorities(batch.indices, td, getattr(batch, "mask", None))
                    for value in stats.values():
                        float(value)
                return one

            out = {"device": str(dev), "threads": trainer.threads, "drl_default_bf16": default_bf16,
                   "updates_timed": n, "replay_fill": len(replay), "cases": {}}
            for batch_size in spec["batch_sizes"]:
                for precision in ("fp32", "bf16"):
                    bf16 = precision == "bf16"
                    floor = _floor_update_fn(dev, batch_size, bf16, trainer.env.num_actions)
                    agent.bf16 = bf16
                    drl_one = drl_update_fn(batch_size)
                    floor_ms, drl_ms, sample_ms = [], [], []
                    for _ in range(repeats):
                        floor_ms.append(_time_calls(floor, n, warmup, dev))
                        drl_ms.append(_time_calls(drl_one, n, warmup, dev))
                        sample_ms.append(_time_calls(lambda: replay.sample(batch_size, beta=0.4, device=dev),
                                                     n, warmup, dev))
                    f, d = statistics.median(floor_ms), statistics.median(drl_ms)
                    out["cases"][f"b{batch_size}_{precision}"] = {
                        "batch_size": batch_size, "precision": precision, "floor_ms": f, "drl_ms": d,
                        "drl_sample_ms": statistics.median(sample_ms), "share": f / d,
                        "drl_default_precision": bf16 == default_bf16,
                        "floor_ms_samples": floor_ms, "drl_ms_samples": drl_ms}
            agent.bf16 = default_bf16
        finally:
            trainer.close()
    return out


# -------------------------------------------------------------------------------------------- replay bytes
def _allocated_bytes(obj) -> int:
    import numpy as np
    import torch

    total = 0
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
        elif hasattr(value, "tree") and isinstance(getattr(value, "tree"), np.ndarray):  # SumTree
            total += value.tree.nbytes
    return total


def task_replay(spec: dict) -> dict:
    """Bytes per transition of the buffers the configs allocate (tensors are zero-filled lazily; nothing is
    touched here, the sizes are those of the allocated storage)."""
    from drl import config
    from drl.replay import ReplayBuffer

    out = {}
    for name, experiment, extras_of in (("atari_84x84", "atari-pong", None),
                                        ("doom_60x80", "doom-health-gathering", "doom")):
        cfg = config.load(experiment)
        env = cfg.env
        if extras_of == "doom":
            from envs.doom import DoomSettings
            settings = DoomSettings(**{"frame_skip": env.frame_skip, "frame_stack": env.frame_stack, **env.doom})
            frame_shape = (settings.frame_channels, settings.obs_height, settings.obs_width)
            num_extras = len(settings.game_variable_names())
        else:
            frame_shape, num_extras = (1, 84, 84), 0
        capacity = spec.get("buffer") or cfg.replay.capacity
        replay = ReplayBuffer(capacity, env.num_envs, frame_shape, env.frame_stack, num_extras,
                              n_step=cfg.agent.n_step, gamma=cfg.agent.gamma, prioritized=cfg.replay.prioritized)
        if cfg.agent.algo == "drqn":
            replay.enable_sequences(cfg.replay.sequence_length, cfg.replay.burn_in, cfg.replay.sequence_overlap,
                                    cfg.network.lstm_size, cfg.replay.priority_eta)
        transitions = replay.num_envs * replay.capacity
        allocated = _allocated_bytes(replay)
        out[name] = {"experiment": experiment, "transitions": transitions, "frame_shape": list(frame_shape),
                     "frame_stack": env.frame_stack, "core_bytes": replay.nbytes(),
                     "allocated_bytes": allocated, "bytes_per_transition": replay.nbytes() / transitions,
                     "allocated_bytes_per_transition": allocated / transitions,
                     "obs_bytes": int(env.frame_stack * frame_shape[0] * frame_shape[1] * frame_shape[2])}
    if not spec.get("skip_sb3"):
        out["sb3"] = _sb3_replay_bytes(spec.get("buffer") or SB3_HP["buffer_size"])
    return out


def _sb3_replay_bytes(size: int) -> dict:
    try:
        import gymnasium as gym
        import numpy as np
        from stable_baselines3.common.buffers import ReplayBuffer as SB3Replay
    except ImportError:
        return {"skipped": "stable-baselines3 is not installed (pip install -e '.[bench]')"}
    out = {}
    for name, shape, actions in (("atari_84x84", (4, 84, 84), 6), ("doom_60x80", (4, 60, 80), 4)):
        for optimize in (False, True):
            buf = SB3Replay(size, gym.spaces.Box(0, 255, shape, np.uint8), gym.spaces.Discrete(actions),
                            device="cpu", optimize_memory_usage=optimize, handle_timeout_termination=not optimize)
            allocated = _allocated_bytes(buf)
            out[f"{name}{'_optimized' if optimize else ''}"] = {
                "transitions": size, "allocated_bytes": allocated, "bytes_per_transition": allocated / size}
            del buf
    return out


# -------------------------------------------------------------------------------------------- vector envs
def task_vecenv(spec: dict) -> dict:
    """Random actions through drl's vector envs; steps/s = envs x vector steps / seconds, obs on the device."""
    import torch

    from drl import config
    from envs import make_env

    kind, device = spec["kind"], torch.device(spec["device"])
    experiment = {"atari": "atari-pong", "doom": "doom-health-gathering", "catch": "catch"}[kind]
    env_cfg = config.load(experiment).env
    rows = {}
    for n in spec["counts"]:
        env = make_env(env_cfg, device, seed=0, num_envs=n)
        try:
            gen = torch.Generator(device=device).manual_seed(0)
            step = env.reset(seed=0)

            def one():
                nonlocal step
                actions = torch.randint(0, env.num_actions, (n,), generator=gen, device=device)
                step = env.step(actions)

            for _ in range(spec["warmup"]):
                one()
            _sync(device)
            t0, steps = time.perf_counter(), 0
            while steps < spec["min_steps"] or time.perf_counter() - t0 < spec["min_seconds"]:
                one()
                steps += 1
            assert step.obs.device.type == device.type and step.obs.dtype == torch.uint8
            _sync(device)
            seconds = time.perf_counter() - t0
        finally:
            note_descendants()
            env.close()
        rows[str(n)] = {"num_envs": n, "sps": n * steps / seconds, "vector_steps": steps, "seconds": seconds,
                        "workers": getattr(env, "num_workers", None),
                        "obs_shape": list(step.obs.shape[1:])}
    return {"kind": kind, "device": str(device), "experiment": experiment, "counts": rows}


TASKS = {"drl_train": task_drl_train, "sb3_pong": task_sb3_pong, "sb3_doom": task_sb3_doom,
         "update": task_update, "replay": task_replay, "vecenv": task_vecenv}


def run_task_here(spec: dict) -> None:
    """Child side: run one task and print its result as one tagged JSON line."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    t0 = time.perf_counter()
    result = TASKS[spec["task"]](spec)
    result["task_seconds"] = time.perf_counter() - t0
    result.update(_peaks())
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


# ============================================================================================ parent
class Runner:
    def __init__(self, timeout: float, verbose: bool = True):
        self.timeout, self.verbose = timeout, verbose
        self.errors: list[str] = []

    def __call__(self, spec: dict, label: str) -> dict:
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "drl.bench", "--task", json.dumps(spec)],
                                  capture_output=True, text=True, timeout=self.timeout, env=env,
                                  cwd=Path(__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:
            return self._fail(label, f"timed out after {self.timeout:.0f} s")
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_TAG):
                result = json.loads(line[len(RESULT_TAG):])
                if self.verbose:
                    headline = f"{result['sps']:,.0f} steps/s" if "sps" in result else "done"
                    print(f"  {label}: {headline} ({time.perf_counter() - t0:.1f} s)", flush=True)
                return result
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return self._fail(label, f"exit code {proc.returncode}: " + " | ".join(tail))

    def _fail(self, label: str, why: str) -> dict:
        self.errors.append(f"{label}: {why}")
        print(f"  {label}: FAILED ({why[-400:]})", file=sys.stderr, flush=True)
        return {"error": why}


def _summary(samples: list[dict]) -> dict:
    """Median steps/s over repeats, every sample kept, peak memory the largest seen."""
    good = [s for s in samples if "error" not in s]
    if not good:
        return {"error": samples[0]["error"] if samples else "not run", "samples": samples}
    sps = [s["sps"] for s in good]
    keep = {k: v for k, v in good[0].items() if k not in ("sps", "fill_sps", "seconds", "timed_steps",
                                                         "updates_per_s", "task_seconds", "updates")}
    out = {"sps": statistics.median(sps), "sps_samples": sps, "sps_min": min(sps), "sps_max": max(sps),
           "updates_per_s": statistics.median([s.get("updates_per_s", s["updates"] / s["seconds"]) for s in good]),
           "fill_sps": statistics.median([s["fill_sps"] for s in good]), **keep}
    for key in ("peak_rss_mb", "peak_rss_children_mb", "cuda_peak_mb"):
        values = [s[key] for s in good if key in s]
        if values:
            out[key] = max(values)
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
    pong, doom = {}, {}
    for device in devices:
        common = {"learning_starts": ls, "steps": args.steps, "device": device, "buffer": args.buffer}
        sequential = {"overrides": ["compute.overlap_env=false"]}  # the same run, env stepping not overlapped
        pong_specs = {"drl_same_hp": {"task": "drl_train", "experiment": "atari-pong", "same_hp": True, **common},
                      "drl_same_hp_sequential": {"task": "drl_train", "experiment": "atari-pong", "same_hp": True,
                                                 **common, **sequential},
                      "drl_default": {"task": "drl_train", "experiment": "atari-pong", **common}}
        doom_specs = {"drl_drqn": {"task": "drl_train", "experiment": "doom-health-gathering", **common},
                      "drl_drqn_sequential": {"task": "drl_train", "experiment": "doom-health-gathering", **common,
                                              **sequential}}
        if sb3_skip is None:
            pong_specs["sb3"] = {"task": "sb3_pong", **common}
            doom_specs["sb3"] = {"task": "sb3_doom", **common}
        for section, specs, out in (("pong", pong_specs, pong), ("doom", doom_specs, doom)):
            if section not in args.only:
                continue
            print(f"[{section} / {device}] {' / '.join(specs)} alternating, {args.repeats} repeat(s), "
                  f"{args.steps} steps after learning_starts={ls}", flush=True)
            samples: dict[str, list] = {name: [] for name in specs}
            for r in range(args.repeats):
                for name, spec in specs.items():
                    samples[name].append(run(spec, f"{section}/{device}/{name} #{r + 1}"))
            res = {name: _summary(s) for name, s in samples.items()}
            if sb3_skip is not None:
                res["sb3"] = {"skipped": sb3_skip}
            if section == "pong":
                res["ratio_same_hp_vs_sb3"] = _ratio(res["drl_same_hp"], res["sb3"])
                res["ratio_default_vs_sb3"] = _ratio(res["drl_default"], res["sb3"])
                res["ratio_same_hp_per_repeat"] = _paired(samples["drl_same_hp"], samples.get("sb3"))
                res["overlap_gain"] = _ratio(res["drl_same_hp"], res["drl_same_hp_sequential"])
            else:
                res["ratio_drqn_vs_sb3"] = _ratio(res["drl_drqn"], res["sb3"])
                res["ratio_per_repeat"] = _paired(samples["drl_drqn"], samples.get("sb3"))
                res["overlap_gain"] = _ratio(res["drl_drqn"], res["drl_drqn_sequential"])
            out[device] = res
    return pong, doom


def _paired(a: list[dict], b: list[dict] | None) -> list[float] | None:
    if not b:
        return None
    return [x["sps"] / y["sps"] for x, y in zip(a, b) if "sps" in x and "sps" in y]


# ============================================================================================ report
def targets(result: dict) -> list[dict]:
    rows = []

    def add(name: str, what: str, measured, target: float, where: str):
        rows.append({"name": name, "what": what, "where": where, "measured": measured, "target": target,
                     "pass": None if measured is None else bool(measured >= target)})

    for device, res in result["pong"].items():
        add("pong_dqn_vs_sb3", "drl DQN / SB3 DQN steps/s on Pong (same hyperparameters)",
            res.get("ratio_same_hp_vs_sb3"), TARGETS["pong_dqn_vs_sb3"], device)
        add("pong_dqn_vs_sb3", "drl atari-pong config / SB3 DQN steps/s on Pong",
            res.get("ratio_default_vs_sb3"), TARGETS["pong_dqn_vs_sb3"], device)
    for device, res in result["update"].items():
        for case in res.get("cases", {}).values():
            if case["drl_default_precision"]:
                add("update_share", f"floor / drl time per update, batch {case['batch_size']} {case['precision']}",
                    case["share"], TARGETS["update_share"], device)
    for device, res in result["vecenv"].items():
        for kind, key in (("atari", "atari_vecenv_sps"), ("doom", "doom_vecenv_sps")):
            counts = res.get(kind, {}).get("counts")
            best = max(counts.values(), key=lambda r: r["sps"]) if counts else None
            add(key, f"{kind} vector env steps/s (best: {best['num_envs'] if best else '-'} envs)",
                best["sps"] if best else None, TARGETS[key], device)
    for device, res in result["doom"].items():
        add("doom_drqn_vs_sb3", "drl DRQN / SB3 DQN steps/s on Doom health_gathering",
            res.get("ratio_drqn_vs_sb3"), TARGETS["doom_drqn_vs_sb3"], device)
    return rows


def _fmt(value, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    return format(value, spec)


def print_report(result: dict) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text fallback
        Console = Table = None

    tables = []

    def table(title: str, columns: list[str], rows: list[list[str]]):
        if rows:  # sections left out by --only print nothing
            tables.append((title, columns, rows))

    m = result["meta"]["machine"]
    table("Machine", ["field", "value"], [
        ["cpu", f"{m['cpu']} ({m['cores_usable']}/{m['cores']} cores)"], ["torch", m["torch"]],
        ["bf16 on CPU", f"native={m['cpu_bf16_native']} amx={m['amx']} avx512_bf16={m['avx512_bf16']}"],
        ["cuda", m.get("cuda_device", "none")], ["stable-baselines3", str(m.get("stable_baselines3"))],
        ["load before / after", f"{result['meta']['load_before']} / {result['meta']['load_after']}"],
        ["mode", f"quick={result['meta']['quick']} steps={result['meta']['steps']} "
                 f"repeats={result['meta']['repeats']} learning_starts={result['meta']['learning_starts']}"]])

    rows = []
    for section in ("pong", "doom"):
        for device, res in result[section].items():
            for name, r in res.items():
                if not isinstance(r, dict):
                    continue
                if "sps" in r:
                    rows.append([section, device, name, _fmt(r["sps"]), f"{r['sps_min']:,.0f}-{r['sps_max']:,.0f}",
                                 _fmt(r["updates_per_s"], ",.1f"),
                                 f"{r['num_envs']} / {r['batch_size']} / {r['train_freq']}",
                                 "bf16" if r.get("bf16") else "fp32", _fmt(r.get("peak_rss_mb"))])
                else:
                    rows.append([section, device, name, r.get("skipped") or "ERROR " + r.get("error", "")[:60],
                                 "", "", "", "", ""])
    table("Training speed (env steps/s after learning_starts, median of repeats)",
          ["world", "device", "run", "steps/s", "range", "updates/s", "envs / batch / freq", "prec", "peak MiB"],
          rows)

    rows = [[section, device, _fmt(res.get("overlap_gain"), ".3f")]
            for section in ("pong", "doom") for device, res in result[section].items() if "overlap_gain" in res]
    table("Env stepping overlapped with learning: steps/s with / without (compute.overlap_env)",
          ["world", "device", "gain"], rows)

    rows = []
    for device, res in result["update"].items():
        if "error" in res:
            rows.append([device, "ERROR " + res["error"][:80], "", "", "", "", ""])
            continue
        for case in res["cases"].values():
            rows.append([device, str(case["batch_size"]), case["precision"] + (" *" if case["drl_default_precision"]
                                                                                else ""),
                         _fmt(case["floor_ms"], ".2f"), _fmt(case["drl_ms"], ".2f"), _fmt(case["drl_sample_ms"], ".2f"),
                         _fmt(100 * case["share"], ".0f") + "%"])
    table("Update floor (plain torch Nature-CNN double DQN) vs drl update in its loop (* = drl's precision)",
          ["device", "batch", "precision", "floor ms", "drl ms", "of which sample ms", "share"], rows)

    rows = [["ERROR " + result["replay"]["error"][:80], "", "", ""]] if "error" in result["replay"] else []
    for name, r in result["replay"].items():
        if name == "sb3":
            for sub, s in r.items():
                if isinstance(s, dict):
                    rows.append([f"sb3 {sub}", _fmt(s["bytes_per_transition"]), "", ""])
                else:
                    rows.append(["sb3", str(s), "", ""])
        elif name not in ("error", "skipped") and isinstance(r, dict):
            rows.append([f"drl {name} ({r['experiment']})", _fmt(r["bytes_per_transition"]),
                         _fmt(r["allocated_bytes_per_transition"]), _fmt(r["allocated_bytes"] / 2**20)])
    table("Replay bytes per transition (from allocated storage)",
          ["buffer", "B/transition (core)", "B/transition (all)", "MiB allocated"], rows)

    rows = []
    for device, res in result["vecenv"].items():
        for kind, r in res.items():
            if "error" in r:
                rows.append([device, kind, "ERROR " + r["error"][:80], "", ""])
                continue
            for c in r["counts"].values():
                envs = str(c["num_envs"]) + (f" ({c['workers']} workers)" if c.get("workers") else "")
                rows.append([device, kind, envs, _fmt(c["sps"]), _fmt(r.get("peak_rss_mb"))])
    table("Vector envs, random actions, VecStep tensors on the device", ["device", "env", "envs", "steps/s",
                                                                         "peak MiB"], rows)

    rows = [[t["where"], t["what"], _fmt(t["measured"], ",.2f"), _fmt(t["target"], ",.2f"), _fmt(t["pass"])]
            for t in result["targets"]]
    table("Targets (from measured values)", ["device", "target", "measured", "needs", "result"], rows)

    mem = result["memory"]
    table("Peak memory (max over measurement processes)", ["what", "MiB"],
          [[k, _fmt(v)] for k, v in mem.items() if isinstance(v, (int, float))])

    if Console is not None:
        console = Console() if sys.stdout.isatty() else Console(width=150)
        for title, columns, rows in tables:
            t = Table(title=title, title_justify="left")
            for c in columns:
                t.add_column(c)
            for row in rows:
                t.add_row(*row)
            console.print(t)
        for note in result["meta"]["notes"]:
            console.print(f"[dim]note: {note}[/dim]")
    else:
        for title, columns, rows in tables:
            print(f"\n{title}\n  " + " | ".join(columns))
            for row in rows:
                print("  " + " | ".join(row))
        for note in result["meta"]["notes"]:
            print(f"note: {note}")


# ============================================================================================ main
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m drl.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny step counts everywhere (a smoke test, not figures)")
    p.add_argument("--steps", type=int, default=None,
                   help="env steps timed after learning_starts per training run (default 5000, quick 64)")
    p.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 3, quick 1)")
    p.add_argument("--learning-starts", type=int, default=None, help="default 1000 (quick 200)")
    p.add_argument("--out", default="bench.json", help="JSON result file (default bench.json)")
    p.add_argument("--skip-sb3", action="store_true", help="do not run stable-baselines3 (ratios stay empty)")
    p.add_argument("--only", default=",".join(SECTIONS), metavar="S,S",
                   help=f"run only these sections (default all: {','.join(SECTIONS)})")
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement process")
    p.add_argument("--task", help=argparse.SUPPRESS)  # internal: run one measurement (JSON spec) and print it
    args = p.parse_args(argv)
    q = args.quick
    args.steps = args.steps if args.steps is not None else (64 if q else 5000)
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 3)
    args.learning_starts = args.learning_starts if args.learning_starts is not None else (200 if q else 1000)
    args.timeout = args.timeout or (300.0 if q else 7200.0)
    args.buffer = 20_000 if q else None  # quick: smaller replays everywhere (both sides); else as configured / 100k
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    if not args.only or set(args.only) - set(SECTIONS):
        p.error(f"--only takes a comma-separated subset of {','.join(SECTIONS)}")
    if min(args.steps, args.repeats) < 1 or args.learning_starts < 0:
        p.error("--steps and --repeats must be >= 1, --learning-starts >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.task:
        run_task_here(json.loads(args.task))
        return 0
    import torch

    started = time.time()
    q = args.quick
    notes: list[str] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    cores = len(os.sched_getaffinity(0))
    if load_before[0] > 0.5 * cores:
        notes.append(f"the machine was busy when the benchmark started (load {load_before[0]} on {cores} cores): "
                     "figures are not representative")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        notes.append("no CUDA device: GPU figures skipped")
    sb3_skip = sb3_status(args.skip_sb3)
    if sb3_skip:
        notes.append(f"stable-baselines3: {sb3_skip}; SB3 figures and ratios are empty")
    notes.append("pong drl_same_hp = atari-pong with SB3's DQN (1 env, batch 32, train_freq 4, buffer 100k, target "
                 "1k, 1-step, non-double); drl_default = atari-pong as configured; both with learning_starts as "
                 "given; drl keeps its own precision (bf16 autocast where the CPU/GPU has it), SB3 is fp32")
    notes.append("doom sb3 = vizdoom VizdoomHealthGathering-v1 rendered 160x120 GRAY8, area-resized to 60x80, "
                 "4-frame stack, SB3 DQN with the Pong hyperparameters; drl_drqn = doom-health-gathering as configured")
    notes.append("tracemalloc is not used: tensors are allocated outside Python's allocator; peaks are VmHWM "
                 "(ru_maxrss where /proc is missing); child-process peaks are summed over live descendants "
                 "(shared pages counted once per process: an upper bound)")
    if args.buffer:
        notes.append(f"quick: every replay (drl and SB3) holds {args.buffer:,} transitions, not 100k / as configured")
    run = Runner(args.timeout)
    ls = args.learning_starts
    print(f"drl.bench: devices {', '.join(devices)}; {'quick; ' if q else ''}steps {args.steps}, repeats "
          f"{args.repeats}, learning_starts {ls}; load {load_before}", flush=True)

    result = {"meta": {"version": 1, "command": "python -m drl.bench " + " ".join(argv), "quick": q,
                       "steps": args.steps, "repeats": args.repeats, "learning_starts": ls,
                       "replay_capacity_override": args.buffer, "sections": args.only,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                       "machine": machine_info(), "load_before": load_before, "targets": TARGETS,
                       "sb3_hyperparameters": SB3_HP, "notes": notes}}

    result["pong"], result["doom"] = bench_training(run, devices, args, sb3_skip, ls)

    result["update"] = {}
    for device in devices if "update" in args.only else ():
        print(f"[update / {device}] floor vs drl", flush=True)
        result["update"][device] = run({"task": "update", "device": device, "batch_sizes": [32, 64],
                                        "updates": 3 if q else 100, "warmup": 1 if q else 10,
                                        "fill": 200 if q else 2000, "repeats": args.repeats,
                                        "buffer": args.buffer},
                                       f"update/{device}")

    result["replay"] = {}
    if "replay" in args.only:
        print("[replay] bytes per transition", flush=True)
        result["replay"] = run({"task": "replay", "skip_sb3": sb3_skip is not None, "buffer": args.buffer},
                               "replay")

    counts = {"atari": [4, 8, 16], "doom": [2, 4, 8, 16], "catch": [64, 1024, 4096]}
    if q:
        counts = {"atari": [4, 8], "doom": [2], "catch": [64, 4096]}
    result["vecenv"] = {}
    for device in devices if "vecenv" in args.only else ():
        print(f"[vecenv / {device}] random actions", flush=True)
        result["vecenv"][device] = {
            kind: run({"task": "vecenv", "kind": kind, "device": device, "counts": c, "warmup": 2 if q else 20,
                       "min_steps": 5 if q else 200, "min_seconds": 0.2 if q else 3.0}, f"vecenv/{device}/{kind}")
            for kind, c in counts.items()}

    peaks = {}
    for section in ("pong", "doom"):
        for device, res in result[section].items():
            for name, r in res.items():
                if isinstance(r, dict) and "peak_rss_mb" in r:
                    peaks[f"{section}/{device}/{name}"] = r["peak_rss_mb"]
                    if r.get("peak_rss_children_mb"):
                        peaks[f"{section}/{device}/{name} (child processes)"] = r["peak_rss_children_mb"]
                    if r.get("cuda_peak_mb"):
                        peaks[f"{section}/{device}/{name} (cuda)"] = r["cuda_peak_mb"]
    for device, r in result["update"].items():
        if "peak_rss_mb" in r:
            peaks[f"update/{device}"] = r["peak_rss_mb"]
    for device, res in result["vecenv"].items():
        for kind, r in res.items():
            if "peak_rss_mb" in r:
                peaks[f"vecenv/{device}/{kind}"] = r["peak_rss_mb"]
                if kind == "doom":
                    peaks[f"vecenv/{device}/{kind} (worker processes)"] = r["peak_rss_children_mb"]
    peaks["bench parent"] = _self_peak_mb()
    result["memory"] = peaks

    result["targets"] = targets(result)
    result["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["meta"]["duration_s"] = time.time() - started
    result["meta"]["errors"] = run.errors
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    print(f"drl.bench: wrote {args.out} ({result['meta']['duration_s']:.0f} s)"
          + (f"; {len(run.errors)} measurement(s) FAILED" if run.errors else ""))
    return 1 if run.errors else 0


if __name__ == "__main__":
    from drl.cli import run_cli

    run_cli("drl.bench", main)
