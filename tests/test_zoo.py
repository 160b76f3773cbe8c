"""The zoo: ``zoo:NAME`` resolves to an exported folder (here a real short catch run exported into a zoo folder of
the test's own, named by ``DRL_ZOO_DIR``) for ``drl.load_agent`` and ``drl.evaluate``; ``--list-zoo`` lists it."""

from __future__ import annotations

import os
import subprocess

import imageio.v2 as imageio
import pytest
import torch

import drl
from drl import zoo
from drl.errors import UserError
from drl.exported import card_score, read_card
from tests.helpers import FAST_CATCH
from tests.helpers import cli as run_module

pytestmark = pytest.mark.slow

ENV = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}


def cli(module: str, *args, env: dict) -> subprocess.CompletedProcess:
    return run_module(module, *args, env=env, timeout=300)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    """A zoo folder holding one exported catch agent, ``catch-dqn``."""
    tmp = tmp_path_factory.mktemp("zoo")
    proc = cli(
        "drl.train", "catch", "total_steps=2000", *FAST_CATCH, "tracking.wandb=off", "--run-dir", tmp / "run", env=ENV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli("drl.export", tmp / "run", tmp / "zoo" / "catch-dqn", "--episodes", 8, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp / "zoo" / "notes").mkdir()  # a folder without a model is not a zoo agent
    return tmp / "zoo"


@pytest.fixture
def zoo_env(zoo_dir, monkeypatch):
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(zoo_dir))
    return {**ENV, zoo.ZOO_DIR_ENV: str(zoo_dir)}


def test_load_agent_resolves_a_zoo_name(zoo_dir, zoo_env):
    agent, folder_agent = drl.load_agent("zoo:catch-dqn"), drl.load_agent(zoo_dir / "catch-dqn")
    obs = torch.randint(
        0, 256, (128, *agent.spec.obs_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(agent.act(obs, None, 0.0)[0], folder_agent.act(obs, None, 0.0)[0])


def test_evaluate_plays_a_zoo_agent_and_records_a_video(zoo_env, tmp_path):
    video = tmp_path / "out.mp4"
    proc = cli("drl.evaluate", "zoo:catch-dqn", "--episodes", 5, "--video", video, "--wandb", "off", env=zoo_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zoo:catch-dqn" in proc.stdout and int(proc.stdout.splitlines()[2].split()[0]) == 5
    reader = imageio.get_reader(video, format="FFMPEG")
    assert len([f for f in reader]) >= 10
    reader.close()


def test_list_zoo_shows_name_env_and_score_from_the_cards(zoo_dir, zoo_env):
    proc = cli("drl.evaluate", "--list-zoo", env=zoo_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env, score = card_score(read_card(zoo_dir / "catch-dqn" / "README.md"))
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split() == ["name", "env", "mean_reward"]
    assert [line.split() for line in lines[1:]] == [["catch-dqn", env, *score.split()]]
    assert env == "catch" and " +/- " in score


def test_an_unknown_zoo_name_is_one_line_listing_the_available(zoo_env):
    proc = cli("drl.evaluate", "zoo:catch-dqm", env=zoo_env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "unknown zoo agent 'catch-dqm'" in lines[0] and "did you mean catch-dqn" in lines[0]
    assert "available: catch-dqn" in lines[0]
    with pytest.raises(UserError, match="available: catch-dqn"):
        drl.load_agent("zoo:nope")


def test_an_empty_zoo_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.ZOO_DIR_ENV, str(tmp_path))
    assert zoo.names() == [] and "is empty" in zoo.format_list()
    with pytest.raises(UserError, match="is empty"):
        zoo.resolve("pong")


def test_the_shipped_zoo_lists_without_error():
    proc = cli("drl.evaluate", "--list-zoo", env={k: v for k, v in ENV.items() if k != zoo.ZOO_DIR_ENV})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()
