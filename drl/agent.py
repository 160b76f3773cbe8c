"""The one interface every agent implements, and the facts about an environment an agent is built from.

The training loop, evaluation, checkpoints and ``drl.load_agent`` only use what ``Agent`` lists; they never ask
which algorithm runs or whether it is recurrent. Register an agent with ``drl.register_agent(name, cls)``; it is
built as ``cls(cfg, spec, device, bf16, generator)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch


@dataclass(frozen=True)
class EnvSpec:
    """What an agent needs to know about its environment (read off the vector env)."""

    obs_shape: tuple[int, ...]  # one observation: [C, H, W] images (uint8) or [D] vectors (float32)
    obs_dtype: torch.dtype  # torch.uint8 (images, scaled to [0, 1] inside the network) or torch.float32
    num_actions: int
    num_extras: int = 0  # K float32 inputs beside obs (Doom game variables), 0 for none

    @classmethod
    def of(cls, env, first_obs: torch.Tensor) -> EnvSpec:
        return cls(tuple(first_obs.shape[1:]), first_obs.dtype, int(env.num_actions), int(env.num_extras))


class Agent(Protocol):
    """A learning rule: acting, one gradient update on a replay batch, target syncing, its state.

    ``state`` is the agent's memory while acting (an LSTM's ``(h, c)``), or ``None`` for feed-forward agents.
    """

    sampler: Literal["transitions", "sequences"]  # which replay batches ``update`` takes
    updates: int  # gradient updates so far
    generator: torch.Generator  # the draws of epsilon-greedy acting

    def act(
        self, obs: torch.Tensor, state: Any, epsilon: float, extras: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """obs ``[N, *obs_shape]`` on the device -> actions int64 ``[N]`` and the state after seeing obs."""

    def initial_state(self, n: int) -> Any:
        """The state of ``n`` envs at an episode start (None for feed-forward agents)."""

    def reset_state(self, state: Any, reset: torch.Tensor) -> Any:
        """``state`` with the rows of envs whose next observation starts an episode (bool ``[N]``) reset."""

    def update(self, batch) -> dict:
        """One gradient step. Returns scalar stats for logging and ``"td_error"`` (the batch's TD errors, for
        prioritized replay: ``[B]`` for transitions, ``[T, B]`` for sequences)."""

    def action_values(
        self, obs: torch.Tensor, state: Any, extras: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Any]:
        """float32 Q ``[N, A]`` of obs (the online network's, at the precision ``act`` runs at: the Q values greedy
        acting chooses from) and the state after seeing obs. A collector acts epsilon-greedily on them and computes
        its initial priorities from them, so it acts as a single-process run on its device would."""

    def acting_weights(self) -> dict:
        """CPU copies of the weights acting needs (a distributed learner publishes them to its collectors)."""

    def load_acting_weights(self, weights: dict) -> None:
        """Load what ``acting_weights`` returned (a collector's agent, between chunks)."""

    def predict_features(self, obs: torch.Tensor, extras: torch.Tensor | None = None) -> torch.Tensor | None:
        """bool ``[N, F]``: the game features (``agent.aux.features``) an auxiliary head says are in view in obs;
        None for agents without one. Evaluation reports its accuracy against the env's labels."""

    def sync_target(self) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def make_agent(cfg, spec: EnvSpec, device: torch.device, bf16: bool, generator: torch.Generator) -> Agent:
    """The agent named by ``cfg.agent.algo`` (a registered name)."""
    from drl.registry import AGENTS

    return AGENTS.get(cfg.agent.algo)(cfg, spec, device, bf16, generator)


def epsilon_greedy(
    q: torch.Tensor | Callable[[], torch.Tensor],
    epsilon: float,
    num_envs: int,
    num_actions: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Greedy actions from q ``[N, A]``, each replaced by a uniform random action with probability epsilon.

    ``q`` may be a callable, called only if some env acts greedily: as in SB3, no forward pass is spent on a step
    where every env explores. The random draws are the same either way."""
    random_actions = torch.randint(0, num_actions, (num_envs,), generator=generator, device=generator.device)
    explore = torch.rand(num_envs, generator=generator, device=generator.device) < epsilon
    if callable(q):
        if epsilon >= 1.0 or bool(explore.all()):
            return random_actions
        q = q()
    return torch.where(explore, random_actions, q.argmax(dim=1))
