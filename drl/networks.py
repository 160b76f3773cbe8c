"""Q-networks: encoder -> optional game-variable embedding -> optional LSTM -> Q head, and optionally a
game-feature head on the encoder's features (Lample & Chaplot 2017: before the LSTM).

obs are uint8 images ``[B, C, H, W]`` (scaled to [0, 1] inside the network, on the device) or float32 vectors
``[B, D]``; sequences add a leading time axis. DQN = encoder + head; DRQN = encoder + LSTM + head. Encoders are
looked up by name in ``drl.registry.ENCODERS``: ``fn(obs_shape, cfg) -> nn.Module`` giving flat features ``[B, F]``.

Train / eval modes (they matter only with ``network.dropout`` or ``network.batch_norm``): networks live in eval
mode, so acting, evaluation, target values and Double DQN's action choice see no dropout and batch norm's running
statistics (a row's Q values do not depend on the other rows of its batch). Only the online network's forward
that carries the loss's gradient runs in train mode (``train_mode``), which also updates the running statistics;
the target network never does (it copies them from the online network at each sync).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from drl.config import NetworkConfig
from drl.errors import UserError, first_line
from drl.registry import ENCODERS
from drl.runtime import to_device


def conv_stack(in_channels: int, layers: list[tuple[int, int, int, int]], cfg: NetworkConfig | None) -> nn.Sequential:
    """``(channels, kernel, stride, padding)`` per layer: Conv2d (+ BatchNorm2d with ``cfg.batch_norm``, before the
    ReLU as in Arnold) + ReLU, then Flatten. Without batch norm the module indices are those of a plain list."""
    modules: list[nn.Module] = []
    for channels, kernel, stride, padding in layers:
        modules.append(nn.Conv2d(in_channels, channels, kernel, stride=stride, padding=padding))
        if cfg is not None and cfg.batch_norm:
            modules.append(nn.BatchNorm2d(channels))
        modules.append(nn.ReLU())
        in_channels = channels
    return nn.Sequential(*modules, nn.Flatten())


def image_channels(obs_shape: tuple[int, ...], encoder: str) -> int:
    """The channels C of image observations ``[C, H, W]``; anything else (CartPole's vector of 4 numbers) is a
    one-line ``UserError`` naming the encoder for it, raised before any layer is built."""
    if len(obs_shape) != 3:
        raise UserError(
            f"network.encoder={encoder} is a convolutional encoder for image observations [C, H, W], but "
            f"this environment's observations have shape {tuple(obs_shape)}; set network.encoder=mlp "
            f"for vector observations"
        )
    return obs_shape[0]


def nature_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """Mnih et al. 2015: 32@8x8/4, 64@4x4/2, 64@3x3/1."""
    return conv_stack(image_channels(obs_shape, "nature"), [(32, 8, 4, 0), (64, 4, 2, 0), (64, 3, 1, 0)], cfg)


def nips_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """Mnih et al. 2013 (the NIPS workshop DQN): 16@8x8/4, 32@4x4/2; about half the Nature encoder's update cost
    on 84x84 frames (paired with ``network.hidden: 256`` as in the paper)."""
    return conv_stack(image_channels(obs_shape, "nips"), [(16, 8, 4, 0), (32, 4, 2, 0)], cfg)


def doom_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """Lample & Chaplot's (Arnold) encoder for ~60x80 Doom frames: 32@8x8/4, 64@4x4/2."""
    return conv_stack(image_channels(obs_shape, "doom"), [(32, 8, 4, 0), (64, 4, 2, 0)], cfg)


def small_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig | None = None) -> nn.Sequential:
    """For tiny images (torch-native envs, MinAtar): two 3x3 convs, stride 1."""
    return conv_stack(image_channels(obs_shape, "small"), [(16, 3, 1, 1), (32, 3, 1, 1)], cfg)


def mlp_encoder(obs_shape: tuple[int, ...], cfg: NetworkConfig) -> nn.Sequential:
    """For flat float vectors (e.g. CartPole's 4 numbers): ``network.mlp_layers`` Linear + ReLU layers. Images are
    flattened (scaled to [0, 1] first, like every encoder's input), so an MLP on pixels is allowed too."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(obs_shape)
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


def scale_obs(obs: torch.Tensor) -> torch.Tensor:
    """uint8 images -> [0, 1], in bf16 inside a bf16 autocast region and float32 outside; float vectors as they are
    (float32), so scaling twice is scaling once.

    Inside autocast the first layer would cast the float32 images to bf16 anyway (once per network: twice for the
    next observations of a Double DQN target). Scaling straight to bf16 gives the same values: integers up to 255 are
    exact in bf16, and bf16 division rounds the float32 quotient, which is what the cast does."""
    if obs.dtype == torch.uint8:
        bf16 = (
            torch.is_autocast_enabled(obs.device.type) and torch.get_autocast_dtype(obs.device.type) == torch.bfloat16
        )
        return obs.to(torch.bfloat16 if bf16 else torch.float32).div_(255.0)
    return obs if obs.dtype in (torch.float32, torch.bfloat16) else obs.float()


class Dropout(nn.Dropout):
    """``nn.Dropout`` (in train mode each element is zeroed with probability ``p`` and the others scaled by
    ``1 / (1 - p)``; the identity in eval mode) with a faster mask on a CPU: uniform floats compared with ``p``.
    torch's CPU dropout draws a Bernoulli per element, 2-3x slower forward and backward on the deathmatch network's
    ``[288, 4640]`` inputs (``drl.bench``, the update section's dropout table). On CUDA it is ``nn.Dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.is_cuda:
            return super().forward(x)
        if self.p == 1:
            return x * 0
        keep = torch.rand_like(x, dtype=torch.float32).ge_(self.p).mul_(1 / (1 - self.p))
        return x * keep.to(x.dtype)


@contextmanager
def train_mode(net: nn.Module):
    """Run the block with ``net`` in train mode (dropout on, batch norm on batch statistics, updating its running
    ones), then back in eval mode, where networks live (see the module docstring)."""
    net.train()
    try:
        yield net
    finally:
        net.eval()


class QNetwork(nn.Module):
    """Feed-forward or recurrent Q-network, built in eval mode (see the module docstring).

    ``forward(obs)`` takes obs ``[B, *obs_shape]`` (+ float32 extras ``[B, K]``) and returns Q ``[B, A]``.
    Recurrent networks use ``forward_sequence(obs [T, B, C, H, W], extras [T, B, K], state)`` returning
    Q ``[T, B, A]`` and the new LSTM state ``(h, c)``, each ``[1, B, lstm_size]``. With ``num_features`` F > 0 a
    game-feature head (Arnold's: dropout, hidden layer, dropout, F logits) reads the encoder's features; ``aux=True``
    also returns its logits, ``[B, F]`` or ``[T, B, F]``, and ``feature_logits(obs)`` gives them alone.
    """

    def __init__(
        self,
        cfg: NetworkConfig,
        obs_shape: tuple[int, ...],
        num_actions: int,
        num_extras: int = 0,
        recurrent: bool = False,
        num_features: int = 0,
    ):
        super().__init__()
        self.cfg, self.recurrent = cfg, recurrent
        self.num_extras, self.num_features = num_extras, num_features
        self.encoder = ENCODERS.get(cfg.encoder)(tuple(obs_shape), cfg)
        if cfg.batch_norm and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.encoder.modules()):
            raise UserError(
                f"network.batch_norm: encoder '{cfg.encoder}' has no batch-norm layers (the conv "
                "encoders nature, nips, doom and small do); set network.batch_norm=false"
            )
        with torch.no_grad():  # in eval mode: this dummy batch must not reach batch norm's running statistics
            try:
                encoded = features = self.encoder.eval()(torch.zeros(1, *obs_shape)).shape[1]
            except RuntimeError as exc:  # e.g. kernels larger than the frames, or a user's conv encoder on vectors
                fix = (
                    "set network.encoder=mlp for vector observations"
                    if len(obs_shape) == 1
                    else "pick an encoder that fits frames of this size (network.encoder=small for small images)"
                )
                raise UserError(
                    f"network.encoder={cfg.encoder} does not fit observations of shape "
                    f"{tuple(obs_shape)} ({first_line(exc)}); {fix}"
                ) from exc
        if num_extras:
            self.extras_embedding = nn.Sequential(nn.Linear(num_extras, 32), nn.ReLU())
            features += 32
        self.dropout = Dropout(cfg.dropout) if cfg.dropout else None  # Arnold: on the LSTM's / head's input
        if recurrent:
            self.lstm = nn.LSTM(features, cfg.lstm_size)
            features = cfg.lstm_size
        self.head = QHead(features, cfg.hidden, num_actions, cfg.dueling)
        if num_features:
            self.feature_head = nn.Sequential(
                Dropout(cfg.dropout),
                nn.Linear(encoded, cfg.hidden),
                nn.ReLU(),
                Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, num_features),
            )
        # train and eval mode give different outputs (dropout, batch norm)
        self.mode_dependent = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) or (isinstance(m, nn.Dropout) and m.p > 0)
            for m in self.modules()
        )
        self.eval()

    def encode(self, obs: torch.Tensor, extras: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the Q path's input ``[B, F']``: encoder features + extras embedding, after dropout; the encoder's
        features ``[B, F]``, the game-feature head's input)."""
        encoded = self.encoder(scale_obs(obs))
        x = encoded
        if self.num_extras:
            assert extras is not None, "this network takes extras"
            x = torch.cat([x, self.extras_embedding(extras.float())], dim=-1)
        if self.dropout is not None:
            x = self.dropout(x)
        return x, encoded

    def features(self, obs: torch.Tensor, extras: torch.Tensor | None) -> torch.Tensor:
        return self.encode(obs, extras)[0]

    def feature_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Game-feature logits ``[B, F]`` of obs ``[B, *obs_shape]`` (the encoder and the head only)."""
        return self.feature_head(self.encoder(scale_obs(obs)))

    def forward(self, obs: torch.Tensor, extras: torch.Tensor | None = None, aux: bool = False):
        x, encoded = self.encode(obs, extras)
        q = self.head(x)
        return (q, self.feature_head(encoded)) if aux else q

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(1, batch, self.cfg.lstm_size, device=device)
        return zeros, zeros.clone()

    def forward_sequence(
        self,
        obs: torch.Tensor,
        extras: torch.Tensor | None,
        state: tuple[torch.Tensor, torch.Tensor],
        grad_cut: tuple[int, np.ndarray | torch.Tensor] | None = None,
        aux: bool = False,
    ) -> tuple:
        """Q ``[T, B, A]`` and the final state (and with ``aux`` the game-feature logits ``[T, B, F]``).
        ``grad_cut = (k, keep)`` (R2D2's burn-in): the first ``k`` steps of rows where ``keep`` [B] is false run
        without autograd, so no gradient reaches them or their stale initial state; rows where it is true (an
        exact initial state) keep their whole graph. (Batch norm in train mode then normalises each of these
        parts with its own batch statistics.) ``keep`` is a bool array or tensor on the host: the kept rows are
        found there, without waiting for the device, and go to it as one asynchronous index copy."""
        if grad_cut is not None and torch.is_grad_enabled():
            k, keep = grad_cut
            part = lambda x, a, b: None if x is None else x[a:b]  # noqa: E731
            with torch.no_grad():
                head = self.forward_sequence(obs[:k], part(extras, 0, k), state, aux=aux)
            kept_rows = np.flatnonzero(np.asarray(keep))
            if len(kept_rows):  # the kept rows again, with autograd (a small batch)
                rows = to_device(torch.from_numpy(kept_rows), obs.device)
                kept = self.forward_sequence(
                    obs[:k, rows],
                    None if extras is None else extras[:k, rows],
                    (state[0][:, rows], state[1][:, rows]),
                    aux=aux,
                )
                put = lambda x, y: x.index_copy(1, rows, y)  # noqa: E731
                head = (put(head[0], kept[0]), tuple(map(put, head[1], kept[1])), *map(put, head[2:], kept[2:]))
            rest = self.forward_sequence(obs[k:], part(extras, k, None), head[1], aux=aux)
            return (torch.cat([head[0], rest[0]]), rest[1], *(torch.cat(p) for p in zip(head[2:], rest[2:])))
        T, B = obs.shape[:2]
        x, encoded = self.encode(obs.flatten(0, 1), None if extras is None else extras.flatten(0, 1))
        x, state = lstm_unroll(self.lstm, x.view(T, B, -1), state, fused=x.is_cuda)
        if aux:
            return self.head(x), state, self.feature_head(encoded).view(T, B, -1)
        return self.head(x), state


def lstm_unroll(
    lstm: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], fused: bool = False
) -> tuple[torch.Tensor, tuple]:
    """``nn.LSTM``'s math on its own parameters: x ``[T, B, F]``, state ``(h, c)`` each ``[1, B, H]`` ->
    outputs ``[T, B, H]`` (float32) and the final state.

    ``fused`` calls ``nn.LSTM`` itself (cuDNN on CUDA). Otherwise the input projection of all T steps is one matmul
    (bf16 under autocast) and only the small ``h @ W_hh`` recurrence loops over time, in float32. On CPU, at DRQN's
    sizes (T=23, B=16, H=256), oneDNN's fused LSTM backward took 28 ms a call, 41 % of an update; with this loop
    the whole update went from 109 to 92 ms."""
    if fused:  # autocast would run cuDNN's LSTM in float16 whatever dtype was asked for (and with no loss scaling)
        with torch.autocast(x.device.type, enabled=False):
            return lstm(x.float(), tuple(s.float() for s in state))
    weight_ih, weight_hh, bias_ih, bias_hh = lstm.all_weights[0]  # layer 0's W_ih [4H, F], W_hh [4H, H], b_ih, b_hh
    gates_x = F.linear(x, weight_ih).float() + (bias_ih + bias_hh)  # [T, B, 4H]
    h, c = state[0][0], state[1][0]
    outputs = []
    with torch.autocast(x.device.type, enabled=False):
        for t in range(x.shape[0]):
            i, f, g, o = (gates_x[t] + h @ weight_hh.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
    return torch.stack(outputs), (h[None], c[None])
