"""Q-networks: encoder (Nature CNN or a small CNN) -> optional game-variable embedding -> optional LSTM -> Q head.

obs are uint8 ``[B, C, H, W]`` (or ``[T, B, C, H, W]`` for sequences) and are scaled to [0, 1] inside the network,
on the device. DQN = encoder + head; DRQN = encoder + LSTM + head.
"""
from __future__ import annotations

import torch
from torch import nn

from drl.config import NetworkConfig


def nature_encoder(in_channels: int) -> nn.Sequential:
    """Mnih et al. 2015: 32@8x8/4, 64@4x4/2, 64@3x3/1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(),
    )


def doom_encoder(in_channels: int) -> nn.Sequential:
    """Lample & Chaplot's (Arnold) encoder for ~60x80 Doom frames: 32@8x8/4, 64@4x4/2."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Flatten(),
    )


def small_encoder(in_channels: int) -> nn.Sequential:
    """For tiny images (torch-native envs): two 3x3 convs, stride 1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=1, padding=1), nn.ReLU(),
        nn.Flatten(),
    )


ENCODERS = {"nature": nature_encoder, "doom": doom_encoder, "small": small_encoder}


class QHead(nn.Module):
    """Hidden layer + Q values; the dueling form is V(s) + A(s, a) - mean_a A(s, a)."""

    def __init__(self, in_features: int, hidden: int, num_actions: int, dueling: bool):
        super().__init__()
        self.dueling = dueling
        self.advantage = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))
        if dueling:
            self.value = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adv = self.advantage(x)
        if not self.dueling:
            return adv
        return self.value(x) + adv - adv.mean(dim=-1, keepdim=True)


class QNetwork(nn.Module):
    """Feed-forward or recurrent Q-network.

    ``forward(obs)`` takes uint8 ``[B, C, H, W]`` (+ float32 extras ``[B, K]``) and returns Q ``[B, A]``.
    Recurrent networks use ``forward_sequence(obs [T, B, C, H, W], extras [T, B, K], state)`` returning
    Q ``[T, B, A]`` and the new LSTM state ``(h, c)``, each ``[1, B, lstm_size]``.
    """

    def __init__(self, cfg: NetworkConfig, obs_shape: tuple[int, int, int], num_actions: int, num_extras: int = 0,
                 recurrent: bool = False):
        super().__init__()
        self.cfg, self.recurrent = cfg, recurrent
        self.num_extras = num_extras
        self.encoder = ENCODERS[cfg.encoder](obs_shape[0])
        with torch.no_grad():
            features = self.encoder(torch.zeros(1, *obs_shape)).shape[1]
        if num_extras:
            self.extras_embedding = nn.Sequential(nn.Linear(num_extras, 32), nn.ReLU())
            features += 32
        if recurrent:
            self.lstm = nn.LSTM(features, cfg.lstm_size)
            features = cfg.lstm_size
        self.head = QHead(features, cfg.hidden, num_actions, cfg.dueling)

    def features(self, obs: torch.Tensor, extras: torch.Tensor | None) -> torch.Tensor:
        x = self.encoder(obs.float().div_(255.0))
        if self.num_extras:
            x = torch.cat([x, self.extras_embedding(extras.float())], dim=-1)
        return x

    def forward(self, obs: torch.Tensor, extras: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(obs, extras))

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(1, batch, self.cfg.lstm_size, device=device)
        return zeros, zeros.clone()

    def forward_sequence(self, obs: torch.Tensor, extras: torch.Tensor | None,
                         state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        T, B = obs.shape[:2]
        x = self.features(obs.flatten(0, 1), None if extras is None else extras.flatten(0, 1))
        x, state = self.lstm(x.view(T, B, -1).float(), state)
        return self.head(x), state
