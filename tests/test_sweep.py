"""``python -m drl.sweep`` on the catch experiment with real short trials: pruning stops a trial early, a resumed
sweep continues its count, the best config trains, worker processes share the study, a bad space is one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from drl.metrics import read_metrics
from tests import helpers

pytestmark = pytest.mark.slow

optuna = pytest.importorskip("optuna")

ENV = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
BUDGET = 4000
# catch settings that learn within 3,000 steps (return about 0.5 there), so a trial that cannot learn is below it
LEARNS = [
    f"total_steps={BUDGET}",
    "eval.interval=1000",
    "eval.episodes=16",
    "eval.num_envs=16",
    "log_interval=500",
    "agent.train_freq=8",
    "agent.learning_starts=500",
    "agent.eps_decay_steps=2000",
    "agent.target_update_interval=500",
    "compute.threads=1",
    "tracking.wandb=off",
]
GOOD = "agent.lr: {type: float, low: 1e-3, high: 2e-3, log: true}\n"
CANNOT_LEARN = "agent.lr: {type: float, low: 1e-9, high: 2e-9, log: true}\n"


def cli(module: str, *args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return helpers.cli(module, *args, env=env or ENV, timeout=timeout)


def sweep(tmp: Path, space: str, trials: int, *extra) -> subprocess.CompletedProcess:
    path = tmp / f"space-{abs(hash(space))}.yaml"
    path.write_text(space)
    return cli(
        "drl.sweep",
        "catch",
        *LEARNS,
        "--space",
        path,
        "--trials",
        trials,
        "--out",
        tmp / "sweep",
        "--prune-startup",
        1,
        *extra,
    )


def study(tmp: Path):
    return optuna.load_study(study_name="catch-sweep", storage=f"sqlite:///{tmp / 'sweep' / 'optuna.db'}")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A sweep of one trial that learns, then the same study continued to 2 trials with a space that cannot."""
    tmp = tmp_path_factory.mktemp("sweep")
    first = sweep(tmp, GOOD, 1)
    assert first.returncode == 0, first.stderr[-3000:]
    second = sweep(tmp, CANNOT_LEARN, 2)
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp, first, second


def test_a_resumed_sweep_continues_its_trial_count(swept):
    tmp, first, second = swept
    assert "0 of 1 trials ended, running 1" in first.stdout
    assert "1 of 2 trials ended, running 1" in second.stdout
    assert sorted(p.name for p in (tmp / "sweep").glob("trial-*")) == ["trial-0000", "trial-0001"]
    assert [t.number for t in study(tmp).trials] == [0, 1]
    again = sweep(tmp, GOOD, 2)  # the count is reached: nothing more runs
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 of 2 trials ended, running 0" in again.stdout
    assert len(study(tmp).trials) == 2 and not (tmp / "sweep" / "trial-0002").exists()


def test_a_trial_below_the_median_is_pruned_early_and_stops_cleanly(swept):
    tmp, _, second = swept
    complete, pruned = study(tmp).trials
    assert complete.state == optuna.trial.TrialState.COMPLETE and pruned.state == optuna.trial.TrialState.PRUNED
    full = read_metrics(tmp / "sweep" / "trial-0000" / "metrics.jsonl")
    cut = read_metrics(tmp / "sweep" / "trial-0001" / "metrics.jsonl")
    assert max(r["env_steps"] for r in full) == BUDGET
    stopped = max(r["env_steps"] for r in cut)
    assert stopped < BUDGET, "the pruned trial trained fewer env steps than the budget"
    evals = [r for r in cut if r["event"] == "eval"]
    assert evals[-1]["env_steps"] == stopped, "it stopped at the evaluation that pruned it"
    assert pruned.intermediate_values == {r["env_steps"]: r["return_mean"] for r in evals}
    from drl import checkpoint

    assert (
        checkpoint.load(tmp / "sweep" / "trial-0001" / "checkpoints" / "latest.pt")["counters"]["env_steps"] == stopped
    ), "a clean stop: the checkpoint is written at the stop"
    assert f"trial 1 pruned at {stopped:,} env steps" in second.stdout


def test_the_summary_table_lists_every_trial(swept):
    _, _, second = swept
    lines = second.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["trial", "state", "value", "env_steps"])
    assert "agent.lr" in lines[header]
    assert [line.split()[:2] for line in lines[header + 1 : header + 3]] == [["0", "complete"], ["1", "pruned"]]
    assert "no parameter importance: it needs 2 completed trials, the study has 1" in second.stdout
    assert not (swept[0] / "sweep" / "importance.png").exists()


def test_the_best_config_is_a_yaml_that_drl_train_trains(swept, tmp_path):
    tmp, _, _ = swept
    best = tmp / "sweep" / "best.yaml"
    data = yaml.safe_load(best.read_text())
    assert data["agent"]["lr"] == pytest.approx(study(tmp).best_params["agent.lr"])
    assert study(tmp).best_trial.number == 0
    run_dir = tmp_path / "best-run"
    proc = cli("drl.train", best, "total_steps=1000", "--run-dir", run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert trained["agent"]["lr"] == data["agent"]["lr"] and trained["name"] == "catch"
    assert max(r["env_steps"] for r in read_metrics(run_dir / "metrics.jsonl")) >= 1000


def test_worker_processes_share_the_study_and_importance_is_plotted(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(GOOD + "network.hidden: {type: categorical, choices: [16, 32]}\n")
    proc = cli(
        "drl.sweep",
        "catch",
        "total_steps=600",
        "eval.interval=300",
        "eval.episodes=8",
        "eval.num_envs=8",
        "agent.learning_starts=200",
        "compute.threads=1",
        "tracking.wandb=off",
        "--space",
        space,
        "--trials",
        3,
        "--jobs",
        2,
        "--pruner",
        "none",
        "--out",
        tmp_path / "sweep",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="catch-sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}").trials
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["agent.lr"] for t in trials}) == 3, "the workers' samplers draw different values"
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "sweep" / "importance.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.parametrize(
    "space, needles",
    [
        (
            "agent.lrr: {type: float, low: 1e-4, high: 1e-2}\n",
            ["unknown config key 'agent.lrr'", "did you mean agent.lr"],
        ),
        ("agent.lr: {type: float, low: 1e-4, high: 2}\n", ["agent.lr=2.0", "must be <= 1.0"]),
        ("agent.n_step: {type: int, low: 0, high: 3}\n", ["agent.n_step=0", "must be >= 1"]),
        ("network.hidden: {type: categorical, choices: [32, -1]}\n", ["network.hidden=-1", "must be >= 1"]),
        ("agent.lr: {type: float, low: 0.0, high: 1e-2, log: true}\n", ["agent.lr", "low > 0"]),
        ("agent.lr: {type: uniform, low: 1e-4, high: 1e-2}\n", ["agent.lr", "type: float, int or categorical"]),
    ],
)
def test_a_bad_space_is_one_line_exit_2_before_any_trial(tmp_path, space, needles):
    path = tmp_path / "space.yaml"
    path.write_text(space)
    proc = cli("drl.sweep", "catch", "--space", path, "--trials", 2, "--out", tmp_path / "sweep")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drl.sweep: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "sweep").exists(), "nothing is written before the space is valid"


def test_missing_optuna_is_one_line_naming_the_install(tmp_path):
    fake = tmp_path / "shadow" / "optuna"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named optuna')\n")
    space = tmp_path / "space.yaml"
    space.write_text(GOOD)
    proc = cli(
        "drl.sweep",
        "catch",
        "--space",
        space,
        "--trials",
        1,
        "--out",
        tmp_path / "sweep",
        env={**ENV, "PYTHONPATH": str(fake.parent)},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "pip install optuna" in lines[0], proc.stderr[-3000:]


def test_an_eval_hook_stops_the_run_cleanly_at_that_evaluation(tmp_path):
    import drl
    from drl import checkpoint
    from drl.api import create_run_dir

    cfg = drl.load_config("catch", overrides=LEARNS)
    seen = []
    with drl.Trainer(cfg, create_run_dir(cfg, tmp_path / "run")) as trainer:
        trainer.add_eval_hook(lambda row: seen.append(row["env_steps"]) or len(seen) == 2)
        out = trainer.run()
    assert out["stopped_early"] and out["env_steps"] == seen[-1] < BUDGET and len(seen) == 2
    assert checkpoint.load(tmp_path / "run" / "checkpoints" / "latest.pt")["counters"]["env_steps"] == seen[-1]
