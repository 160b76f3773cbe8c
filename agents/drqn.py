"""DRQN (Hausknecht & Stone 2015; Lample & Chaplot 2017) trained the R2D2 way (Kapturowski et al. 2019):
recurrent Double DQN with n-step targets on stored sequences, started from the stored LSTM state and a burn-in.

Only what differs from DQN lives here: acting keeps an LSTM state per env (zeroed at each episode start), and the
loss unrolls the network over ``[T, B]`` sequences. Targets and the Huber loss are DQN's (``double_q_target``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drl.agent import epsilon_greedy
from drl.agents.dqn import DQN, double_q_target, game_feature_loss
from drl.networks import train_mode
from drl.replay import SequenceBatch


class DRQN(DQN):
    """Recurrent DQN (``drl.agent.Agent``): trained on stored sequences, an LSTM state per env while acting."""

    recurrent = True
    sampler = "sequences"

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.burn_in = cfg.replay.burn_in

    def initial_state(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.online.initial_state(n, self.device)

    @staticmethod
    def reset_state(state: tuple, reset: torch.Tensor) -> tuple:
        """Zero the LSTM state of envs whose next observation starts a new episode."""
        keep = (~reset).to(state[0].dtype).view(1, -1, 1)
        return state[0] * keep, state[1] * keep

    def unroll(self, net, obs, extras, state, grad_cut=None, aux=False, acting=False):
        """Q ``[T, B, A]`` (float32) and the final state; with ``aux`` also the game-feature logits."""
        with self.autocast(acting):
            q, state, *logits = net.forward_sequence(self._prep(obs), extras, state, grad_cut, aux=aux)
        return (q.float(), state, *logits)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state, epsilon: float, extras: torch.Tensor | None = None):
        """obs [N, *obs_shape] -> actions [N] and the LSTM state after seeing obs."""
        q, state = self.action_values(obs, state, extras)
        return epsilon_greedy(q, epsilon, obs.shape[0], self.num_actions, self.generator), state

    @torch.no_grad()
    def action_values(self, obs: torch.Tensor, state, extras: torch.Tensor | None = None):
        """float32 Q ``[N, A]`` of one step of the online network's unroll at the acting precision (what ``act``
        chooses from), and the LSTM state after it."""
        if state is None:
            state = self.initial_state(obs.shape[0])
        q, state = self.unroll(self.online, obs[None], None if extras is None else extras[None], state, acting=True)
        return q[0], state

    def loss(self, batch: SequenceBatch):  # type: ignore[override]  # its sampler gives sequences, not transitions
        """Unroll from the stored state. The first ``burn_in`` steps only refresh the stale state (no loss, and
        no gradient flows back into them) unless the sequence starts its episode, whose zero state is exact."""
        T, extras = batch.returns.shape[0], batch.extras
        obs = self._prep(batch.obs)  # once for the two or three unrolls
        grad_cut = (self.burn_in, batch.episode_start) if self.burn_in else None
        with train_mode(self.online):
            q, _, *logits = self.unroll(
                self.online, obs, extras, batch.state, grad_cut, aux=bool(self.num_features)
            )  # q [W, B, A]
        with torch.no_grad():
            q_target = self.unroll(self.target, obs, extras, batch.state)[0]
            # Double DQN's choice: from the online unroll above, unless dropout / batch norm make its train-mode
            # values differ from eval mode's (then one more unroll, in eval mode)
            q_choice = (
                self.unroll(self.online, obs, extras, batch.state)[0] if self.online.mode_dependent else q.detach()
            )
            boot = batch.bootstrap[..., None].expand(-1, -1, q.shape[-1])  # [T, B, A]
            target = double_q_target(
                q_choice.gather(0, boot), q_target.gather(0, boot), batch.returns, batch.discounts, self.cfg.double
            )
        q_taken = q[:T].gather(2, batch.actions[:T, :, None]).squeeze(2)
        mask = batch.mask.float()
        valid = mask.sum().clamp(min=1)
        td = (target - q_taken) * mask
        huber = F.huber_loss(q_taken, target, reduction="none", delta=self.cfg.huber_delta) * mask
        loss = (huber * batch.weights[None, :]).sum() / valid
        stats = {"q_mean": (q_taken.detach() * mask).sum() / valid}
        if self.num_features:  # on the loss's positions [0, T), masked like the Q loss
            labels = None if batch.labels is None else batch.labels[:T]
            aux_loss, aux_stats = game_feature_loss(logits[0][:T], labels, self.cfg.aux.weight, batch.mask)
            loss, stats = loss + aux_loss, {**stats, **aux_stats}
        return loss, td.detach(), stats
