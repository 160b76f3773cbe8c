"""Recurrent replay and DRQN: sequences against a naive reference, masks, stored state, unrolling, state resets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drl import config
from drl.agent import EnvSpec
from drl.agents.drqn import DRQN
from drl.envs.torch_native import MemoryEnv
from drl.networks import QNetwork, lstm_unroll
from drl.replay import ReplayBuffer, StepRecord
from tests.test_replay import NaiveStream, naive_target

HIDDEN = 3


def fill_with_states(replay, stream, steps, rng):
    """Like the training loop: the state handed over is the acting state before the obs was seen. Here it is a
    recognisable number (env * 10000 + step) so the test can tell which one was stored."""
    first = torch.ones(stream.E, dtype=torch.bool)
    states = [[] for _ in range(stream.E)]
    for t in range(steps):
        obs = stream.obs()
        tag = torch.tensor([e * 10_000 + t for e in range(stream.E)], dtype=torch.float32)
        h = tag.view(1, -1, 1).expand(1, stream.E, HIDDEN).clone()
        actions = torch.from_numpy(rng.integers(0, 6, stream.E))
        reward, term, trunc, reset, final = stream.step(actions)
        replay.add(
            StepRecord(obs[:, -1:], first, actions, reward, term, trunc, reset, final[:, -1:], lstm_state=(h, -h))
        )
        for e in range(stream.E):
            states[e].append(float(tag[e]))
        first = reset
    return states


def slot_to_transition(transitions):
    """logical slot -> ("step", t) or ("final", t of the step that ended the episode)."""
    table, slot = {}, 0
    for t, tr in enumerate(transitions):
        table[slot] = ("step", t)
        slot += 1
        if tr["reset"]:
            table[slot] = ("final", t)
            slot += 1
    return table


@pytest.mark.parametrize(
    "stack,n,T,burn_in,overlap,prioritized", [(1, 3, 8, 2, 4, False), (2, 1, 6, 0, 2, False), (1, 2, 10, 4, 5, True)]
)
def test_sequences_equal_naive_reference(stack, n, T, burn_in, overlap, prioritized):
    rng = np.random.default_rng(T)
    E, gamma = 3, 0.9
    stream = NaiveStream(E, stack, rng, p_term=0.04, p_trunc=0.03, p_life=0.04)
    replay = ReplayBuffer(
        100_000,
        E,
        (1, 3, 3),
        stack,
        n_step=n,
        gamma=gamma,
        prioritized=prioritized,
        seed=2,
        sequences=dict(length=T, burn_in=burn_in, overlap=overlap, state_size=HIDDEN),
    )
    states = fill_with_states(replay, stream, 500, rng)
    batch = replay.sample(64)
    K, stride = replay.sampler.starts_cap, T - overlap
    env = batch.indices // K
    start = replay.sampler.start_slot[torch.from_numpy(env), torch.from_numpy(batch.indices % K)].numpy()
    checked_padding = checked_cut = 0
    for b in range(len(env)):
        e, trs = int(env[b]), stream.transitions[int(env[b])]
        table = slot_to_transition(trs)
        kind, t0 = table[int(start[b])]
        assert kind == "step", "a sequence never starts on a final slot"
        # the episode step index of the start is a multiple of the stride
        ep_start = max([u + 1 for u in range(t0) if trs[u]["reset"]], default=0)
        assert (t0 - ep_start) % stride == 0
        # the stored state is the acting state at the start
        assert torch.allclose(batch.state[0][0, b], torch.full((HIDDEN,), states[e][t0]))
        assert torch.allclose(batch.state[1][0, b], torch.full((HIDDEN,), -states[e][t0]))
        assert bool(batch.episode_start[b]) == (t0 == ep_start)
        ended = False
        for p in range(T + n):
            slot_kind, t = table[int(start[b]) + p]
            obs = batch.obs[p, b]
            if ended:  # beyond the episode: zero padding, never in the loss
                assert not obs.any()
                checked_padding += 1
                if p < T:
                    assert not batch.mask[p, b]
                continue
            if slot_kind == "final":
                assert torch.equal(obs, trs[t]["next"]), "the final slot shows the terminal observation"
                ended = True
                if p < T:
                    assert not batch.mask[p, b]
                continue
            assert torch.equal(obs, trs[t]["obs"]), f"obs mismatch at position {p}"
            if p >= T:
                continue
            assert int(batch.actions[p, b]) == trs[t]["action"]
            expected_mask = p >= burn_in or t0 == ep_start
            assert bool(batch.mask[p, b]) == expected_mask
            ret, disc, nxt = naive_target(trs, t, n, gamma)
            assert float(batch.returns[p, b]) == pytest.approx(ret, rel=1e-5, abs=1e-5)
            assert float(batch.discounts[p, b]) == pytest.approx(disc, rel=1e-6)
            if disc > 0:
                assert torch.equal(batch.obs[int(batch.bootstrap[p, b]), b], nxt)
            checked_cut += disc != pytest.approx(gamma**n)
    assert checked_padding > 0 and checked_cut > 0, "the sample should hold episode ends and padding"


def make_drqn(burn_in=2, num_extras=2, frame=(1, 5, 5), device="cpu", overrides=(), cls=DRQN):
    cfg = config.load(
        "memory",
        [f"replay.burn_in={burn_in}", "compute.bf16=off", "network.lstm_size=8", "network.hidden=8", *overrides],
    )
    torch.manual_seed(0)
    return cls(
        cfg,
        EnvSpec(frame, torch.uint8, 2, num_extras),
        torch.device(device),
        False,
        torch.Generator(device=device).manual_seed(0),
    )


def test_unrolled_forward_equals_step_by_step():
    torch.manual_seed(0)
    net = QNetwork(
        config.NetworkConfig(encoder="small", hidden=16, lstm_size=8), (1, 5, 5), 3, num_extras=2, recurrent=True
    )
    T, B = 7, 4
    obs = torch.randint(0, 256, (T, B, 1, 5, 5), dtype=torch.uint8)
    extras = torch.randn(T, B, 2)
    state0 = (torch.randn(1, B, 8), torch.randn(1, B, 8))
    with torch.no_grad():
        q_unrolled, (h_u, c_u) = net.forward_sequence(obs, extras, state0)
        state, steps = state0, []
        for t in range(T):
            q, state = net.forward_sequence(obs[t : t + 1], extras[t : t + 1], state)
            steps.append(q[0])
    assert torch.allclose(q_unrolled, torch.stack(steps), atol=1e-5)
    assert torch.allclose(h_u, state[0], atol=1e-6) and torch.allclose(c_u, state[1], atol=1e-6)


def test_lstm_time_loop_equals_torch_lstm():
    """The CPU time loop and nn.LSTM itself (the fused path used on CUDA): same outputs, state and gradients."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5)
    T, B = 7, 4
    x = torch.randn(T, B, 6)
    g = torch.Generator().manual_seed(1)
    h0, c0 = torch.randn(1, B, 5, generator=g), torch.randn(1, B, 5, generator=g)
    results = []
    for fused in (False, True):
        xs = x.clone().requires_grad_(True)
        state = (h0.clone().requires_grad_(True), c0.clone().requires_grad_(True))
        lstm.zero_grad()
        out, (h, c) = lstm_unroll(lstm, xs, state, fused=fused)
        (out.square().sum() + h.sum() + 2 * c.sum()).backward()
        results.append((out, h, c, xs.grad, state[0].grad, state[1].grad, *[p.grad.clone() for p in lstm.parameters()]))
    with torch.no_grad():
        reference, _ = lstm(x, (h0, c0))
    assert torch.allclose(results[1][0], reference, atol=1e-6)  # fused path is nn.LSTM itself
    for loop_value, fused_value in zip(*results):
        assert torch.allclose(loop_value, fused_value, atol=1e-5)


@pytest.mark.parametrize("keep", [[False, False, False, False], [True, False, False, True]])
def test_burn_in_grad_cut_equals_naive_detach(keep):
    """R2D2's burn-in done naively (one graph, the state detached at step k for rows not kept) against
    forward_sequence's grad_cut (no autograd for those rows' first k steps): same Q values, same gradients."""
    torch.manual_seed(0)
    net = QNetwork(
        config.NetworkConfig(encoder="small", hidden=16, lstm_size=8), (1, 5, 5), 3, num_extras=2, recurrent=True
    )
    T, B, k = 7, 4, 3
    obs = torch.randint(0, 256, (T, B, 1, 5, 5), dtype=torch.uint8)
    extras = torch.randn(T, B, 2)
    keep = torch.tensor(keep)
    g = torch.Generator().manual_seed(1)
    h0, c0 = torch.randn(1, B, 8, generator=g), torch.randn(1, B, 8, generator=g)
    results = []
    for naive in (True, False):
        net.zero_grad()
        state = (h0.clone().requires_grad_(True), c0.clone().requires_grad_(True))
        if naive:
            q_head, mid = net.forward_sequence(obs[:k], extras[:k], state)
            m = keep.float().view(1, -1, 1)
            mid = tuple(x * m + x.detach() * (1 - m) for x in mid)
            q_rest, final = net.forward_sequence(obs[k:], extras[k:], mid)
            q = torch.cat([q_head, q_rest])
        else:
            q, final = net.forward_sequence(obs, extras, state, (k, keep))
        burn_in_loss = (q[:k].square().sum(-1) * keep.float()).sum()  # the burn-in counts only for kept rows
        (q[k:].square().sum() + burn_in_loss + final[1].sum()).backward()
        state_grad = torch.zeros_like(h0) if state[0].grad is None else state[0].grad.clone()
        results.append((q.detach(), state_grad, *[p.grad.clone() for p in net.parameters()]))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5)
    assert (results[1][1][0, ~keep] == 0).all(), "no gradient into a stale initial state"
    assert (results[1][1][0, keep] != 0).all(), "an exact initial state learns through the burn-in"


def sequence_batch(agent, T=6, n=1, B=4, burn_in=2, frame=(1, 5, 5)):
    g = torch.Generator().manual_seed(3)
    W = T + n
    from drl.replay import SequenceBatch

    mask = torch.ones(T, B, dtype=torch.bool)
    mask[:burn_in, 1:] = False  # sequences 1.. do not start their episode: burn-in carries no loss
    mask[4:, 2] = False  # sequence 2 ends its episode at position 3: padding after it
    return SequenceBatch(
        obs=torch.randint(0, 256, (W, B, *frame), dtype=torch.uint8, generator=g),
        actions=torch.randint(0, 2, (W, B), generator=g),
        returns=torch.randn(T, B, generator=g),
        bootstrap=(torch.arange(T)[:, None] + 1).expand(T, B).clone(),
        discounts=torch.full((T, B), 0.9),
        mask=mask,
        state=(torch.randn(1, B, 8, generator=g), torch.randn(1, B, 8, generator=g)),
        weights=torch.ones(B),
        indices=np.arange(B),
        episode_start=np.array([True] + [False] * (B - 1)),
        extras=torch.randn(W, B, 2, generator=g),
    )


def test_burn_in_and_padding_carry_no_loss_and_stored_state_starts_burn_in():
    agent = make_drqn()
    batch = sequence_batch(agent)
    loss, td, _ = agent.loss(batch)
    assert (td[~batch.mask] == 0).all()
    # changing targets or actions where the mask is off changes nothing
    perturbed = sequence_batch(agent)
    perturbed.returns[~batch.mask] += 100.0
    perturbed.actions[:6][~batch.mask] = 1 - perturbed.actions[:6][~batch.mask]
    assert torch.allclose(agent.loss(perturbed)[0], loss)
    # ... while a change where it is on does
    perturbed.returns[5, 0] += 1.0
    assert not torch.allclose(agent.loss(perturbed)[0], loss)
    # the stored state starts the burn-in: Q values are those of an unroll from batch.state
    with torch.no_grad():
        q_manual, _ = agent.online.forward_sequence(batch.obs, batch.extras, batch.state)
    q_taken = q_manual[:6].gather(2, batch.actions[:6, :, None]).squeeze(2)
    target_td = td + q_taken * batch.mask  # td = (target - q) * mask
    other = sequence_batch(agent)
    other.state = (other.state[0] + 1.0, other.state[1])
    _, td_other, _ = agent.loss(other)
    assert not torch.allclose(td_other[batch.mask], td[batch.mask]), "the stored state must matter"
    assert torch.isfinite(target_td).all()


def test_no_gradient_flows_into_burn_in_of_a_stale_state():
    agent = make_drqn()
    batch = sequence_batch(agent)
    batch.state = tuple(s.clone().requires_grad_(True) for s in batch.state)
    loss, _, _ = agent.loss(batch)
    loss.backward()
    grad_h = batch.state[0].grad[0]
    assert grad_h[0].abs().sum() > 0, "an episode-start sequence learns through its first steps"
    assert (grad_h[1:] == 0).all(), "burn-in of a stale stored state gets no gradient"


def test_acting_state_resets_at_episode_start():
    agent = make_drqn(num_extras=0)
    env = MemoryEnv(8, seed=0, length=4)
    step = env.reset()
    state = agent.initial_state(8)
    resets_seen = 0
    for _ in range(10):
        actions, state = agent.act(step.obs, state, 0.5)
        assert state[0].abs().sum() > 0
        step = env.step(actions)
        state = agent.reset_state(state, step.reset)
        for e in range(8):
            zero = bool((state[0][0, e] == 0).all() and (state[1][0, e] == 0).all())
            assert zero == bool(step.reset[e])
        resets_seen += int(step.reset.sum())
    assert resets_seen > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN's fused LSTM)")
def test_fused_cuda_lstm_stays_float32_under_autocast():
    """autocast would run cuDNN's LSTM in float16 whatever dtype was asked for; lstm_unroll turns it off there."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5).cuda()
    x = torch.randn(7, 4, 6, device="cuda")
    state = (torch.zeros(1, 4, 5, device="cuda"), torch.zeros(1, 4, 5, device="cuda"))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, (h, c) = lstm_unroll(lstm, x, state, fused=True)
    reference, _ = lstm(x, state)
    assert out.dtype == torch.float32 and h.dtype == torch.float32
    assert torch.allclose(out, reference, atol=1e-6)


def batch_on(batch, device: str):
    """``batch`` (a dataclass) with its tensors, and tuples of tensors, on ``device``."""
    move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return type(batch)(**{k: tuple(map(move, v)) if isinstance(v, tuple) else move(v) for k, v in vars(batch).items()})


class SequencesAsSampledDRQN(DRQN):
    """DRQN as it was: sequences reach a channels-last network in the layout they were sampled in (NCHW)."""

    def _prep(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if obs.dim() == 5 else super()._prep(obs)


def check_channels_last_drqn_gets_channels_last_sequences(device: str, exact: bool) -> None:
    """A channels-last DRQN lays its sequences out channels-last before unrolling them (its first convolution
    gets NHWC input, once converted per loss), and its loss, TD errors, gradients and acting are those of the same
    network fed the sampled NCHW sequences."""
    frame = (3, 6, 6)  # several channels, so the two layouts differ
    agents = [
        make_drqn(frame=frame, device=device, overrides=["compute.channels_last=on"], cls=cls)
        for cls in (DRQN, SequencesAsSampledDRQN)
    ]
    agents[1].online.load_state_dict(agents[0].online.state_dict())
    agents[1].target.load_state_dict(agents[0].target.state_dict())
    batch = batch_on(sequence_batch(agents[0], frame=frame), device)
    seen: list[list[bool]] = [[], []]
    results = []
    for agent, layouts in zip(agents, seen):
        assert agent.channels_last
        for net in (agent.online, agent.target):
            conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
            conv.register_forward_pre_hook(
                lambda _, args, layouts=layouts: layouts.append(
                    args[0].is_contiguous(memory_format=torch.channels_last)
                )
            )
        agent.online.zero_grad()
        loss, td, _ = agent.loss(batch)
        loss.backward()
        actions, state = agent.act(batch.obs[0], agent.initial_state(batch.obs.shape[1]), 0.0, batch.extras[0])
        results.append([loss.detach(), td, actions, *state, *[p.grad for p in agent.online.parameters()]])
    assert seen[0] and all(seen[0]), "every unroll of the channels-last DRQN gets NHWC input"
    assert not any(seen[1]), "the sampled sequences are NCHW"
    for new, old in zip(*results):
        assert torch.equal(new, old) if exact else torch.allclose(new, old, rtol=1e-4, atol=1e-5)


def test_channels_last_drqn_gets_channels_last_sequences():
    check_channels_last_drqn_gets_channels_last_sequences("cpu", exact=True)


class DeviceKeepQNetwork(QNetwork):
    """``forward_sequence``'s burn-in cut as it was: ``keep`` on the training device, the kept rows found there with
    ``keep.any()`` and ``nonzero`` (each makes the host wait for the GPU)."""

    def forward_sequence(self, obs, extras, state, grad_cut=None, aux=False):
        if grad_cut is None or not torch.is_grad_enabled():
            return super().forward_sequence(obs, extras, state, aux=aux)
        k, keep = grad_cut[0], torch.as_tensor(grad_cut[1], device=obs.device)
        with torch.no_grad():
            head = super().forward_sequence(obs[:k], extras[:k], state, aux=aux)
        if bool(keep.any()):
            rows = keep.nonzero().squeeze(1)
            kept = super().forward_sequence(
                obs[:k, rows], extras[:k, rows], (state[0][:, rows], state[1][:, rows]), aux=aux
            )
            put = lambda x, y: x.index_copy(1, rows, y)  # noqa: E731
            head = (put(head[0], kept[0]), tuple(map(put, head[1], kept[1])), *map(put, head[2:], kept[2:]))
        rest = super().forward_sequence(obs[k:], extras[k:], head[1], aux=aux)
        return (torch.cat([head[0], rest[0]]), rest[1], *(torch.cat(p) for p in zip(head[2:], rest[2:])))


def check_burn_in_cut_from_host_rows_equals_device_nonzero(device: str, keep: list[bool], exact: bool) -> None:
    """The DRQN loss, TD errors, and the gradients of the weights and of the stored state, with the burn-in's kept
    rows found on the host (``SequenceBatch.episode_start``) equal those found on the device with ``nonzero``."""
    agent, reference = make_drqn(burn_in=3, device=device), make_drqn(burn_in=3, device=device)
    cfg = config.load("memory", ["network.lstm_size=8", "network.hidden=8"])
    online = DeviceKeepQNetwork(cfg.network, (1, 5, 5), 2, 2, recurrent=True).to(device)
    if agent.channels_last:  # the same layout, so the same kernels
        online = online.to(memory_format=torch.channels_last)
    online.load_state_dict(agent.online.state_dict())
    reference.online = online
    batch = batch_on(sequence_batch(agent, T=7, B=len(keep), burn_in=3), device)
    batch.episode_start = np.array(keep)
    batch.mask[:3] = torch.as_tensor(keep, device=device)  # burn-in carries loss only where a sequence starts
    results = []
    for learner in (agent, reference):
        state = tuple(s.clone().requires_grad_(True) for s in batch.state)
        loss, td, _ = learner.loss(type(batch)(**{**vars(batch), "state": state}))
        loss.backward()
        state_grads = [torch.zeros_like(s) if s.grad is None else s.grad for s in state]
        results.append([loss.detach(), td, *state_grads, *[p.grad for p in learner.online.parameters()]])
    for new, old in zip(*results):
        assert torch.equal(new, old) if exact else torch.allclose(new, old, rtol=1e-5, atol=1e-6)
    stale = torch.as_tensor([not x for x in keep], device=device)
    assert (results[0][2][0, stale] == 0).all() and (results[0][3][0, stale] == 0).all(), "stale states get none"
    if any(keep):
        assert (results[0][2][0, ~stale] != 0).any(), "an exact initial state learns through the burn-in"


@pytest.mark.parametrize(
    "keep", [[False] * 5, [True, False, False, True, False], [True] * 5], ids=["none", "some", "all"]
)
def test_burn_in_cut_from_host_rows_equals_device_nonzero(keep):
    check_burn_in_cut_from_host_rows_equals_device_nonzero("cpu", keep, exact=True)
