"""Smoke test of ``python -m drl.bench --quick --skip-sb3``: every section is measured and positive (no timing
assertions: the figures of a quick run mean nothing). About 20-25 s on an idle 2-core machine."""
from __future__ import annotations

import json
import subprocess
import sys


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_quick_bench_writes_every_section(tmp_path):
    out = tmp_path / "tmp.json"
    proc = subprocess.run([sys.executable, "-m", "drl.bench", "--quick", "--skip-sb3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(out.read_text())
    assert {"meta", "pong", "doom", "update", "replay", "vecenv", "memory", "targets"} <= result.keys()

    machine = result["meta"]["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["torch"]
    assert isinstance(machine["cpu_bf16_native"], bool) and isinstance(machine["amx"], bool)
    assert result["meta"]["quick"] and result["meta"]["errors"] == []

    cpu_pong, cpu_doom = result["pong"]["cpu"], result["doom"]["cpu"]
    for run in (cpu_pong["drl_same_hp"], cpu_pong["drl_same_hp_sequential"], cpu_pong["drl_default"],
                cpu_doom["drl_drqn"], cpu_doom["drl_drqn_sequential"]):
        assert _positive(run["sps"]) and _positive(run["updates_per_s"]) and _positive(run["peak_rss_mb"])
    assert cpu_pong["drl_same_hp"]["num_envs"] == 1 and cpu_pong["drl_same_hp"]["batch_size"] == 32
    assert cpu_doom["drl_drqn"]["algo"] == "drqn"
    assert "skipped" in cpu_pong["sb3"] and cpu_pong["ratio_same_hp_vs_sb3"] is None
    assert _positive(cpu_pong["overlap_gain"]) and _positive(cpu_doom["overlap_gain"])  # vs overlap_env=false

    cases = result["update"]["cpu"]["cases"]
    assert {(c["batch_size"], c["precision"]) for c in cases.values()} == {(32, "fp32"), (32, "bf16"),
                                                                          (64, "fp32"), (64, "bf16")}
    for case in cases.values():
        assert _positive(case["floor_ms"]) and _positive(case["drl_ms"]) and _positive(case["share"])

    for name in ("atari_84x84", "doom_60x80"):
        replay = result["replay"][name]
        assert _positive(replay["bytes_per_transition"]) and _positive(replay["allocated_bytes"])
        assert replay["allocated_bytes_per_transition"] >= replay["bytes_per_transition"]

    vec = result["vecenv"]["cpu"]
    assert set(vec) == {"atari", "doom", "catch"}
    for kind in vec.values():
        assert kind["counts"] and all(_positive(c["sps"]) for c in kind["counts"].values())

    assert result["memory"] and all(_positive(v) for v in result["memory"].values())
    assert {t["name"] for t in result["targets"]} == {"pong_dqn_vs_sb3", "update_share", "atari_vecenv_sps",
                                                     "doom_vecenv_sps", "doom_drqn_vs_sb3"}
