"""Is training bit-identical across a change? Train short runs at two commits, one right after the other, on this
machine, and compare their metrics digests.

    python scripts/identity.py BEFORE [AFTER]        # AFTER defaults to the working tree (uncommitted changes too)
    python scripts/identity.py HEAD~1 HEAD --only catch --only pong-10k
    python scripts/identity.py HEAD~1 --bf16 --only pong-10k     # under bf16 autocast (the checks pin float32)

Each commit is checked out into a temporary git worktree (the working tree is copied as it is) and each check trains
there with that commit's own code, never the installed ``drl``: the commit is installed with ``pip install --target``
into a folder of its own that ``PYTHONPATH`` puts first (a tree from before drl shipped its experiments as package
data runs from its own folder instead).
A check hashes its metrics rows without the timing fields. Floating point differs between CPU models, so digests are
only ever compared between two runs made here, never against recorded ones.

The distributed check cannot be bit-identical: which collector's chunk reaches the learner first is up to Ray's
scheduling, and so are the interleaving and number of its episode and train rows (they follow chunk arrivals; the
same commit run twice gave 2231 and 2262 rows), and so are the env steps its evaluations are recorded at (the
learner evaluates after storing all the chunks one poll brought, so an evaluation lands up to a poll's chunks past
its interval). It is compared on what the run's schedule fixes: how many evaluations it made and its final env
steps. Its final evaluation is printed beside the other commit's, not compared.

Exit status: 0 when every check agrees, 1 when one differs, 2 on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("wall_time", "sps", "eval_seconds", "updates_per_s")
PINNED = ["device=cpu", "compute.threads=1", "compute.bf16=off", "compute.channels_last=off", "tracking.wandb=off"]
# name -> (experiment and overrides, exact): exact=False is the distributed check (see the module docstring)
CHECKS: dict[str, tuple[list[str], bool]] = {
    "catch": (["catch"], True),
    "memory-drqn": (["memory", "total_steps=15000"], True),
    "pong-10k": (["atari-pong", "total_steps=10000", "agent.learning_starts=1000"], True),
    "doom-basic-drqn": (
        [
            "doom-basic",
            "total_steps=3000",
            "agent.learning_starts=500",
            "env.num_envs=2",
            "eval.interval=1500",
            "eval.episodes=2",
            "eval.num_envs=2",
        ],
        True,
    ),
    "catch-distributed": (["catch", "distributed.collectors=2", "total_steps=20000"], False),
}


def run_digest(metrics: Path, exact: bool) -> tuple[str, int, dict]:
    """sha256 of the rows without timing fields (exact) or of their events and env steps only (distributed)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    if exact:
        kept = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
    else:  # the schedule: how many evaluations, and the last step (other rows follow chunk arrivals)
        kept = [
            {"evaluations": sum(r.get("event") == "eval" for r in rows)},
            {"final_env_steps": max(r.get("env_steps", 0) for r in rows)},
        ]
    text = "\n".join(json.dumps(row, sort_keys=True) for row in kept)
    evals = [row for row in rows if row.get("event") == "eval"]
    final = {k: v for k, v in evals[-1].items() if k not in TIMING} if evals else {}
    return hashlib.sha256(text.encode()).hexdigest(), len(rows) if exact else len(evals), final


def checkout(commit: str | None, into: Path) -> Path:
    """A worktree of ``commit``, or a copy of the working tree (tracked and untracked files git does not ignore)."""
    if commit is not None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), commit], check=True)
        return into
    files = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def install(tree: Path, into: Path) -> Path:
    """The folder to put on ``PYTHONPATH`` for ``tree``'s code: a ``pip install --target`` of it, or the tree itself
    when its experiments are not package data yet (the layout before drl.envs / drl.agents)."""
    if "package-dir" not in (tree / "pyproject.toml").read_text():
        return tree
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(into),
            str(tree),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"identity: could not install {tree}: {proc.stderr.strip().splitlines()[-1:]}")
    return into


def pinned(bf16: bool) -> list[str]:
    """``PINNED``, with bf16 autocast on instead of off for ``--bf16``."""
    return [("compute.bf16=on" if bf16 and p == "compute.bf16=off" else p) for p in PINNED]


def train(site: Path, name: str, out: Path, bf16: bool = False) -> tuple[str, int, dict]:
    (experiment, *overrides), exact = CHECKS[name]
    run_dir = out / name
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "drl.train", experiment, *overrides, *pinned(bf16), "--run-dir", str(run_dir)],
        cwd=site,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"identity: {name} failed with the code in {site}:\n{proc.stderr[-2000:]}")
    return run_digest(run_dir / "metrics.jsonl", exact)


def label(commit: str | None) -> str:
    if commit is None:
        return "working tree"
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit], capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"identity: unknown commit '{commit}'; give a commit, branch or tag (git log --oneline)")
    return sha.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="commit before the change")
    parser.add_argument("after", nargs="?", help="commit after it (default: the working tree)")
    parser.add_argument("--only", choices=sorted(CHECKS), action="append", help="run only these checks")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="train under bf16 autocast (compute.bf16=on) instead of float32: checks changes to the bf16 path; "
        "slow on a CPU without native bf16 (AVX512-BF16 or AMX)",
    )
    args = parser.parse_args(argv)
    names = args.only or list(CHECKS)
    # commits are resolved once, here: a branch or HEAD that moves while the checks run does not change the sides
    sides = [(None if c is None else label(c), label(c)) for c in (args.before, args.after)]
    results: dict[str, dict[str, tuple[str, int, dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="drl-identity-") as tmp:
        for index, (commit, name) in enumerate(sides):
            tree = checkout(commit, Path(tmp) / f"tree{index}")
            try:
                site = install(tree, Path(tmp) / f"site{index}")
                results[name] = {check: train(site, check, Path(tmp) / f"runs{index}", args.bf16) for check in names}
            finally:
                if commit is not None:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    (before, after) = (results[sides[0][1]], results[sides[1][1]])
    print(f"identity: {sides[0][1]} -> {sides[1][1]} (cpu: {cpu_model()}, {'bf16' if args.bf16 else 'float32'})")
    differ = []
    for check in names:
        same = before[check][:2] == after[check][:2]
        kind = "bit-identical" if CHECKS[check][1] else "same schedule"
        if not same:
            differ.append(check)
        line = (
            f"  {check:18s} {kind if same else 'DIFFERENT':13s} {'rows' if CHECKS[check][1] else 'evals'} "
            f"{before[check][1]} / {after[check][1]}  "
            f"sha256 {before[check][0][:12]} / {after[check][0][:12]}"
        )
        if not CHECKS[check][1]:
            line += f"  final eval {final_score(before[check][2])} / {final_score(after[check][2])}"
        print(line)
    return 1 if differ else 0


def final_score(row: dict) -> str:
    for key in ("return_mean", "success_mean"):
        if key in row:
            return f"{row[key]:.3g}"
    return "-"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
