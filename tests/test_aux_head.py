"""Game-feature head (Lample & Chaplot 2017) and Arnold's regularizers: labels through replay against a naive
reference, the BCE loss learning a known answer (DQN and DRQN, masked), labels from real Doom games, evaluation's
accuracy, config validation, and the train / eval mode convention of dropout and batch norm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import drl.agents.dqn
import drl.agents.drqn
from drl import config
from drl.agent import EnvSpec
from drl.agents.dqn import DQN
from drl.agents.drqn import DRQN
from drl.envs.doom.labels import FeatureLabeler
from drl.errors import UserError
from drl.evaluation import evaluate, summarize
from drl.networks import Dropout, QNetwork, doom_encoder, train_mode
from drl.replay import ReplayBuffer, SequenceBatch, StepRecord, TransitionBatch
from drl.vec_env import VecStep, unpack_labels
from tests.test_replay import NaiveStream

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------ labels in replay


def label_of(frames: torch.Tensor) -> torch.Tensor:
    """A frame's label as a function of its content, never 0 for a real frame ([E, 1, H, W] -> uint8 [E])."""
    return (frames.flatten(1).long().sum(1) % 255 + 1).to(torch.uint8)


def fill_labeled(replay, stream, steps, rng):
    first = torch.ones(stream.E, dtype=torch.bool)
    for _ in range(steps):
        obs = stream.obs()
        actions = torch.from_numpy(rng.integers(0, 6, stream.E))
        reward, term, trunc, reset, final = stream.step(actions)
        replay.add(
            StepRecord(
                obs[:, -1:],
                first,
                actions,
                reward,
                term,
                trunc,
                reset,
                final[:, -1:],
                lstm_state=(torch.zeros(1, stream.E, 2), torch.zeros(1, stream.E, 2)),
                labels=label_of(obs[:, -1:]),
                final_labels=label_of(final[:, -1:]),
            )
        )
        first = reset


@pytest.mark.parametrize("stack", [1, 4])
def test_transition_labels_are_those_of_the_sampled_obs(stack):
    rng = np.random.default_rng(stack)
    stream = NaiveStream(3, stack, rng)
    replay = ReplayBuffer(100_000, 3, (1, 3, 3), stack, n_step=3, labels=True, seed=1)
    fill_labeled(replay, stream, 300, rng)
    batch = replay.sample(256)
    assert batch.labels.dtype == torch.uint8 and batch.labels.shape == (256,)
    assert torch.equal(batch.labels, label_of(batch.obs[:, -1:]))  # the newest frame's label


def test_sequence_labels_follow_their_positions_and_are_zero_after_the_episode_end():
    rng = np.random.default_rng(5)
    stream = NaiveStream(3, 1, rng, p_term=0.05, p_trunc=0.04, p_life=0.0)
    replay = ReplayBuffer(
        100_000,
        3,
        (1, 3, 3),
        1,
        n_step=2,
        labels=True,
        seed=2,
        sequences=dict(length=8, burn_in=2, overlap=4, state_size=2),
    )
    fill_labeled(replay, stream, 400, rng)
    batch = replay.sample(64)
    assert batch.labels.shape == batch.actions.shape == (10, 64)
    real = (batch.obs.flatten(2) > 0).any(2)  # [W, B]: a frame of the episode, not padding
    expected = torch.where(real, label_of(batch.obs.flatten(0, 1)).view(10, 64), 0)
    assert torch.equal(batch.labels, expected)
    assert (~real).any(), "the sample should reach past some episode ends"


def test_replay_without_labels_stores_none():
    kwargs = dict(capacity=1000, num_envs=2, frame_shape=(1, 3, 3), frame_stack=1)
    off, on = ReplayBuffer(**kwargs), ReplayBuffer(**kwargs, labels=True)
    assert off.storage.labels is None and "labels" not in off.state_dict()
    assert off.nbytes() == ReplayBuffer.bytes_needed(**kwargs)
    assert (
        on.nbytes() - off.nbytes()
        == on.storage.num_envs * on.storage.capacity
        == ReplayBuffer.bytes_needed(**kwargs, labels=True) - ReplayBuffer.bytes_needed(**kwargs)
    )
    no = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="labels"):  # a replay that stores labels needs them
        on.add(
            StepRecord(
                torch.zeros(2, 1, 3, 3, dtype=torch.uint8),
                first=no,
                action=torch.zeros(2),
                reward=torch.zeros(2),
                terminated=no,
                truncated=no,
                reset=no,
            )
        )


# ------------------------------------------------------------------------------------------ the loss learns


def images_and_labels(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse 6x6 images; bit 0: a bright pixel in the top-left 3x3 corner, bit 1: one in the bottom row."""
    obs = (torch.rand(n, 1, 6, 6, generator=g) < 0.1).to(torch.uint8) * 255
    bit0 = obs[:, 0, :3, :3].flatten(1).any(1)
    bit1 = obs[:, 0, -1].any(1)
    return obs, (bit0.to(torch.uint8) | bit1.to(torch.uint8) << 1)


def make(algo: str, *overrides: str):
    base = {"dqn": "catch", "drqn": "memory"}[algo]
    cfg = config.load(
        base,
        [
            "compute.bf16=off",
            "network.encoder=small",
            "network.hidden=32",
            "network.lstm_size=16",
            "agent.lr=1e-3",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    cls = {"dqn": DQN, "drqn": DRQN}[algo]
    return cls(cfg, EnvSpec((1, 6, 6), torch.uint8, 3), CPU, False, torch.Generator().manual_seed(0))


def transition_batch(n: int, g: torch.Generator) -> TransitionBatch:
    obs, labels = images_and_labels(n, g)
    return TransitionBatch(
        obs=obs,
        actions=torch.randint(0, 3, (n,), generator=g),
        returns=torch.zeros(n),
        next_obs=obs,
        discounts=torch.zeros(n),
        weights=torch.ones(n),
        indices=np.arange(n),
        labels=labels,
    )


def sequence_batch(T: int, B: int, g: torch.Generator) -> SequenceBatch:
    """Masked-out positions carry the wrong labels (all bits flipped): only a masked loss learns the truth."""
    obs, labels = images_and_labels((T + 1) * B, g)
    mask = torch.rand(T, B, generator=g) < 0.5
    labels = labels.view(T + 1, B)
    labels[:T][~mask] ^= 3
    zeros = torch.zeros(1, B, 16)
    return SequenceBatch(
        obs=obs.view(T + 1, B, 1, 6, 6),
        actions=torch.randint(0, 3, (T + 1, B), generator=g),
        returns=torch.zeros(T, B),
        bootstrap=torch.arange(1, T + 1)[:, None].expand(T, B),
        discounts=torch.zeros(T, B),
        mask=mask,
        state=(zeros, zeros.clone()),
        weights=torch.ones(B),
        indices=np.arange(B),
        episode_start=torch.ones(B, dtype=torch.bool),
        labels=labels,
    )


@pytest.mark.slow  # trains until the head learns (tens of seconds each)
@pytest.mark.parametrize("algo", ["dqn", "drqn"])
def test_bce_loss_trains_the_head_on_a_known_answer(algo):
    agent = make(algo, "agent.aux.features=[enemy,health]", "replay.burn_in=0")
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        stats = agent.update(transition_batch(64, g) if algo == "dqn" else sequence_batch(4, 16, g))
    assert {"aux_loss", "aux_accuracy", "q_mean"} <= set(stats)
    obs, labels = images_and_labels(2000, g)
    predicted = agent.predict_features(obs)
    assert predicted.shape == (2000, 2) and predicted.dtype == torch.bool
    accuracy = (predicted == unpack_labels(labels, 2).bool()).float().mean(0)
    assert (accuracy > 0.95).all(), accuracy


def test_the_head_is_off_by_default_and_adds_nothing():
    agent = make("dqn")
    assert agent.predict_features(torch.zeros(2, 1, 6, 6, dtype=torch.uint8)) is None
    assert not hasattr(agent.online, "feature_head")
    assert set(agent.update(transition_batch(8, torch.Generator().manual_seed(0)))) == {
        "q_mean",
        "loss",
        "grad_norm",
        "td_error",
    }


# ------------------------------------------------------------------------------------------ labels from Doom


class FakeLabel:
    def __init__(self, value, name, category):
        self.value, self.object_name, self.object_category = value, name, category


class FakeState:
    def __init__(self, buffer, labels):
        self.labels_buffer, self.labels = np.asarray(buffer, dtype=np.uint8), labels


def test_labeler_counts_visible_pixels_of_each_category():
    labeler = FeatureLabeler(["health", "enemy_drawn", "ammo"])
    buf = np.zeros((4, 4))
    buf[0, :2], buf[1, 0], buf[3, 3] = 10, 20, 30
    seen = lambda *labels: labeler(FakeState(buf, list(labels)))  # noqa: E731
    assert seen(FakeLabel(10, "Zombieman", "Monster")) == 0b010
    assert seen(FakeLabel(20, "DoomPlayer", "Player")) == 0b010  # a deathmatch bot
    assert seen(FakeLabel(10, "DoomPlayer", "Self")) == 0  # the agent's own weapon sprite
    assert seen(FakeLabel(99, "Zombieman", "Monster")) == 0  # listed, but no pixel in the frame
    assert seen(FakeLabel(30, "Medikit", "Health"), FakeLabel(20, "Clip", "Ammo")) == 0b101
    assert seen(FakeLabel(30, "Poison", "Health")) == 0  # health_gathering_supreme's poison
    with pytest.raises(ValueError, match="valid: enemy"):
        FeatureLabeler(["enemies"])


def test_sight_line_against_walls_openings_and_the_field_of_view():
    from drl.envs.doom.labels import in_sight

    # a wall from (5, -1) to (5, 1); a two-sided line from (5, 3) to (5, 5) whose opening spans z 20..60
    walls = (np.array([[5, -1, 5, 1], [5, 3, 5, 5]], float), np.array([[np.inf, -np.inf], [20.0, 60.0]]))
    player = (0.0, 0.0, 0.0, 0.0)  # at the origin at floor height 0, facing east; eye at z 41
    targets = np.array(
        [
            [10, 0, 0],  # behind the wall
            [3, 0, 0],  # in front of it
            [10, 8, 0],  # through the opening: the sight line crosses x=5 at y=4, z ~= 55
            [10, 8, 60],  # through the opening, but the line is too high there (z ~= 85)
            [-3, 0, 0],  # behind the player
            [1, 3, 0],
        ],  # 72 degrees to the left: outside 90, inside 160
        float,
    )
    assert in_sight(player, targets, walls, 90.0).tolist() == [False, True, True, False, False, False]
    assert in_sight(player, targets, walls, 160.0).tolist() == [False, True, True, False, False, True]


@pytest.mark.doom
def test_doom_basic_shows_the_monster_on_the_first_frame_of_every_episode():
    from drl.envs.doom import DoomSettings, DoomVectorEnv

    # basic: one monster, always in view at the start; no health items. 60 tics = episodes of <= 15 steps.
    s = DoomSettings("basic", timeout=60, game_features=("health", "enemy"))
    with DoomVectorEnv(s, num_envs=2, seed=3) as env:
        step = env.reset()
        assert step.labels.dtype == torch.uint8 and step.labels.tolist() == [0b10, 0b10]
        g, starts = torch.Generator().manual_seed(0), 0
        for _ in range(40):
            before = step.labels
            step = env.step(torch.randint(0, env.num_actions, (2,), generator=g))
            assert not (step.labels & 0b01).any(), "no health item in basic"
            if step.reset.any():
                starts += int(step.reset.sum())
                assert (step.labels[step.reset] == 0b10).all(), "the monster is in view at each episode start"
                assert torch.equal(step.final_labels[step.reset], before[step.reset])  # final_obs = last seen
        assert starts >= 4
    with DoomVectorEnv(DoomSettings("basic"), num_envs=1, seed=3) as env:  # off: no labels at all
        assert env.reset().labels is None and env.step(torch.zeros(1, dtype=torch.long)).labels is None


@pytest.mark.doom
def test_deathmatch_gives_labels_although_it_runs_with_viz_nocheat():
    from drl.envs.doom import DoomSettings, DoomVectorEnv

    s = DoomSettings("deathmatch", num_bots=1, timeout=40, game_features=("enemy", "health", "ammo"))
    with DoomVectorEnv(s, num_envs=1, seed=1) as env:
        env.reset()
        step = env.step(torch.zeros(1, dtype=torch.long))
        assert step.labels.dtype == torch.uint8 and env.worker_restarts == 0


# ------------------------------------------------------------------------------------------ evaluation


class LabeledCountdown:
    """Env 0 has episodes of 3 steps, env 1 of 4. A frame's label is 1 on an episode's first frame and on every
    frame of odd-numbered episodes, else 0."""

    num_envs, num_actions, frame_stack, frame_channels, frames_per_step, num_extras = 2, 2, 1, 1, 1, 0

    def __init__(self):
        self.t, self.k, self.lengths = np.zeros(2, int), np.zeros(2, int), np.array([3, 4])

    def _step(self, reset, episodes):
        labels = torch.from_numpy((self.t == 0) | (self.k % 2 == 1)).to(torch.uint8)
        return VecStep(
            obs=torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
            reward=torch.zeros(2),
            terminated=torch.from_numpy(reset),
            truncated=torch.zeros(2, dtype=torch.bool),
            reset=torch.from_numpy(reset),
            episodes=episodes,
            labels=labels,
        )

    def reset(self, seed=None):
        self.t[:], self.k[:] = 0, 0
        return self._step(np.ones(2, bool), [])

    def step(self, actions):
        self.t += 1
        done = self.t == self.lengths
        episodes = [{"env": int(e), "return": 0.0} for e in np.nonzero(done)[0]]
        self.t[done], self.k[done] = 0, self.k[done] + 1
        return self._step(done, episodes)


class AlwaysSees:
    def initial_state(self, n):
        return None

    def reset_state(self, state, reset):
        return state

    def act(self, obs, state, epsilon, extras=None):
        return torch.zeros(obs.shape[0], dtype=torch.long), state

    def predict_features(self, obs, extras=None):
        return torch.ones(obs.shape[0], 1, dtype=torch.bool)


def test_evaluation_reports_the_heads_accuracy_per_episode():
    episodes = evaluate(AlwaysSees(), LabeledCountdown(), 4, epsilon=0.0)
    by_env = {e: [ep["aux_accuracy"] for ep in episodes if ep["env"] == e] for e in (0, 1)}
    assert by_env == {0: pytest.approx([1 / 3, 1]), 1: [0.25, 1]}  # labels 1,0,0 then 1,1,1; 1,0,0,0 then 1,1,1,1
    assert summarize(episodes)["aux_accuracy_mean"] == pytest.approx((1 / 3 + 1 + 0.25 + 1) / 4)


# ------------------------------------------------------------------------------------------ config


@pytest.mark.doom
def test_unknown_feature_names_are_a_one_line_config_error():
    with pytest.raises(config.ConfigError) as e:
        config.load("doom-defend-the-center", ["agent.aux.features=[enemy,medikit]"])
    assert "'medikit'" in str(e.value) and "enemy, health" in str(e.value) and "\n" not in str(e.value)
    assert config.load("doom-basic", ["agent.aux.features=enemy,ammo"]).agent.aux.features == ["enemy", "ammo"]


@pytest.mark.doom
def test_the_head_is_off_in_every_experiment_but_the_features_one_and_deathmatch():
    on = {name: config.load(name).agent.aux.features for name in config.available_experiments()}
    assert {name: f for name, f in on.items() if f} == {
        "doom-defend-the-center-features": ["enemy_drawn"],
        "doom-deathmatch": ["target", "enemy"],
    }  # Arnold's
    cfg = config.load("doom-defend-the-center-features")
    base = config.load("doom-defend-the-center")
    assert cfg.agent.aux.weight == 1.0 and cfg.env == base.env and cfg.network == base.network


def test_kinds_without_labels_refuse_the_head():
    from drl.vec_env import make_env

    cfg = config.load("catch", ["agent.aux.features=[enemy]"])
    with pytest.raises(UserError, match="does not produce"):
        make_env(cfg.env, CPU, seed=0, labels=cfg.agent.aux.features)


# ------------------------------------------------------------------------------------------ dropout, batch norm


def test_batch_norm_sits_after_each_conv_and_leaves_the_plain_layout_alone():
    cfg = config.NetworkConfig(encoder="doom", batch_norm=True)
    kinds = [type(m).__name__ for m in doom_encoder((1, 60, 80), cfg)]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Flatten"]
    plain = doom_encoder((1, 60, 80), config.NetworkConfig(encoder="doom"))
    assert list(plain.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # old checkpoints load
    with pytest.raises(UserError, match="batch_norm"):
        QNetwork(config.NetworkConfig(encoder="mlp", batch_norm=True), (4,), 2)


@pytest.mark.parametrize("algo", ["dqn", "drqn"])
def test_batch_norm_acts_on_running_statistics_and_the_target_never_updates_them(algo):
    agent = make(algo, "network.batch_norm=true", "agent.aux.features=[enemy]")
    bn = lambda net: [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]  # noqa: E731
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        agent.update(transition_batch(32, g) if algo == "dqn" else sequence_batch(4, 8, g))
    assert not agent.online.training and not agent.target.training
    assert bn(agent.online).num_batches_tracked > 0 and bn(agent.online).running_mean.abs().sum() > 0
    assert bn(agent.target).num_batches_tracked == 0 and bn(agent.target).running_mean.abs().sum() == 0
    obs, _ = images_and_labels(8, g)
    if algo == "dqn":
        q_all, q_one = agent.q_values(agent.online, obs), agent.q_values(agent.online, obs[:1])
    else:
        state = agent.initial_state(8)
        q_all = agent.unroll(agent.online, obs[None], None, state)[0][0]
        q_one = agent.unroll(agent.online, obs[None, :1], None, tuple(s[:, :1] for s in state))[0][0]
    assert torch.allclose(q_all[:1], q_one, atol=1e-6), "a row's Q values do not depend on its batch"
    assert torch.equal(agent.predict_features(obs)[:1], agent.predict_features(obs[:1]))
    agent.sync_target()
    assert torch.equal(bn(agent.target).running_mean, bn(agent.online).running_mean)


@pytest.mark.parametrize("algo", ["dqn", "drqn"])
def test_dropout_is_on_in_the_loss_only_and_targets_come_from_eval_mode(algo, monkeypatch):
    agent = make(algo, "network.dropout=0.5", "agent.aux.features=[enemy]")
    g = torch.Generator().manual_seed(3)
    batch = transition_batch(32, g) if algo == "dqn" else sequence_batch(4, 8, g)
    seen = []
    real = drl.agents.dqn.double_q_target

    def spy(q_choice, q_target, *args):
        seen.append((q_choice.clone(), q_target.clone()))
        return real(q_choice, q_target, *args)

    monkeypatch.setattr(drl.agents.dqn, "double_q_target", spy)
    monkeypatch.setattr(drl.agents.drqn, "double_q_target", spy)
    losses = [float(agent.loss(batch)[0].detach()) for _ in range(2)]
    assert losses[0] != losses[1], "dropout acts in the loss's forward"
    assert all(torch.equal(a, b) for a, b in zip(*seen)), "Double DQN's choice and the target use eval mode"
    obs = batch.obs if algo == "dqn" else batch.obs[0]
    assert torch.equal(agent.predict_features(obs), agent.predict_features(obs))
    if algo == "dqn":
        assert torch.equal(agent.q_values(agent.online, obs), agent.q_values(agent.online, obs))
        with train_mode(agent.online):
            assert not torch.equal(agent.online(obs), agent.online(obs))
    assert not agent.online.training


@pytest.mark.parametrize("p", [0.5, 0.2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_drls_dropout_is_torchs_dropout_in_distribution_scale_and_gradient(p, dtype):
    """drl.networks.Dropout against the definition (and nn.Dropout): each element zeroed with probability p,
    independently, the rest scaled by 1 / (1 - p), the gradient the same mask; identity in eval mode."""
    torch.manual_seed(0)
    x = (torch.rand(400, 1000) + 0.5).to(dtype).requires_grad_()  # no zeros of its own
    drop = Dropout(p).train()
    y = drop(x)
    assert y.dtype == dtype and y.shape == x.shape
    zeroed = y == 0
    n = zeroed.numel()
    # the zeroed fraction within 5 binomial standard deviations of p, as torch's own
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(zeroed.float().mean().item() - p) < 5 * sd
    reference = nn.Dropout(p).train()(x.detach().float())
    assert abs((reference == 0).float().mean().item() - zeroed.float().mean().item()) < 10 * sd
    # independent elements: neighbours are zeroed together at rate p^2
    both = (zeroed[:, 1:] & zeroed[:, :-1]).float().mean().item()
    assert abs(both - p * p) < 5 * (p * p * (1 - p * p) / zeroed[:, 1:].numel()) ** 0.5
    # the rest scaled by 1 / (1 - p) (in the input's dtype), the gradient the same mask and scale
    kept = ~zeroed
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    assert torch.equal(y[kept], x.detach()[kept] * scale)
    y.sum().backward()
    assert torch.equal(x.grad, torch.where(kept, scale, torch.zeros((), dtype=dtype)).expand_as(x))
    # the same seed gives the same mask; eval mode is the identity
    torch.manual_seed(7)
    a = drop(x.detach())
    torch.manual_seed(7)
    assert torch.equal(a, drop(x.detach()))
    assert drop.eval()(x) is x


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.doom
def test_a_doom_run_with_the_head_logs_its_loss_and_evaluates_its_accuracy(tmp_path):
    from drl.api import learn

    cfg = config.load(
        "doom-basic",
        [
            "agent.aux.features=[enemy]",
            "total_steps=320",
            "env.num_envs=2",
            "env.doom.timeout=60",
            "agent.learning_starts=160",
            "agent.train_freq=16",
            "agent.batch_size=4",
            "replay.capacity=2000",
            "eval.interval=1000000",
            "eval.episodes=2",
            "eval.num_envs=2",
            "log_interval=80",
            "checkpoint_interval=1000000",
            "tracking.wandb=off",
            "compute.threads=1",
            "compute.bf16=off",
        ],
    )
    result = learn(cfg, tmp_path / "run")
    train = [row for row in result.metrics("train") if "train/aux_loss" in row]
    assert train and all(0.0 <= row["train/aux_accuracy"] <= 1.0 for row in train)
    assert 0.0 <= result.eval["aux_accuracy_mean"] <= 1.0
    assert result.metrics("eval")[-1]["aux_accuracy_mean"] == result.eval["aux_accuracy_mean"]
