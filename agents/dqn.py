"""DQN (Mnih et al. 2015) with Double DQN targets, n-step returns, Huber loss, Adam and gradient-norm clipping;
optionally Lample & Chaplot's game-feature head, trained beside the Q values (``agent.aux``).

A learning rule only: ``act``, ``loss``, ``update``. Replay, networks, the loop and logging live in ``drl/``.
Networks stay in eval mode except the online forward that carries the loss's gradient (``drl.networks``).
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from drl import runtime
from drl.agent import EnvSpec, epsilon_greedy
from drl.config import Config
from drl.errors import UserError
from drl.networks import QNetwork, scale_obs, train_mode
from drl.replay import TransitionBatch
from drl.vec_env import unpack_labels


def double_q_target(
    q_next_online: torch.Tensor,
    q_next_target: torch.Tensor,
    returns: torch.Tensor,
    discounts: torch.Tensor,
    double: bool = True,
) -> torch.Tensor:
    """n-step target ``R + discount * Q_target(s', a*)`` with ``a* = argmax_a Q_online(s', a)`` (Double DQN)
    or ``argmax_a Q_target(s', a)`` (vanilla). ``discounts`` is gamma^n', or 0 after a termination.
    Works on any leading shape: q ``[..., A]``, returns/discounts ``[...]``."""
    chooser = q_next_online if double else q_next_target
    best = chooser.argmax(dim=-1, keepdim=True)
    return returns + discounts * q_next_target.gather(-1, best).squeeze(-1)


def game_feature_loss(
    logits: torch.Tensor, labels: torch.Tensor | None, weight: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """``weight`` x the binary cross-entropy of the game-feature head, averaged over features and the positions
    where ``mask`` is true (all without one): logits ``[..., F]``, labels uint8 ``[...]`` (bit i = feature i in
    view). Stats: ``aux_loss`` (the unweighted BCE) and ``aux_accuracy`` (a logit > 0 says "in view")."""
    if labels is None:
        raise UserError(
            "agent.aux.features is set but the replay batch has no labels (this replay or env does "
            "not store them); set agent.aux.features=[]"
        )
    targets = unpack_labels(labels, logits.shape[-1])
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none").mean(-1)
    correct = ((logits > 0) == (targets > 0.5)).float().mean(-1)
    valid = torch.ones_like(bce) if mask is None else mask.float()
    count = valid.sum().clamp(min=1)
    bce = (bce * valid).sum() / count
    return weight * bce, {"aux_loss": bce.detach(), "aux_accuracy": (correct * valid).sum() / count}


class DQN:
    """Feed-forward DQN (``drl.agent.Agent``): trained on transitions, no acting state."""

    recurrent = False
    sampler = "transitions"

    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device, bf16: bool, generator: torch.Generator):
        self.cfg, self.device, self.num_actions = cfg.agent, device, spec.num_actions
        self.num_features = len(cfg.agent.aux.features)  # game features the aux head predicts (0: no head)
        self.online = QNetwork(
            cfg.network, spec.obs_shape, spec.num_actions, spec.num_extras, self.recurrent, self.num_features
        ).to(device)
        self.channels_last = runtime.use_channels_last(cfg.compute, device, bf16)
        if self.channels_last:
            # torch's stub of Module.to has no memory_format overload
            self.online = self.online.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            self.online.parameters(), lr=cfg.agent.lr, eps=cfg.agent.adam_eps, fused=True
        )  # one kernel: ~8x faster than the per-tensor loop on CPU
        self.bf16 = bf16
        self.act_bf16 = runtime.use_bf16_acting(cfg.compute, device, bf16)
        # torch.compile'd callables beside the plain modules (state dicts stay those of the plain modules)
        self.compiled = (
            {id(net): torch.compile(net) for net in (self.online, self.target)}
            if cfg.compute.compile and not self.recurrent
            else {}
        )
        self.generator = generator
        self.updates = 0

    def autocast(self, acting: bool = False):
        """bf16 autocast where the agent trains in bf16; when ``acting``, only where acting does too."""
        on = self.act_bf16 if acting else self.bf16
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if on else nullcontext()

    def _prep(self, obs: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` or sequences ``[T, N, C, H, W]`` laid out channels-last for a channels-last
        network (a sequence's steps, flattened into one batch, are then NHWC), so its convolutions need no copy
        of their input; anything else as it is."""
        if not self.channels_last or obs.dim() < 4:
            return obs
        return obs.flatten(0, -4).contiguous(memory_format=torch.channels_last).view(obs.shape)

    def q_values(self, net, obs, extras=None, acting: bool = False) -> torch.Tensor:
        with self.autocast(acting):
            return self.compiled.get(id(net), net)(self._prep(obs), extras).float()

    @torch.no_grad()
    def predict_features(self, obs: torch.Tensor, extras: torch.Tensor | None = None) -> torch.Tensor | None:
        """bool ``[N, F]``: the game features the head says are in view in obs (eval mode); None without a head."""
        if not self.num_features:
            return None
        with self.autocast(acting=True):
            return self.online.feature_logits(self._prep(obs)).float() > 0

    def initial_state(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def reset_state(self, state, reset: torch.Tensor):
        return state

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state, epsilon: float, extras: torch.Tensor | None = None):
        """obs [N, *obs_shape] on device -> actions int64 [N]; ``state`` stays None (feed-forward)."""
        return epsilon_greedy(
            lambda: self.q_values(self.online, obs, extras, acting=True),
            epsilon,
            obs.shape[0],
            self.num_actions,
            self.generator,
        ), state

    @torch.no_grad()
    def action_values(self, obs: torch.Tensor, state, extras: torch.Tensor | None = None):
        """float32 Q ``[N, A]`` of the online network at the acting precision (what ``act`` chooses from);
        ``state`` stays None (feed-forward)."""
        return self.q_values(self.online, obs, extras, acting=True), state

    def acting_weights(self) -> dict:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.online.state_dict().items()}

    def load_acting_weights(self, weights: dict) -> None:
        self.online.load_state_dict(weights)

    def loss(self, batch: TransitionBatch):
        """Loss (scalar), TD errors ``[B]`` and stats. Each forward opens its own autocast region; ``update``
        holds one around the whole loss, so the online weights are cast to bf16 once per update."""
        with train_mode(self.online), self.autocast():  # the one forward in train mode: it carries the gradient
            out = self.compiled.get(id(self.online), self.online)(
                self._prep(batch.obs), batch.extras, aux=bool(self.num_features)
            )
        with torch.no_grad():
            next_obs = scale_obs(batch.next_obs)  # scaled once for both networks
            q_next_target = self.q_values(self.target, next_obs, batch.next_extras)
            q_next_online = (
                self.q_values(self.online, next_obs, batch.next_extras) if self.cfg.double else q_next_target
            )
        q, logits = (out[0].float(), out[1]) if self.num_features else (out.float(), None)
        q_taken = q.gather(1, batch.actions[:, None]).squeeze(1)
        target = double_q_target(q_next_online, q_next_target, batch.returns, batch.discounts, self.cfg.double)
        td = target - q_taken
        loss = (batch.weights * F.huber_loss(q_taken, target, reduction="none", delta=self.cfg.huber_delta)).mean()
        stats = {"q_mean": q_taken.detach().mean()}
        if self.num_features:
            assert logits is not None and batch.labels is not None  # the replay stores labels for the aux head
            aux_loss, aux_stats = game_feature_loss(logits, batch.labels, self.cfg.aux.weight)
            loss, stats = loss + aux_loss, {**stats, **aux_stats}
        return loss, td.detach(), stats

    def update(self, batch: TransitionBatch) -> dict:
        """One Adam step on ``batch``; stats (tensors) for logging and ``td_error`` for replay priorities."""
        # One autocast region around every forward of the loss (DQN's three, DRQN's unrolls): autocast keeps its
        # bf16 copies of the weights until the outermost region ends, so each weight is cast once per update.
        # The loss arithmetic itself is float32 (the forwards return .float(); autocast leaves it alone).
        with self.autocast():
            loss, td, stats = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.online.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        stats.update(loss=loss.detach(), grad_norm=grad_norm.detach(), td_error=td)
        return stats

    def sync_target(self) -> None:
        self.target.load_state_dict(self.online.state_dict())

    def state_dict(self) -> dict:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
