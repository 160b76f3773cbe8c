"""Smoke test of ``python -m drl.bench --quick --skip-sb3``: every section is measured and positive (no timing
assertions: the figures of a quick run mean nothing). About 20-25 s on an idle 2-core machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
def test_quick_bench_writes_every_section(tmp_path):
    out = tmp_path / "tmp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "drl.bench", "--quick", "--skip-sb3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(out.read_text())
    assert {"meta", "pong", "doom", "update", "replay", "vecenv", "memory", "targets"} <= result.keys()

    machine = result["meta"]["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch"]
    assert isinstance(machine["cpu_bf16_native"], bool) and isinstance(machine["amx"], bool)
    assert result["meta"]["quick"] and result["meta"]["errors"] == []
    sections = result["meta"]["section_seconds"]  # where a full bench spends its time (budget: 15 min)
    assert set(sections) == {"pong+doom", "update", "replay", "vecenv", "distributed"}
    assert all(s >= 0 for s in sections.values()) and sum(sections.values()) <= result["meta"]["duration_s"]

    cpu_pong, cpu_doom = result["pong"]["cpu"], result["doom"]["cpu"]
    for run in (
        cpu_pong["drl_same_hp"],
        cpu_pong["drl_same_hp_overlap_flipped"],
        cpu_pong["drl_default"],
        cpu_doom["drl_drqn"],
        cpu_doom["drl_drqn_overlap_flipped"],
    ):
        assert _positive(run["sps"]) and _positive(run["updates_per_s"]) and _positive(run["peak_rss_mb"])
    assert cpu_pong["drl_same_hp"]["num_envs"] == 1 and cpu_pong["drl_same_hp"]["batch_size"] == 32
    assert cpu_doom["drl_drqn"]["algo"] == "drqn"
    assert "skipped" in cpu_pong["sb3"] and cpu_pong["ratio_same_hp_vs_sb3"] is None
    for world, name in ((cpu_pong, "drl_same_hp"), (cpu_doom, "drl_drqn")):  # auto's choice against the other one
        assert _positive(world["overlap_gain"]) and world["overlap_auto"] is world[name]["overlap_env"]
        assert world[f"{name}_overlap_flipped"]["overlap_env"] is not world[name]["overlap_env"]

    cases = result["update"]["cpu"]["cases"]
    precisions = ("fp32", "bf16") if machine["cpu_bf16_native"] else ("fp32",)  # emulated bf16 is skipped
    assert {(c["batch_size"], c["precision"]) for c in cases.values()} == {(b, p) for b in (32, 64) for p in precisions}
    for case in cases.values():
        assert _positive(case["floor_ms"]) and _positive(case["drl_ms"]) and _positive(case["share"])
    if machine["cpu_bf16_native"]:  # acting's precision choice (compute.act_bf16), measured both ways
        acting = result["update"]["cpu"]["acting"]
        assert acting["default"] == "fp32" and {"b1", "b4"} <= acting.keys()
        assert all(_positive(acting[k]["fp32_ms"]) and _positive(acting[k]["bf16_ms"]) for k in ("b1", "b4"))
    layouts = result["update"]["cpu"]["fp32_layouts"]  # the fp32 path's layout choice, measured both ways
    assert {c["batch_size"] for c in layouts.values()} == {32, 64}
    assert all(_positive(c["nchw_ms"]) and _positive(c["channels_last_ms"]) for c in layouts.values())
    dropout = result["update"]["cpu"]["dropout"]  # torch's dropout against drl.networks.Dropout
    assert all(_positive(dropout[p]["torch_ms"]) and _positive(dropout[p]["drl_ms"]) for p in precisions)

    for name in ("atari_84x84", "doom_60x80"):
        replay = result["replay"][name]
        assert _positive(replay["bytes_per_transition"]) and _positive(replay["allocated_bytes"])
        assert replay["allocated_bytes_per_transition"] >= replay["bytes_per_transition"]

    vec = result["vecenv"]["cpu"]
    assert set(vec) == {"atari", "doom", "catch"}
    for kind in vec.values():
        assert kind["counts"] and all(_positive(c["sps"]) for c in kind["counts"].values())

    assert result["memory"] and all(_positive(v) for v in result["memory"].values())
    assert {t["name"] for t in result["targets"]} == {
        "pong_loop_floor_share",
        "pong_plain_loop_share",
        "pong_vs_sb3_bf16" if machine["cpu_bf16_native"] else "pong_vs_sb3_fp32",
        "pong_time_to_18_vs_sb3",
        "update_share",
        "atari_vecenv_sps",
        "doom_vecenv_sps",
        "doom_drqn_vs_sb3",
    }
    # the loop floor's parts: SB3's update, greedy forwards at 1 and 4 envs, one step of 1 and 4 Pong envs
    parts = result["update"]["cpu"]
    assert _positive(parts["floor_same_hp"]["floor_ms"]) and not parts["floor_same_hp"]["double"]
    assert (
        all(_positive(parts["act_floor"][b]["ms"]) for b in ("b1", "b4"))
        and {"1", "4"} <= vec["atari"]["counts"].keys()
    )
    for name in ("drl_same_hp", "drl_default"):  # the floor timed beside drl (drl.bench.paired_floor), >= 1 block
        blocks = cpu_pong[name]["paired_floor_blocks"]
        assert blocks and all(
            _positive(b[k]) for b in blocks for k in ("drl_sps", "update_ms", "act_ms", "env_step_ms", "plain_loop_ms")
        )
        for k in ("drl_update_ms", "drl_sample_ms"):  # drl's own parts in the same blocks (None: no update in one)
            timed = [b[k] for b in blocks if b[k] is not None]
            assert timed and all(_positive(v) for v in timed)
    (share,) = [t for t in result["targets"] if t["name"] == "pong_loop_floor_share"]
    assert _positive(share["measured"])  # drl at SB3's hyperparameters against the loop floor
    time_to_18 = result["time_to_18"]["cpu"]  # no SB3 figure without SB3: no ratio, but the drl side is there
    assert time_to_18.get("ratio") is None and time_to_18["drl_sps"] == cpu_pong["drl_default"]["sps"]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_on_a_device_this_machine_lacks_is_a_one_line_error(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "drl.bench", "--devices", "cuda", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["drl.bench: --devices cuda: this machine has cpu; pick from those"]
    assert not out.exists()


def _naive_frames_to_score(frames, returns, threshold, window):
    for end in range(window, len(returns) + 1):
        if sum(returns[end - window : end]) / window >= threshold:
            return frames[end - 1]
    return None


def test_frames_to_a_training_score_matches_a_naive_scan():
    import numpy as np

    from drl.compare import frames_to_train_return

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 40))
        returns = np.round(rng.normal(10 + trial / 20, 6, n)).tolist()
        frames = np.cumsum(rng.integers(100, 5000, n)).tolist()
        window = int(rng.integers(1, 12))
        assert frames_to_train_return(np.array(frames), np.array(returns), 14.0, window) == _naive_frames_to_score(
            frames, returns, 14.0, window
        )


def test_time_to_score_reads_the_default_configs_runs_and_counts_a_seed_that_never_got_there(tmp_path):
    """Runs are picked by their config (today's atari-pong learning settings), not by their directory's name: a run of
    another lr is left out even when its name looks like a seed run."""
    from drl.bench.score_time import FRAME_SKIP, SB3_ZOO_FRAMES_TO_18, time_to_score
    from drl.config import load, to_yaml

    def write_run(name: str, returns: list[float], overrides: list[str] = ()):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(to_yaml(load("atari-pong", [f"seed={len(name)}", f"name={name}", *overrides])))
        rows = [
            {"event": "episode", "env_steps": 10_000 * (i + 1), "frames": 40_000 * (i + 1), "return": r}
            for i, r in enumerate(returns)
        ]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write_run("pong-a", [-21.0] * 5 + [19.0] * 10)  # 10 games >= 18 end at game 15: 150k steps
    write_run("pong-bb", [-21.0] * 20 + [20.0] * 10, ["compute.threads=1", "total_steps=400000"])  # 300k steps
    write_run("pong-ccc", [17.0] * 40)  # not within 400k steps: counts as never
    write_run("atari-pong-s1", [19.0] * 10, ["agent.lr=1e-4"])  # another config: not counted
    pong = {"cpu": {"drl_default": {"sps": 50.0}, "sb3": {"sps": 25.0}}}
    (row,) = time_to_score(pong, tmp_path).values()
    assert row["drl_runs"] == {"pong-a": 150_000, "pong-bb": 300_000, "pong-ccc": None}
    assert row["drl_steps"] == 300_000  # median of 150k, 300k and "never"
    assert row["drl_minutes"] == 300_000 / 50 / 60
    assert row["sb3_minutes"] == SB3_ZOO_FRAMES_TO_18 / FRAME_SKIP / 25 / 60
    assert row["ratio"] == row["sb3_minutes"] / row["drl_minutes"] and "never reached" in row["note"]
    (missing,) = time_to_score(pong, tmp_path / "no-such-dir").values()  # e.g. installed without docs/runs
    assert "drl_steps" not in missing and "no committed runs" in missing["skipped"]
    # a run stopped before BUDGET without the window leaves the median unknown: leaving it out would keep only the
    # seeds fast enough to get there before their stop
    write_run("pong-dddd", [17.0] * 19 + [19.0] * 10, ["eval.stop_at=18"])  # 5 x 17 + 5 x 19 at game 24: counted
    write_run("pong-eeeee", [17.0] * 20, ["eval.stop_at=18"])  # ended at 200k without it
    (short,) = time_to_score(pong, tmp_path).values()
    assert short["drl_runs"]["pong-dddd"] == 240_000 and short["stopped_early"] == ["pong-eeeee"]
    assert "drl_steps" not in short and "drl_minutes" not in short and "eval.stop_at" in short["skipped"]


@pytest.mark.slow
def test_busy_cores_sees_a_spinning_process():
    """The bench's busy check samples /proc/stat (the load average lags by minutes): a process spinning on one core
    beside it must show as at least half a busy core."""
    from drl.bench.cli import busy_cores

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = busy_cores(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and 0.5 <= busy <= os.cpu_count(), busy


def _synthetic_result(cpu_bf16_native: bool) -> dict:
    """A bench result with made-up figures: the Pong runs, update floors, forwards and env steps a loop floor needs."""
    precision = "bf16" if cpu_bf16_native else "fp32"
    bf16 = cpu_bf16_native

    def run(sps, batch, double, envs):
        return {"sps": sps, "bf16": bf16, "batch_size": batch, "double": double, "num_envs": envs, "train_freq": 4}

    def case(batch, floor_ms, share):
        return {"batch_size": batch, "precision": precision, "double": True, "floor_ms": floor_ms, "share": share}

    return {
        "meta": {"machine": {"cpu_bf16_native": cpu_bf16_native}},
        "pong": {
            "cpu": {
                "drl_same_hp": run(160.0, 32, False, 1),
                "drl_default": run(100.0, 64, True, 4),
                "sb3": {"sps": 100.0},
                "ratio_same_hp_vs_sb3": 1.6,
            }
        },
        "doom": {"cpu": {"ratio_drqn_vs_sb3": 2.1}},
        "update": {
            "cpu": {
                "cases": {  # batch 32 with double DQN's target: not SB3's update, must not be picked for it
                    "b32": {**case(32, 25.0, 0.95), "drl_default_precision": True},
                    "b64": {**case(64, 30.0, 0.85), "drl_default_precision": True},
                },
                "floor_same_hp": {"batch_size": 32, "precision": precision, "double": False, "floor_ms": 20.0},
                "act_floor": {"b1": {"ms": 0.5}, "b4": {"ms": 0.8}},
            }
        },
        "vecenv": {
            "cpu": {
                "atari": {"counts": {"1": {"num_envs": 1, "sps": 4000.0}, "4": {"num_envs": 4, "sps": 8000.0}}},
                "doom": {"counts": {"2": {"num_envs": 2, "sps": 6000.0}}},
            }
        },
        "time_to_18": {"cpu": {"drl_steps": 360_000, "sb3_steps": 1_020_000, "sb3_minutes": 170.0, "ratio": 2.9}},
    }


def test_loop_floor_is_the_update_plus_train_freq_forwards_and_env_steps_per_update():
    from drl.bench.report import loop_floor

    floor = loop_floor(update_ms=20.0, act_ms=0.5, env_step_ms=0.25, train_freq=4, num_envs=1)
    assert floor["ms_per_update"] == pytest.approx(23.0) and floor["sps"] == pytest.approx(4000 / 23)
    floor = loop_floor(update_ms=30.0, act_ms=0.8, env_step_ms=0.5, train_freq=4, num_envs=8)  # an update per 2 steps
    assert floor["vector_steps_per_update"] == 0.5 and floor["ms_per_update"] == pytest.approx(30.65)


@pytest.mark.parametrize("native", [True, False])
def test_targets_judge_pong_by_its_loop_floor_and_the_precision_the_cpu_runs(native):
    from drl.bench.report import loop_floors, targets

    result = _synthetic_result(native)
    floors = loop_floors(result)["cpu"]
    same_hp, default = floors["drl_same_hp"], floors["drl_default"]
    assert same_hp["update_ms"] == 20.0  # vanilla DQN's floor at batch 32, not the double-DQN case
    assert same_hp["ms_per_update"] == pytest.approx(20.0 + 4 * (0.5 + 0.25))  # + 4 x (forward + one env step)
    assert same_hp["share"] == pytest.approx(160.0 / (4000 / 23))
    assert default["ms_per_update"] == pytest.approx(30.0 + 1 * (0.8 + 0.5))  # one vector step of 4 envs per update
    rows = {t["name"]: t for t in targets(result)}

    assert rows["pong_loop_floor_share"]["pass"] is True  # 0.92 of the floor
    # drl / SB3: 2x where bf16 is native, 1.3x elsewhere; the floor allows (4000 / 23) / 100 = 1.74x
    vs_sb3 = rows.pop("pong_vs_sb3_bf16" if native else "pong_vs_sb3_fp32")
    assert not {"pong_vs_sb3_bf16", "pong_vs_sb3_fp32"} & rows.keys()
    assert vs_sb3["target"] == (2.0 if native else 1.3) and vs_sb3["reachable"] == pytest.approx(40 / 23)
    assert vs_sb3["pass"] is (None if native else True)  # 2x cannot be met at that floor: no result, not a failure
    assert vs_sb3["status"].startswith("cannot be met here") if native else vs_sb3["status"] == "pass"
    # minutes to 18 with drl's default at its floor's speed: 170 / (360k / (4000 / 31.3) / 60) = 3.62x < 5x
    to_18 = rows["pong_time_to_18_vs_sb3"]
    assert to_18["reachable"] == pytest.approx(170.0 / (360_000 / (4000 / 31.3) / 60)) and to_18["pass"] is None
    assert rows["update_share"]["pass"] is False and rows["doom_drqn_vs_sb3"]["pass"] is True  # last b64 row: 0.85
    assert rows["atari_vecenv_sps"]["measured"] == 8000.0 and rows["atari_vecenv_sps"]["pass"] is None  # reference


def test_a_missing_floor_part_leaves_the_ratio_judged_by_its_target_alone():
    from drl.bench.report import loop_floors, targets

    result = _synthetic_result(True)
    del result["vecenv"]["cpu"]["atari"]["counts"]["1"]  # no 1-env step measured: no floor for SB3's settings
    assert "drl_same_hp" not in loop_floors(result)["cpu"]
    rows = {t["name"]: t for t in targets(result)}
    assert "pong_loop_floor_share" not in rows
    assert rows["pong_vs_sb3_bf16"]["reachable"] is None and rows["pong_vs_sb3_bf16"]["pass"] is False


def test_a_floor_timed_beside_drl_is_judged_block_by_block():
    """Blocks of the floor timed between drl's own (drl.bench.paired_floor) replace the sections' parts: the share
    is the median over blocks of drl's steps/s in the block / the floor's in the same block, not the run's overall
    steps/s against the parts' medians (the VM's drift between blocks would leak into that)."""
    from drl.bench.report import loop_floors, targets

    result = _synthetic_result(True)
    blocks = [  # the machine runs at full speed, then at half speed: drl and the floor slow down together
        {"drl_sps": 180.0, "update_ms": 16.0, "act_ms": 0.5, "env_step_ms": 0.5},  # floor 4000 / 20 = 200/s
        {"drl_sps": 90.0, "update_ms": 32.0, "act_ms": 1.0, "env_step_ms": 1.0},  # floor 100/s
        {"drl_sps": 160.0, "update_ms": 16.0, "act_ms": 0.5, "env_step_ms": 0.5},
    ]
    for block, drl_update_ms in zip(blocks, (17.0, 35.0, None)):  # drl's own update; none in the last block
        block.update(drl_update_ms=drl_update_ms, drl_sample_ms=None if drl_update_ms is None else 1.0)
    result["pong"]["cpu"]["drl_same_hp"]["paired_floor_blocks"] = blocks
    floor = loop_floors(result)["cpu"]["drl_same_hp"]
    naive = sorted(b["drl_sps"] / (4000 / (b["update_ms"] + 4 * (b["act_ms"] + b["env_step_ms"]))) for b in blocks)[1]
    assert floor["paired"] and floor["share"] == pytest.approx(naive) == pytest.approx(0.9)
    assert (floor["update_ms"], floor["act_ms"], floor["env_step_ms"]) == (16.0, 0.5, 0.5)  # medians over blocks
    assert floor["drl_sps"] == 160.0 and 160.0 / floor["sps"] == pytest.approx(0.8)  # the unpaired ratio differs
    assert floor["drl_ms_per_update"] == pytest.approx(4000 / 160.0)
    assert (floor["drl_update_ms"], floor["drl_sample_ms"]) == (26.0, 1.0)  # medians over the blocks that timed them
    assert not loop_floors(result)["cpu"]["drl_default"]["paired"]  # no blocks: the sections' parts
    rows = {t["name"]: t for t in targets(result)}
    assert rows["pong_loop_floor_share"]["measured"] == pytest.approx(0.9) and rows["pong_loop_floor_share"]["pass"]


def test_the_floor_targets_are_judged_only_where_a_plain_loop_of_its_parts_reaches_them():
    """Each block also times a plain-torch loop of the floor's parts (``plain_loop_ms``). Where that loop reaches
    less than 90 % of the floor, drl's share of the floor is not judged; drl / SB3 is judged against what the plain
    loop allows; drl's share of the plain loop is a target of its own."""
    from drl.bench.report import loop_floors, targets

    result = _synthetic_result(True)
    blocks = [  # floor: 4000 / (16 + 4 x 1) = 200 steps/s in each block
        {"drl_sps": 170.0, "update_ms": 16.0, "act_ms": 0.5, "env_step_ms": 0.5, "plain_loop_ms": 23.5},
        {"drl_sps": 150.0, "update_ms": 16.0, "act_ms": 0.5, "env_step_ms": 0.5, "plain_loop_ms": 25.0},
        {"drl_sps": 165.0, "update_ms": 16.0, "act_ms": 0.5, "env_step_ms": 0.5, "plain_loop_ms": 22.0},
    ]
    result["pong"]["cpu"]["drl_same_hp"]["paired_floor_blocks"] = blocks
    floor = loop_floors(result)["cpu"]["drl_same_hp"]
    plain_sps = [4000 / b["plain_loop_ms"] for b in blocks]  # 170.2, 160, 181.8
    assert floor["plain_sps"] == pytest.approx(sorted(plain_sps)[1])
    assert (
        floor["plain_share"] == pytest.approx(sorted(p / 200 for p in plain_sps)[1]) == pytest.approx(0.851, abs=1e-3)
    )
    naive_drl = sorted(b["drl_sps"] / p for b, p in zip(blocks, plain_sps))[1]
    assert floor["drl_plain_share"] == pytest.approx(naive_drl) == pytest.approx(0.9375)
    rows = {t["name"]: t for t in targets(result)}
    share = rows["pong_loop_floor_share"]  # drl at 0.825 of the floor, which a plain loop reached 0.85 of
    assert share["measured"] == pytest.approx(0.825) and share["pass"] is None
    assert share["status"] == "cannot be met here: a plain-torch loop of the floor's parts reached 0.85"
    assert rows["pong_plain_loop_share"]["pass"] is True  # 0.94 of the plain loop
    vs_sb3 = rows["pong_vs_sb3_bf16"]  # SB3 at 100 steps/s: the plain loop allows 1.70x, not the floor's 2x
    assert vs_sb3["reachable"] == pytest.approx(floor["plain_sps"] / 100) and vs_sb3["pass"] is None

    for b in blocks:  # a plain loop at the floor's speed: the floor's share is judged again (and fails at 0.825)
        b["plain_loop_ms"] = 20.0
    rows = {t["name"]: t for t in targets(result)}
    assert rows["pong_loop_floor_share"]["pass"] is False and rows["pong_plain_loop_share"]["pass"] is False
    assert rows["pong_vs_sb3_bf16"]["reachable"] == pytest.approx(2.0) and rows["pong_vs_sb3_bf16"]["pass"] is False


def test_print_report_prints_the_loop_floor_and_targets(capsys):
    from drl.bench.report import memory_peaks, print_report, targets

    result = _synthetic_result(True)
    result["meta"] = {
        "machine": {"cpu": "x", "cores": 2, "cores_usable": 2, "torch": "t", "cpu_bf16_native": True, "amx": False},
        "load_before": [0.0],
        "load_after": [0.0],
        "quick": True,
        "steps": 1,
        "repeats": 1,
        "learning_starts": 1,
        "notes": ["a note"],
    }
    result["meta"]["machine"]["avx512_bf16"] = True
    result["replay"] = {}
    result["pong"]["cpu"]["drl_same_hp"].update(sps_min=150.0, sps_max=170.0, updates_per_s=40.0)
    result["pong"]["cpu"]["drl_default"].update(sps_min=90.0, sps_max=110.0, updates_per_s=25.0)
    result["pong"]["cpu"].update(sb3={"skipped": "not run"}, ratio_same_hp_vs_sb3=None)
    for case in result["update"]["cpu"]["cases"].values():
        case.update(drl_ms=case["floor_ms"] / case["share"], drl_sample_ms=0.7)
    result["memory"] = memory_peaks(result)
    result["targets"] = targets(result)
    print_report(result)
    out = capsys.readouterr().out
    assert (
        "Pong loop floor" in out
        and "drl_same_hp | bf16 | 20.00 | 0.50 | 0.25 | 23.00 | 174 | 160 | 25.00 | - | - | 92%" in out
    )
    assert "not measured" in out  # drl / SB3 without an SB3 figure
    assert "cannot be met here: the loop floor allows 3.62" in out and "reference" in out and "note: a note" in out
