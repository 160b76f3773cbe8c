"""Soak test: train on Doom while its worker processes are killed, and check that training keeps going.

    python scripts/soak_doom.py [--minutes 10] [--kill-every 60] [--experiment doom-basic] [-- key=value ...]

Runs ``python -m drl.train EXPERIMENT`` for ``--minutes``, SIGKILLs one Doom worker process of *that* training
(found through its own process tree: train -> multiprocessing forkserver -> workers) every ``--kill-every``
seconds, then stops it with SIGTERM and reports: env steps done, kills sent, worker restarts logged (warnings and
the ``worker_restarts`` column of the train rows), episodes dropped, whether train rows kept coming after every
kill, how the run stopped (exit code, seconds) and whether any worker process outlived it. Exit code 0 when
training survived every kill and stopped cleanly, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from drl.processes import alive, descendants, doom_workers  # noqa: E402


def train_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if row.get("event") == "train":
                rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to train (default 10)")
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between worker kills (default 60)")
    parser.add_argument("--experiment", default="doom-basic", help="a doom-* experiment (default doom-basic)")
    parser.add_argument("--run-dir", help="run directory (default: a new temporary folder)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the first row")
    parser.add_argument("overrides", nargs="*", help="extra drl.train overrides (after --), e.g. env.num_envs=8")
    args = parser.parse_args()
    if args.minutes <= 0 or args.kill_every <= 0:
        parser.error("--minutes and --kill-every must be > 0")

    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="soak-doom-")) / "run"
    overrides = ["total_steps=100000000", "log_interval=200", "eval.interval=100000000", "tracking.wandb=off",
                 *args.overrides]
    cmd = [sys.executable, "-m", "drl.train", args.experiment, *overrides, "--run-dir", str(run_dir)]
    log_out, log_err = run_dir.parent / "soak-stdout.txt", run_dir.parent / "soak-stderr.txt"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    print(f"soak: {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with open(log_out, "w") as out, open(log_err, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, env=env)
    kills: list[dict] = []
    tree: set[int] = set()
    try:
        t_start = time.monotonic()
        while not train_rows(run_dir):
            if proc.poll() is not None or time.monotonic() - t_start > args.start_timeout:
                print(f"soak: training did not start (exit {proc.returncode}); see {log_err}", flush=True)
                return 1
            time.sleep(0.5)
        t0 = time.monotonic()
        print(f"soak: training started after {t0 - t_start:.0f} s; soaking {args.minutes:g} min, one worker "
              f"SIGKILL every {args.kill_every:g} s", flush=True)
        end, next_kill, victim = t0 + 60 * args.minutes, t0 + args.kill_every, 0
        while time.monotonic() < end and proc.poll() is None:
            tree |= set(descendants(proc.pid))
            if time.monotonic() >= next_kill:
                workers = doom_workers(proc.pid)
                if workers:
                    pid = workers[victim % len(workers)]
                    victim += 1
                    rows = train_rows(run_dir)
                    steps = rows[-1]["env_steps"] if rows else 0
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append({"t": time.monotonic() - t0, "pid": pid, "steps": steps})
                        print(f"soak: {time.monotonic() - t0:5.0f} s: killed Doom worker pid {pid} "
                              f"(env steps {steps:,})", flush=True)
                    except ProcessLookupError:
                        pass
                next_kill += args.kill_every
            time.sleep(0.5)
        crashed = proc.poll() is not None
        tree |= set(descendants(proc.pid))
        t_stop = time.monotonic()
        if not crashed:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stop_seconds = time.monotonic() - t_stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(2.0)
    orphans = [p for p in tree if alive(p)]

    rows = train_rows(run_dir)
    last = rows[-1] if rows else {}
    stderr = log_err.read_text()
    warned = stderr.count("restarting it with new games")
    kept_going = []
    for k in kills:  # a train row with more steps logged after this kill (and before the next one)
        later = [r for r in rows if r["env_steps"] > k["steps"]]
        kept_going.append(bool(later))
    ok = (not crashed and code in (0, 128 + signal.SIGTERM) and all(kept_going) and not orphans
          and last.get("worker_restarts", 0) >= len(kills))
    print("soak: ---- report ----")
    print(f"soak: experiment {args.experiment}, run directory {run_dir}")
    print(f"soak: trained {(t_stop - t0) / 60:.1f} min; env steps done {last.get('env_steps', 0):,} "
          f"({last.get('frames', 0):,} frames); episodes {last.get('episodes', 0)}; updates {last.get('updates', 0)}")
    print(f"soak: workers killed {len(kills)}; worker restarts logged {warned} (warnings), "
          f"{last.get('worker_restarts', 'n/a')} (worker_restarts in the last train row)")
    print(f"soak: episodes dropped {last.get('episodes_dropped', 'n/a')}")
    print(f"soak: train rows kept coming after every kill: {'yes' if all(kept_going) else 'NO'} "
          f"({sum(kept_going)}/{len(kills)}); train rows written {len(rows)}")
    if crashed:
        print(f"soak: training DIED during the soak (exit {code}); last stderr lines:")
        print("\n".join(stderr.strip().splitlines()[-5:]))
    else:
        print(f"soak: SIGTERM -> exit {code} after {stop_seconds:.1f} s")
    print(f"soak: processes left behind: {orphans if orphans else 'none'}")
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
