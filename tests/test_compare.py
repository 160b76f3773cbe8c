"""drl.compare on real short runs (two experiments x two seeds, made with drl.train --seeds, one of them --parallel),
on the committed runs in docs/runs/ and on small run directories written here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

from drl import compare
from drl.metrics import read_metrics
from drl.wandb_records import find_run_files, read_run
from tests.helpers import FAST_CATCH as _FAST
from tests.helpers import ROOT, cli, offline_env

pytestmark = pytest.mark.slow

FAST_CATCH = ["total_steps=2500", *_FAST]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    env = offline_env(tmp)
    # group "catch": two seeds in sequence, tracked offline (one W&B group)
    a = cli("drl.train", "catch", *FAST_CATCH, "--seeds", "0,1", "--run-dir", tmp / "a", env=env)
    assert a.returncode == 0, a.stderr[-2000:]
    # group "catch-fast": another learning rate, two seeds at once, tracking off
    b = cli(
        "drl.train",
        "catch",
        *FAST_CATCH,
        "name=catch-fast",
        "agent.lr=0.003",
        "tracking.wandb=off",
        "--seeds",
        "0,1",
        "--parallel",
        "2",
        "--run-dir",
        tmp / "b",
        env=env,
    )
    assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-2000:]
    assert "[seed 0]" in b.stdout and "[seed 1]" in b.stdout
    return tmp, env


def final_scores(run_dirs: list[Path], metric: str = "return_mean") -> list[float]:
    return [[r for r in read_metrics(d / "metrics.jsonl") if r["event"] == "eval"][-1][metric] for d in run_dirs]


def test_seeds_make_one_run_dir_and_group_each(runs):
    tmp, _ = runs
    for group, _name in (("a", "catch"), ("b", "catch-fast")):
        dirs = sorted((tmp / group).iterdir())
        assert [d.name for d in dirs] == ["seed0", "seed1"]
        for seed, d in enumerate(dirs):
            assert f"seed: {seed}" in (d / "config.yaml").read_text()
            assert (d / "checkpoints" / "latest.pt").is_file()
    records = [read_run(find_run_files(d)[0]) for d in sorted((tmp / "a").iterdir())]
    assert [r["run"]["group"] for r in records] == ["catch", "catch"]
    assert [r["config"]["seed"] for r in records] == [0, 1]
    assert not list((tmp / "b").glob("*/wandb"))  # tracking.wandb=off writes nothing


def test_compare_writes_curves_and_a_consistent_table(runs):
    tmp, env = runs
    out = tmp / "out"
    proc = cli("drl.compare", tmp / "a", tmp / "b", "--out", out, "--threshold", "-0.9", env=env)
    assert proc.returncode == 0, proc.stderr
    png, svg = out / "curves_return_mean.png", out / "curves_return_mean.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert ET.parse(svg).getroot().tag.endswith("svg")

    table = (out / "table_return_mean.md").read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in table.splitlines()
        if line.startswith("| catch")
    }
    assert set(rows) == {"catch", "catch-fast"}
    assert "catch" in proc.stdout and "catch-fast" in proc.stdout
    summary = json.loads((out / "summary_return_mean.json").read_text())["groups"]
    for group, sub in (("catch", "a"), ("catch-fast", "b")):
        finals = np.array(final_scores(sorted((tmp / sub).iterdir())))
        seeds, score, iqm = rows[group][0], rows[group][1], rows[group][2]
        mean, std = (float(x) for x in score.split("±"))
        assert seeds == "2"
        assert abs(mean - finals.mean()) < 1e-3 and abs(std - finals.std(ddof=1)) < 1e-3
        assert abs(float(iqm) - finals.mean()) < 1e-3  # two seeds: nothing is trimmed
        assert np.allclose(summary[group]["final_values"], finals)
        reached = rows[group][4]
        assert reached.startswith("not reached") or reached.endswith("/2)")
        assert abs(float(rows[group][5].replace(",", "")) - learning_sps_reference(tmp / sub)) <= 0.5


def learning_sps_reference(group_dir: Path) -> float:
    """Mean over the group's runs of each run's median steps/s over the train rows that follow a train row whose
    update count was already above 0 (the intervals spent wholly learning)."""
    medians = []
    for run_dir in sorted(p for p in group_dir.iterdir() if (p / "metrics.jsonl").is_file()):
        train = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]
        learning = [train[i]["sps"] for i in range(1, len(train)) if train[i - 1]["updates"] > 0]
        assert learning and len(learning) < len(train)  # the prefill rows are there, and left out
        medians.append(float(np.median(learning)))
    return float(np.mean(medians))


def test_compare_prefix_and_measure_names(runs):
    tmp, env = runs
    proc = cli("drl.compare", tmp / "a" / "seed", "--out", tmp / "out2", "--metric", "length_mean", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp / "out2" / "curves_length_mean.png").is_file()
    assert "9.000 ± 0.000" in proc.stdout  # catch episodes always last 9 steps


def test_a_group_of_one_run_shows_no_spread(runs):
    tmp, env = runs
    seed_dir = sorted(p for p in (tmp / "a").iterdir() if (p / "metrics.jsonl").is_file())[0]
    proc = cli("drl.compare", seed_dir, "--out", tmp / "out_one", env=env)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("catch "))
    assert "(one run)" in row and "±" not in row, row
    summary = json.loads((tmp / "out_one" / "summary_return_mean.json").read_text())
    assert summary["groups"]["catch"]["final_std"] is None


@pytest.mark.parametrize(
    "args, needle",
    [
        (["/nonexistent/runs"], "no runs found"),
        (["--metric", "kills_mean"], "no run has eval metric 'kills_mean'"),
        (["--wandb", "someone/drl"], "--wandb"),
        (["--wandb", "no-slash"], "ENTITY/PROJECT"),
    ],
)
def test_compare_errors_are_one_line_exit_2(runs, args, needle):
    tmp, env = runs
    if args[0] == "--metric":
        args = [tmp / "a", *args]
    proc = cli("drl.compare", *args, "--out", tmp / "out3", env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("drl.compare: error:") and needle in lines[-1]
    assert not [l for l in lines if "Traceback" in l]


# ------------------------------------------------------------------ seeds, environments, training returns, IQM
DOCS_RUNS = ROOT / "docs" / "runs"


def write_run(
    path: Path, name: str, seed: int, env: dict, evals: list, episodes: list = (), frame_skip: int = 4, train: list = ()
) -> Path:
    """A run directory as drl.train leaves it: config.yaml, and metrics.jsonl with eval rows ``(env_steps,
    return_mean)``, episode rows ``(env_steps, return)`` and train rows ``(env_steps, sps, updates so far)`` (by
    default one, without an update count)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"name": name, "seed": seed, "env": env}))
    rows = [{"event": "episode", "env_steps": s, "return": r, "length": 10} for s, r in episodes]
    rows += [{"event": "eval", "env_steps": s, "return_mean": v} for s, v in evals]
    rows += [
        {"event": "train", "env_steps": s, "sps": sps, "recent_return": 0.0, "updates": updates}
        for s, sps, updates in train
    ]
    if not train:
        rows.append({"event": "train", "env_steps": evals[-1][0], "sps": 100.0, "recent_return": 0.0})
    rows.sort(key=lambda row: row["env_steps"])  # stable: episodes before the eval at the same step
    with open(path / "metrics.jsonl", "w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({**row, "frames": row["env_steps"] * frame_skip, "wall_time": float(i)}) + "\n")
    return path


def run_compare(tmp_path: Path, *args) -> tuple[subprocess.CompletedProcess, dict, dict]:
    """drl.compare's CLI; returns the process, the summary JSON's groups and the markdown table as
    {group: {column header: cell}}."""
    out = tmp_path / "out"
    proc = cli("drl.compare", *args, "--out", out, env=offline_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in (out / "table_return_mean.md").read_text().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    table = {
        cells[0]: dict(zip(header, cells)) for cells in ([c.strip() for c in l.split("|")[1:-1]] for l in lines[2:])
    }
    return proc, json.loads((out / "summary_return_mean.json").read_text())["groups"], table


def figure_for(inputs: list, **kwargs):
    """The eval figure drl.compare draws for these run directories (kept open to inspect)."""
    groups = compare.group_runs(compare.load_local([str(i) for i in inputs], "return_mean"))
    curves = {g: [compare.eval_curve(r) for r in runs] for g, runs in groups.items()}
    return compare.curves_figure(curves, groups, "eval return_mean", "eval return_mean", **kwargs)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]


def test_a_repeated_seed_counts_once(tmp_path):
    # the committed Pong run and its re-run are both seed 0 of experiment atari-pong
    proc, summary, table = run_compare(tmp_path, DOCS_RUNS / "atari-pong", DOCS_RUNS / "atari-pong-v2")
    assert table["atari-pong"]["seeds"] == "1 (2 runs; seed 0 repeated)"
    assert "1 (2 runs; seed 0 repeated)" in proc.stdout
    assert re.search(r"warning: group 'atari-pong': seed 0 is repeated .*atari-pong-v2", proc.stderr)
    s = summary["atari-pong"]
    assert (s["seeds"], s["num_runs"], s["repeated_seeds"], s["seed_values"]) == (1, 2, [0], [0, 0])
    fig = figure_for([DOCS_RUNS / "atari-pong", DOCS_RUNS / "atari-pong-v2"])
    assert legend_texts(fig) == ["atari-pong: 1 seed (2 runs; seed 0 repeated)"]

    # three runs of seeds 0, 0, 1: two seeds; statistics still over the three runs
    catch = {"kind": "catch"}
    for i, (seed, final) in enumerate([(0, 1.0), (0, 0.0), (1, 0.5)]):
        write_run(tmp_path / f"r{i}", "catch-x", seed, catch, [(100, 0.0), (200, final)])
    write_run(tmp_path / "other" / "seed0", "catch-y", 0, catch, [(100, 0.0), (200, 1.0)])
    write_run(tmp_path / "other" / "seed1", "catch-y", 1, catch, [(100, 0.0), (200, 1.0)])
    proc, summary, table = run_compare(tmp_path, tmp_path / "r", tmp_path / "other")
    assert table["catch-x"]["seeds"] == "2 (3 runs; seed 0 repeated)" and table["catch-y"]["seeds"] == "2"
    assert summary["catch-x"]["final_mean"] == pytest.approx(0.5) and summary["catch-x"]["num_runs"] == 3
    assert "'catch-x': seed 0 is repeated" in proc.stderr and "'catch-y': seed" not in proc.stderr
    assert legend_texts(figure_for([tmp_path / "other"])) == ["catch-y: 2 seeds"]


@pytest.mark.parametrize(
    "env, name",
    [
        ({"kind": "atari", "game": "pong", "doom": {}}, "atari pong"),
        ({"kind": "doom", "game": "pong", "doom": {"scenario": "Deadly_Corridor"}}, "doom deadly_corridor"),
        ({"kind": "doom", "doom": {}}, "doom health_gathering"),  # DoomSettings' default scenario
        ({"kind": "doom", "doom": "basic"}, "doom basic"),
        ({"kind": "doom"}, "doom health_gathering"),
        ({"kind": "memory", "game": "pong", "size": 6}, "memory"),  # env.game is an unused default there
        ({"kind": "gym", "id": "MinAtar/Breakout-v1", "kwargs": {}}, "gym MinAtar/Breakout-v1"),
        ({"kind": "procgen", "game": "coinrun"}, "procgen coinrun"),
        ({"game": "pong"}, "unknown env"),
        ("not a section", "unknown env"),
        (None, "unknown env"),
    ],
)
def test_env_name_from_config(env, name):
    assert compare.env_name({"name": "x", "env": env}) == name
    assert compare.env_name({}) == compare.env_name(None) == "unknown env"


@pytest.mark.doom
def test_each_environment_gets_its_own_panel_and_table_rows(tmp_path):
    doom, pong = DOCS_RUNS / "doom-health-gathering", DOCS_RUNS / "atari-pong"
    proc, summary, table = run_compare(tmp_path, doom, pong)
    for stem in ("curves_return_mean", "curves_train_return"):
        svg = (tmp_path / "out" / f"{stem}.svg").read_text()
        assert len(re.findall(r'<g id="axes_\d+">', svg)) == 2, stem
    assert table["atari-pong"]["env"] == summary["atari-pong"]["env"] == "atari pong"
    assert table["doom-health-gathering"]["env"] == summary["doom-health-gathering"]["env"] == "doom health_gathering"

    fig = figure_for([doom, pong], threshold=0.0)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {"atari pong", "doom health_gathering"}
    assert 2000 < panels["doom health_gathering"].get_ylim()[1] < 2500  # Doom's best eval is 2,100
    assert -25 < panels["atari pong"].get_ylim()[0] and panels["atari pong"].get_ylim()[1] < 25  # Pong: -21..21
    assert [t.get_text() for t in panels["atari pong"].get_legend().get_texts()] == [
        "atari-pong: 1 seed",
        "threshold 0",
    ]

    # the same environment: one panel, no env column (the table as before)
    proc, summary, table = run_compare(tmp_path / "memory", DOCS_RUNS / "memory-drqn", DOCS_RUNS / "memory-dqn")
    assert "env" not in table["memory-dqn"] and summary["memory-dqn"]["env"] == "memory"
    svg = (tmp_path / "memory" / "out" / "curves_return_mean.svg").read_text()
    assert len(re.findall(r'<g id="axes_\d+">', svg)) == 1
    assert len(figure_for([DOCS_RUNS / "memory-drqn", DOCS_RUNS / "memory-dqn"]).axes) == 1


def test_a_name_run_on_two_environments_is_split(tmp_path):
    write_run(tmp_path / "a", "same-name", 0, {"kind": "atari", "game": "pong"}, [(100, -21.0), (200, -20.0)])
    write_run(tmp_path / "b", "same-name", 1, {"kind": "atari", "game": "breakout"}, [(100, 1.0), (200, 30.0)])
    proc, summary, _ = run_compare(tmp_path, tmp_path / "a", tmp_path / "b")
    assert set(summary) == {"same-name [atari pong]", "same-name [atari breakout]"}
    assert "'same-name' has runs of several environments" in proc.stderr


def test_training_return_curves(tmp_path):
    catch = {"kind": "catch"}
    evals = [(10, 0.0), (30, 1.0)]
    # seed 0: two episodes end at step 10 (two envs); window 2 -> trailing means 0, 1, 3, 5
    write_run(tmp_path / "x" / "seed0", "catch-x", 0, catch, evals, [(10, 0.0), (10, 2.0), (20, 4.0), (30, 6.0)])
    write_run(tmp_path / "x" / "seed1", "catch-x", 1, catch, evals, [(10, 10.0), (20, 10.0), (30, 10.0)])
    write_run(tmp_path / "x" / "seed2", "catch-x", 2, catch, evals)  # no episode rows: left out of that figure
    run = compare.load_local([str(tmp_path / "x" / "seed0")], "return_mean")[0]
    frames, smoothed = compare.train_return_curve(run, window=2)
    assert frames.tolist() == [40, 80, 120] and smoothed.tolist() == [1.0, 3.0, 5.0]

    proc, summary, table = run_compare(tmp_path, tmp_path / "x", "--train-window", "2")
    png, svg = tmp_path / "out" / "curves_train_return.png", tmp_path / "out" / "curves_train_return.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and ET.parse(svg).getroot().tag.endswith("svg")
    assert "1 of 3 runs have no training episodes" in proc.stderr
    s = summary["catch-x"]
    assert s["train_window"] == 2 and s["train_return_final_values"] == [5.0, 10.0]
    assert s["train_return_final_mean"] == 7.5 and s["train_return_final_iqm"] == 7.5
    assert table["catch-x"]["train return, last 2 ep. (mean ± std)"] == f"7.500 ± {np.std([5, 10], ddof=1):.3f}"

    # the mean over seeds on the common grid (frames 40..120), with the bootstrap CI around it
    groups = compare.group_runs(compare.load_local([str(tmp_path / "x")], "return_mean"))
    curves = {g: [compare.train_return_curve(r, 2) for r in runs if r.episodes] for g, runs in groups.items()}
    ax = compare.curves_figure(curves, groups, "training return", "training return").axes[0]
    mean_line = next(l for l in ax.get_lines() if l.get_label().startswith("catch-x"))
    assert mean_line.get_xdata()[0] == 40 and mean_line.get_xdata()[-1] == 120
    assert np.allclose(mean_line.get_ydata()[[0, -1]], [(1 + 10) / 2, (5 + 10) / 2])


def test_train_window_must_be_positive(tmp_path):
    write_run(tmp_path / "r", "catch-x", 0, {"kind": "catch"}, [(10, 0.0)])
    proc = cli(
        "drl.compare", tmp_path / "r", "--train-window", "0", "--out", tmp_path / "out", env=offline_env(tmp_path)
    )
    assert proc.returncode == 2 and "--train-window must be at least 1" in proc.stderr.strip().splitlines()[-1]


def test_interquartile_mean_over_seeds(tmp_path):
    for seed, final in enumerate([0.0, 1.0, 2.0, 100.0]):
        write_run(
            tmp_path / f"seed{seed}",
            "catch-x",
            seed,
            {"kind": "catch"},
            [(10, 0.0), (20, final)],
            [(5, final), (20, final + 1)],
        )
    _, summary, table = run_compare(tmp_path, tmp_path / "seed")
    row, s = table["catch-x"], summary["catch-x"]
    assert row["IQM"] == "1.500" and row["final return_mean (mean ± std)"].startswith("25.750 ± ")
    assert s["final_iqm"] == 1.5 and s["final_mean"] == 25.75
    assert s["train_return_final_iqm"] == 2.0  # last 20 episodes' means 0.5, 1.5, 2.5, 50.5 -> IQM of 1.5, 2.5


def test_steps_per_second_leave_out_the_replay_prefill(tmp_path):
    """Before learning_starts the loop logs ~10x its learning speed. The row that straddles learning_starts is left
    out too; each run's median over the rest, averaged over runs (here medians 70 and 80)."""
    prefill = [(1000, 1000.0, 0), (2000, 1100.0, 0), (3000, 400.0, 120)]
    for seed, learning in enumerate([[60.0, 70.0, 90.0], [80.0, 50.0, 80.0]]):
        train = prefill + [(4000 + 1000 * i, sps, 370 + 250 * i) for i, sps in enumerate(learning)]
        write_run(
            tmp_path / f"seed{seed}", "pong-x", seed, {"kind": "atari", "game": "pong"}, [(6000, -20.0)], train=train
        )
    _, summary, table = run_compare(tmp_path, tmp_path / "seed")
    assert summary["pong-x"]["sps_learning"] == 75.0 and table["pong-x"]["steps/s learning"] == "75"


def test_compare_without_matplotlib_is_a_one_line_error(tmp_path):
    write_run(tmp_path / "seed0", "catch-x", 0, {"kind": "catch"}, [(10, 0.0)])
    code = (
        "import sys; sys.modules['matplotlib'] = None; from drl.cli import run_cli; from drl.compare import main; "
        "run_cli('drl.compare', main)"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "seed0"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=offline_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "drl.compare: error: drl.compare draws its curves with matplotlib, which is not installed here: "
        "pip install matplotlib (or reinstall drl)"
    ]
    assert not out.exists()  # nothing written
