"""drl as a framework: registries, typed per-kind env config, Gymnasium envs, the Python API, user modules."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import numpy as np
import pytest
import torch

import drl
from drl import config, registry
from drl.errors import UserError
from drl.evaluation import summarize
from drl.registry import Registry
from drl.vec_env import fault_counters
from tests.helpers import ROOT


# ---------------------------------------------------------------- registries
def test_registry_names_unknown_entries_and_refuses_silent_replacement():
    reg = Registry("thing", "section.thing")
    reg.register("alpha", "math:sqrt")  # lazy "module:attribute"

    @reg.register("beta")
    def beta():
        return 2

    assert reg.get("alpha")(9.0) == 3.0 and reg.get("beta") is beta and reg.names() == ["alpha", "beta"]
    with pytest.raises(UserError, match=r"unknown thing 'alpah' \(section.thing\); did you mean alpha\?"):
        reg.get("alpah")
    with pytest.raises(UserError, match="already registered"):
        reg.register("beta", lambda: 3)
    reg.register("beta", len, replace=True)
    assert reg.get("beta") is len


@pytest.mark.parametrize(
    "override,message",
    [
        ("network.encoder=natur", "unknown encoder 'natur' (network.encoder); did you mean nature?"),
        ("agent.algo=dqm", "unknown agent 'dqm' (agent.algo); did you mean dqn?"),
        ("env.kind=atary", "unknown environment kind 'atary' (env.kind); did you mean atari?"),
    ],
)
def test_unknown_registered_names_are_one_line_errors(override, message):
    with pytest.raises(UserError) as err:
        config.load("catch", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- typed env sections
@pytest.mark.doom
def test_each_env_kind_has_its_own_section():
    from drl.envs.atari_config import AtariEnvConfig
    from drl.envs.doom.config import DoomSettingsConfig

    assert type(config.load("atari-pong").env) is AtariEnvConfig
    doom = config.load("doom-deathmatch")
    assert type(doom.env.doom) is DoomSettingsConfig and doom.env.doom.shaping["frag"] == 1.0
    with pytest.raises(config.ConfigError, match=r"unknown config key 'env.game' for env.kind 'doom'"):
        config.load("doom-basic", ["env.game=pong"])  # an Atari key in a Doom run: an error, not ignored
    with pytest.raises(config.ConfigError, match=r"env.doom.num_bots has the wrong type"):
        config.load("doom-deathmatch", ["env.doom.num_bots=many"])
    with pytest.raises(config.ConfigError, match=r"unknown config key 'env.doom.scenarioo'.*env.doom.scenario"):
        config.load("doom-basic", ["env.doom.scenarioo=basic"])
    gym = config.load("cartpole", ["env.kwargs.sutton_barto_reward=true"])
    assert gym.env.kwargs == {"sutton_barto_reward": True}


def test_a_dumped_config_validates_back_to_the_same_sections():
    for name in config.available_experiments():
        cfg = config.load(name)
        again = config.Config.model_validate(cfg.model_dump())
        assert again == cfg and type(again.env) is type(cfg.env), name


def test_run_configs_written_before_env_sections_still_load():
    """docs/runs/ holds config.yaml files with the old single env section (every kind's keys)."""
    pong = config.load_run_config(ROOT / "docs/runs/atari-pong-v2")
    doom = config.load_run_config(ROOT / "docs/runs/doom-health-gathering-v2")
    assert pong.env.game == "pong" and doom.env.doom.scenario == "health_gathering"
    assert not hasattr(doom.env, "game")


def test_empty_experiment_file_and_bad_imports_are_errors(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(config.ConfigError, match="is empty"):
        config.load(str(empty))
    with pytest.raises(UserError, match="cannot import 'no_such_module_xyz'"):
        config.load("catch", imports=["no_such_module_xyz"])


class TaggedConfig(config.EnvSection):
    kind: Literal["tagged"] = "tagged"


def only_red(names: list[str]) -> list[str]:
    if set(names) - {"red"}:
        raise ValueError(f"unknown colour '{sorted(set(names) - {'red'})[0]}'; valid: red")
    return names


def test_the_env_kind_checks_the_game_features_it_labels(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.ENV_KINDS._entries, "tagged", registry.EnvKind(TaggedConfig, "math:sqrt", only_red))
    path = tmp_path / "tagged.yaml"
    path.write_text("env: {kind: tagged}\n")
    with pytest.raises(config.ConfigError, match=r"^agent.aux.features: unknown colour 'blue'; valid: red$"):
        config.load(str(path), ["agent.aux.features=[red,blue]"])
    assert config.load(str(path), ["agent.aux.features=Red"]).agent.aux.features == ["red"]
    assert config.load("catch", ["agent.aux.features=[blue]"]).agent.aux.features == ["blue"]  # make_env refuses


def test_an_env_adds_its_own_measures_to_summaries_and_train_rows():
    class Scored:
        def summarize_episodes(self, episodes):
            return {"best": max(ep["return"] for ep in episodes)}

        def fault_counters(self):
            return {"lost": 2}

    episodes = [{"env": 0, "return": 1.0}, {"env": 1, "return": 3.0}]
    assert summarize(episodes, Scored()) == {**summarize(episodes), "best": 3.0}
    assert list(summarize(episodes)) == ["return_mean", "return_median", "return_std", "return_min", "return_max"]
    assert fault_counters(Scored()) == {"lost": 2} and fault_counters(object()) == {}


# ---------------------------------------------------------------- Gymnasium environments
def test_gym_env_streams_equal_single_gymnasium_envs():
    """Our vector env against plain gymnasium.make envs stepped one by one with the same seeds and actions:
    obs, rewards, flags, final_obs at the same-step autoreset, and the episode reports."""
    import gymnasium as gym

    from drl.envs.gym import GymVecEnv

    n, rng = 3, np.random.default_rng(0)
    vec = GymVecEnv("CartPole-v1", n, torch.device("cpu"), seed=5, frame_stack=2)
    singles = [gym.make("CartPole-v1") for _ in range(n)]
    step = vec.reset(seed=5)
    raw = [env.reset(seed=5 + i)[0] for i, env in enumerate(singles)]
    stacks = [np.concatenate([np.zeros(4, np.float32), o]) for o in raw]
    returns, lengths, resets = np.zeros(n), np.zeros(n, int), 0
    for _ in range(300):
        assert torch.equal(step.obs, torch.from_numpy(np.stack(stacks)))
        actions = rng.integers(0, 2, n)
        step = vec.step(torch.from_numpy(actions))
        for i, env in enumerate(singles):
            o, r, term, trunc, _ = env.step(int(actions[i]))
            returns[i] += r
            lengths[i] += 1
            assert (
                float(step.reward[i]) == r
                and bool(step.terminated[i]) == term
                and bool(step.reset[i]) == (term or trunc)
            )
            nxt = np.concatenate([stacks[i][4:], o.astype(np.float32)])
            if term or trunc:
                resets += 1
                assert torch.equal(step.final_obs[i], torch.from_numpy(nxt))
                assert {"env": i, "return": returns[i], "length": lengths[i]} in step.episodes
                returns[i], lengths[i] = 0, 0
                nxt = np.concatenate([np.zeros(4, np.float32), env.reset()[0]])
            stacks[i] = nxt
    vec.close()
    assert resets >= 10


def test_gym_screens_are_each_envs_own_render():
    """``screens=True`` (videos): ``VecStep.screen`` holds each env's ``render()`` of the state behind obs, the
    frames a plain ``gymnasium.make(render_mode="rgb_array")`` env shows after the same seeds and actions."""
    import gymnasium as gym

    from drl.envs.gym import GymVecEnv

    n, rng = 2, np.random.default_rng(1)
    for mode in ("sync", "async"):
        vec = GymVecEnv("CartPole-v1", n, torch.device("cpu"), seed=3, vectorization=mode, screens=True)
        singles = [gym.make("CartPole-v1", render_mode="rgb_array") for _ in range(n)]
        step = vec.reset(seed=3)
        for i, env in enumerate(singles):
            env.reset(seed=3 + i)
        try:
            for t in range(40):
                assert step.screen.shape == (n, 400, 600, 3) and step.screen.dtype == np.uint8
                for i, env in enumerate(singles):
                    assert np.array_equal(step.screen[i], env.render()), (mode, t, i)
                actions = rng.integers(0, 2, n)
                step = vec.step(torch.from_numpy(actions))
                for i, env in enumerate(singles):
                    _, _, term, trunc, _ = env.step(int(actions[i]))
                    if term or trunc:  # same-step autoreset: the screen already shows the next episode
                        env.reset()
        finally:
            vec.close()
            for env in singles:
                env.close()


def test_gym_async_vectorization_equals_sync():
    from drl.envs.gym import GymVecEnv

    envs = [GymVecEnv("CartPole-v1", 2, torch.device("cpu"), seed=1, vectorization=mode) for mode in ("sync", "async")]
    steps = [env.reset(seed=1) for env in envs]
    gen = torch.Generator().manual_seed(0)
    try:
        for _ in range(60):
            actions = torch.randint(0, 2, (2,), generator=gen)
            for _k, env in enumerate(envs):
                env.step_async(actions)
            steps = [env.step_wait() for env in envs]
            assert torch.equal(steps[0].obs, steps[1].obs) and torch.equal(steps[0].reset, steps[1].reset)
    finally:
        for env in envs:
            env.close()


def test_gym_observation_kinds_and_unsupported_spaces():
    from drl.envs.gym import GymVecEnv

    minatar = GymVecEnv("MinAtar/Breakout-v1", 2, torch.device("cpu"), seed=0)  # bool [10, 10, 4] images
    step = minatar.reset(seed=0)
    assert (
        step.obs.shape == (2, 4, 10, 10)
        and step.obs.dtype == torch.uint8
        and set(step.obs.unique().tolist()) <= {0, 255}
    )
    minatar.close()
    frozen = GymVecEnv("FrozenLake-v1", 2, torch.device("cpu"), seed=0)  # Discrete(16) -> one-hot
    assert frozen.reset(seed=0).obs.sum(dim=1).tolist() == [1.0, 1.0]
    frozen.close()
    with pytest.raises(config.ConfigError, match=r"action space Box.*Discrete actions only"):
        GymVecEnv("Pendulum-v1", 1, torch.device("cpu"))
    with pytest.raises(config.ConfigError, match=r"unknown Gymnasium id 'CartPol-v1'.*CartPole-v1"):
        GymVecEnv("CartPol-v1", 1, torch.device("cpu"))


def test_replay_of_float_vectors_equals_naive_stacks():
    """Vectors are stored as float32 (no uint8 cast, no /255) and stacked like frames, zeros before a start."""
    from drl.replay import ReplayBuffer, StepRecord

    replay = ReplayBuffer(1000, 1, (3,), 2, n_step=1, gamma=0.5, frame_dtype=torch.float32)
    obs = [torch.tensor([[0.25, -1.5, 1000.0]]) * (t + 1) for t in range(6)]
    first = torch.tensor([True])
    for t in range(5):
        done = torch.tensor([t == 2])
        replay.add(
            StepRecord(
                obs[t],
                first,
                torch.tensor([t % 2]),
                torch.tensor([float(t)]),
                done,
                torch.tensor([False]),
                done,
                final_frame=obs[t + 1] if t == 2 else None,
            )
        )
        first = done
    batch = replay.sample(64)
    assert batch.obs.dtype == torch.float32
    for b in range(64):
        t = int(batch.returns[b])  # reward t was given at step t
        expected = torch.cat([obs[t - 1][0] if t not in (0, 3) else torch.zeros(3), obs[t][0]])
        assert torch.equal(batch.obs[b], expected)


# ---------------------------------------------------------------- the Python API and user modules
def test_learn_creates_the_run_and_returns_the_final_evaluation(tmp_path):
    cfg = drl.load_config(
        "catch",
        overrides=[
            "total_steps=3000",
            "eval.interval=1000",
            "agent.learning_starts=500",
            "tracking.wandb=off",
            "compute.threads=1",
        ],
    )
    result = drl.learn(cfg, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "checkpoints" / "latest.pt").exists()
    evals = result.metrics("eval")
    assert result.env_steps >= 3000 and evals[-1]["return_mean"] == result.eval["return_mean"]
    assert {"return_mean", "return_std", "return_median"} <= set(result.eval)
    with pytest.raises(UserError, match="already exists"):
        drl.learn(cfg, run_dir=tmp_path / "run")
    agent = drl.load_agent(tmp_path / "run")
    obs = torch.zeros(5, *agent.spec.obs_shape, dtype=agent.spec.obs_dtype)
    actions, state = agent.act(obs, agent.initial_state(5), epsilon=0.0)
    assert actions.shape == (5,) and state is None


def test_trainer_is_a_context_manager_that_closes_its_envs(tmp_path):
    from drl.api import create_run_dir

    cfg = drl.load_config(
        "cartpole",
        overrides=[
            "total_steps=200",
            "env.vectorization=async",
            "env.num_envs=2",
            "eval.interval=100000",
            "tracking.wandb=off",
        ],
    )
    with drl.Trainer(cfg, create_run_dir(cfg, tmp_path / "run")) as trainer:
        workers = list(trainer.env.vector.processes)
        assert all(p.is_alive() for p in workers)
    assert not any(p.is_alive() for p in workers)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["yaml", "flag"])
def test_custom_env_from_the_cli(tmp_path, how):
    """examples/corridor_env.py registers env.kind 'corridor'; loaded by the YAML's imports or by --import."""
    if how == "yaml":
        args = ["examples/corridor.yaml"]
    else:  # the same experiment without its imports line: the module comes from the command line
        yaml = tmp_path / "corridor.yaml"
        yaml.write_text((ROOT / "examples/corridor.yaml").read_text().replace("imports: [examples.corridor_env]", ""))
        args = [str(yaml), "--import", "examples.corridor_env"]
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "drl.train", *args, "tracking.wandb=off", "compute.threads=1", "--run-dir", str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TQDM_DISABLE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    from drl.metrics import read_metrics

    assert read_metrics(run / "metrics.jsonl")[-1]["return_mean"] == 1.0  # the optimum: straight to the goal
    assert "imports:\n- examples.corridor_env" in (run / "config.yaml").read_text()


@pytest.mark.slow
def test_custom_encoder_and_env_from_python(tmp_path):
    """examples/train_from_python.py: the custom env and the custom encoder, trained and used from Python."""
    proc = subprocess.run(
        [sys.executable, "-m", "examples.train_from_python", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "TQDM_DISABLE": "1", "DRL_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "corridor: final evaluation 1.00" in proc.stdout
    assert "catch with the tiny encoder: final evaluation" in proc.stdout
    catch_score = float(proc.stdout.split("catch with the tiny encoder: final evaluation ")[1].split()[0])
    assert catch_score >= 0.9 and "greedy actions at the start cell: [1, 1, 1, 1]" in proc.stdout
