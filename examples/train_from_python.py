"""Train drl's agents from Python on a custom environment and with a custom encoder, then act with the result.

python -m examples.train_from_python [OUT_DIR]      (from the repository root, so `examples` is importable)
"""

import sys
from pathlib import Path

import torch

import drl
import examples.corridor_env  # noqa: F401  registers env.kind "corridor"
import examples.tiny_encoder  # noqa: F401  registers network.encoder "tiny"

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/examples")

# 1. a custom environment: a YAML of our own, with overrides
cfg = drl.load_config("examples/corridor.yaml", overrides=["tracking.wandb=off", "seed=1"])
corridor = drl.learn(cfg, run_dir=out / "corridor", overwrite=True)
print(
    f"corridor: final evaluation {corridor.eval['return_mean']:.2f} after {corridor.env_steps} steps "
    f"({len(corridor.metrics('episode'))} training episodes)"
)

# 2. a custom encoder on a built-in world: a named experiment with overrides
cfg = drl.load_config("catch", overrides=["network.encoder=tiny", "total_steps=20000", "tracking.wandb=off"])
catch = drl.learn(cfg, run_dir=out / "catch-tiny", overwrite=True)
print(f"catch with the tiny encoder: final evaluation {catch.eval['return_mean']:.2f}")

# 3. load the trained corridor agent and act greedily from the start cell
agent = drl.load_agent(out / "corridor")
obs = torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), corridor.config.env.length).float()
actions, _ = agent.act(obs, agent.initial_state(4), epsilon=0.0)
print(f"greedy actions at the start cell: {actions.tolist()} (1 = RIGHT, towards the goal)")
