"""``distributed`` section (``--only distributed``; needs Ray, so it is not in the default set): on a local Ray
cluster, for N = 1, 2, 4 collectors, the collection throughput (env steps/s stored in replay, and per collector),
the learner's updates/s and where its time goes (updates, storing chunks, waiting), the weight lag and the bytes a
collector sends per env step. Pong is measured twice: with the replay in the learner (``distributed.replay:
learner``, the default) and in its own actor (``pong-replay-actor``).

The learner runs with ``distributed.pace=free`` (Ape-X: it trains as fast as it can and never waits for data; the
collectors never wait for it) and one torch thread; the collectors run at ``nice 10`` with one thread each, so on a
small host the learner keeps its core and the collectors share the rest.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

EXPERIMENTS = {
    "pong": ("atari-pong", ["env.num_threads=1"]),
    "pong-replay-actor": ("atari-pong", ["env.num_threads=1", "distributed.replay=actor"]),
    "catch": ("catch", []),
    "doom": ("doom-health-gathering", []),
}


def task_distributed(spec: dict) -> dict:
    """One measurement: ``spec["collectors"]`` collectors on ``spec["experiment"]`` for ``spec["seconds"]`` seconds
    after the learner's first update."""
    import numpy as np

    from drl import config
    from drl.bench.measure import replace_methods
    from drl.distributed.learner import Learner
    from drl.loop import transitions_per_sample

    n, seconds = spec["collectors"], spec["seconds"]
    experiment, extra = EXPERIMENTS[spec["experiment"]]
    cfg = config.load(
        experiment,
        [
            *extra,
            f"distributed.collectors={n}",
            "distributed.pace=free",
            "distributed.collector_nice=10",
            "compute.threads=1",
            "tracking.wandb=off",
            "eval.interval=1000000000",
            "checkpoint_interval=1000000000",
            "total_steps=1000000000",
            f"agent.learning_starts={spec['learning_starts']}",
            "log_interval=1000000000",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="drl-bench-") as run_dir:
        learner = Learner(cfg, Path(run_dir))
        replace_methods(learner.core, run_evaluation=lambda wall: {}, save_checkpoint=lambda: None)
        m: dict[str, Any] = {
            "t0": None,
            "steps": [0] * n,
            "insert": 0.0,
            "update": 0.0,
            "updates": 0,
            "bytes": 0,
            "lags": [],
            "collecting": 0.0,
            "update_cpu": 0.0,
        }
        insert, update = learner.insert, learner.update

        def timed_insert(arrivals, wall):
            t0 = time.perf_counter()
            insert(arrivals, wall)
            if m["t0"] is not None:
                m["insert"] += time.perf_counter() - t0
                for chunk, _ in arrivals:
                    m["steps"][chunk.collector] += chunk.env_steps
                    m["bytes"] += chunk.nbytes
                    m["collecting"] += chunk.seconds
                    if chunk.version >= 0:
                        m["lags"].append(learner.agent.updates - chunk.version)
                if time.perf_counter() - m["t0"] >= seconds:
                    learner.core.stop.requested = True

        def timed_update():
            t0, cpu0 = time.perf_counter(), time.thread_time()
            if m["t0"] is None:
                m["t0"] = t0
                m["actor0"] = getattr(learner.replay, "seconds", 0.0)
            update()
            m["update"] += time.perf_counter() - t0
            m["update_cpu"] += time.thread_time() - cpu0  # CPU time: what the update costs without contention
            m["updates"] += 1

        replace_methods(learner, insert=timed_insert, update=timed_update)
        try:
            learner.run()
            elapsed = time.perf_counter() - m["t0"]
            actor_seconds = getattr(learner.replay, "seconds", 0.0) - m["actor0"]  # replay actor storing chunks
            weights_mb = sum(v.numel() * v.element_size() for v in learner.agent.acting_weights().values()) / 2**20
        finally:
            learner.close()
    steps = sum(m["steps"])
    return {
        "experiment": experiment,
        "collectors": n,
        "seconds": elapsed,
        "sps": steps / elapsed,
        "collector_sps": [s / elapsed for s in m["steps"]],
        "updates_per_s": m["updates"] / elapsed,
        "collector_busy_sps": steps / max(m["collecting"], 1e-9),  # a collector's speed while it collects
        "update_ms": 1000 * m["update"] / max(m["updates"], 1),
        "update_cpu_ms": 1000 * m["update_cpu"] / max(m["updates"], 1),
        "insert_ms_per_1k_steps": 1e6 * m["insert"] / max(steps, 1),
        "update_share": m["update"] / elapsed,
        "insert_share": m["insert"] / elapsed,
        "replay": cfg.distributed.replay,
        "replay_actor_share": actor_seconds / elapsed,
        "batch_size": cfg.agent.batch_size,
        "replay_ratio": (
            m["updates"] * cfg.agent.batch_size * transitions_per_sample(cfg, learner.agent.sampler) / max(steps, 1)
        ),
        "weight_lag_mean": float(np.mean(m["lags"])) if m["lags"] else None,
        "bytes_per_step": m["bytes"] / max(steps, 1),
        "collector_bytes_per_s": m["bytes"] / elapsed / n,
        "weights_mb": weights_mb,
        "envs_per_collector": learner.num_streams // n,
        "algo": cfg.agent.algo,
    }


def task_insert(spec: dict) -> dict:
    """The learner's cost of storing chunks: microseconds per env step when k Pong-shaped chunks (T=64 vector
    steps of 4 envs, 84x84 frames, an episode end every ~900 steps, priorities) are stored as one merged write, as
    happens when k collectors' chunks arrive between two learner updates; the median over writes (a busy host
    stalls single writes). No Ray: synthetic chunks."""
    import numpy as np
    import torch

    from drl.distributed.chunk import Chunk, add_to_replay, merge
    from drl.replay import ReplayBuffer

    torch.set_num_threads(1)  # as the learner in ``task_distributed`` (compute.threads=1)
    T, E, rows = 64, 4, {}
    g = torch.Generator().manual_seed(0)

    def chunk(i: int) -> Chunk:
        reset = torch.rand(T, E, generator=g) < 1 / 900
        ends = reset.nonzero()
        return Chunk(
            collector=i,
            incarnation="x",
            pid=0,
            version=0,
            seconds=0.0,
            frames=torch.randint(0, 255, (T, E, 1, 84, 84), dtype=torch.uint8, generator=g),
            first=torch.zeros(T, E, dtype=torch.bool),
            actions=torch.randint(0, 6, (T, E), generator=g),
            rewards=torch.zeros(T, E),
            terminated=reset.clone(),
            truncated=torch.zeros_like(reset),
            reset=reset,
            final_rows=ends,
            final_frames=torch.zeros(len(ends), 1, 84, 84, dtype=torch.uint8),
            priorities=torch.rand(T, E, generator=g),
        )

    for k in spec["counts"]:
        streams = k * E
        replay = ReplayBuffer(max(100_000, streams * 4 * T), streams, (1, 84, 84), 4, n_step=3, prioritized=True)
        # touch every page first: a long run writes over touched memory (first touch is slow and erratic on a VM)
        replay.storage.frames.fill_(0)
        times = []
        for _ in range(spec["rounds"] + 1):  # the first write is a warm-up
            group = [chunk(i) for i in range(k)]
            t0 = time.perf_counter()
            add_to_replay(replay, merge(group), np.arange(streams))
            times.append(time.perf_counter() - t0)
        per_step = [1e6 * t / (k * T * E) for t in times[1:]]
        rows[str(k)] = {
            "chunks_per_write": k,
            "us_per_step": float(np.median(per_step)),
            "us_per_step_min": min(per_step),
            "writes": len(per_step),
        }
    return {"vector_steps_per_chunk": T, "envs_per_chunk": E, "counts": rows}


def bench_distributed(run, args) -> dict:
    """Every (experiment, N) measurement in its own process (``Runner``), or a note when Ray is missing."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return {"skipped": 'ray is not installed (pip install -e ".[ray]")'}
    plan = (
        {"catch": [1, 2]}
        if args.quick
        else {"pong": [1, 2, 4], "pong-replay-actor": [1, 2, 4], "catch": [1, 2, 4], "doom": [1, 2]}
    )
    if getattr(args, "worlds", None):
        plan = {name: counts for name, counts in plan.items() if name in args.worlds}
    seconds, repeats = (5.0, 1) if args.quick else (40.0, min(args.repeats, 2))
    out = {
        "insert": run(
            {"task": "distributed_insert", "counts": [1, 4, 16, 64], "rounds": 2 if args.quick else 8},
            "distributed/insert",
        )
    }
    for name, counts in plan.items():
        print(f"[distributed / {name}] collectors {counts}, {repeats} repeat(s) alternating", flush=True)
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for _ in range(repeats):  # N = 1, 2, 4, 1, 2, 4: machine drift hits every N alike
            for n in counts:
                runs[n].append(
                    run(
                        {
                            "task": "distributed",
                            "experiment": name,
                            "collectors": n,
                            "seconds": seconds,
                            "learning_starts": 500 if name == "catch" else 2000,
                        },
                        f"distributed/{name}/{n}",
                    )
                )
        out[name] = {str(n): _median(r) for n, r in runs.items()}
    return out


def _median(runs: list[dict]) -> dict:
    """The numeric fields' medians over repeats (the first run's other fields), with every run kept."""
    import statistics

    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    out = dict(good[0])
    for key, value in good[0].items():
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and all(isinstance(r.get(key), (int, float)) for r in good)
        ):
            out[key] = statistics.median(r[key] for r in good)
    out["runs"] = runs
    return out


def print_distributed(result: dict) -> None:
    """The section's table (plain text)."""
    if not result or "skipped" in result:
        if result:
            print(f"\ndistributed: skipped ({result['skipped']})")
        return
    print("\nDistributed (local Ray cluster; learner pace=free, 1 thread; collectors nice 10, 1 thread each)")
    print(
        "  experiment | N | env steps/s | per collector | collector busy steps/s | learner updates/s | "
        "update ms (CPU ms) | "
        "insert ms/1k steps | learner busy (update + insert) | replay actor busy | weight lag | KB/s per collector"
    )
    for name, by_n in result.items():
        if name == "insert":
            continue
        for n, r in by_n.items():
            if "error" in r:
                print(f"  {name} | {n} | ERROR {r['error'][:80]}")
                continue
            print(
                f"  {name} | {n} | {r['sps']:,.0f} | {r['sps'] / r['collectors']:,.0f} | "
                f"{r['collector_busy_sps']:,.0f} | "
                f"{r['updates_per_s']:.1f} | {r['update_ms']:.1f} ({r['update_cpu_ms']:.1f}) | "
                f"{r['insert_ms_per_1k_steps']:.1f} | "
                f"{100 * (r['update_share'] + r['insert_share']):.0f}% | "
                f"{'-' if r.get('replay') != 'actor' else format(100 * r['replay_actor_share'], '.0f') + '%'} | "
                f"{r['weight_lag_mean'] if r['weight_lag_mean'] is None else round(r['weight_lag_mean'], 1)} | "
                f"{r['collector_bytes_per_s'] / 1e3:,.0f}"
            )
    ins = result.get("insert", {})
    if "counts" in ins:
        print(
            "  storing chunks on the learner (Pong-shaped, merged writes): "
            + ", ".join(
                f"{r['chunks_per_write']} chunk(s)/write {r['us_per_step']:.1f} us/step" for r in ins["counts"].values()
            )
        )
