"""DQN learning rule: Double-DQN target against a hand computation on a small fixed network."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.dqn import DQN, epsilon_greedy
from drl import config
from drl.agent import EnvSpec
from drl.replay import TransitionBatch


def make_agent(double: bool) -> DQN:
    cfg = config.load("catch", [f"agent.double={str(double).lower()}", "compute.bf16=off"])
    torch.manual_seed(0)
    agent = DQN(cfg, EnvSpec((1, 4, 3), torch.uint8, num_actions=3), device=torch.device("cpu"), bf16=False,
                generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a target network that differs from the online one
        for p in agent.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent


def batch_of(n=16) -> TransitionBatch:
    g = torch.Generator().manual_seed(1)
    return TransitionBatch(
        obs=torch.randint(0, 256, (n, 1, 4, 3), dtype=torch.uint8, generator=g),
        actions=torch.randint(0, 3, (n,), generator=g),
        returns=torch.randn(n, generator=g),
        next_obs=torch.randint(0, 256, (n, 1, 4, 3), dtype=torch.uint8, generator=g),
        discounts=torch.tensor([0.99 ** 3, 0.0, 0.99] * (n // 3) + [0.99 ** 3] * (n % 3)),
        weights=torch.ones(n), indices=np.arange(n))


@pytest.mark.parametrize("double", [True, False])
def test_target_equals_hand_computation(double):
    agent, batch = make_agent(double), batch_of()
    _, td, _ = agent.loss(batch)
    with torch.no_grad():
        for b in range(len(batch.actions)):
            q = agent.online(batch.obs[b:b + 1])[0]
            q_next_online = agent.online(batch.next_obs[b:b + 1])[0]
            q_next_target = agent.target(batch.next_obs[b:b + 1])[0]
            a_star = int(np.argmax(q_next_online.numpy())) if double else int(np.argmax(q_next_target.numpy()))
            target = float(batch.returns[b]) + float(batch.discounts[b]) * float(q_next_target[a_star])
            assert float(td[b]) == pytest.approx(target - float(q[int(batch.actions[b])]), abs=1e-5)


def test_double_and_vanilla_targets_differ_and_termination_does_not_bootstrap():
    batch = batch_of()
    _, td_double, _ = make_agent(True).loss(batch)
    _, td_vanilla, _ = make_agent(False).loss(batch)
    assert not torch.allclose(td_double, td_vanilla), "the test network must tell the two rules apart"
    terminal = batch.discounts == 0
    assert torch.allclose(td_double[terminal], td_vanilla[terminal])  # no bootstrap, same target


def test_update_changes_online_network_only_and_sync_copies():
    agent = make_agent(True)
    before_online = [p.clone() for p in agent.online.parameters()]
    before_target = [p.clone() for p in agent.target.parameters()]
    stats = agent.update(batch_of())
    assert stats["td_error"].shape == (16,)
    assert torch.isfinite(stats["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before_online, agent.online.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before_target, agent.target.parameters()))
    agent.sync_target()
    assert all(torch.equal(a, b) for a, b in zip(agent.online.parameters(), agent.target.parameters()))


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_skips_the_forward_only_when_every_env_explores(epsilon):
    q = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    calls = []

    def lazy_q():
        calls.append(1)
        return q

    eager = epsilon_greedy(q, epsilon, 64, 5, torch.Generator().manual_seed(0))
    lazy = epsilon_greedy(lazy_q, epsilon, 64, 5, torch.Generator().manual_seed(0))
    assert torch.equal(eager, lazy), "same random draws whether or not the forward pass runs"
    assert len(calls) == (0 if epsilon == 1.0 else 1)
    greedy = eager == q.argmax(dim=1)
    if epsilon == 0.0:
        assert greedy.all()
    if epsilon == 0.3:  # about 30% explore, of which 4/5 pick a non-greedy action
        assert 0.6 < greedy.float().mean() < 0.95
    all_explore = epsilon_greedy(lazy_q, 0.99, 1, 5, torch.Generator().manual_seed(0))  # one env, draw < 0.99
    assert all_explore.shape == (1,) and len(calls) == (0 if epsilon == 1.0 else 1)
