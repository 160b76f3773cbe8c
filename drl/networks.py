"""Q-networks: encoder -> optional game-variable embedding -> optional LSTM -> Q head.

obs are uint8 images ``[B, C, H, W]`` (scaled to [0, 1] inside the network, on the device) or float32 vectors
``[B, D]``; sequences add a leading time axis. DQN = encoder + head; DRQN = encoder + LSTM + head. Encoders are
looked up by name in ``drl.registry.ENCODERS``: ``fn(obs_shape, cfg) -> nn.Module`` giving flat features ``[B, F]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from drl.config import NetworkConfig
from drl.registry import ENCODERS


def nature_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """Mnih et al. 2015: 32@8x8/4, 64@4x4/2, 64@3x3/1."""
    return nn.Sequential(
        nn.Conv2d(obs_shape[0], 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(),
    )


def doom_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """Lample & Chaplot's (Arnold) encoder for ~60x80 Doom frames: 32@8x8/4, 64@4x4/2."""
    return nn.Sequential(
        nn.Conv2d(obs_shape[0], 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Flatten(),
    )


def small_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """For tiny images (torch-native envs, MinAtar): two 3x3 convs, stride 1."""
    return nn.Sequential(
        nn.Conv2d(obs_shape[0], 16, 3, stride=1, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=1, padding=1), nn.ReLU(),
        nn.Flatten(),
    )


def mlp_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig) -> nn.Sequential:
    """For flat float vectors (e.g. CartPole's 4 numbers): ``network.mlp_layers`` Linear + ReLU layers."""
    layers, width = [nn.Flatten()], math.prod(obs_shape)
    for units in cfg.mlp_layers:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return nn.Sequential(*layers)


class QHead(nn.Module):
    """Hidden layer + Q values; the dueling form is V(s) + A(s, a) - mean_a A(s, a)."""

    def __init__(self, in_features: int, hidden: int, num_actions: int, dueling: bool):
        super().__init__()
        self.dueling = dueling
        self.advantage = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_actions))
        if dueling:
            self.value = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    @staticmethod
    def _branch(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """Hidden layer as the caller runs it (bf16 under autocast); the output layer always in float32, so Q
        values keep 24 mantissa bits instead of bf16's 8 (Q ~ 10 would otherwise be rounded to steps of 0.06)."""
        hidden = mlp[1](mlp[0](x))
        with torch.autocast(x.device.type, enabled=False):
            return mlp[2](hidden.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adv = self._branch(self.advantage, x)
        if not self.dueling:
            return adv
        return self._branch(self.value, x) + adv - adv.mean(dim=-1, keepdim=True)


class QNetwork(nn.Module):
    """Feed-forward or recurrent Q-network.

    ``forward(obs)`` takes obs ``[B, *obs_shape]`` (+ float32 extras ``[B, K]``) and returns Q ``[B, A]``.
    Recurrent networks use ``forward_sequence(obs [T, B, C, H, W], extras [T, B, K], state)`` returning
    Q ``[T, B, A]`` and the new LSTM state ``(h, c)``, each ``[1, B, lstm_size]``.
    """

    def __init__(self, cfg: NetworkConfig, obs_shape: tuple[int, int, int], num_actions: int, num_extras: int = 0,
                 recurrent: bool = False):
        super().__init__()
        self.cfg, self.recurrent = cfg, recurrent
        self.num_extras = num_extras
        self.encoder = ENCODERS.get(cfg.encoder)(tuple(obs_shape), cfg)
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
        x = self.encoder(obs.float().div_(255.0) if obs.dtype == torch.uint8 else obs.float())
        if self.num_extras:
            x = torch.cat([x, self.extras_embedding(extras.float())], dim=-1)
        return x

    def forward(self, obs: torch.Tensor, extras: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(obs, extras))

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(1, batch, self.cfg.lstm_size, device=device)
        return zeros, zeros.clone()

    def forward_sequence(self, obs: torch.Tensor, extras: torch.Tensor | None, state: tuple[torch.Tensor, torch.Tensor],
                         grad_cut: tuple[int, torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple]:
        """Q ``[T, B, A]`` and the final state. ``grad_cut = (k, keep)`` (R2D2's burn-in): the first ``k`` steps
        of rows where ``keep`` [B] is false run without autograd, so no gradient reaches them or their stale
        initial state; rows where it is true (an exact initial state) keep their whole graph."""
        if grad_cut is not None and torch.is_grad_enabled():
            k, keep = grad_cut
            part = lambda x, a, b: None if x is None else x[a:b]  # noqa: E731
            with torch.no_grad():
                q_head, mid = self.forward_sequence(obs[:k], part(extras, 0, k), state)
            if bool(keep.any()):  # the kept rows again, with autograd (a small batch)
                rows = keep.nonzero().squeeze(1)
                q_kept, mid_kept = self.forward_sequence(
                    obs[:k, rows], None if extras is None else extras[:k, rows], tuple(x[:, rows] for x in state))
                q_head = q_head.index_copy(1, rows, q_kept)
                mid = tuple(x.index_copy(1, rows, y) for x, y in zip(mid, mid_kept))
            q_rest, state = self.forward_sequence(obs[k:], part(extras, k, None), mid)
            return torch.cat([q_head, q_rest]), state
        T, B = obs.shape[:2]
        x = self.features(obs.flatten(0, 1), None if extras is None else extras.flatten(0, 1)).view(T, B, -1)
        x, state = lstm_unroll(self.lstm, x, state, fused=x.is_cuda)
        return self.head(x), state


def lstm_unroll(lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
                fused: bool = False) -> tuple[torch.Tensor, tuple]:
    """``nn.LSTM``'s math on its own parameters: x ``[T, B, F]``, state ``(h, c)`` each ``[1, B, H]`` ->
    outputs ``[T, B, H]`` (float32) and the final state.

    ``fused`` calls ``nn.LSTM`` itself (cuDNN on CUDA). Otherwise the input projection of all T steps is one matmul
    (bf16 under autocast) and only the small ``h @ W_hh`` recurrence loops over time, in float32. On CPU, at DRQN's
    sizes (T=23, B=16, H=256), oneDNN's fused LSTM backward took 28 ms a call, 41 % of an update; with this loop
    the whole update went from 109 to 92 ms."""
    if fused:  # autocast would run cuDNN's LSTM in float16 whatever dtype was asked for (and with no loss scaling)
        with torch.autocast(x.device.type, enabled=False):
            return lstm(x.float(), tuple(s.float() for s in state))
    gates_x = F.linear(x, lstm.weight_ih_l0).float() + (lstm.bias_ih_l0 + lstm.bias_hh_l0)   # [T, B, 4H]
    h, c = state[0][0], state[1][0]
    outputs = []
    with torch.autocast(x.device.type, enabled=False):
        for t in range(x.shape[0]):
            i, f, g, o = (gates_x[t] + h @ lstm.weight_hh_l0.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
    return torch.stack(outputs), (h[None], c[None])
