"""Config: every error is one readable line, exit code 2, no traceback; good configs resolve and are written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from drl import config


def run_train(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "drl.train", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,needle",
    [
        (["atari-pongg"], "unknown experiment 'atari-pongg' (did you mean atari-pong?)"),
        (["atari-pong", "agent.lrr=1e-4"], "unknown config key 'agent.lrr': did you mean agent.lr"),
        (["atari-pong", "agent.batch_size=abc"], "agent.batch_size has the wrong type: expected int"),
        (["atari-pong", "agent.lr=-1"], "agent.lr must be > 0.0 (got -1)"),
        (["atari-pong", "agent.gamma=1.5"], "agent.gamma must be <= 1.0"),
        (["atari-pong", "env.num_envs=0"], "env.num_envs must be >= 1"),
        (["atari-pong", "env.kind=mujoco"], "unknown environment kind 'mujoco' (env.kind)"),
        (["atari-pong", "replay.capacity=10"], "agent.batch_size (64) is larger than replay.capacity (10)"),
        (["atari-pong", "lr"], "override 'lr' must look like key=value"),
    ],
)
def test_config_errors_are_one_line_exit_2(args, needle, tmp_path):
    proc = run_train(*args, f"output_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in lines[0]
    assert not list(tmp_path.iterdir()), "nothing is written for a bad config"


@pytest.mark.slow
def test_unknown_experiment_lists_available():
    proc = run_train("no-such-thing")
    assert proc.returncode == 2
    for name in ("atari-pong", "atari-breakout", "catch"):
        assert name in proc.stderr


@pytest.mark.slow
def test_malformed_yaml_and_yaml_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {lr: [1, 2\n")
    proc = run_train(str(bad))
    assert proc.returncode == 2 and "malformed YAML" in proc.stderr and "Traceback" not in proc.stderr
    good = tmp_path / "mine.yaml"
    good.write_text("env: {kind: catch, size: 8}\nagent: {lr: 0.01}\n")
    cfg = config.load(str(good), ["seed=3", "agent.n_step=2"])
    assert (cfg.name, cfg.seed, cfg.agent.lr, cfg.agent.n_step, cfg.env.kind) == ("mine", 3, 0.01, 2, "catch")


def test_overrides_are_typed_and_resolved():
    cfg = config.load(
        "atari-pong",
        [
            "agent.lr=1e-4",
            "env.num_envs=8",
            "seed=3",
            "total_steps=200000",
            "agent.double=false",
            "env.sticky_actions=0.25",
        ],
    )
    assert cfg.agent.lr == 1e-4 and cfg.env.num_envs == 8 and cfg.seed == 3 and cfg.total_steps == 200_000
    assert cfg.agent.double is False and cfg.env.sticky_actions == 0.25
    # the resolved YAML round-trips to the same config
    again = config.validate(__import__("yaml").safe_load(config.to_yaml(cfg)))
    assert again == cfg


def test_every_experiment_file_validates():
    for name in config.available_experiments():
        config.load(name)


@pytest.mark.parametrize(
    "experiment,comment_in",
    [("doom-my-way-home", "_doom-base.yaml"), ("atari-pong-flicker", "atari-pong-flicker.yaml")],
)
def test_feed_forward_command_in_the_comment_matches_the_replay_ratio(experiment, comment_in):
    """The recurrent-vs-feed-forward comparisons: the DQN overrides that the experiment file's comment gives train on
    as many transitions per env step as the DRQN default (a DQN batch of 16 would train on 12x fewer)."""
    from drl.loop import replay_ratio
    from drl.registry import AGENTS

    text = (config.EXPERIMENTS_DIR / comment_in).read_text()
    overrides = re.search(r"(agent\.algo=dqn(?: [\w.]+=\S+)+)", text).group(1).split()
    recurrent = config.load(experiment)
    feed_forward = config.load(experiment, overrides)
    assert AGENTS.get(recurrent.agent.algo).sampler == "sequences"
    assert AGENTS.get(feed_forward.agent.algo).sampler == "transitions"
    assert replay_ratio(feed_forward, "transitions") == replay_ratio(recurrent, "sequences") > 1
