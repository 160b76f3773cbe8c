"""A/B in one process: DQN.update (atari-pong config, bf16 autocast) with the float32 image scaling that drl used
before 2026-11-28 against today's ``scale_obs`` (straight to bf16 inside autocast); 12 alternating rounds of 10
updates, median times and paired ratios. Run on an idle machine: ``python scripts/ab_scale_obs.py``."""
import time, statistics, numpy as np, torch
import drl.networks as nets, agents.dqn as dqn_mod
from drl.agents.dqn import DQN
from drl import config
from drl.agent import EnvSpec
from drl.replay import TransitionBatch
new = nets.scale_obs
def old(obs):
    return obs.float().div_(255.0) if obs.dtype == torch.uint8 else obs.float()
torch.set_num_threads(2)
cfg = config.load("atari-pong")
torch.manual_seed(0)
agent = DQN(cfg, EnvSpec((4, 84, 84), torch.uint8, num_actions=6), torch.device("cpu"), bf16=True, generator=torch.Generator().manual_seed(0))
g = torch.Generator().manual_seed(1)
for B in (32, 64):
    batch = TransitionBatch(obs=torch.randint(0, 256, (B, 4, 84, 84), dtype=torch.uint8, generator=g),
        actions=torch.randint(0, 6, (B,), generator=g), returns=torch.randn(B, generator=g),
        next_obs=torch.randint(0, 256, (B, 4, 84, 84), dtype=torch.uint8, generator=g),
        discounts=torch.full((B,), 0.97), weights=torch.ones(B), indices=np.arange(B))
    times = {"old": [], "new": []}
    for rnd in range(12):
        for name, fn in (("old", old), ("new", new)) if rnd % 2 == 0 else (("new", new), ("old", old)):
            nets.scale_obs = dqn_mod.scale_obs = fn
            for _ in range(2): agent.update(batch)
            t = time.perf_counter()
            for _ in range(10): agent.update(batch)
            times[name].append((time.perf_counter() - t) / 10 * 1e3)
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    ratios = [a / b for a, b in zip(times["old"], times["new"])]
    print(f"batch {B}: old {o:.2f} ms, new {n:.2f} ms, old/new {o/n:.3f} (paired ratios median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f})", flush=True)
