"""Device, precision, threads and random state."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import random

import numpy as np
import torch

from drl.config import ComputeConfig, ConfigError, EnvSection


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA device is available; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensors go to CUDA from pinned memory, so the copy is asynchronous (``non_blocking``): a pinned tensor
    (``empty_for_transfer``) as it is, any other after a copy into pinned memory."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)  # pin_memory of a pinned tensor is the tensor itself
    return t.to(device)


def empty_for_transfer(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, target: torch.device
) -> torch.Tensor:
    """An empty tensor on ``device`` for a result that ``to_device`` sends to ``target`` next: pinned when it is
    made on the host for a CUDA target, so it goes there as it is, with no copy into pinned memory first."""
    return torch.empty(shape, dtype=dtype, device=device, pin_memory=device.type == "cpu" and target.type == "cuda")


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls/convolutions run natively (others emulate them, slowly)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def use_bf16(cfg: ComputeConfig, device: torch.device) -> bool:
    if cfg.bf16 != "auto":
        return cfg.bf16 == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def use_channels_last(cfg: ComputeConfig, device: torch.device, bf16: bool) -> bool:
    """Channels-last (NHWC) convolutions: auto = on for fp32 on a CPU, where oneDNN's NHWC kernels ran the Pong
    update 1.19-1.23x faster than NCHW (``drl.bench --only update``, fp32_layouts); off under bf16 autocast, where
    they were slower on that CPU, and on CUDA, where auto keeps NCHW (``atari-pong-gpu`` sets it on)."""
    if cfg.channels_last != "auto":
        return cfg.channels_last == "on"
    return device.type == "cpu" and not bf16


def use_bf16_acting(cfg: ComputeConfig, device: torch.device, bf16: bool) -> bool:
    """Whether acting (a forward pass on ``num_envs`` observations) runs under bf16 autocast too, where training
    does. auto = on CUDA only: on a CPU, autocast's casts cost more than they save at such small batches (the Pong
    network's forward pass at batch 1 took 2.9 ms under bf16 against 1.3 ms in fp32 on xeon-amx;
    ``drl.bench --only update`` measures it as ``act_ms``)."""
    if not bf16:
        return False
    if cfg.act_bf16 != "auto":
        return cfg.act_bf16 == "on"
    return device.type == "cuda"


def use_overlap_env(
    cfg: ComputeConfig, env: EnvSection, device: torch.device, threads: int, cores: int | None = None
) -> bool:
    """Whether the updates a step owes run while the envs step (``compute.overlap_env``). On and off train
    identically (``drl.loop.Trainer._env_step``), so this is speed only. auto, from where the env steps
    (``env.stepping()``), the device, torch's ``threads`` and this process's ``cores``:

    - the caller's thread (torch-native envs, Gymnasium sync): off, nothing runs meanwhile;
    - CUDA: on, the update runs on the GPU while the CPU steps the envs;
    - a core left free by torch's threads (``compute.threads`` / ``DRL_THREADS`` below the cores): on, the env
      steps there;
    - torch on every core: on. Worker processes (Doom, Gymnasium async) would otherwise leave the learner idle
      through each step's pipe round trip (Doom health_gathering +8.5 % on a 2-core EPYC). ALE's threads measured
      both ways: -15 % on that EPYC, +35 % on a 2-core Xeon with AMX (Pong at SB3's settings, 154 against 114
      steps/s, ``drl.bench`` 2026-12-06); on was the default before ``auto`` and stays it. ``drl.bench`` measures
      both ways on each machine (``overlap_auto_faster``)."""
    if cfg.overlap_env != "auto":
        return cfg.overlap_env == "on"
    return env.stepping() != "caller"


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask); ``os.cpu_count()`` where there is no affinity call
    (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_count(cfg: ComputeConfig) -> int:
    """torch threads for a run: ``compute.threads``, else ``DRL_THREADS``, else every usable core."""
    # DRL_THREADS lets a shared machine cap every run (e.g. tests beside a long training) without config edits
    return cfg.threads or int(os.environ.get("DRL_THREADS", 0)) or cpu_count()


def configure_threads(cfg: ComputeConfig) -> int:
    threads = thread_count(cfg)
    torch.set_num_threads(threads)
    return threads


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems (half its 64 MiB heap)
KEPT_HEAP_TOP = 1 << 30  # freed memory at the heap's top that stays with the process
HEAP_GROWTH_PAD = 64 << 20  # extra the heap grows by when it must grow


def glibc_malloc() -> bool:
    """Whether this process allocates with glibc's malloc (Linux with glibc), whose settings ``mallopt`` changes."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory(cfg: ComputeConfig) -> bool:
    """Whether memory that torch frees stays in this process's heap for its next tensors
    (``compute.keep_freed_memory``); sets it up where it is on (process-wide, for the rest of the process).

    glibc's malloc hands the heap's top back to the OS after frees and maps larger blocks afresh, so the tensors
    that every update allocates and frees (activations, bf16 copies of the weights, gradients: ~15 MB a Pong
    update) come back as fresh pages: ~3,700 page faults a Pong update, 15-34 % of its time on a 2-core EPYC
    (docs/results.md). DRQN's sequence batches do not fault this way. With it, blocks under 32 MiB come from the
    heap and freed memory is not trimmed; blocks of 32 MiB and more (the replay's rings) are mapped as before.
    auto = on where the C library is glibc."""
    if cfg.keep_freed_memory == "off":
        return False
    if not glibc_malloc():
        if cfg.keep_freed_memory == "on":
            raise ConfigError(
                "compute.keep_freed_memory=on needs glibc's malloc (Linux); set compute.keep_freed_memory=auto or off"
            )
        return False
    mallopt = ctypes.CDLL(None).mallopt
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, KEPT_HEAP_TOP), (M_TOP_PAD, HEAP_GROWTH_PAD))
    return all(mallopt(param, value) == 1 for param, value in settings)  # 1: accepted


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)  # key as a tensor: weights_only loads no numpy arrays
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "numpy": np_state}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np_state = dict(state["numpy"])
        np_state["state"] = {**np_state["state"], "key": np.asarray(np_state["state"]["key"]).astype(np.uint32)}
        np.random.set_state(np_state)


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict:
    """CPU, core counts, bf16 support, CUDA and library versions."""
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
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_bf16_native": cpu_has_bf16(),
        "amx": bool({"amx_bf16", "amx_tile"} & flag_set),
        "avx512_bf16": "avx512_bf16" in flag_set,
        "drl_threads_env": os.environ.get("DRL_THREADS"),
        "cuda": torch.cuda.is_available(),
    }
    if info["cuda"]:
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_bf16"] = torch.cuda.is_bf16_supported()
    for name in ("stable_baselines3", "ale_py", "vizdoom", "gymnasium", "numpy"):  # versions, without importing
        try:
            info[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    return info
