"""Learning rules only (act / loss / update). ``make_agent`` picks one from the config."""
from __future__ import annotations

import torch

from drl.config import Config


def make_agent(cfg: Config, obs_shape: tuple[int, int, int], num_actions: int, num_extras: int,
               device: torch.device, bf16: bool, generator: torch.Generator):
    if cfg.agent.algo == "drqn":
        from agents.drqn import DRQN
        return DRQN(cfg, obs_shape, num_actions, num_extras, device, bf16, generator)
    from agents.dqn import DQN
    return DQN(cfg, obs_shape, num_actions, num_extras, device, bf16, generator)
