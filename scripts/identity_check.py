"""Training must stay bit-identical across refactors: record metrics digests once, check them after a change.

    python scripts/identity_check.py --record     # before a change: writes tests/golden/identity.json
    python scripts/identity_check.py              # after it: reruns and compares (exit 1 on a difference)

Each check trains a fixed config (CPU, one thread, fp32 NCHW, tracking off) and hashes its metrics rows without
the timing fields. Floating point differs between CPU models and torch builds, so a digest is compared only on
the CPU and torch it was recorded with (tests/test_identity.py skips elsewhere, naming both).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "identity.json"
TIMING = ("wall_time", "sps", "eval_seconds")
# channels_last=off: the recorded runs used NCHW, which fp32 on a CPU no longer defaults to (compute.channels_last
# auto); the layouts are checked equal to a tolerance in tests/test_dqn.py, not bit for bit
PINNED = ["device=cpu", "compute.threads=1", "compute.bf16=off", "compute.channels_last=off", "tracking.wandb=off"]
# name -> experiment and overrides (Pong with learning_starts lowered, so 2,250 updates run). The digests were
# recorded with atari-pong's learning rate of the time, 1e-4; the default is 2.5e-4 since (docs/results.md, "The
# failing seed with a larger learning rate"), so the check pins the recorded value: it tests the code, not the config.
CHECKS = {
    "catch": ["catch"],
    "atari-pong-10k": ["atari-pong", "total_steps=10000", "agent.learning_starts=1000", "agent.lr=1e-4"],
}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def digest(metrics: Path) -> tuple[str, int, dict]:
    rows = []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        rows.append({k: v for k, v in row.items() if k not in TIMING})
    text = "\n".join(json.dumps(r, sort_keys=True) for r in rows)
    evals = [r for r in rows if r["event"] == "eval"]
    return hashlib.sha256(text.encode()).hexdigest(), len(rows), evals[-1] if evals else {}


def run(name: str, workdir: Path) -> tuple[str, int, dict]:
    experiment, *overrides = CHECKS[name]
    run_dir = workdir / name
    env = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run([sys.executable, "-m", "drl.train", experiment, *overrides, *PINNED, "--run-dir", str(run_dir)],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return digest(run_dir / "metrics.jsonl")


def cpu_isa() -> list[str]:
    """The vector-instruction flags that pick oneDNN / MKL kernels (and so the rounding)."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))


def machine() -> dict:
    import torch
    return {"cpu": cpu_model(), "isa": cpu_isa(), "torch": torch.__version__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write tests/golden/identity.json")
    parser.add_argument("--only", choices=sorted(CHECKS), action="append", help="run only these checks")
    args = parser.parse_args()
    names = args.only or sorted(CHECKS)
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: run(name, Path(tmp)) for name in names}
    if args.record:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({**machine(), "runs": {
            name: {"command": CHECKS[name] + PINNED, "sha256": d, "rows": n, "final_eval": ev}
            for name, (d, n, ev) in results.items()}}, indent=1) + "\n")
        print(f"recorded {', '.join(names)} in {GOLDEN}")
        return 0
    golden = json.loads(GOLDEN.read_text())
    if {k: golden.get(k) for k in ("cpu", "isa", "torch")} != machine():
        print(f"recorded on {golden['cpu']} / torch {golden['torch']}, this is {machine()}: not comparable")
        return 0
    bad = [name for name, (d, _, _) in results.items() if d != golden["runs"][name]["sha256"]]
    for name in names:
        print(f"{name}: {'DIFFERENT' if name in bad else 'identical'} ({results[name][1]} rows)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
