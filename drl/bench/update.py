"""``update`` section: the plain-torch update floor against drl's time per update in its own loop, and the other
plain-torch parts of the Pong loop floor (an update at SB3's hyperparameters, greedy forwards at acting's batches)."""

from __future__ import annotations

import statistics
import tempfile
from typing import Any

from drl.bench.floor import floor_act_fn, floor_update_fn
from drl.bench.measure import quiet_trainer, time_calls
from drl.bench.training import SB3_HP


def native_bf16(device) -> bool:
    """bf16 runs natively here (CUDA with bf16, or a CPU with AMX / AVX512-BF16); elsewhere it is emulated."""
    import torch

    from drl import runtime

    device = torch.device(device)
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else runtime.cpu_has_bf16()


def task_update(spec: dict) -> dict:
    """Floor vs drl, alternating floor / drl blocks ``repeats`` times per (batch, precision)."""
    device, n, warmup, fill, repeats = spec["device"], spec["updates"], spec["warmup"], spec["fill"], spec["repeats"]
    with tempfile.TemporaryDirectory(prefix="drl-bench-") as run_dir:
        # fill drl's replay through its own loop (no updates: learning starts at the last step)
        trainer = quiet_trainer(
            "atari-pong",
            [
                f"total_steps={fill}",
                f"agent.learning_starts={fill}",
                f"device={device}",
                *([f"replay.capacity={spec['buffer']}"] if spec.get("buffer") else []),
            ],
            run_dir,
        )
        try:
            trainer.run()
            agent, replay, dev = trainer.agent, trainer.replay, trainer.device
            default_bf16 = trainer.bf16
            double = trainer.cfg.agent.double  # atari-pong's target rule, which the floor's cases follow

            def drl_update_fn(batch_size: int, learner=agent):
                def one():  # what the loop does per update (drl.learner_core.LearnStep; its stats stay tensors)
                    batch = replay.sample(batch_size, beta=0.4, device=dev)
                    stats = learner.update(batch)
                    replay.update_priorities(batch.indices, stats.pop("td_error"), getattr(batch, "mask", None))

                return one

            out = {
                "device": str(dev),
                "threads": trainer.threads,
                "drl_default_bf16": default_bf16,
                "updates_timed": n,
                "replay_fill": len(replay),
                "cases": {},
            }
            precisions = ("fp32", "bf16") if native_bf16(dev) else ("fp32",)
            if len(precisions) == 1:  # emulated bf16 is many times slower (a bench once ran 16+ min) and unused
                out["skipped"] = "bf16: no native bf16 on this CPU (AMX / AVX512-BF16); drl trains in fp32 here"
            for batch_size in spec["batch_sizes"]:
                for precision in precisions:
                    bf16 = precision == "bf16"
                    floor = floor_update_fn(dev, batch_size, bf16, trainer.env.num_actions, double=double)
                    agent.bf16 = bf16
                    drl_one = drl_update_fn(batch_size)
                    floor_ms, drl_ms, sample_ms = [], [], []
                    for _ in range(repeats):
                        floor_ms.append(time_calls(floor, n, warmup, dev))
                        drl_ms.append(time_calls(drl_one, n, warmup, dev))
                        sample_ms.append(
                            time_calls(lambda: replay.sample(batch_size, beta=0.4, device=dev), n, warmup, dev)
                        )
                    f, d = statistics.median(floor_ms), statistics.median(drl_ms)
                    out["cases"][f"b{batch_size}_{precision}"] = {
                        "batch_size": batch_size,
                        "precision": precision,
                        "double": double,  # the floor's target rule: atari-pong's
                        "floor_ms": f,
                        "drl_ms": d,
                        "drl_sample_ms": statistics.median(sample_ms),
                        "share": f / d,
                        "drl_default_precision": bf16 == default_bf16,
                        "floor_ms_samples": floor_ms,
                        "drl_ms_samples": drl_ms,
                    }
            agent.bf16 = default_bf16
            out.update(_loop_floor_parts(trainer, spec))
            if dev.type == "cpu":
                out["fp32_layouts"] = _fp32_layouts(trainer, spec, drl_update_fn)
            if default_bf16:
                out["acting"] = _acting(trainer, spec)
            out["dropout"] = _dropout(dev, spec, precisions)
        finally:
            trainer.close()
    return out


def _loop_floor_parts(trainer, spec: dict) -> dict:
    """The plain-torch parts of the Pong loop floor (``drl.bench.report.loop_floor``) that the update cases lack, in
    drl's precisions here, medians of ``repeats``: ``floor_same_hp``, an update at SB3's hyperparameters (batch 32,
    vanilla DQN's target), and ``act_floor``, a greedy forward at batch 1 (SB3's one env) and at the config's
    ``num_envs``."""
    dev, n, warmup, repeats = trainer.device, spec["updates"], spec["warmup"], spec["repeats"]
    num_actions, bf16 = trainer.env.num_actions, trainer.bf16
    act_bf16 = bool(getattr(trainer.agent, "act_bf16", False))
    batch = SB3_HP["batch_size"]
    update = floor_update_fn(dev, batch, bf16, num_actions, double=False)
    samples = [time_calls(update, n, warmup, dev) for _ in range(repeats)]
    out: dict[str, Any] = {
        "floor_same_hp": {
            "batch_size": batch,
            "double": False,
            "precision": "bf16" if bf16 else "fp32",
            "floor_ms": statistics.median(samples),
            "floor_ms_samples": samples,
        },
        "act_floor": {},
    }
    for envs in sorted({1, trainer.env.num_envs}):
        act = floor_act_fn(dev, envs, act_bf16, num_actions)
        samples = [time_calls(act, 10 * n, warmup, dev) for _ in range(repeats)]
        out["act_floor"][f"b{envs}"] = {
            "batch_size": envs,
            "precision": "bf16" if act_bf16 else "fp32",
            "ms": statistics.median(samples),
            "samples": samples,
        }
    return out


def _fp32_layouts(trainer, spec: dict, drl_update_fn) -> dict:
    """drl's fp32 update with NCHW against oneDNN's channels-last layout (``compute.channels_last``; auto picks
    channels-last for fp32 on a CPU), alternating ``repeats`` times per batch size: the layout choice, measured."""
    import torch

    from drl.agent import make_agent
    from drl.agents.dqn import DQN

    n, warmup, dev = spec["updates"], spec["warmup"], trainer.device
    default = trainer.agent
    cfg = trainer.cfg.model_copy(deep=True)
    cfg.compute.channels_last = "off" if default.channels_last else "on"
    other = make_agent(cfg, trainer.spec, dev, False, torch.Generator(device=dev).manual_seed(0))
    assert isinstance(other, DQN)  # the networks compared are a DQN's (atari-pong)
    other.online.load_state_dict(default.online.state_dict())
    other.target.load_state_dict(default.target.state_dict())
    agents = {"nchw" if not a.channels_last else "channels_last": a for a in (default, other)}
    out = {}
    try:
        default.bf16 = False
        for batch_size in spec["batch_sizes"]:
            samples: dict[str, list[float]] = {name: [] for name in agents}
            for _ in range(spec["repeats"]):
                for name, agent in agents.items():
                    samples[name].append(time_calls(drl_update_fn(batch_size, agent), n, warmup, dev))
            medians = {name: statistics.median(v) for name, v in samples.items()}
            out[f"b{batch_size}"] = {
                "batch_size": batch_size,
                "nchw_ms": medians["nchw"],
                "channels_last_ms": medians["channels_last"],
                "speedup": medians["nchw"] / medians["channels_last"],
                "samples": samples,
            }
    finally:
        default.bf16 = trainer.bf16
    return out


def _acting(trainer, spec: dict) -> dict:
    """One acting forward pass (``agent.act``, greedy) at batch 1 (one env, as at SB3's hyperparameters) and at the
    config's ``num_envs``, in fp32 against bf16 autocast, alternating ``repeats`` times: what ``compute.act_bf16``
    (auto: bf16 acting on CUDA only) chooses between."""
    import torch

    agent, dev = trainer.agent, trainer.device
    default = agent.act_bf16
    out: dict[str, Any] = {"default": "bf16" if default else "fp32"}
    try:
        for n in sorted({1, trainer.env.num_envs}):
            obs = torch.randint(0, 256, (n, *trainer.spec.obs_shape), dtype=torch.uint8, device=dev)
            samples: dict[str, list[float]] = {"fp32": [], "bf16": []}
            for _ in range(spec["repeats"]):
                for precision in samples:
                    agent.act_bf16 = precision == "bf16"
                    samples[precision].append(
                        time_calls(lambda: agent.act(obs, None, 0.0), 10 * spec["updates"], spec["warmup"], dev)
                    )
            medians = {p: statistics.median(v) for p, v in samples.items()}
            out[f"b{n}"] = {
                "batch_size": n,
                "fp32_ms": medians["fp32"],
                "bf16_ms": medians["bf16"],
                "bf16_over_fp32": medians["bf16"] / medians["fp32"],
                "samples": samples,
            }
    finally:
        agent.act_bf16 = default
    return out


def _dropout(dev, spec: dict, precisions: tuple[str, ...]) -> dict:
    """Dropout forward + backward in train mode at p = 0.5 on the deathmatch network's per-update input
    (32 sequences x 9 steps = 288 rows of 4,608 conv features + 32 extras): torch's ``nn.Dropout`` against
    ``drl.networks.Dropout``, alternating ``repeats`` times per precision."""
    import torch
    from torch import nn

    from drl.networks import Dropout

    layers = {"torch": nn.Dropout(0.5).train(), "drl": Dropout(0.5).train()}
    out: dict[str, Any] = {"shape": [288, 4640], "p": 0.5}
    for precision in precisions:
        x = torch.randn(288, 4640, device=dev, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        x.requires_grad_()

        def fwd_bwd(layer):
            def one():
                layer(x).sum().backward()

            return one

        samples: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(spec["repeats"]):
            for name, layer in layers.items():
                samples[name].append(time_calls(fwd_bwd(layer), spec["updates"], spec["warmup"], dev))
        medians = {name: statistics.median(v) for name, v in samples.items()}
        out[precision] = {
            "torch_ms": medians["torch"],
            "drl_ms": medians["drl"],
            "speedup": medians["torch"] / medians["drl"],
            "samples": samples,
        }
    return out
