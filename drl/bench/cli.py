"""The command line: arguments, the run of every section (each measurement in a child process), the JSON result
and the report; ``--task`` is the child side (one measurement, printed as one tagged JSON line)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import drl.bench
from drl.bench.distributed import bench_distributed, print_distributed, task_distributed, task_insert
from drl.bench.measure import RESULT_TAG, Runner, peaks, self_peak_mb
from drl.bench.replay_bytes import task_replay
from drl.bench.report import REFERENCES, TARGETS, memory_peaks, print_report, targets
from drl.bench.score_time import time_to_score
from drl.bench.training import SB3_HP, bench_training, sb3_status, task_drl_train, task_sb3_doom, task_sb3_pong
from drl.bench.update import task_update
from drl.bench.vecenv import task_vecenv

SECTIONS = ("pong", "doom", "update", "replay", "vecenv")
BUDGET_S = 15 * 60  # a full bench with the default settings should finish inside this
EXTRA_SECTIONS = ("distributed",)  # only when named in --only (starts Ray clusters)
TASKS = {
    "drl_train": task_drl_train,
    "sb3_pong": task_sb3_pong,
    "sb3_doom": task_sb3_doom,
    "update": task_update,
    "replay": task_replay,
    "vecenv": task_vecenv,
    "distributed": task_distributed,
    "distributed_insert": task_insert,
}


def busy_cores(seconds: float) -> float | None:
    """Cores busy over the next ``seconds`` (from /proc/stat, all processes); None where there is no /proc."""

    def sample():
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(os.cpu_count() * (1.0 - (idle1 - idle0) / max(total1 - total0, 1e-9)), 2)


def run_task_here(spec: dict) -> None:
    """Child side: run one task and print its result as one tagged JSON line."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    t0 = time.perf_counter()
    result = TASKS[spec["task"]](spec)
    result["task_seconds"] = time.perf_counter() - t0
    result.update(peaks())
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m drl.bench", description=drl.bench.__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny step counts everywhere (a smoke test, not figures)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="env steps timed after learning_starts per training run (default 2000, quick 64)",
    )
    p.add_argument("--repeats", type=int, default=None, help="alternating repeats (default 2, quick 1)")
    p.add_argument("--learning-starts", type=int, default=None, help="default 1000 (quick 200)")
    p.add_argument("--out", default="bench.json", help="JSON result file (default bench.json)")
    p.add_argument("--skip-sb3", action="store_true", help="do not run stable-baselines3 (ratios stay empty)")
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        metavar="S,S",
        help=f"run only these sections (default all: {','.join(SECTIONS)}; also: {','.join(EXTRA_SECTIONS)})",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per measurement process")
    p.add_argument(
        "--devices",
        default=None,
        metavar="D,D",
        help="devices to measure on (default: cpu, and cuda where available; e.g. --devices cuda on a GPU "
        "machine whose CPU figures do not matter)",
    )
    p.add_argument(
        "--worlds",
        default=None,
        metavar="W,W",
        help="distributed section only: the worlds to measure (default all: pong,pong-replay-actor,catch,doom)",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=Path("docs/runs"),
        metavar="DIR",
        help="committed run directories whose steps to 18 the Pong projection uses (default docs/runs, "
        "the repository's, when run from a checkout)",
    )
    p.add_argument("--task", help=argparse.SUPPRESS)  # internal: run one measurement (JSON spec) and print it
    args = p.parse_args(argv)
    q = args.quick
    # Defaults sized so that a full bench stays under BUDGET_S on a 2-core CPU (5000 x 3 took 13.5 min for Pong alone)
    args.steps = args.steps if args.steps is not None else (64 if q else 2000)
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 2)
    args.learning_starts = args.learning_starts if args.learning_starts is not None else (200 if q else 1000)
    args.timeout = args.timeout or (300.0 if q else 7200.0)
    args.buffer = 20_000 if q else None  # quick: smaller replays everywhere (both sides); else as configured / 100k
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    if args.devices is not None:
        args.devices = [x.strip() for x in args.devices.split(",") if x.strip()]
        if not args.devices or set(args.devices) - {"cpu", "cuda"}:
            p.error("--devices takes a comma-separated subset of cpu,cuda")
    if args.worlds is not None:
        from drl.bench.distributed import EXPERIMENTS

        args.worlds = [x.strip() for x in args.worlds.split(",") if x.strip()]
        if not args.worlds or set(args.worlds) - set(EXPERIMENTS):
            p.error(f"--worlds takes a comma-separated subset of {','.join(EXPERIMENTS)}")
    if not args.only or set(args.only) - set(SECTIONS + EXTRA_SECTIONS):
        p.error(f"--only takes a comma-separated subset of {','.join(SECTIONS + EXTRA_SECTIONS)}")
    if min(args.steps, args.repeats) < 1 or args.learning_starts < 0:
        p.error("--steps and --repeats must be >= 1, --learning-starts >= 0")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.task:
        run_task_here(json.loads(args.task))
        return 0
    import torch

    from drl import runtime

    started = time.time()
    q = args.quick
    notes: list[str] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    cores = runtime.cpu_count()
    busy = busy_cores(1.0)  # the load average lags by minutes (a training paused just before still shows in it)
    busy_now = busy if busy is not None else load_before[0]
    if busy_now > 0.5 * cores:
        notes.append(
            f"the machine was busy when the benchmark started ({busy_now} of {cores} cores busy): "
            "figures are not representative"
        )
    available = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    devices = args.devices or available
    if set(devices) - set(available):
        print(
            f"drl.bench: --devices {','.join(devices)}: this machine has {','.join(available)}; pick from those",
            file=sys.stderr,
        )
        return 2
    if "cuda" not in available:
        notes.append("no CUDA device: GPU figures skipped")
    sb3_skip = sb3_status(args.skip_sb3)
    if sb3_skip:
        notes.append(f"stable-baselines3: {sb3_skip}; SB3 figures and ratios are empty")
    notes.append(
        "pong drl_same_hp = atari-pong with SB3's DQN (1 env, batch 32, train_freq 4, buffer 100k, target "
        "1k, 1-step, non-double); drl_default = atari-pong as configured; both with learning_starts as "
        "given; drl keeps its own precision (bf16 autocast where the CPU/GPU has it), SB3 is fp32"
    )
    notes.append(
        "Pong loop floor = plain-torch update (its run's batch, precision and target rule) + per update, "
        "train_freq / num_envs x (plain-torch greedy forward at batch num_envs, in drl's acting precision, + one "
        "drl vector env step of as many Pong envs, random actions): every step pays a forward, though drl and SB3 "
        "skip it where every env explores. Its parts are timed in the drl run's own process, in short blocks every "
        "2 s between drl's training (drl's clock paused meanwhile), and drl's share is the median over blocks: the "
        "VM's drift between minutes cancels (drl.bench.paired_floor)"
    )
    notes.append(
        "doom sb3 = vizdoom VizdoomHealthGathering-v1 rendered 160x120 GRAY8, area-resized to 60x80, "
        "4-frame stack, SB3 DQN with the Pong hyperparameters; drl_drqn = doom-health-gathering as configured"
    )
    notes.append(
        "tracemalloc is not used: tensors are allocated outside Python's allocator; peaks are VmHWM "
        "(ru_maxrss where /proc is missing); child-process peaks are summed over live descendants "
        "(shared pages counted once per process: an upper bound)"
    )
    if args.buffer:
        notes.append(f"quick: every replay (drl and SB3) holds {args.buffer:,} transitions, not 100k / as configured")
    run = Runner(args.timeout)
    ls = args.learning_starts
    print(
        f"drl.bench: devices {', '.join(devices)}; {'quick; ' if q else ''}steps {args.steps}, repeats "
        f"{args.repeats}, learning_starts {ls}; load {load_before}",
        flush=True,
    )

    result: dict[str, Any] = {
        "meta": {
            "version": 1,
            "command": "python -m drl.bench " + " ".join(argv),
            "quick": q,
            "steps": args.steps,
            "repeats": args.repeats,
            "learning_starts": ls,
            "replay_capacity_override": args.buffer,
            "sections": args.only,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "machine": runtime.machine_info(),
            "load_before": load_before,
            "busy_cores_before": busy,
            "targets": TARGETS,
            "references": REFERENCES,
            "sb3_hyperparameters": SB3_HP,
            "notes": notes,
        }
    }

    seconds = result["meta"]["section_seconds"] = {}
    mark = time.time()

    def section_done(name: str) -> None:
        nonlocal mark
        seconds[name] = round(time.time() - mark, 1)
        mark = time.time()

    result["pong"], result["doom"] = bench_training(run, devices, args, sb3_skip, ls)
    section_done("pong+doom")

    result["update"] = {}
    for device in devices if "update" in args.only else ():
        print(f"[update / {device}] floor vs drl", flush=True)
        result["update"][device] = run(
            {
                "task": "update",
                "device": device,
                "batch_sizes": [32, 64],
                # many short alternating blocks: this VM's slow spells last seconds (one function's block time
                # went 34 -> 20 ms within a minute), and with 2 blocks of 100 updates one case's share swung
                # between 70 % and 92 % from one invocation to the next; 20 blocks of 10 put both sides in most
                # spells, and their medians drop the rest
                "updates": 3 if q else 10,
                "warmup": 1 if q else 2,
                "fill": 200 if q else 2000,
                "repeats": args.repeats if q else max(args.repeats, 20),
                "buffer": args.buffer,
            },
            f"update/{device}",
        )
    section_done("update")

    result["replay"] = {}
    if "replay" in args.only:
        print("[replay] bytes per transition", flush=True)
        result["replay"] = run({"task": "replay", "skip_sb3": sb3_skip is not None, "buffer": args.buffer}, "replay")
    section_done("replay")

    # atari 1: the env step of SB3's one env, a part of the Pong loop floor (report.loop_floor)
    counts = {"atari": [1, 4, 8, 16], "doom": [2, 4, 8, 16], "catch": [64, 1024, 4096]}
    if q:
        counts = {"atari": [1, 4, 8], "doom": [2], "catch": [64, 4096]}
    result["vecenv"] = {}
    for device in devices if "vecenv" in args.only else ():
        print(f"[vecenv / {device}] random actions", flush=True)
        result["vecenv"][device] = {
            kind: run(
                {
                    "task": "vecenv",
                    "kind": kind,
                    "device": device,
                    "counts": c,
                    "warmup": 2 if q else 20,
                    "min_steps": 5 if q else 200,
                    "min_seconds": 0.2 if q else 3.0,
                },
                f"vecenv/{device}/{kind}",
            )
            for kind, c in counts.items()
        }
    section_done("vecenv")

    result["distributed"] = bench_distributed(run, args) if "distributed" in args.only else {}
    section_done("distributed")

    memory = memory_peaks(result)
    memory["bench parent"] = self_peak_mb()
    result["memory"] = memory

    result["time_to_18"] = time_to_score(result["pong"], args.runs)
    result["targets"] = targets(result)
    result["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["meta"]["duration_s"] = time.time() - started
    if result["meta"]["duration_s"] > BUDGET_S and set(SECTIONS) <= set(args.only):
        notes.append(
            f"the full bench took {result['meta']['duration_s'] / 60:.1f} min, over its "
            f"{BUDGET_S // 60}-minute budget (sections: {seconds}): lower --steps / --repeats here"
        )
    result["meta"]["errors"] = run.errors
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    print_distributed(result["distributed"])
    print(
        f"drl.bench: wrote {args.out} ({result['meta']['duration_s']:.0f} s)"
        + (f"; {len(run.errors)} measurement(s) FAILED" if run.errors else "")
    )
    return 1 if run.errors else 0
