"""``compute.keep_freed_memory``: freed tensors' memory stays in the heap, so a Pong update takes no page faults.
(What a run records of it: ``tests/test_overlap.py::test_a_run_reports_the_compute_settings_it_resolved``.)

Each case runs in its own process (the malloc settings are process-wide and permanent): a real Pong run fills a
small replay through drl's loop, then its agent takes double-DQN updates on replay batches while the process's
minor page faults are counted."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from drl import runtime
from drl.config import ComputeConfig, ConfigError

pytest.importorskip("ale_py")

FAULTS_PER_UPDATE = """
import json, resource, sys, tempfile
from drl.bench.measure import quiet_trainer

with tempfile.TemporaryDirectory() as run_dir:
    overrides = ["total_steps=1000", "agent.learning_starts=1000", "replay.capacity=5000", sys.argv[1]]
    trainer = quiet_trainer("atari-pong", overrides, run_dir)
    trainer.run()
    agent, replay = trainer.agent, trainer.replay
    for _ in range(5):  # warm-up: the heap grows to the update's working set once
        agent.update(replay.sample(64, beta=0.4, device=trainer.device))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        agent.update(replay.sample(64, beta=0.4, device=trainer.device))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    print(json.dumps({"faults_per_update": faults, "kept": trainer.keep_freed_memory}))
    trainer.close()
"""


def faults_per_update(setting: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_UPDATE, f"compute.keep_freed_memory={setting}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not runtime.glibc_malloc(), reason="glibc's malloc only")
def test_a_pong_update_takes_no_page_faults_with_freed_memory_kept():
    kept, returned = faults_per_update("auto"), faults_per_update("off")
    assert kept["kept"] and not returned["kept"]
    # an update allocates ~15 MB afresh (~3,700 pages of 4 KiB) when glibc hands freed memory back
    assert returned["faults_per_update"] > 500, returned
    assert kept["faults_per_update"] < returned["faults_per_update"] / 20, (kept, returned)


def test_on_without_glibc_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda *args, **kwargs: ("", ""))
    with pytest.raises(ConfigError, match="compute.keep_freed_memory=on needs glibc"):
        runtime.keep_freed_memory(ComputeConfig(keep_freed_memory="on"))
    assert runtime.keep_freed_memory(ComputeConfig(keep_freed_memory="auto")) is False
