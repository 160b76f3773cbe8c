"""drl.compare on real short runs: two experiments x two seeds (made with drl.train --seeds, one of them --parallel)."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from drl.metrics import read_metrics
from drl.wandb_records import find_run_files, read_run
from tests.helpers import FAST_CATCH as _FAST, ROOT, offline_env

FAST_CATCH = ["total_steps=2500", *_FAST]


def cli(module: str, *args, env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    env = offline_env(tmp)
    # group "catch": two seeds in sequence, tracked offline (one W&B group)
    a = cli("drl.train", "catch", *FAST_CATCH, "--seeds", "0,1", "--run-dir", tmp / "a", env=env)
    assert a.returncode == 0, a.stderr[-2000:]
    # group "catch-fast": another learning rate, two seeds at once, tracking off
    b = cli("drl.train", "catch", *FAST_CATCH, "name=catch-fast", "agent.lr=0.003", "tracking.wandb=off",
            "--seeds", "0,1", "--parallel", "2", "--run-dir", tmp / "b", env=env)
    assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-2000:]
    assert "[seed 0]" in b.stdout and "[seed 1]" in b.stdout
    return tmp, env


def final_scores(run_dirs: list[Path], metric: str = "return_mean") -> list[float]:
    return [[r for r in read_metrics(d / "metrics.jsonl") if r["event"] == "eval"][-1][metric] for d in run_dirs]


def test_seeds_make_one_run_dir_and_group_each(runs):
    tmp, _ = runs
    for group, name in (("a", "catch"), ("b", "catch-fast")):
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
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| catch")}
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
        assert float(rows[group][5].replace(",", "")) > 0  # steps per second


def test_compare_prefix_and_measure_names(runs):
    tmp, env = runs
    proc = cli("drl.compare", tmp / "a" / "seed", "--out", tmp / "out2", "--metric", "length_mean", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp / "out2" / "curves_length_mean.png").is_file()
    assert "9.000 ± 0.000" in proc.stdout  # catch episodes always last 9 steps


@pytest.mark.parametrize("args, needle", [
    (["/nonexistent/runs"], "no runs found"),
    (["--metric", "kills_mean"], "no run has eval metric 'kills_mean'"),
    (["--wandb", "someone/drl"], "--wandb"),
    (["--wandb", "no-slash"], "ENTITY/PROJECT"),
])
def test_compare_errors_are_one_line_exit_2(runs, args, needle):
    tmp, env = runs
    if args[0] == "--metric":
        args = [tmp / "a", *args]
    proc = cli("drl.compare", *args, "--out", tmp / "out3", env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("drl.compare: error:") and needle in lines[-1]
    assert not [l for l in lines if "Traceback" in l]
