"""drl's Doom memory task (envs/doom/t_maze.py) on the real engine: the committed WADs are what the generator
writes, the cue randomizes, the cue is the only difference between the two maps and is gone after the teleport,
each arm pays what it should, and scripted agents score what they must (remembering 1.0, ignoring chance).

Games run in one subprocess (several games in one pytest process have hung for users), as in test_doom.py.
"""

from __future__ import annotations

import pytest

from drl.envs.doom import t_maze
from tests.helpers import run_engine_probe

pytestmark = pytest.mark.doom

_PROBE = r"""
import json, sys
import numpy as np
from drl.envs.doom import DoomGame, DoomSettings

out = {}
for variant in ("t_maze", "t_maze_long"):
    res = out[variant] = {}
    gray = DoomGame(DoomSettings(variant), seed=11)
    # 1) the cue randomizes per episode, and a reset with a seed draws that seed's cue again
    cues, first_means = [], {0: [], 1: []}
    for _ in range(40):
        frame, _ = gray.reset()
        cues.append(gray.cue)
        first_means[gray.cue].append(float(frame.mean()))
    res["cues"] = cues
    res["first_mean"] = {str(k): v for k, v in first_means.items()}
    res["seeded"] = [[(gray.reset(seed=s), gray.cue)[1] for s in (5, 6, 7, 5, 6, 7)] for _ in range(2)]

    # 2) walk straight to the junction under each cue: frames differ until the teleport, equal from then on
    def walk(game, cue, strafe, forward):
        while True:   # reset until the episode draws the wanted cue
            frame, _ = game.reset()
            if game.cue == cue:
                break
        frames, steps = [frame], []
        for t in range(600):
            st = game.step(0 if t < forward else strafe)
            frames.append(st.frame)
            steps.append(st)
            if st.done:
                return frames, steps
        raise AssertionError("no end within 600 steps")

    forward = 20 if variant == "t_maze" else 52
    a, a_steps = walk(gray, 0, 1, forward)
    b, _ = walk(gray, 1, 1, forward)
    differs = [bool((x != y).any()) for x, y in zip(a, b)]
    res["differs"] = differs
    res["length"] = len(a_steps)
    # 3) each arm under each cue: (success, return, terminated, truncated)
    arms = {}
    for cue in (0, 1):
        for strafe, arm in ((1, "west"), (2, "east")):
            _, steps = walk(gray, cue, strafe, forward)
            last = steps[-1]
            arms[f"{cue}-{arm}"] = [last.episode["success"], last.episode["return"], last.terminated,
                                   last.truncated, sum(s.reward for s in steps)]
    res["arms"] = arms
    gray.close()

    # 4) scripted agents on colour frames: one reads the first frame's colour and goes to its arm, one ignores it
    rgb = DoomGame(DoomSettings(variant, gray=False), seed=3)
    for name in ("remembers", "ignores"):
        successes, drawn = [], []
        for _ in range(40):
            frame, _ = rgb.reset()
            red = frame[0].mean() > frame[2].mean()
            drawn.append(rgb.cue)
            for t in range(600):
                strafe = (1 if red else 2) if name == "remembers" else 1
                st = rgb.step(0 if t < forward else strafe)
                if st.done:
                    successes.append(st.episode["success"])
                    break
        res[name] = successes
        res[name + "_cues"] = drawn
    # 5) random play: never better than chance, by construction
    rng, wins = np.random.default_rng(0), []
    for _ in range(30):
        rgb.reset()
        while True:
            st = rgb.step(int(rng.integers(3)))
            if st.done:
                wins.append(st.episode["success"])
                break
    res["random"] = wins
    rgb.close()
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    return run_engine_probe(_PROBE, tmp_path_factory.mktemp("tmaze"))


@pytest.mark.parametrize("variant", sorted(t_maze.VARIANTS))
def test_committed_wad_is_what_the_generator_writes(variant, tmp_path):
    written = t_maze.write_wad(variant, tmp_path / f"{variant}.wad")
    assert written.read_bytes() == t_maze.wad_path(variant).read_bytes(), (
        "rerun `python -m drl.envs.doom.t_maze` and commit the WADs"
    )


@pytest.mark.parametrize("variant", sorted(t_maze.VARIANTS))
def test_cue_randomizes_and_is_seeded(probe, variant):
    res = probe[variant]
    assert 10 <= sum(res["cues"]) <= 30  # both cues, about half each, over 40 episodes
    first, second = res["seeded"]
    assert first == second  # the same seed draws the same cue
    means = res["first_mean"]
    assert min(means["0"]) > max(means["1"]) + 10  # red and blue rooms differ even in gray


@pytest.mark.parametrize("variant", sorted(t_maze.VARIANTS))
def test_cue_is_the_only_difference_and_is_gone_long_before_the_choice(probe, variant):
    """Under the same actions the two cues' frames differ before the teleport and are pixel-equal after it, for
    far more than a 4-frame stack before the episode ends at an arm."""
    differs = probe[variant]["differs"]
    teleport = differs.index(False)
    assert teleport >= 3 and all(differs[:teleport])  # the cue is in view for the first steps
    assert not any(differs[teleport:])  # then no frame tells the cues apart
    frames_without_cue = probe[variant]["length"] - teleport
    assert frames_without_cue >= 4 * 4  # at least 4x a 4-frame stack before the choice
    if variant == "t_maze_long":
        assert frames_without_cue >= 2 * (probe["t_maze"]["length"] - probe["t_maze"]["differs"].index(False))


@pytest.mark.parametrize("variant", sorted(t_maze.VARIANTS))
def test_each_arm_pays_what_it_should(probe, variant):
    arms = probe[variant]["arms"]
    for key, (success, ret, terminated, truncated, learning_return) in arms.items():
        cue, arm = key.split("-")
        right = (cue == "0") == (arm == "west")  # red: west, blue: east
        assert success == float(right), key
        assert terminated and not truncated, key  # an arm ends the episode (not the time limit)
        # +1 for the right arm, nothing for the wrong one, minus the living cost (1e-4 per tic)
        assert ret == pytest.approx(float(right), abs=0.05) and (ret < 1.0 if right else ret < 0.0), key
        assert learning_return == pytest.approx(ret), key  # no shaping: the learning reward is the native one


@pytest.mark.parametrize("variant", sorted(t_maze.VARIANTS))
def test_a_scripted_agent_that_remembers_succeeds_and_one_that_ignores_is_at_chance(probe, variant):
    res = probe[variant]
    assert res["remembers"] == [1.0] * 40
    # always west: it wins exactly the red episodes, about half of them
    assert res["ignores"] == [float(c == 0) for c in res["ignores_cues"]]
    assert 0.3 <= sum(res["ignores"]) / 40 <= 0.7
    assert 0.2 <= sum(res["random"]) / len(res["random"]) <= 0.8


def test_outcome_regions():
    geo = t_maze.VARIANTS["t_maze"]
    y = geo.corridor_length + geo.half_width
    assert geo.outcome(0.0, 0.0) is None  # the cue room lies west of the maze: not an arm
    assert geo.outcome(geo.maze_x, y) is None  # the junction itself
    assert geo.outcome(geo.maze_x - geo.half_width - geo.goal_depth, y) == 0
    assert geo.outcome(geo.maze_x + geo.half_width + geo.goal_depth, y) == 1
    assert geo.outcome(geo.maze_x - 500, geo.corridor_length - 1) is None


_SETTINGS_PROBE = r"""
import json, os
from drl.envs.doom import DoomGame, DoomSettings

def forward_y(steps=3):
    # how far north the player walks in its first steps (before the teleport line at y = 64)
    game = DoomGame(DoomSettings("t_maze"), seed=1)
    game.reset()
    for _ in range(steps):
        game.step(0)
    y = game._var("POSITION_Y")
    config_dir = getattr(game, "_config_dir", "")
    game.close()
    return y, os.path.exists(config_dir)

before, kept_before = forward_y()
dm = DoomGame(DoomSettings("deathmatch", num_bots=1), seed=1)  # its game args hold +cl_run 1
dm.reset()
for _ in range(3):
    dm.step(0)
dm.close()  # a clean exit: the engine writes its archived cvars (cl_run among them) to its config file
after, kept_after = forward_y()
print("JSON" + json.dumps({"before": before, "after": after, "kept": [kept_before, kept_after]}))
"""


def test_one_games_engine_settings_do_not_carry_into_the_next_game(tmp_path):
    """Each game has an engine config file of its own. With one shared file, a deathmatch game (+cl_run 1) that
    exited made every later T-maze game run at twice the walking speed its agent trained at (an agent that won 0.975
    of its games scored 0.575)."""
    out = run_engine_probe(_SETTINGS_PROBE, tmp_path)
    assert 0 < out["before"] < 64  # walking, still south of the teleport line
    assert out["after"] == out["before"]
    assert out["kept"] == [False, False]  # each game's config folder is removed at close
