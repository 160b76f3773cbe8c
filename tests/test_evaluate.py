"""drl.evaluate on a short catch run's checkpoint: score table, an mp4 that imageio reads back, W&B eval run."""

from __future__ import annotations

import math
import subprocess

import imageio.v2 as imageio
import numpy as np
import pytest

from drl.errors import UserError
from drl.evaluate import main as evaluate_main
from drl.wandb_records import find_run_files, read_run
from tests.helpers import FAST_CATCH as _FAST
from tests.helpers import cli as run_module
from tests.helpers import offline_env

FAST_CATCH = ["total_steps=2000", *_FAST]


def cli(module: str, *args, env: dict) -> subprocess.CompletedProcess:
    return run_module(module, *args, env=env, timeout=180)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    env = offline_env(tmp)
    run_dir = tmp / "run"
    proc = cli("drl.train", "catch", *FAST_CATCH, "tracking.wandb=off", "--run-dir", run_dir, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp, run_dir, env


@pytest.mark.slow
def test_evaluate_prints_scores_and_writes_a_readable_video(trained):
    tmp, run_dir, env = trained
    video = tmp / "videos" / "catch.mp4"
    episodes, num_envs = 6, 4
    proc = cli(
        "drl.evaluate",
        run_dir,
        "--episodes",
        episodes,
        "--num-envs",
        num_envs,
        "--video",
        video,
        "--wandb",
        "auto",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    header, values = [l.split() for l in proc.stdout.splitlines()[1:3]]
    assert header == ["episodes", "mean", "median", "std", "min", "max", "length"]
    assert int(values[0]) == episodes and -1.0 <= float(values[1]) <= 1.0 and float(values[6]) == 9.0

    assert video.is_file() and video.stat().st_size > 0
    reader = imageio.get_reader(video, format="FFMPEG")
    frames = [frame for frame in reader]
    reader.close()
    # env 0 plays ceil(6 / 4) = 2 episodes of 9 steps: first frame + 9 stepped frames each
    assert len(frames) == math.ceil(episodes / num_envs) * (9 + 1)
    assert frames[0].shape == (320, 160, 3)  # 10x5 board upscaled 32x (nearest)
    assert frames[0].max() > 200 and frames[0].min() < 50  # ball and paddle visible on black

    # tracking on: an eval-type W&B run in the experiment's group holding the scores and the video
    (record,) = [read_run(f) for f in find_run_files(run_dir)]
    assert record["run"]["job_type"] == "eval" and record["run"]["group"] == "catch"
    logged = set().union(*record["history"])
    assert {"eval/return_mean", "eval/video/path", "env_frames"} <= logged


@pytest.mark.slow
def test_evaluate_bad_input_is_one_line_exit_2(trained):
    tmp, run_dir, env = trained
    proc = cli("drl.evaluate", run_dir, "--episodes", "0", env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0] == "drl.evaluate: error: --episodes must be >= 1 (got 0)"
    for args, needle in (
        ([run_dir, "--checkpoint", tmp / "missing.pt"], "does not exist"),
        ([tmp / "not-a-run"], "not a run directory"),
        ([run_dir, "--video", tmp / "out.gif"], ".mp4"),
        ([run_dir, "--epsilon", "2"], "--epsilon"),
    ):
        with pytest.raises(UserError, match=needle) as err:
            evaluate_main([str(a) for a in args])
        assert "\n" not in str(err.value)


def test_videos_play_in_real_time_where_the_world_has_a_clock():
    """Atari runs at 60 frames/s and acts every 4 frames: 15 agent steps/s; worlds without a clock get 8."""
    import torch

    from drl.envs.atari import AtariVecEnv
    from drl.envs.torch_native import CatchEnv
    from drl.evaluate import default_fps

    atari = AtariVecEnv("pong", 1, torch.device("cpu"), frame_skip=4, num_threads=1)
    try:
        assert default_fps(atari) == 15
    finally:
        atari.close()
    assert default_fps(CatchEnv(1)) == 8


@pytest.mark.slow
def test_atari_videos_show_the_games_colour_screen_or_on_request_the_agents_view(tmp_path, trained):
    """Users expect the game's own screen (as in SB3's and CleanRL's videos): 210x160 colour, upscaled 2x; the
    agent's 84x84 gray input stays available with ``--video-view agent``. Catch has no game screen: asking for
    it is a one-line error."""
    env = offline_env(tmp_path)
    run_dir = tmp_path / "pong"
    proc = cli(
        "drl.train",
        "atari-pong",
        "total_steps=400",
        "env.num_envs=2",
        "agent.learning_starts=200",
        "replay.capacity=1000",
        "eval.interval=100000",
        "eval.max_frames=200",
        "eval.num_envs=1",
        "compute.threads=1",
        "tracking.wandb=off",
        "--run-dir",
        run_dir,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    shapes = {}
    for view in ("game", "agent"):
        video = tmp_path / f"{view}.mp4"
        args = ["--video-view", view] if view == "agent" else []  # game is the default for Atari
        proc = cli("drl.evaluate", run_dir, "--episodes", 1, "--video", video, "--wandb", "off", *args, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"env 0's {view} view" in proc.stdout
        reader = imageio.get_reader(video, format="FFMPEG")
        frames = [frame.astype(int) for frame in reader]
        reader.close()
        assert len(frames) == 200 // 4 + 1  # the capped episode: 50 agent steps, first frame included
        shapes[view] = frames[0].shape
        spread = np.mean([np.abs(f[..., 0] - f[..., 2]).mean() for f in frames])  # colour: channels differ
        assert (spread > 20) if view == "game" else (spread < 3)
    assert shapes == {"game": (432, 320, 3), "agent": (336, 336, 3)}  # 210x160 x2 (padded to 16); 84x84 x4

    with pytest.raises(UserError, match="cannot record the game's own screen"):
        evaluate_main([str(trained[1]), "--video", str(tmp_path / "c.mp4"), "--video-view", "game"])
