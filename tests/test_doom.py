"""ViZDoom env: action sets, scenario defaults, the vector-env contract, shaping, worker-crash recovery.

Real games in real processes (no mocks). Games are never created in the pytest process itself (several games
in one process have hung for users): scenario loading runs in one subprocess, vector envs use worker processes.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from drl.envs.doom import SCENARIOS, ActionSet, DoomSettings, DoomVectorEnv, parse_actions
from drl.envs.doom.vec_env import default_games_per_worker
from drl.processes import alive, pids, stat_fields
from tests.helpers import run_engine_probe

pytestmark = pytest.mark.doom

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers


def _pgrp_members(pgids: set[int]) -> list[int]:
    """Live (non-zombie) processes whose process group is one of ``pgids``."""
    out = []
    for pid in pids():
        fields = stat_fields(pid)
        if fields is not None and int(fields[2]) in pgids and fields[0] != "Z":
            out.append(pid)
    return out


def worker_pids(env: DoomVectorEnv) -> list[int]:
    """The PIDs of the env's live worker processes, by worker index."""
    return [p.pid for p in env._pool.procs if p is not None]


# ------------------------------------------------------------------------------------------ action sets


def test_action_set_combinatorial_expansion():
    parsed = parse_actions("turn_lr+attack")
    assert [n for n, _ in parsed] == ["turn_left+attack", "turn_right+attack"]
    a = ActionSet.from_spec("turn_left;turn_right;attack;turn_left+attack")
    assert a.names == ["turn_left", "turn_right", "attack", "turn_left+attack"]
    assert a.buttons == ["TURN_LEFT", "TURN_RIGHT", "ATTACK"]
    assert a.vectors == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]]
    assert all(type(x) is int for v in a.vectors for x in v)  # plain Python ints for vizdoom
    b = ActionSet.from_spec("noop;move_fb+turn_lr;move_lr")
    assert b.names == [
        "noop",
        "move_forward+turn_left",
        "move_forward+turn_right",
        "move_backward+turn_left",
        "move_backward+turn_right",
        "move_left",
        "move_right",
    ]
    assert b.vectors[0] == [0] * len(b.buttons)
    assert sum(b.vectors[1]) == 2


def test_unknown_button_raises_one_line_error():
    with pytest.raises(ValueError) as e:
        ActionSet.from_spec("turn_left;fire+move_forward")
    msg = str(e.value)
    assert "'fire'" in msg and "turn_left" in msg and "turn_lr" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="fire"):
        DoomSettings("basic", buttons="fire")
    with pytest.raises(ValueError, match="twice"):
        ActionSet.from_spec("turn_lr;turn_left")


def test_settings_validation():
    with pytest.raises(ValueError) as e:
        DoomSettings("doom3")
    assert "doom3" in str(e.value) and "health_gathering" in str(e.value) and "deathmatch" in str(e.value)
    with pytest.raises(ValueError, match="manna"):
        DoomSettings("basic", game_variables=["health", "manna"])
    with pytest.raises(ValueError, match="hug"):
        DoomSettings("basic", shaping={"hug": 1.0})
    with pytest.raises(ValueError, match="RES_"):
        DoomSettings("basic", resolution="RES_123X45")
    s = DoomSettings("defend_the_center", game_variables="health, ammo2", shaping={"living": 0.5})
    assert s.game_variable_names() == ["health", "ammo2"] and s.shaping.living == 0.5
    assert DoomSettings("my_way_home").game_variable_names() == []


# ------------------------------------------------------------------------------------------ scenarios

_SCENARIO_PROBE = r"""
import json, sys
import numpy as np
from drl.envs.doom import SCENARIOS, DoomGame, DoomSettings
out = {}
rgb_raw = {"gray": False, "obs_height": 45, "obs_width": 70, "game_variable_scale": 1.0}
variants = [(name, {}) for name in SCENARIOS] + [("defend_the_center", rgb_raw)]
for name, extra in variants:
    g = DoomGame(DoomSettings(name, **extra), seed=1)
    frame, ex = g.reset()
    steps = [g.step(a % g.num_actions) for a in range(3)]
    out[name + ("_rgb" if extra else "")] = {
        "frame_shape": list(frame.shape), "frame_dtype": str(frame.dtype), "frame_mean": float(frame.mean()),
        "extras": [float(x) for x in ex], "extras_dtype": str(ex.dtype), "num_actions": g.num_actions,
        "action_names": g.actions.names, "step_frame_shape": list(steps[-1].frame.shape),
        "rewards_are_floats": all(isinstance(s.reward, float) for s in steps)}
    g.close()
print("JSON" + json.dumps(out))
"""


def test_every_scenario_loads_with_its_defaults(tmp_path):
    res = run_engine_probe(_SCENARIO_PROBE, tmp_path, timeout=120)
    assert set(SCENARIOS) | {"defend_the_center_rgb"} == set(res)
    for name in SCENARIOS:
        r, s = res[name], DoomSettings(name)
        assert r["frame_shape"] == [1, 60, 80] == r["step_frame_shape"], name
        assert r["frame_dtype"] == "uint8" and r["extras_dtype"] == "float32", name
        assert r["frame_mean"] > 1.0, name  # a rendered picture, not a blank buffer
        assert r["num_actions"] == len(s.action_set().names) and r["action_names"] == s.action_set().names, name
        assert len(r["extras"]) == len(s.game_variable_names()), name
        assert r["rewards_are_floats"], name
    assert res["basic"]["action_names"] == ["move_left", "move_right", "attack"]
    # ammo 26, health 100 at the start, x game_variable_scale (0.01 by default; 1.0 in the rgb variant)
    assert res["defend_the_center"]["extras"] == pytest.approx([0.26, 1.0])
    assert res["health_gathering"]["num_actions"] == 5
    assert res["deathmatch"]["num_actions"] == 12 and len(res["deathmatch"]["extras"]) == 3
    rgb = res["defend_the_center_rgb"]
    assert rgb["frame_shape"] == [3, 45, 70] and rgb["extras"] == [26.0, 100.0]


# ------------------------------------------------------------------------------------------ vector env


@pytest.fixture(scope="module")
def basic_env():
    # 60 tics with skip 4: an episode that never shoots lasts 15 steps and ends by the time limit.
    s = DoomSettings("basic", frame_stack=4, timeout=60, shaping={"living": 0.25})
    env = DoomVectorEnv(s, num_envs=2, device="cpu", seed=3)
    yield env
    env.close()


def test_contract_shapes_and_dtypes(basic_env):
    env = basic_env
    assert (env.num_envs, env.num_actions, env.frame_stack, env.frame_channels, env.num_extras) == (2, 3, 4, 1, 1)
    assert env.action_names == ["move_left", "move_right", "attack"] and env.device == torch.device("cpu")
    st = env.reset()
    assert st.obs.shape == (2, 4, 60, 80) and st.obs.dtype == torch.uint8
    assert bool((st.obs[:, :3] == 0).all()) and bool((st.obs[:, 3] > 0).any())
    assert st.reward.dtype == torch.float32 and st.reward.shape == (2,)
    assert st.reset.all() and not st.terminated.any() and not st.truncated.any()
    assert st.extras.shape == (2, 1) and st.extras.dtype == torch.float32
    assert float(st.extras[0, 0]) == pytest.approx(0.5)  # ammo 50 x game_variable_scale 0.01
    nxt = env.step(torch.tensor([0, 1]))
    for t in (nxt.terminated, nxt.truncated, nxt.reset):
        assert t.dtype == torch.bool and t.shape == (2,)
    assert nxt.obs.shape == (2, 4, 60, 80) and nxt.extras.shape == (2, 1)
    assert torch.equal(nxt.obs[:, :3], st.obs[:, 1:])  # newest frame last, the stack shifts by one
    with pytest.raises(ValueError):
        env.step(torch.tensor([0, 3]))


def test_same_step_autoreset_and_native_vs_shaped_rewards(basic_env):
    env = basic_env
    prev = env.reset()
    learn, steps = [0.0, 0.0], [0, 0]
    ended = None
    for _ in range(40):
        st = env.step(torch.zeros(2, dtype=torch.long))  # move_left only: never kills, so the time limit ends it
        for i in range(2):
            learn[i] += float(st.reward[i])
            steps[i] += 1
            # the living term is the only difference: native rewards in basic are whole numbers
            assert float(st.reward[i]) - 0.25 == pytest.approx(round(float(st.reward[i]) - 0.25), abs=1e-4)
        if st.reset.any():
            ended = st
            break
        assert not st.terminated.any() and not st.truncated.any() and not st.episodes
        prev = st
    assert ended is not None, "no episode ended within 40 steps"
    st = ended
    assert st.reset.all() and st.truncated.all() and not st.terminated.any()  # timeout: a truncation
    assert st.final_obs is not None and st.final_obs.shape == st.obs.shape
    for i in range(2):
        assert not torch.equal(st.final_obs[i], st.obs[i])
        assert bool((st.obs[i, :3] == 0).all()) and bool((st.obs[i, 3] > 0).any())  # new episode, zero-padded
        assert bool((st.final_obs[i, :3] > 0).any())  # the finished episode's full stack
        assert torch.equal(st.final_obs[i], prev.obs[i])  # no frame is rendered after the last action
    assert st.final_extras is not None and st.final_extras.shape == (2, 1)
    eps = sorted(st.episodes, key=lambda e: e["env"])
    assert [e["env"] for e in eps] == [0, 1]
    for e in eps:
        i = e["env"]
        assert e["length"] == steps[i] == 15
        assert e["return"] == pytest.approx(learn[i] - 0.25 * steps[i], abs=1e-3)  # native sum, no shaping
        assert e["return"] < 0 and e["kills"] == 0.0 and e["success"] == 0.0
    after = env.step(torch.zeros(2, dtype=torch.long))
    assert not after.reset.any() and after.final_obs is None and not after.episodes
    assert torch.equal(after.obs[:, :3], st.obs[:, 1:])


def test_worker_killed_mid_run_is_replaced(caplog):
    s = DoomSettings("basic", frame_stack=2, timeout=200)
    env = DoomVectorEnv(s, num_envs=2, seed=5, step_timeout=10.0)
    all_pids = set(worker_pids(env))
    # each worker leads a process group of its own (killed as one) and stays in our session (scheduler autogroup)
    assert all(os.getpgid(pid) == pid and os.getsid(pid) == os.getsid(0) for pid in all_pids)
    try:
        env.reset()
        for _ in range(3):
            env.step(torch.zeros(2, dtype=torch.long))
        victim = worker_pids(env)[0]
        victim_engine_ids = list(env._pool.engine_ids[0])
        assert victim_engine_ids and all(os.path.exists(f"/dev/shm/ViZDoomSM{x}") for x in victim_engine_ids)
        os.kill(victim, signal.SIGKILL)
        with caplog.at_level("WARNING", logger="drl.envs.doom"):
            st = env.step(torch.zeros(2, dtype=torch.long))
        # noticed as a death (pipe EOF when receiving, or a closed pipe when sending on a loaded machine), not by
        # waiting out step_timeout; logged as a warning
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert env.worker_restarts == 1 and len(warnings) == 1, warnings
        assert "died" in warnings[0] or "pipe closed" in warnings[0], warnings
        new = worker_pids(env)[0]
        assert new != victim and alive(new) and not alive(victim)
        assert worker_pids(env)[1] in all_pids
        all_pids.add(new)
        # the dropped episode: a truncated reset, no report, a fresh zero-padded stack
        assert bool(st.reset[0]) and bool(st.truncated[0]) and not bool(st.terminated[0])
        assert st.dropped.tolist() == [True, False]  # replay stores no transition for the lost step
        assert not bool(st.reset[1]) and float(st.reward[0]) == 0.0 and not st.episodes
        assert bool((st.obs[0, 0] == 0).all()) and bool((st.obs[0, 1] > 0).any())
        assert not _pgrp_members({victim})  # the old worker's engine went with it
        assert not any(os.path.exists(f"/dev/shm/ViZDoomSM{x}") for x in victim_engine_ids)
        for _ in range(5):
            st = env.step(torch.tensor([2, 1]))
            assert st.obs.shape == (2, 2, 60, 80) and st.obs.dtype == torch.uint8
            assert bool((st.obs[:, -1] > 0).any(dim=(1, 2)).all())
        assert env.worker_restarts == 1
        # a hung worker (stopped process) is killed after step_timeout and replaced the same way
        hung = worker_pids(env)[1]
        os.kill(hung, signal.SIGSTOP)
        env.step_timeout = 1.0
        caplog.clear()
        with caplog.at_level("WARNING", logger="drl.envs.doom"):
            st = env.step(torch.zeros(2, dtype=torch.long))
        env.step_timeout = 10.0
        assert env.worker_restarts == 2 and "did not answer" in caplog.records[-1].getMessage()
        assert bool(st.reset[1]) and bool(st.truncated[1]) and not bool(st.reset[0])
        assert worker_pids(env)[1] != hung and not _pgrp_members({hung})
        all_pids.add(worker_pids(env)[1])
        st = env.step(torch.zeros(2, dtype=torch.long))
        assert st.obs.shape == (2, 2, 60, 80) and not st.reset.any()
        shm_path = env._pool.shm_path
    finally:
        env.close()
    deadline = time.monotonic() + 5
    while _pgrp_members(all_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pgrp_members(all_pids), "worker or engine processes outlived close()"
    assert not any(alive(p) for p in all_pids)
    assert not os.path.exists(shm_path)
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        env.step(torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("shape, out", [((120, 160), (60, 80)), ((120, 160, 3), (30, 40)), ((96, 128), (6, 8))])
def test_block_resize_equals_naive_rounded_block_mean(shape, out):
    from drl.envs.doom.game import _AreaResize

    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = _AreaResize(shape[0], shape[1], *out)(img)
    chw = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
    fy, fx = shape[0] // out[0], shape[1] // out[1]
    expected = np.zeros((chw.shape[0], *out), np.uint8)
    for c in range(chw.shape[0]):
        for y in range(out[0]):
            for x in range(out[1]):
                block = chw[c, y * fy : (y + 1) * fy, x * fx : (x + 1) * fx].astype(np.int64)
                expected[c, y, x] = (block.sum() + block.size // 2) // block.size
    assert got.dtype == np.uint8 and np.array_equal(got, expected)


def test_default_games_per_worker_spreads_games_over_cores_and_bots_games_over_core_pairs():
    assert [default_games_per_worker(4, cores, bots=False) for cores in (1, 2, 3, 4, 16)] == [4, 2, 2, 1, 1]
    assert [default_games_per_worker(4, cores, bots=True) for cores in (1, 2, 3, 4, 8, 16)] == [4, 4, 4, 2, 1, 1]
    assert default_games_per_worker(8, 4, bots=True) == 4 and default_games_per_worker(1, 2, bots=True) == 1


def test_games_per_worker_give_the_same_streams_and_a_killed_worker_drops_only_its_games():
    """3 games per worker (workers of 3 and 2 games) against one game per worker: same seeds, same actions ->
    identical observations, rewards, flags and episode reports; then SIGKILL of worker 1 drops envs 3 and 4 only."""
    s = DoomSettings("basic", frame_stack=2, timeout=40)
    runs = []
    for g in (1, 3):
        env = DoomVectorEnv(s, num_envs=5, seed=11, games_per_worker=g)
        try:
            assert env.num_workers == (5 if g == 1 else 2) and len(worker_pids(env)) == env.num_workers
            gen = torch.Generator().manual_seed(0)
            steps = [env.reset()]
            for _ in range(60):
                steps.append(env.step(torch.randint(0, env.num_actions, (5,), generator=gen)))
            runs.append(steps)
            if g == 3:
                os.kill(worker_pids(env)[1], signal.SIGKILL)
                st = env.step(torch.zeros(5, dtype=torch.long))
                assert env.fault_counters() == {"worker_restarts": 1, "episodes_dropped": 2}  # the train rows'
                assert st.reset[3:].all() and all(ep["env"] < 3 for ep in st.episodes)  # 0-2 may end naturally
                assert st.truncated[3:].all() and not st.terminated[3:].any() and (st.reward[3:] == 0).all()
                st = env.step(torch.zeros(5, dtype=torch.long))
                assert bool((st.obs[:, -1] > 0).any(dim=(1, 2)).all())
        finally:
            env.close()
    episodes = 0
    for a, b in zip(*runs):
        for field in ("obs", "reward", "terminated", "truncated", "reset", "final_obs"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or torch.equal(x, y), field
        assert a.episodes == b.episodes
        episodes += len(a.episodes)
    assert episodes >= 5, "the streams should cross episode ends (basic times out at 40 tics)"


def test_eval_max_frames_caps_doom_episodes_and_sets_a_limit_where_there_is_none():
    """eval.max_frames reaches Doom (make_doom_env's ``max_frames``, in tics): defend_the_line has no time limit of
    its own, so without the cap an evaluation of a good agent could run forever; with it, episodes end truncated."""
    from drl import config
    from drl.envs.doom import make_doom_env

    cfg = config.load("doom-defend-the-line", ["env.num_envs=1"]).env
    env = make_doom_env(cfg, num_envs=1, device=torch.device("cpu"), seed=3, evaluation=True, max_frames=40)
    try:
        env.reset(seed=3)
        for step_count in range(1, 30):  # noqa: B007 (read after the loop)
            st = env.step(torch.zeros(1, dtype=torch.long))  # turn left: no shot, no death in 40 tics
            if st.episodes:
                break
        assert st.episodes and bool(st.truncated[0]) and not bool(st.terminated[0])
        assert step_count == 40 // cfg.frame_skip  # 40 tics of play (the engine's tic count adds its start tics)
    finally:
        env.close()


def _one_shaped_episode(settings: DoomSettings, action_at) -> tuple[list[np.ndarray], float, dict]:
    """Play one whole episode of one game (``action_at(t, action_names)`` -> action index): the game variables
    before the first step and after each step (the finished episode's, at its end), the summed learning reward,
    and the episode's report."""
    env = DoomVectorEnv(settings, num_envs=1, device="cpu", seed=5)
    try:
        variables, shaped = [env.reset().extras[0].numpy()], 0.0
        for t in range(600):  # 2,100 tics at skip 4 = 525 steps at most
            st = env.step(torch.tensor([action_at(t, env.action_names)]))
            variables.append((st.final_extras if st.reset[0] else st.extras)[0].numpy())
            shaped += float(st.reward[0])
            if st.episodes:
                return variables, shaped, st.episodes[0]
        raise AssertionError("no episode ended within 600 steps")
    finally:
        env.close()


def test_event_shaping_terms_against_the_game_variables():
    """Arnold's event terms: ``ammo_used`` once per step whose ammo fell, ``injured`` once per step whose health fell,
    checked against the raw game variables the agent sees, over one whole defend_the_center episode."""
    s = DoomSettings(
        "defend_the_center",
        game_variables="health, ammo2",
        game_variable_scale=1.0,
        shaping={"ammo_used": -1.0, "injured": -10.0},
    )
    variables, shaped, episode = _one_shaped_episode(s, lambda t, names: names.index("attack"))
    expected = sum(
        -10.0 * float(now[0] < prev[0]) - 1.0 * float(now[1] < prev[1]) for prev, now in zip(variables, variables[1:])
    )
    assert expected <= -20.0  # it fired (26 bullets) and was hit before it died
    assert shaped - episode["return"] == pytest.approx(expected, abs=1e-3)  # learning reward = native + terms


def test_health_gain_and_injured_together_against_the_health_variable():
    """Both terms read one HEALTH value: gains pay per point, falls cost once per step (health_gathering, where the
    floor hurts every few steps and medikits heal)."""
    s = DoomSettings(
        "health_gathering",
        game_variables="health",
        game_variable_scale=1.0,
        shaping={"health_gain": 1.0, "injured": -10.0},
    )
    walk_and_turn = lambda t, names: names.index("turn_left" if t % 40 >= 30 else "move_forward")  # noqa: E731
    variables, shaped, episode = _one_shaped_episode(s, walk_and_turn)
    health = [float(v[0]) for v in variables]
    gained = sum(max(0.0, now - prev) for prev, now in zip(health, health[1:]))
    expected = gained - 10.0 * sum(float(now < prev) for prev, now in zip(health, health[1:]))
    assert gained > 0 and expected < -100.0  # it picked up a medikit, and the floor hurt it many times
    assert shaped - episode["return"] == pytest.approx(expected, abs=1e-3)


def test_deathmatch_reports_frags_deaths_and_game_minutes():
    """A bot deathmatch cut to 40 tics: its report carries frags, deaths and the game time in minutes, and the eval
    summary turns totals into K/D and frags per minute."""
    from drl.evaluation import summarize

    env = DoomVectorEnv(DoomSettings("deathmatch", num_bots=1, timeout=40), num_envs=1, device="cpu", seed=2)
    try:
        env.reset()
        for _ in range(30):
            st = env.step(torch.zeros(1, dtype=torch.long))
            if st.episodes:
                break
        (episode,) = st.episodes
        assert {"frags", "deaths", "minutes"} <= episode.keys()
        assert 36 <= episode["minutes"] * 35 * 60 <= 44  # the 40-tic limit, in minutes of game time
        assert episode["length"] * 4 == pytest.approx(episode["minutes"] * 35 * 60, abs=4)
    finally:
        env.close()
    eps = [
        {"return": 0.0, "frags": 3.0, "deaths": 1.0, "minutes": 2.0},
        {"return": 0.0, "frags": -1.0, "deaths": 3.0, "minutes": 2.0},
    ]
    out = summarize(eps, env)  # Doom's summarize_episodes (drl.vec_env contract), env closed or not
    assert out["frags_mean"] == 1.0 and out["deaths_mean"] == 2.0
    assert out["kd"] == 2.0 / 4.0 and out["frags_per_minute"] == 2.0 / 4.0  # totals, not means of ratios
    assert "kd" not in summarize([{"return": 1.0, "kills": 2.0}], env)


# ------------------------------------------------------------------------------------------ Arnold's deathmatch recipe


def test_optional_groups_give_arnolds_53_combined_actions():
    """``a*b*c*d``: each group pressed in one of its ways or not at all, all combinations but "nothing"; checked
    against a naive enumeration of button sets."""
    spec = "move_fb*move_lr*turn_lr*attack"
    actions = ActionSet.from_spec(spec)
    groups = [("MOVE_FORWARD", "MOVE_BACKWARD"), ("MOVE_LEFT", "MOVE_RIGHT"), ("TURN_LEFT", "TURN_RIGHT"), ("ATTACK",)]
    naive = set()
    for f in (None, *groups[0]):
        for s in (None, *groups[1]):
            for t in (None, *groups[2]):
                for a in (None, *groups[3]):
                    pressed = frozenset(b for b in (f, s, t, a) if b)
                    if pressed:
                        naive.add(pressed)
    got = [frozenset(b for b, on in zip(actions.buttons, v) if on) for v in actions.vectors]
    assert len(got) == len(set(got)) == len(naive) == 3 * 3 * 3 * 2 - 1
    assert set(got) == naive
    assert len(ActionSet.from_spec("turn_left;move_forward*attack").names) == 1 + 3  # mixes with ';'
    with pytest.raises(ValueError, match="mixes"):
        parse_actions("move_forward+attack*turn_lr")
    with pytest.raises(ValueError, match="twice"):
        parse_actions("attack;move_forward*attack")


_RECIPE_PROBE = r"""
import json
import numpy as np
from drl.envs.doom import DoomGame, DoomSettings

out = {}
# Arnold's pickup terms from game-variable changes, on items given through the console (cheats on)
g = DoomGame(DoomSettings("defend_the_center", game_variables=["health"],
                          shaping=dict(weapon=1.0, ammo=10.0, armor=100.0)), seed=1)
g.reset()
g.game.send_game_command("sv_cheats 1")
given = {}
for cmd in ("give shotgun", "give shell", "give greenarmor"):
    g.game.send_game_command(cmd)
    given[cmd] = g.step(0).reward
out["given"], out["given_events"] = given, dict(g.events)
g.close()
# random deathmatch play with every term on: counts per term
shaping = dict(frag=1.0, death=-1.0, injured=-0.2, ammo_used=-0.04, medikit=0.2, armor=0.2, weapon=0.2, ammo=0.2)
g = DoomGame(DoomSettings("deathmatch", buttons="move_fb*move_lr*turn_lr*attack", shaping=shaping), seed=5)
rng, totals, shaped, native = np.random.default_rng(0), {}, 0.0, 0.0
for _ in range(3):   # three 2-minute games
    g.reset()
    while True:
        st = g.step(int(rng.integers(g.num_actions)))
        shaped, native = shaped + st.reward, native + st.native_reward
        if st.done:
            break
    for k, v in g.events.items():
        totals[k] = totals.get(k, 0) + v
out["events"], out["shaped"] = totals, shaped
out["expected"] = sum(shaping[k if k != "suicide" else "frag"] * (v if k != "suicide" else -v)
                      for k, v in totals.items())
g.close()
# Arnold's render: 400x225 with the crosshair, 60x108 observations, colour
frames = {}
for crosshair in (False, True):
    g = DoomGame(DoomSettings("defend_the_center", resolution="RES_400X225", obs_height=60, obs_width=108,
                              gray=False, crosshair=crosshair), seed=1)
    frames[crosshair] = g.reset()[0]
    g.close()
out["shape"] = list(frames[True].shape)
diff = np.abs(frames[True].astype(int) - frames[False].astype(int)).sum(0)
out["diff_centre"], out["diff_elsewhere"] = int(diff[27:33, 51:57].sum()), int(diff.sum() - diff[27:33, 51:57].sum())
print("JSON" + json.dumps(out))
"""


def test_arnolds_pickup_terms_render_and_crosshair_on_the_engine(tmp_path):
    res = run_engine_probe(_RECIPE_PROBE, tmp_path)
    # a shotgun: one weapon and its shells (one ammo type rose); shells alone; armor alone
    assert res["given"] == {"give shotgun": 11.0, "give shell": 10.0, "give greenarmor": 100.0}
    assert res["given_events"] == {"weapon": 1, "ammo": 2, "armor": 1}
    # random play on cig map01 (no weapons lie there: the rocket launcher is given at the start)
    events = res["events"]
    for term in ("medikit", "ammo", "injured", "ammo_used", "death"):
        assert events.get(term, 0) > 0, (term, events)
    assert "weapon" not in events
    assert res["shaped"] == pytest.approx(res["expected"])  # deathmatch has no native reward: shaping is all
    assert res["shape"] == [3, 60, 108]
    assert res["diff_centre"] > 0 and res["diff_elsewhere"] == 0  # the crosshair is drawn in the middle only


def test_reset_on_respawn_starts_a_new_life_for_the_learner():
    """A deathmatch death is ``terminated``; with ``reset_on_respawn`` it also sets ``reset`` (new LSTM state and
    sequence) while the game, its episode and the report run on."""
    seen = {}
    for flag in (False, True):
        s = DoomSettings("deathmatch", num_bots=7, buttons="attack;turn_lr", reset_on_respawn=flag)
        with DoomVectorEnv(s, num_envs=1, device="cpu", seed=4) as env:
            env.reset()
            for _ in range(1000):  # firing rockets at close range kills the agent soon
                st = env.step(torch.zeros(1, dtype=torch.long))
                if st.terminated.any():
                    seen[flag] = (bool(st.reset[0]), len(st.episodes))
                    break
    assert seen == {False: (False, 0), True: (True, 0)}


def test_games_starting_at_once_in_one_working_directory_all_start(tmp_path):
    """The engine makes ./_vizdoom/ at init; before drl made it first, processes starting together in one directory
    raced on it and one could die (SIGSEGV). Six engines start at once in a fresh directory and all must run."""
    import subprocess
    import sys

    script = (
        "from drl.envs.doom import DoomGame, DoomSettings\n"
        "g = DoomGame(DoomSettings(scenario='basic'), seed=0); g.reset(); g.step(0); g.close(); print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outcomes = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    failed = [(rc, err[-300:]) for rc, out, err in outcomes if rc != 0 or "ok" not in out]
    assert not failed, failed
    assert (tmp_path / "_vizdoom").is_dir()
