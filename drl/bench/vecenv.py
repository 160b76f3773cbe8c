"""``vecenv`` section: vector-env steps/s with random actions, ``VecStep`` tensors delivered on the device."""

from __future__ import annotations

import time

from drl.bench.measure import note_descendants, sync


def task_vecenv(spec: dict) -> dict:
    """Random actions through drl's vector envs; steps/s = envs x vector steps / seconds, obs on the device."""
    import torch

    from drl import config
    from drl.vec_env import make_env

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
            sync(device)
            t0, steps = time.perf_counter(), 0
            while steps < spec["min_steps"] or time.perf_counter() - t0 < spec["min_seconds"]:
                one()
                steps += 1
            assert step.obs.device.type == device.type and step.obs.dtype == torch.uint8
            sync(device)
            seconds = time.perf_counter() - t0
        finally:
            note_descendants()
            env.close()
        rows[str(n)] = {
            "num_envs": n,
            "sps": n * steps / seconds,
            "vector_steps": steps,
            "seconds": seconds,
            "workers": getattr(env, "num_workers", None),
            "obs_shape": list(step.obs.shape[1:]),
        }
    return {"kind": kind, "device": str(device), "experiment": experiment, "counts": rows}
