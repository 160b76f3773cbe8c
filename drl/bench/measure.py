"""Measurement plumbing: each measurement in a fresh child process (``Runner``, one tagged JSON line back), device
clocks, memory peaks, and a drl Trainer with evaluation, checkpoints and tracking out of the way."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from drl import processes

RESULT_TAG = "DRL_BENCH_RESULT "

_CHILD_PEAK_MB = [0.0]


# -------------------------------------------------------------------------------------------- child side
def note_descendants() -> float:
    """Sum of the peak RSS (VmHWM) of every live descendant process (e.g. Doom workers, which a forkserver
    forks, so RUSAGE_CHILDREN never sees them); call it before closing what started them. MiB."""
    total = sum(peak or 0.0 for peak in map(processes.peak_rss_mb, processes.descendants(os.getpid())))
    _CHILD_PEAK_MB[0] = max(_CHILD_PEAK_MB[0], total)
    return total


def self_peak_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the address space, so it starts afresh at exec; ru_maxrss (the
    fallback) carries the parent's peak over a fork + exec."""
    peak = processes.peak_rss_mb("self")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peaks() -> dict:
    """Peak resident memory of this process and of its child processes, in MiB (Linux reports KiB): children are
    the larger of the largest waited-for child and the summed peaks of live descendants seen by
    ``note_descendants``."""
    out = {
        "peak_rss_mb": self_peak_mb(),
        "peak_rss_children_mb": max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, _CHILD_PEAK_MB[0]),
    }
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001
        pass
    return out


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, n: int, warmup: int, device) -> float:
    """Milliseconds per call of ``fn`` over ``n`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) * 1000 / n


def replace_methods(obj: object, **methods: Callable) -> None:
    """Instrumentation: ``obj.name = fn`` for each method, on this one instance (a plain assignment to a method is
    a type error)."""
    for name, fn in methods.items():
        setattr(obj, name, fn)


def quiet_trainer(experiment: str, overrides: list[str], run_dir: str):
    """A drl Trainer with evaluation, checkpoints and tracking out of the way."""
    from drl import config
    from drl.loop import Trainer

    cfg = config.load(
        experiment, ["tracking.wandb=off", "eval.interval=1000000000", "checkpoint_interval=1000000000", *overrides]
    )
    trainer = Trainer(cfg, Path(run_dir))
    # run() evaluates at its end: not part of training speed
    replace_methods(trainer.core, run_evaluation=lambda wall: {}, save_checkpoint=lambda: None)
    return trainer


# -------------------------------------------------------------------------------------------- parent side
class Runner:
    """Runs one measurement (a JSON spec) in ``python -m drl.bench --task``; returns its result or
    ``{"error": why}`` (also kept in ``errors``)."""

    def __init__(self, timeout: float, verbose: bool = True):
        self.timeout, self.verbose = timeout, verbose
        self.errors: list[str] = []

    def __call__(self, spec: dict, label: str) -> dict:
        env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "drl.bench", "--task", json.dumps(spec)],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return self._fail(label, f"timed out after {self.timeout:.0f} s")
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith(RESULT_TAG):
                result = json.loads(line[len(RESULT_TAG) :])
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
