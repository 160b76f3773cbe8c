"""DQN learning rule: Double-DQN target against a hand computation on a small fixed network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drl import config
from drl.agent import EnvSpec
from drl.agents.dqn import DQN, epsilon_greedy
from drl.replay import TransitionBatch


def make_agent(double: bool) -> DQN:
    cfg = config.load("catch", [f"agent.double={str(double).lower()}", "compute.bf16=off"])
    torch.manual_seed(0)
    agent = DQN(
        cfg,
        EnvSpec((1, 4, 3), torch.uint8, num_actions=3),
        device=torch.device("cpu"),
        bf16=False,
        generator=torch.Generator().manual_seed(0),
    )
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
        discounts=torch.tensor([0.99**3, 0.0, 0.99] * (n // 3) + [0.99**3] * (n % 3)),
        weights=torch.ones(n),
        indices=np.arange(n),
    )


@pytest.mark.parametrize("double", [True, False])
def test_target_equals_hand_computation(double):
    agent, batch = make_agent(double), batch_of()
    _, td, _ = agent.loss(batch)
    with torch.no_grad():
        for b in range(len(batch.actions)):
            q = agent.online(batch.obs[b : b + 1])[0]
            q_next_online = agent.online(batch.next_obs[b : b + 1])[0]
            q_next_target = agent.target(batch.next_obs[b : b + 1])[0]
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


def test_q_head_output_layer_runs_in_float32_under_bf16_autocast():
    """Under autocast the hidden layers run in bf16, but Q values come out of a float32 output layer: not rounded
    to bf16's 8 mantissa bits (which would make Q ~ 10 move in steps of 0.06)."""
    agent = make_agent(True)
    head = agent.online.head.advantage
    obs = batch_of().obs
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        q = agent.online(obs)
        features = agent.online.features(obs, None)
        hidden = head[1](head[0](features))
    assert q.dtype == torch.float32 and hidden.dtype == torch.bfloat16
    expected = torch.nn.functional.linear(hidden.float(), head[2].weight, head[2].bias)
    assert torch.equal(q, expected)
    assert not torch.equal(q, q.bfloat16().float()), "Q values must keep more than bf16's precision"


def test_images_are_scaled_straight_to_bf16_under_autocast_with_the_values_autocast_would_give():
    """Every uint8 value scaled in bf16 equals the float32 scaling cast to bf16 (what the first conv used to get), and
    a network's Q values are the same from the uint8 batch as from the float32-scaled one."""
    from drl.networks import scale_obs

    every = torch.arange(256, dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = scale_obs(every)
    outside = scale_obs(every)
    assert inside.dtype == torch.bfloat16 and outside.dtype == torch.float32
    assert torch.equal(inside, outside.to(torch.bfloat16))
    assert scale_obs(inside) is inside and scale_obs(outside) is outside  # scaling twice is scaling once
    agent = make_agent(True)
    obs = batch_of().obs
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        from_uint8 = agent.online(obs)
        from_float32 = agent.online.encoder(obs.float() / 255.0)
        from_float32 = agent.online.head(from_float32).float()
    assert torch.equal(from_uint8.float(), from_float32)


@pytest.mark.parametrize("experiment", ["catch", "memory"])
def test_prioritized_replay_end_to_end(tmp_path, experiment):
    """The loop writes the agent's TD errors back as priorities: (|td| + eps)^alpha per transition, and
    eta * max + (1 - eta) * mean over a sequence's loss steps for DRQN."""
    import drl
    from drl.api import create_run_dir

    cfg = drl.load_config(
        experiment,
        [
            "replay.prioritized=true",
            "total_steps=2000",
            "agent.learning_starts=500",
            "eval.interval=100000",
            "tracking.wandb=off",
            "compute.threads=1",
        ],
    )
    with drl.Trainer(cfg, create_run_dir(cfg, tmp_path / "run")) as trainer:
        trainer.run()
        replay, agent = trainer.replay, trainer.agent
        tree = replay.prioritizer.tree
        leaves = tree.get(np.arange(tree.capacity))
        stored = leaves[leaves > 0]
        assert len(np.unique(stored)) > 10, "the loop must have replaced the initial max priorities"
        batch = replay.sample_for(agent.sampler, 32, beta=0.5)
        td = agent.update(batch)["td_error"]
        replay.update_priorities(batch.indices, td, getattr(batch, "mask", None))
        if agent.sampler == "sequences":
            err = td.abs() * batch.mask
            per_item = cfg.replay.priority_eta * err.max(0).values + (1 - cfg.replay.priority_eta) * err.sum(
                0
            ) / batch.mask.sum(0).clamp(min=1)
        else:
            per_item = td.abs()
        last = {int(i): b for b, i in enumerate(batch.indices)}  # a repeated index keeps its last value
        expected = (per_item.double().numpy() + cfg.replay.priority_eps) ** cfg.replay.alpha
        got = tree.get(np.array(list(last)))
        assert np.allclose(got, expected[list(last.values())], rtol=1e-5)


def test_channels_last_is_the_fp32_cpu_default_and_computes_the_same_update():
    """compute.channels_last=auto: oneDNN's NHWC layout for fp32 on a CPU, NCHW under bf16 autocast and on CUDA;
    both layouts give the same loss, TD errors and gradients for the same weights and batch."""
    from drl import runtime

    compute = config.load("atari-pong", []).compute
    assert compute.channels_last == "auto"
    assert runtime.use_channels_last(compute, torch.device("cpu"), bf16=False)
    assert not runtime.use_channels_last(compute, torch.device("cpu"), bf16=True)
    assert not runtime.use_channels_last(compute, torch.device("cuda"), bf16=False)
    assert config.load("atari-pong", ["compute.channels_last=off"]).compute.channels_last == "off"

    spec = EnvSpec((4, 84, 84), torch.uint8, num_actions=6)
    agents = {}
    for layout in ("on", "off"):
        cfg = config.load("atari-pong", [f"compute.channels_last={layout}", "compute.bf16=off"])
        torch.manual_seed(0)
        agents[layout] = DQN(
            cfg, spec, device=torch.device("cpu"), bf16=False, generator=torch.Generator().manual_seed(0)
        )
    conv = next(m for m in agents["on"].online.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not agents["off"].channels_last
    g = torch.Generator().manual_seed(2)
    n = 8
    batch = TransitionBatch(
        obs=torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g),
        actions=torch.randint(0, 6, (n,), generator=g),
        returns=torch.randn(n, generator=g),
        next_obs=torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g),
        discounts=torch.full((n,), 0.99**3),
        weights=torch.ones(n),
        indices=np.arange(n),
    )
    grads = {}
    for layout, agent in agents.items():
        loss, td, _ = agent.loss(batch)
        loss.backward()
        grads[layout] = (loss.detach(), td.detach(), [p.grad.clone() for p in agent.online.parameters()])
    assert torch.allclose(grads["on"][0], grads["off"][0], rtol=1e-4)
    assert torch.allclose(grads["on"][1], grads["off"][1], atol=1e-4)
    for a, b in zip(grads["on"][2], grads["off"][2]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("act_bf16", ["auto", "on"])
def test_acting_precision_on_a_cpu(act_bf16):
    """compute.act_bf16=auto: an agent that trains under bf16 acts in fp32 on a CPU (autocast's casts cost more
    than they save at acting's small batches); =on acts under autocast too. The loss's forward stays bf16."""
    from drl import runtime

    cfg = config.load("atari-pong", [f"compute.act_bf16={act_bf16}"])
    assert runtime.use_bf16_acting(cfg.compute, torch.device("cuda"), bf16=True) and not runtime.use_bf16_acting(
        cfg.compute, torch.device("cpu"), bf16=False
    )
    torch.manual_seed(0)
    agent = DQN(
        cfg,
        EnvSpec((4, 84, 84), torch.uint8, num_actions=6),
        device=torch.device("cpu"),
        bf16=True,
        generator=torch.Generator().manual_seed(0),
    )
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        q_fp32 = agent.online(obs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            q_bf16 = agent.online(obs)
    assert not torch.equal(q_fp32, q_bf16)  # the two precisions are told apart
    acting = agent.q_values(agent.online, obs, acting=True)
    assert torch.equal(acting, q_bf16 if act_bf16 == "on" else q_fp32)
    assert torch.equal(agent.q_values(agent.online, obs), q_bf16)  # targets and the loss keep bf16
    assert torch.equal(agent.action_values(obs, None)[0], acting)  # what a collector acts on and scores
    actions, _ = agent.act(obs, None, epsilon=0.0)
    assert torch.equal(actions, acting.argmax(1))


@pytest.mark.doom
def test_recurrent_acting_is_fp32_on_a_cpu_by_default():
    from drl.agents.drqn import DRQN

    cfg = config.load("doom-basic")
    torch.manual_seed(0)
    agent = DRQN(
        cfg,
        EnvSpec((1, 60, 80), torch.uint8, num_actions=3, num_extras=1),
        device=torch.device("cpu"),
        bf16=True,
        generator=torch.Generator().manual_seed(0),
    )
    g = torch.Generator().manual_seed(4)
    obs, extras = torch.randint(0, 256, (2, 1, 60, 80), dtype=torch.uint8, generator=g), torch.rand(2, 1, generator=g)
    state = agent.initial_state(2)
    with torch.no_grad():
        q_fp32, state_fp32 = agent.online.forward_sequence(obs[None], extras[None], state)
    q_act, state_act = agent.unroll(agent.online, obs[None], extras[None], state, acting=True)
    assert torch.equal(q_act, q_fp32.float()) and all(torch.equal(a, b) for a, b in zip(state_act, state_fp32))
    q_train = agent.unroll(agent.online, obs[None], extras[None], state)[0]
    assert not torch.equal(q_train, q_act)  # the loss's unroll runs under bf16 autocast


@pytest.mark.parametrize("algo", ["dqn", "drqn"])
def test_action_values_are_what_greedy_acting_chooses_from_and_acting_weights_carry_them(algo):
    """What a collector uses (``drl.agent.Agent``): greedy ``act`` picks the argmax of ``action_values`` and both
    leave the same state; ``acting_weights`` loaded into a fresh agent gives the same values."""
    from drl.agent import make_agent as build

    cfg = config.load("memory" if algo == "drqn" else "catch", ["compute.bf16=off"])
    spec = EnvSpec((1, 4, 3), torch.uint8, num_actions=3)

    def agent(seed: int):
        torch.manual_seed(seed)
        return build(cfg, spec, torch.device("cpu"), False, torch.Generator().manual_seed(0))

    learner, collector = agent(0), agent(1)
    obs = torch.randint(0, 256, (5, 1, 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    state = learner.initial_state(5)
    q, after = learner.action_values(obs, state)
    actions, acted = learner.act(obs, state, epsilon=0.0)
    assert q.shape == (5, 3) and q.dtype == torch.float32 and torch.equal(actions, q.argmax(1))
    assert (after is None and acted is None) if algo == "dqn" else all(torch.equal(a, b) for a, b in zip(after, acted))
    assert not torch.equal(collector.action_values(obs, state)[0], q)
    collector.load_acting_weights(learner.acting_weights())
    assert torch.equal(collector.action_values(obs, state)[0], q)
    assert all(v.device.type == "cpu" for v in learner.acting_weights().values())
