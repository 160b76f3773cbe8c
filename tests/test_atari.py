"""The Atari vector env on real ALE games: autoreset, stored transitions, whole-game unclipped scores."""

from __future__ import annotations

import numpy as np
import torch
from ale_py.vector_env import AtariVectorEnv

from drl.envs.atari import AtariVecEnv
from drl.replay import ReplayBuffer
from tests.test_replay import check_batch_against_reference


def test_contract_and_no_transition_spans_autoreset():
    """Short time limits force many resets; every stored transition is checked against what the env showed."""
    E, n, gamma = 3, 3, 0.99
    env = AtariVecEnv("breakout", E, torch.device("cpu"), seed=1, max_episode_frames=400, num_threads=1)
    step = env.reset(seed=1)
    assert step.obs.dtype == torch.uint8 and step.obs.shape == (E, 4, 84, 84) and step.reset.all()
    replay = ReplayBuffer(50_000, E, (1, 84, 84), 4, n_step=n, gamma=gamma, seed=0)
    rng = np.random.default_rng(0)
    transitions = [[] for _ in range(E)]
    first, resets, life_losses = step.reset.clone(), 0, 0
    for _ in range(600):
        actions = torch.from_numpy(rng.integers(0, env.num_actions, E))
        obs = step.obs
        step = env.step(actions)
        replay.add_step(obs, first, actions, step)
        for e in range(E):
            nxt = step.final_obs[e] if step.reset[e] else step.obs[e]
            transitions[e].append(
                dict(
                    obs=obs[e],
                    action=int(actions[e]),
                    reward=float(step.reward[e]),
                    term=bool(step.terminated[e]),
                    trunc=bool(step.truncated[e]),
                    reset=bool(step.reset[e]),
                    next=nxt,
                )
            )
            if step.reset[e]:
                resets += 1
                # the new episode's first stack is zero-padded; the terminal stack is a different picture
                assert (step.obs[e, :3] == 0).all() and step.obs[e, 3].any()
                assert not torch.equal(step.final_obs[e], step.obs[e])
            life_losses += bool(step.terminated[e] and not step.reset[e])
        first = step.reset
    assert resets >= E and life_losses > 0
    batch = replay.sample(512)
    check_batch_against_reference(replay, batch, transitions, n, gamma)
    env.close()


def test_reported_returns_are_unclipped_whole_game_scores():
    """Beside the wrapper, the raw ALE vector env is stepped with the same seed and actions; whole-game sums of
    its raw rewards must equal the reported returns, while learning rewards are clipped and lives cut episodes."""
    E, game, cap = 2, "space_invaders", 3000
    env = AtariVecEnv(game, E, torch.device("cpu"), seed=3, max_episode_frames=cap, num_threads=1)
    raw = AtariVectorEnv(
        game,
        E,
        num_threads=1,
        autoreset_mode="SameStep",
        reward_clipping=False,
        max_num_frames_per_episode=cap,
        noop_max=30,
        repeat_action_probability=0.0,
    )
    env.reset(seed=3)
    raw.reset(seed=3)
    rng = np.random.default_rng(0)
    sums, reported, expected, clipped_seen = np.zeros(E), [], [], False
    while len(reported) < 4:
        actions = rng.integers(0, env.num_actions, E)
        step = env.step(torch.from_numpy(actions))
        _, r, term, trunc, _ = raw.step(actions.astype(np.int32))
        sums += r
        clipped_seen |= bool((step.reward.abs() <= 1).all() and (np.abs(r) > 1).any())
        for ep in step.episodes:
            reported.append(ep["return"])
        for e in np.nonzero(term | trunc)[0]:
            expected.append(sums[e])
            sums[e] = 0
    assert reported == expected
    assert max(reported) > 50, "space invaders scores are multiples of 5..30, far above clipped sums"
    assert clipped_seen, "learning rewards must be clipped while raw rewards exceed 1"
    env.close()
    raw.close()


def test_flicker_blanks_whole_frames_consistently_across_the_stack():
    p, E = 0.5, 4
    env = AtariVecEnv("pong", E, torch.device("cpu"), seed=0, flicker=p, num_threads=1)
    plain = AtariVecEnv("pong", E, torch.device("cpu"), seed=0, num_threads=1)
    step, ref = env.reset(seed=0), plain.reset(seed=0)
    blanked = total = 0
    prev = step.obs
    for _ in range(60):
        actions = torch.zeros(E, dtype=torch.long)
        step, ref = env.step(actions), plain.step(actions)
        for e in range(E):
            for k in range(4):
                shown, true = step.obs[e, k], ref.obs[e, k]
                # a frame is either shown unchanged or fully blank
                assert torch.equal(shown, true) or not shown.any()
                if k == 3 and true.any():
                    blanked += int(not shown.any())
                    total += 1
            if not step.reset[e]:  # the same frame looks the same one step later, one position older
                assert torch.equal(step.obs[e, :3], prev[e, 1:])
        prev = step.obs
    assert 0.3 < blanked / total < 0.7
    env.close()
    plain.close()


def _luminance_84(screen: np.ndarray) -> torch.Tensor:
    """Colour screens uint8 [N, 210, 160, 3] -> gray [N, 84, 84] (ITU-R 601 luma, area resize), as ALE makes obs."""
    rgb = torch.from_numpy(screen).float()
    gray = (rgb * torch.tensor([0.299, 0.587, 0.114])).sum(-1)
    return torch.nn.functional.interpolate(gray[:, None], size=(84, 84), mode="area")[:, 0]


def test_screens_are_the_colour_frames_of_the_games_the_agent_sees():
    """``screens=True`` (videos): the lockstep colour env shows the same frames as the agent's obs, also across
    autoresets (``final_screen`` matches ``final_obs``), and is colour, at ALE's full 210x160."""
    E = 2
    env = AtariVecEnv("pong", E, torch.device("cpu"), seed=3, max_episode_frames=400, num_threads=1, screens=True)
    step = env.reset(seed=3)
    assert step.screen.shape == (E, 210, 160, 3) and step.screen.dtype == np.uint8
    same, shifted, finals = [], [], 0
    previous = step.obs[:, -1].float()
    generator = torch.Generator().manual_seed(0)
    for _ in range(250):  # 100 agent steps per episode at this cap: two autoresets per env
        step = env.step(torch.randint(0, env.num_actions, (E,), generator=generator))
        gray = _luminance_84(step.screen)
        same.append((gray - step.obs[:, -1].float()).abs().amax().item())  # worst pixel
        shifted.append((gray - previous).abs().amax().item())
        previous = step.obs[:, -1].float()
        if step.reset.any():
            rows = step.reset.numpy()
            final = _luminance_84(step.final_screen[rows])
            assert (final - step.final_obs[rows, -1].float()).abs().mean() < 2.0
            finals += int(rows.sum())
    env.close()
    assert finals == 2 * E
    # the agent's frame, up to ALE's own gray conversion and resize (which blur edges by a few tens of levels) ...
    assert max(same) < 60
    assert np.mean(shifted) > 2 * np.mean(same)  # ... and not the frame one step earlier, where the ball has moved
    colour = step.screen.astype(int)
    assert (np.abs(colour[..., 0] - colour[..., 1]) > 20).mean() > 0.1  # Pong's orange field is not gray
