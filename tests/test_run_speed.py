"""``python -m drl.bench.run_speed``: a real catch run's own files against naive readings of the same files, a
GPU-utilisation log placed on the run's clock, the verdict's branches and bad input."""

from __future__ import annotations

import json
import statistics
from datetime import datetime

import pytest

from drl.bench.run_speed import bound, summarize
from tests.helpers import FAST_CATCH, cli, offline_env


@pytest.fixture(scope="module")
def catch_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run-speed")
    run_dir = tmp / "catch"
    overrides = [*FAST_CATCH, "agent.learning_starts=1500", "total_steps=4000", "tracking.wandb=off"]
    proc = cli("drl.train", "catch", *overrides, "--run-dir", run_dir, env=offline_env(tmp))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def _rows(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


def test_speeds_and_the_first_score_match_a_naive_reading_of_the_metrics(catch_run):
    train, evals = _rows(catch_run, "train"), _rows(catch_run, "eval")
    fill = [r["sps"] for r in train if r["updates"] == 0]
    learning = [b["sps"] for a, b in zip(train, train[1:]) if a["updates"] > 0]  # intervals wholly learning
    rate = [
        (b["updates"] - a["updates"]) / (b["wall_time"] - a["wall_time"])
        for a, b in zip(train, train[1:])
        if a["updates"] > 0
    ]
    assert len(fill) >= 2 and len(learning) >= 2  # the run logged both phases
    score = sorted(r["return_mean"] for r in evals)[len(evals) // 2]  # a score some evaluation reached
    first = next(r for r in evals if r["return_mean"] >= score)

    s = summarize(catch_run, score=score)
    assert s["fill_sps"] == statistics.median(fill)
    assert s["learning_sps"] == statistics.median(learning)
    assert s["updates_per_s"] == pytest.approx(statistics.median(rate))
    assert (s["score_env_steps"], s["score_minutes"]) == (first["env_steps"], first["wall_time"] / 60)
    assert s["device"] == "cpu" and s["bound"].startswith("the updates (on the CPU)")
    assert summarize(catch_run, score=1e9)["score_env_steps"] is None


def test_gpu_samples_count_only_while_learning(catch_run, tmp_path):
    """Samples before learning started read 0 %, during it 40-60 %, after the run 100 %: the median must be the
    learning samples' alone, placed by sessions.jsonl's start time and the train rows' wall_time."""
    session = json.loads((catch_run / "sessions.jsonl").read_text().splitlines()[0])
    start = datetime.fromisoformat(session["started"].replace("Z", "+00:00")).timestamp()
    train = _rows(catch_run, "train")
    begin = start + next(r["wall_time"] for r in train if r["updates"] > 0)
    end = start + train[-1]["wall_time"]
    inside = [40.0 + 20.0 * i / 10 for i in range(11)]
    lines = [f"{begin - 30 + i:.3f},0, 500" for i in range(5)]  # before learning
    lines += [f"{begin + (end - begin) * (i + 0.5) / len(inside):.6f},{u:.0f}, 900" for i, u in enumerate(inside)]
    lines += [f"{end + 5 + i:.3f},100, 900" for i in range(3)]
    lines += ["not,a sample", f"{end + 9:.3f},"]  # what a failed nvidia-smi call leaves
    log = tmp_path / "gpu-util.csv"
    log.write_text("\n".join(lines) + "\n")

    s = summarize(catch_run, gpu_util=log)
    assert s["gpu_util_samples"] == len(inside)
    assert s["gpu_util_median"] == statistics.median(round(u) for u in inside)

    out = cli("drl.bench.run_speed", catch_run, "--gpu-util", log, "--score", "0", env=offline_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"median {s['gpu_util_median']:,.1f} % ({len(inside)} samples)" in out.stdout
    assert f"while learning: {s['learning_sps']:,.1f}" in out.stdout


@pytest.mark.parametrize(
    "summary, verdict",
    [
        ({"fill_sps": 1000.0, "learning_sps": 500.0, "gpu_util_median": 85.0, "device": "cuda"}, "the GPU: busy 85 %"),
        ({"fill_sps": 1000.0, "learning_sps": 850.0, "gpu_util_median": 30.0, "device": "cuda"}, "the envs: "),
        ({"fill_sps": 1000.0, "learning_sps": 100.0, "device": "cpu"}, "the updates (on the CPU): learning keeps 10%"),
        (
            {"fill_sps": 1000.0, "learning_sps": 250.0, "gpu_util_median": 30.0, "device": "cuda"},
            "the learning step's host side (replay sampling, Python, kernel launches): the GPU is busy 30 %",
        ),
        ({"fill_sps": 1000.0, "learning_sps": None, "device": "cuda"}, "unknown: "),
    ],
)
def test_the_verdict_names_the_part_that_bounds_the_run(summary, verdict):
    assert bound(summary).startswith(verdict)


def test_bad_input_is_one_line_and_exit_2(catch_run, tmp_path):
    env = offline_env(tmp_path)
    missing = cli("drl.bench.run_speed", tmp_path / "nowhere", env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"drl.bench.run_speed: error: {tmp_path / 'nowhere'} has no metrics.jsonl; pass a directory written by drl.train"
    ]
    no_log = cli("drl.bench.run_speed", catch_run, "--gpu-util", tmp_path / "none.csv", env=env)
    assert no_log.returncode == 2 and len(no_log.stderr.strip().splitlines()) == 1
    assert "no GPU-utilisation log" in no_log.stderr
