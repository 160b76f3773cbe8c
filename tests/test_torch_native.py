"""Tests for envs/torch_native.py: contract, autoreset, a pure-Python reference, policies, determinism, state."""

from __future__ import annotations

import pytest
import torch

from drl.envs.torch_native import CatchEnv, MemoryEnv
from drl.vec_env import VecStep


def _rand_actions(gen: torch.Generator, n: int, k: int) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=gen)


def _check_step(env, s: VecStep, h: int, w: int, from_reset: bool = False) -> None:
    n = env.num_envs
    assert isinstance(s, VecStep)
    assert s.obs.shape == (n, env.frame_stack * env.frame_channels, h, w)
    assert s.obs.dtype == torch.uint8 and s.obs.device == env.device
    for flag in (s.terminated, s.truncated, s.reset):
        assert flag.shape == (n,) and flag.dtype == torch.bool and flag.device == env.device
    assert s.reward.shape == (n,) and s.reward.dtype == torch.float32 and s.reward.device == env.device
    assert s.extras is None and s.final_extras is None
    assert not s.truncated.any()
    if not from_reset:
        assert torch.equal(s.reset, s.terminated | s.truncated)
    if s.final_obs is not None:
        assert s.final_obs.shape == s.obs.shape and s.final_obs.dtype == torch.uint8
        assert s.final_obs.device == env.device
    assert set(torch.unique(s.obs).tolist()) <= {0, 255}
    assert sorted(e["env"] for e in s.episodes) == ([] if from_reset else s.terminated.nonzero().squeeze(1).tolist())
    for e in s.episodes:
        assert set(e) >= {"env", "return", "length"}
        assert isinstance(e["env"], int) and isinstance(e["length"], int) and isinstance(e["return"], float)


@pytest.mark.parametrize(
    "make,h,w,k",
    [
        (lambda: CatchEnv(7, seed=1), 10, 5, 3),
        (lambda: CatchEnv(3, seed=1, height=6, width=8, paddle_width=3), 6, 8, 3),
        (lambda: MemoryEnv(7, seed=1), 5, 5, 2),
        (lambda: MemoryEnv(4, seed=1, length=3, height=7, width=4), 7, 4, 2),
    ],
)
def test_contract(make, h, w, k):
    env = make()
    assert env.frame_stack == 1 and env.frame_channels == 1 and env.num_extras == 0
    assert env.num_actions == k and len(env.action_names) == k
    assert env.device == torch.device("cpu")
    s = env.reset()
    _check_step(env, s, h, w, from_reset=True)
    assert s.reset.all() and not s.terminated.any() and (s.reward == 0).all() and s.final_obs is None
    g = torch.Generator().manual_seed(0)
    saw_reset = 0
    for _ in range(25):
        s = env.step(_rand_actions(g, env.num_envs, k))
        _check_step(env, s, h, w)
        if s.reset.any():
            saw_reset += 1
            assert s.final_obs is not None
        else:
            assert s.final_obs is None and s.episodes == [] and (s.reward == 0).all()
    assert saw_reset >= 2
    with pytest.raises(ValueError):
        env.step(torch.zeros(env.num_envs + 1, dtype=torch.int64))
    env.close()


def test_catch_autoreset_frames():
    env = CatchEnv(16, seed=3)
    s = env.reset()
    g = torch.Generator().manual_seed(1)
    before = env.get_state()
    for _ in range(8):
        s = env.step(_rand_actions(g, 16, 3))
        assert not s.reset.any()
    s = env.step(_rand_actions(g, 16, 3))  # 9th step: the ball lands
    assert s.reset.all() and s.terminated.all() and not s.truncated.any()
    assert sorted(e["length"] for e in s.episodes) == [9] * 16
    fo, ob = s.final_obs[:, 0], s.obs[:, 0]
    ball_col = env.get_state()["ball_col"]  # of the new episodes
    for i in range(16):
        # final frame: only the bottom row is lit, the ball's column among it
        assert (fo[i, :-1] == 0).all() and fo[i, -1, before["ball_col"][i]] == 255
        # new first frame: ball alone in the top row, empty middle, paddle centred at the bottom
        assert ob[i, 0].tolist() == [255 if c == ball_col[i] else 0 for c in range(5)]
        assert (ob[i, 1:-1] == 0).all()
        assert ob[i, -1].tolist() == [0, 0, 255, 0, 0]
        caught = fo[i, -1].sum().item() == 255  # ball and paddle share a pixel
        assert s.reward[i].item() == (1.0 if caught else -1.0)


def _memory_frames(h=5, w=5):
    cue = [
        [[255 if c == 0 else 0 for c in range(w)] for _ in range(h)],
        [[255 if c == w - 1 else 0 for c in range(w)] for _ in range(h)],
    ]
    corridor = [[255 if (r, c) == (h // 2, w // 2) else 0 for c in range(w)] for r in range(h)]
    junction = [[255 if (r, c) in {(h // 2, w // 2), (0, w // 2)} else 0 for c in range(w)] for r in range(h)]
    return cue, corridor, junction


def test_memory_frames_and_autoreset():
    L = 6
    env = MemoryEnv(64, seed=5, length=L)
    cue_frames, corridor, junction = _memory_frames()
    s = env.reset()
    g = torch.Generator().manual_seed(2)
    for _ep in range(3):
        cue = env.get_state()["cue"].tolist()
        assert 0 < sum(cue) < 64  # both cues occur
        for i in range(64):
            assert s.obs[i, 0].tolist() == cue_frames[cue[i]]
        for t in range(1, L):
            s = env.step(_rand_actions(g, 64, 2))
            assert not s.reset.any() and (s.reward == 0).all()
            want = junction if t == L - 1 else corridor
            assert all(s.obs[i, 0].tolist() == want for i in range(64))  # identical whatever the cue
        s = env.step(_rand_actions(g, 64, 2))
        assert s.reset.all() and s.terminated.all()
        assert all(s.final_obs[i, 0].tolist() == junction for i in range(64))
        assert sorted(e["length"] for e in s.episodes) == [L] * 64


class RefCatch:
    """Naive single-env Catch in pure Python (lists of ints)."""

    def __init__(self, ball_col, h=10, w=5, pw=1):
        self.h, self.w, self.pw = h, w, pw
        self.row, self.col, self.paddle = 0, ball_col, (w - pw) // 2

    def frame(self):
        f = [[0] * self.w for _ in range(self.h)]
        for c in range(self.paddle, self.paddle + self.pw):
            f[self.h - 1][c] = 255
        f[self.row][self.col] = 255
        return f

    def step(self, a):
        self.paddle = min(max(self.paddle + a - 1, 0), self.w - self.pw)
        self.row += 1
        if self.row == self.h - 1:
            return (1.0 if self.paddle <= self.col < self.paddle + self.pw else -1.0), True
        return 0.0, False


@pytest.mark.parametrize("h,w,pw", [(10, 5, 1), (5, 7, 2)])
def test_catch_matches_python_reference(h, w, pw):
    n = 6
    env = CatchEnv(n, seed=11, height=h, width=w, paddle_width=pw)
    s = env.reset()
    refs = [RefCatch(c, h, w, pw) for c in env.get_state()["ball_col"].tolist()]
    ref_returns = [0.0] * n
    g = torch.Generator().manual_seed(4)
    finished = 0
    hits = 0
    for _ in range(6 * (h - 1)):
        for i in range(n):
            assert s.obs[i, 0].tolist() == refs[i].frame()
        a = _rand_actions(g, n, 3)
        s = env.step(a)
        new_cols = env.get_state()["ball_col"].tolist()
        got = {e["env"]: e for e in s.episodes}
        for i in range(n):
            r, done = refs[i].step(a[i].item())
            ref_returns[i] += r
            assert s.reward[i].item() == r and s.terminated[i].item() == done and s.reset[i].item() == done
            if done:
                assert s.final_obs[i, 0].tolist() == refs[i].frame()
                assert got[i]["return"] == ref_returns[i] and got[i]["length"] == h - 1
                finished += 1
                hits += r > 0
                refs[i], ref_returns[i] = RefCatch(new_cols[i], h, w, pw), 0.0
            else:
                assert i not in got
    assert finished == 6 * n and 0 < hits < finished  # both outcomes exercised


def test_memory_matches_python_reference():
    n, L = 8, 4
    env = MemoryEnv(n, seed=12, length=L)
    env.reset()
    g = torch.Generator().manual_seed(5)
    cue, t, ret = env.get_state()["cue"].tolist(), [0] * n, [0.0] * n
    outcomes = set()
    for _ in range(5 * L):
        a = _rand_actions(g, n, 2)
        s = env.step(a)
        got = {e["env"]: e for e in s.episodes}
        new_cue = env.get_state()["cue"].tolist()
        for i in range(n):
            done = t[i] == L - 1
            r = (1.0 if a[i].item() == cue[i] else -1.0) if done else 0.0
            ret[i] += r
            assert s.reward[i].item() == r and s.reset[i].item() == done
            if done:
                assert got[i]["return"] == ret[i] and got[i]["length"] == L
                outcomes.add(r)
                cue[i], t[i], ret[i] = new_cue[i], 0, 0.0
            else:
                t[i] += 1
    assert outcomes == {1.0, -1.0}


def _run_policy(env, policy, episodes_per_env: int):
    """Steps until every env finished ``episodes_per_env`` episodes; returns all reported returns."""
    s = env.reset()
    returns, counts = [], [0] * env.num_envs
    for _ in range(1000):  # cap: a broken env must fail, not hang
        if min(counts) >= episodes_per_env:
            break
        s = env.step(policy(s))
        for e in s.episodes:
            counts[e["env"]] += 1
            returns.append(e["return"])
    assert min(counts) >= episodes_per_env, "episodes never ended"
    return returns


def test_random_policy_scores():
    g = torch.Generator().manual_seed(7)
    catch = _run_policy(CatchEnv(2048, seed=0), lambda s: _rand_actions(g, 2048, 3), 1)
    assert len(catch) == 2048 and set(catch) == {1.0, -1.0}
    assert abs(sum(catch) / len(catch) - (-0.6)) < 0.08
    mem = _run_policy(MemoryEnv(2048, seed=0), lambda s: _rand_actions(g, 2048, 2), 1)
    assert len(mem) == 2048 and set(mem) == {1.0, -1.0}
    assert abs(sum(mem) / len(mem)) < 0.1


def test_start_distributions_uniform():
    n = 4096
    cols = torch.bincount(CatchEnv(n, seed=2, width=5).get_state()["ball_col"], minlength=5)
    assert cols.numel() == 5 and (cols - n / 5).abs().max() < 0.1 * n / 5  # every column, evenly
    env = CatchEnv(n, seed=2, width=5)
    env.reset()
    top_rows = env.step(torch.ones(n, dtype=torch.int64)).obs[:, 0, 1]  # ball one row down after a step
    assert torch.equal(torch.bincount(top_rows.argmax(dim=1), minlength=5)[:5].bool(), torch.ones(5, dtype=torch.bool))
    cues = MemoryEnv(n, seed=2).get_state()["cue"]
    assert abs(cues.float().mean().item() - 0.5) < 0.05


def test_optimal_catch_policy():
    env = CatchEnv(256, seed=9)

    def policy(s):
        img = s.obs[:, 0]
        ball = img[:, :-1].amax(dim=1).argmax(dim=1)  # ball column (rows above the paddle)
        paddle = img[:, -1].argmax(dim=1)
        return torch.sign(ball - paddle) + 1

    returns = _run_policy(env, policy, 3)
    assert len(returns) == 3 * 256 and all(r == 1.0 for r in returns)


def test_optimal_memory_policy_needs_memory():
    n = 256
    env = MemoryEnv(n, seed=9, length=6)
    g = torch.Generator().manual_seed(8)
    remembered = torch.zeros(n, dtype=torch.int64)  # the test's own memory of each env's cue

    def policy(s):
        img = s.obs[:, 0]
        first = s.reset  # obs is the first frame of a new episode: read the cue
        cue_seen = (img[:, :, -1] == 255).all(dim=1).long()  # right column lit -> cue 1
        left_lit = (img[:, :, 0] == 255).all(dim=1)
        assert torch.equal(left_lit[first], ~cue_seen[first].bool())
        remembered[first] = cue_seen[first]
        at_junction = img[:, 0, 2] == 255
        return torch.where(at_junction, remembered, _rand_actions(g, n, 2))

    returns = _run_policy(env, policy, 3)
    assert len(returns) == 3 * n and all(r == 1.0 for r in returns)


@pytest.mark.parametrize("cls,k", [(CatchEnv, 3), (MemoryEnv, 2)])
def test_determinism(cls, k):
    def trajectory(seed, reset_seed=None, n_steps=30):
        env = cls(32, seed=seed)
        g = torch.Generator().manual_seed(123)
        obs = [env.reset(reset_seed).obs]
        for _ in range(n_steps):
            obs.append(env.step(_rand_actions(g, 32, k)).obs)
        return torch.stack(obs)

    a, b, c = trajectory(0), trajectory(0), trajectory(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # reset(seed) reseeds: the constructor seed no longer matters
    assert torch.equal(trajectory(0, reset_seed=5), trajectory(1, reset_seed=5))


@pytest.mark.parametrize("cls,k", [(CatchEnv, 3), (MemoryEnv, 2)])
def test_state_roundtrip(cls, k):
    n = 16
    env = cls(n, seed=21)
    env.reset()
    g = torch.Generator().manual_seed(3)
    for _ in range(5):  # mid-episode
        env.step(_rand_actions(g, n, k))
    state = env.get_state()
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "rng" in state
    actions = [_rand_actions(g, n, k) for _ in range(40)]

    def rollout(e):
        out = []
        for a in actions:
            s = e.step(a)
            out.append((s.obs, s.reward, s.terminated, s.reset, s.final_obs, s.episodes))
        return out

    first = rollout(env)
    env.set_state(state)
    second = rollout(env)
    fresh = cls(n, seed=999)  # different seed: everything must come from the state
    fresh.set_state(state)
    third = rollout(fresh)
    for x, y, z in zip(first, second, third):
        for p, q, r in zip(x[:4], y[:4], z[:4]):
            assert torch.equal(p, q) and torch.equal(p, r)
        if x[4] is None:
            assert y[4] is None and z[4] is None
        else:
            assert torch.equal(x[4], y[4]) and torch.equal(x[4], z[4])
        assert x[5] == y[5] == z[5]
    assert sum(len(x[5]) for x in first) >= n  # episodes actually ended (RNG used after the snapshot)
    with pytest.raises(ValueError):
        cls(n + 1).set_state(state)


@pytest.mark.parametrize("cls,k,length", [(CatchEnv, 3, 9), (MemoryEnv, 2, 6)])
def test_many_envs(cls, k, length):
    n = 4096
    env = cls(n, seed=0)
    s = env.reset()
    assert s.obs.shape[0] == n
    ended = 0
    for _ in range(2 * length):
        s = env.step(torch.randint(0, k, (n,)))
        assert s.obs.shape[0] == n and s.reward.shape == (n,)
        ended += len(s.episodes)
    assert ended == 2 * n


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls,k", [(CatchEnv, 3), (MemoryEnv, 2)])
def test_cuda_matches_contract(cls, k):
    env = cls(64, device="cuda", seed=0)
    s = env.reset()
    assert s.obs.is_cuda and env.device.type == "cuda"
    for _ in range(12):
        s = env.step(torch.randint(0, k, (64,)))  # CPU actions are accepted
        _check_step(env, s, s.obs.shape[2], s.obs.shape[3])
    state = env.get_state()
    a = [env.step(torch.full((64,), 1)).obs for _ in range(10)]
    env.set_state(state)
    b = [env.step(torch.full((64,), 1)).obs for _ in range(10)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
