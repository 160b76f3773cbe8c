"""``python -m drl.compare RUN_DIR_OR_GROUP ... [--chain SEG1 SEG2 ...] [--out DIR] [--metric return_mean]
[--threshold X]``.

Inputs are run directories (holding ``metrics.jsonl``), directories holding run directories (searched
recursively) or glob prefixes (``runs/catch`` matches ``runs/catch*``). Runs are grouped by experiment name
(``name`` in RUN_DIR/config.yaml); the runs of a group are its seeds, counted as distinct seed values (a repeated
seed is named in a warning and in the labels; the statistics still use every run). With ``--wandb ENTITY/PROJECT``
the runs come from the W&B server instead, and the inputs, if any, are group names.

``--chain SEG1 SEG2 ...`` (repeatable: one chain per seed) reads the segments of one training, each started with
``drl.train ... --init-from`` the one before (``drl/segments.py``), as ONE run of its group on the summed axis: a
segment's rows after the step its successor started from are dropped, the rest are shifted by the steps (and
frames) of the segments before it (and by ``init_from.chain_env_steps`` of the first, when that one is a segment
too). A segment whose ``init_from.run_dir`` is not the segment listed before it is an error; run directories are
matched by path, or by directory name when the chain was moved or trained on other machines. Chains are given
explicitly rather than found from ``init_from`` links: the order and the cut points are then the user's choice,
a parent with several children (seeds, branches) is no ambiguity, and a run is never merged without asking.

Each environment (``env.kind`` plus the Atari game or Doom scenario, see ``env_name``) gets its own panel with its
own y scale, and its own rows in the table (an ``env`` column when there are several). Outputs (in ``--out``,
default ``comparison``):
- ``curves_<metric>.png`` / ``.svg``: evaluation ``<metric>`` against environment frames, per group the mean over
  seeds and a 95% bootstrap confidence interval (each seed's curve is interpolated linearly onto a common grid of
  frames where all seeds have data), seeds as thin lines;
- ``curves_train_return.png`` / ``.svg``: the same for the training episodes' returns (the ``episode`` rows), each
  seed's returns smoothed by a trailing mean over ``--train-window`` episodes (what CleanRL / SB3 curves show);
- ``table_<metric>.md`` (also printed) and ``summary_<metric>.json``: per group the final score (each seed's last
  evaluation) as mean ± std over seeds (std with ddof=1), its interquartile mean (25% trimmed from each end, as
  ``scipy.stats.trim_mean(x, 0.25)``), the mean env steps to first reach ``--threshold`` over the seeds that
  reached it, the training steps per second while learning (each run's median ``sps`` over the train rows logged
  after learning started, so the fast replay prefill does not count; mean over runs) and the final training return
  (mean of each seed's last ``--train-window`` episodes; mean ± std and IQM over seeds).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from drl.cli import run_cli
from drl.errors import UserError
from drl.metrics import read_metrics

BOOTSTRAP_SAMPLES = 2000
GRID_POINTS = 200
TRAIN_WINDOW = 20  # training episodes per point of the smoothed training return
UNKNOWN_ENV = "unknown env"
DOOM_DEFAULT_SCENARIO = "health_gathering"  # what a Doom run without env.doom.scenario plays
# keys that do not decide a curve (compute.overlap_env and keep_freed_memory: speed only, tests/test_overlap.py)
IGNORED_CONFIG_KEYS = (
    "seed",
    "output_dir",
    "tracking.",
    "compute.threads",
    "compute.overlap_env",
    "compute.keep_freed_memory",
    "device",
    "init_from",
)


@dataclass
class Run:
    group: str
    seed: int | None
    source: str  # run directory or W&B run path
    evals: list[tuple[int, int, float]] = field(default_factory=list)  # (env_steps, frames, metric value)
    episodes: list[tuple[int, float]] = field(default_factory=list)  # training episodes: (frames, return)
    sps: list[float] = field(default_factory=list)  # steps/s of the logged intervals spent learning
    config: dict = field(default_factory=dict)

    @property
    def env(self) -> str:
        return env_name(self.config)


def env_name(config: dict) -> str:
    """The environment a run played, from its config: 'atari pong', 'doom health_gathering', 'gym CartPole-v1', 'catch'.

    ``env.game`` is only read for Atari (older configs of other kinds carry it as an unused default); other kinds
    use the first of ``id``, ``env_id``, ``game``, ``scenario`` that they have."""
    env = config.get("env") if isinstance(config, dict) else None
    if not isinstance(env, dict) or not env.get("kind"):
        return UNKNOWN_ENV
    kind = str(env["kind"]).strip()
    if kind == "atari":
        detail = env.get("game")
    elif kind == "doom":
        doom = env.get("doom")
        detail = str((doom.get("scenario") if isinstance(doom, dict) else doom) or DOOM_DEFAULT_SCENARIO).lower()
    elif kind in ("catch", "memory"):
        detail = None
    else:
        detail = next((env[k] for k in ("id", "env_id", "game", "scenario") if env.get(k)), None)
    return f"{kind} {str(detail).strip()}" if detail else kind


def _warn(message: str) -> None:
    print(f"drl.compare: warning: {message}", file=sys.stderr)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m drl.compare", description="Compare runs: learning curves with bootstrap CIs and a score table."
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="RUN_DIR_OR_GROUP",
        help="run directories, directories of runs or glob prefixes (with --wandb: group names)",
    )
    parser.add_argument("--out", metavar="DIR", default="comparison", help="output directory (default: comparison)")
    parser.add_argument(
        "--metric",
        default="return_mean",
        help="evaluation metric, e.g. return_mean, return_median, kills_mean, survival_tics_mean",
    )
    parser.add_argument("--threshold", type=float, metavar="X", help="report env steps to first reach this score")
    parser.add_argument(
        "--train-window",
        type=int,
        default=TRAIN_WINDOW,
        metavar="N",
        help=f"training episodes per point of the training-return curves (default {TRAIN_WINDOW})",
    )
    parser.add_argument(
        "--chain",
        nargs="+",
        action="append",
        default=[],
        metavar="SEG",
        help="the run directories of one training in segments (drl.train --init-from), in order: "
        "drawn as one run on the summed step axis; repeat --chain for each seed",
    )
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read runs from the W&B server instead")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ local runs
def find_run_dirs(spec: str) -> list[Path]:
    if any(ch in spec for ch in "*?["):
        candidates = [Path(p) for p in sorted(glob.glob(spec))]
    elif Path(spec).exists():
        candidates = [Path(spec)]
    else:
        candidates = [Path(p) for p in sorted(glob.glob(glob.escape(spec) + "*"))]
    found: list[Path] = []
    for path in candidates:
        if (path / "metrics.jsonl").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(m.parent for m in path.rglob("metrics.jsonl"))
    if not found:
        raise UserError(
            f"no runs found for '{spec}': give a run directory (with metrics.jsonl), a directory of "
            "run directories or a glob prefix such as runs/catch"
        )
    return found


def _append_monotonic(points: list, item: tuple, keep_ties: bool = False) -> None:
    """A resumed run repeats the steps after its last checkpoint: later rows replace earlier ones.

    ``keep_ties`` for episode rows, of which several (one per env) may end at the same step."""
    while points and (points[-1][0] > item[0] or (points[-1][0] == item[0] and not keep_ties)):
        points.pop()
    points.append(item)


def _seed(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load_local_run(run_dir: Path, metric: str) -> tuple[Run, set[str]]:
    cfg: dict = {}
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        _warn(f"{run_dir}: no readable config.yaml; grouping it by its directory name")
    group = str(cfg.get("name") or run_dir.name)
    run = Run(group=group, seed=_seed(cfg.get("seed")), source=str(run_dir), config=cfg)
    available: set[str] = set()
    train_rows: list[tuple[int, float, float | None]] = []  # (env_steps, sps, updates so far)
    for row in read_metrics(run_dir / "metrics.jsonl"):
        event = row.get("event")
        if event == "eval":
            available |= {
                k
                for k, v in row.items()
                if isinstance(v, (int, float))
                and not isinstance(v, bool)
                and k not in ("env_steps", "frames", "wall_time", "chain_env_steps")
            }
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                _append_monotonic(
                    run.evals, (int(row["env_steps"]), int(row.get("frames", row["env_steps"])), float(value))
                )
        elif event == "episode" and isinstance(row.get("return"), (int, float)) and math.isfinite(row["return"]):
            _append_monotonic(run.episodes, (int(row.get("frames", row["env_steps"])), float(row["return"])), True)
        elif event == "train" and isinstance(row.get("sps"), (int, float)):
            _append_monotonic(train_rows, (int(row["env_steps"]), float(row["sps"]), row.get("updates")))
    run.sps = learning_sps([(sps, updates) for _, sps, updates in train_rows])
    return run, available


def learning_sps(rows: list[tuple[float, float | None]]) -> list[float]:
    """The steps/s of the logged intervals spent wholly learning: those after a train row that already counted
    updates. The replay prefill before ``learning_starts`` runs ~10x faster and would inflate any average; rows
    without an ``updates`` count (other loops) are all kept."""
    if not any(isinstance(updates, (int, float)) for _, updates in rows):
        return [sps for sps, _ in rows]
    return [
        sps for (sps, _), (_, before) in zip(rows[1:], rows[:-1]) if isinstance(before, (int, float)) and before > 0
    ]


def load_local(inputs: list[str], metric: str) -> list[Run]:
    dirs: list[Path] = []
    for spec in inputs:
        for d in find_run_dirs(spec):
            if d.resolve() not in {x.resolve() for x in dirs}:
                dirs.append(d)
    runs, available = [], set()
    for d in dirs:
        run, keys = load_local_run(d, metric)
        available |= keys
        if run.evals:
            runs.append(run)
        elif keys:
            _warn(f"{d}: its eval rows have no '{metric}'; skipped")
        else:
            _warn(f"{d}: no evaluation rows yet; skipped")
    if not runs:
        hint = f"available: {', '.join(sorted(available))}" if available else "no run has evaluation rows yet"
        raise UserError(f"no run has eval metric '{metric}' ({hint}); pick one with --metric")
    return runs


def _frames_per_step(run_dir: Path) -> int:
    """Frames per env step of a run (frame skip): from its first row past step 0, else 1."""
    for row in read_metrics(run_dir / "metrics.jsonl"):
        steps, frames = row.get("env_steps"), row.get("frames")
        if isinstance(steps, int) and isinstance(frames, int) and steps > 0:
            return max(1, round(frames / steps))
    return 1


def _same_run(recorded, run_dir: Path) -> bool:
    """Whether ``init_from.run_dir`` (as given to --init-from) names ``run_dir``: the same directory, or, for a chain
    moved or trained on other machines, a directory of the same name."""
    recorded = Path(str(recorded))
    try:
        if recorded.resolve() == run_dir.resolve():
            return True
    except OSError:
        pass
    return recorded.name == run_dir.resolve().name


def load_chain(dirs: list[str], metric: str) -> Run:
    """The segments of one training (``--chain``) as one run on the summed step axis (see the module docstring)."""
    paths = [Path(d) for d in dirs]
    for path in paths:
        if not (path / "metrics.jsonl").is_file():
            raise UserError(
                f"--chain: '{path}' is not a run directory (no metrics.jsonl); give the segments' run "
                "directories in the order they were trained"
            )
    segments = [load_local_run(path, metric)[0] for path in paths]
    for k in range(1, len(paths)):
        init = segments[k].config.get("init_from")
        if not isinstance(init, dict):
            raise UserError(
                f"--chain: {paths[k]} was not started from another run (no init_from in its "
                f"config.yaml); each segment after the first is started with drl.train ... --init-from "
                "THE_SEGMENT_BEFORE"
            )
        if not _same_run(init.get("run_dir"), paths[k - 1]):
            raise UserError(
                f"--chain: {paths[k]} was started from {init.get('run_dir')} (init_from.run_dir in its "
                f"config.yaml), not from the segment listed before it, {paths[k - 1]}; list the segments "
                "in the order they were trained"
            )
    envs = list(dict.fromkeys(seg.env for seg in segments))
    if len(envs) > 1:
        raise UserError(
            f"--chain: the segments play different environments ({', '.join(envs)}); a chain is one "
            "training on one environment"
        )
    first = segments[0].config.get("init_from")
    steps = int(first.get("chain_env_steps", 0)) if isinstance(first, dict) else 0  # steps before the first
    frames = steps * _frames_per_step(paths[0])
    chain = Run(
        group=segments[0].group, seed=segments[0].seed, source=" -> ".join(map(str, paths)), config=segments[0].config
    )
    for k, (seg, path) in enumerate(zip(segments, paths)):
        fps = _frames_per_step(path)
        cut = int(segments[k + 1].config["init_from"]["env_steps"]) if k + 1 < len(segments) else None
        chain.evals += [(s + steps, f + frames, v) for s, f, v in seg.evals if cut is None or s <= cut]
        chain.episodes += [(f + frames, r) for f, r in seg.episodes if cut is None or f <= cut * fps]
        chain.sps += seg.sps
        if cut is not None:
            steps, frames = steps + cut, frames + cut * fps
    return chain


# ------------------------------------------------------------------------------------------------ W&B runs
def load_wandb(spec: str, groups: list[str], metric: str) -> list[Run]:
    from drl.tracking import api_host, logged_in, server_reachable

    if spec.count("/") != 1 or not all(spec.split("/")):
        raise UserError(f"--wandb '{spec}' must look like ENTITY/PROJECT")
    if os.environ.get("WANDB_MODE", "").strip().lower() in ("offline", "dryrun", "disabled"):
        raise UserError(
            f"--wandb reads from the W&B server but WANDB_MODE={os.environ['WANDB_MODE']}; unset it, "
            "or compare the local run directories instead"
        )
    if not logged_in():
        raise UserError(
            "--wandb needs a W&B login (run `wandb login` or set WANDB_API_KEY); "
            "or compare the local run directories instead"
        )
    if not server_reachable():
        raise UserError(
            f"--wandb: cannot reach the W&B server {api_host()[0]} (offline?); "
            "compare the local run directories instead"
        )
    import wandb

    key = f"eval/{metric}"
    try:
        api = wandb.Api(timeout=30)
        filters = {"group": {"$in": groups}} if groups else None
        remote = list(api.runs(spec, filters=filters))
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown project
        raise UserError(f"--wandb {spec}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]}") from None
    runs = []
    for r in remote:
        if getattr(r, "job_type", None) not in ("train", "", None):  # drl.evaluate runs are job type eval
            continue
        cfg = dict(r.config)
        run = Run(
            group=getattr(r, "group", None) or str(cfg.get("name", r.name)),
            seed=_seed(cfg.get("seed")),
            source="/".join(r.path),
            config=cfg,
        )
        try:
            for row in r.scan_history(keys=["env_steps", "env_frames", key]):
                if isinstance(row.get(key), (int, float)):
                    _append_monotonic(run.evals, (int(row["env_steps"]), int(row["env_frames"]), float(row[key])))
            run.sps = learning_sps(
                [
                    (float(row["train/sps"]), row.get("train/updates"))
                    for row in r.scan_history(keys=["train/sps", "train/updates"])
                ]
            )
            # train rows log train/episode_return too (a mean), but only episode rows have train/episode_length
            for row in r.scan_history(keys=["env_frames", "train/episode_return", "train/episode_length"]):
                _append_monotonic(run.episodes, (int(row["env_frames"]), float(row["train/episode_return"])), True)
        except Exception as exc:  # noqa: BLE001
            raise UserError(
                f"--wandb: reading run {run.source} failed "
                f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]})"
            ) from None
        if run.evals:
            runs.append(run)
    if not runs:
        which = f"groups {', '.join(groups)}" if groups else "any group"
        raise UserError(f"--wandb {spec}: no training runs of {which} logged '{key}'")
    return runs


# ------------------------------------------------------------------------------------------------ statistics
def iqm(values) -> float:
    """Interquartile mean: drop int(0.25 n) values from each end, average the rest (scipy's trim_mean(x, 0.25))."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean())


def bootstrap_ci(curves: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap CI of the mean over seeds (rows), per grid point (columns)."""
    rng = np.random.default_rng(seed)
    n = curves.shape[0]
    means = curves[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high


def eval_curve(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(frames, metric value) of a run's evaluations."""
    return (
        np.array([f for _, f, _ in run.evals], dtype=np.float64),
        np.array([v for _, _, v in run.evals], dtype=np.float64),
    )


def train_return_curve(run: Run, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames, trailing mean of the last ``window`` training-episode returns), one point per distinct frame."""
    frames = np.array([f for f, _ in run.episodes], dtype=np.float64)
    returns = np.array([v for _, v in run.episodes], dtype=np.float64)
    sums = np.concatenate([[0.0], np.cumsum(returns)])
    end = np.arange(1, len(returns) + 1)
    start = np.maximum(end - window, 0)
    smoothed = (sums[end] - sums[start]) / (end - start)
    last_at_frame = np.append(frames[1:] != frames[:-1], True)  # episodes ending at the same step: keep the last
    return frames[last_at_frame], smoothed[last_at_frame]


def frames_to_train_return(frames: np.ndarray, returns: np.ndarray, threshold: float, window: int) -> float | None:
    """Frames at the end of the first ``window`` consecutive training episodes whose mean return is >= ``threshold``
    (``frames[i]``: the frame count when episode ``i`` ended), or None if never. Full windows only."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < window:
        return None
    sums = np.concatenate([[0.0], np.cumsum(returns)])
    window_sums = sums[window:] - sums[:-window]  # [j]: episodes j .. j+window-1 (exact for whole scores)
    hit = np.nonzero(window_sums >= threshold * window)[0]
    return float(np.asarray(frames)[hit[0] + window - 1]) if len(hit) else None


def common_grid(curves: list[tuple[np.ndarray, np.ndarray]], group: str) -> tuple[np.ndarray, np.ndarray]:
    """Common frame grid where every seed has data, and each seed's curve interpolated onto it."""
    low, high = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if high < low:  # seeds without a common span: flat extrapolation over the union
        low, high = min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves)
        _warn(f"group '{group}': seeds have no common range of frames; curves are extended flat")
    grid = np.linspace(low, high, GRID_POINTS) if high > low else np.array([high])
    return grid, np.stack([np.interp(grid, x, y) for x, y in curves])


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs by group label, ordered by environment. A name played on several environments is split into one group
    per environment, labelled 'name [env]'."""
    envs_of_name: dict[str, dict[str, None]] = {}  # name -> its environments, in order
    for r in runs:
        envs_of_name.setdefault(r.group, {})[r.env] = None
    for name, envs in envs_of_name.items():
        if len(envs) > 1:
            _warn(f"group '{name}' has runs of several environments ({', '.join(envs)}); split into one group each")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group if len(envs_of_name[r.group]) == 1 else f"{r.group} [{r.env}]", []).append(r)
    env_order = list(dict.fromkeys(r.env for r in runs))
    return dict(sorted(groups.items(), key=lambda item: env_order.index(item[1][0].env)))


def check_group_configs(group: str, runs: list[Run]) -> None:
    flat = [_flatten(r.config) for r in runs if r.config]
    if len(flat) < 2:
        return
    keys = sorted({k for f in flat for k in f})
    differ = [
        k for k in keys if not k.startswith(IGNORED_CONFIG_KEYS) and len({json.dumps(f.get(k)) for f in flat}) > 1
    ]
    if differ:
        _warn(
            f"group '{group}' mixes configs that differ in {', '.join(differ[:6])}"
            f"{' ...' if len(differ) > 6 else ''}; give each variant its own name=... to compare them"
        )


def seed_counts(runs: list[Run]) -> tuple[int, list[int]]:
    """(number of distinct seeds, seeds used by more than one run). Runs of unknown seed count as distinct."""
    counts = Counter(r.seed for r in runs if r.seed is not None)
    return len(counts) + sum(r.seed is None for r in runs), sorted(s for s, n in counts.items() if n > 1)


def seeds_text(runs: list[Run], unit: bool = True) -> str:
    """'2 seeds', or '1 seed (2 runs; seed 0 repeated)' (without 'seed'/'seeds' after the number if not unit)."""
    seeds, repeated = seed_counts(runs)
    text = f"{seeds} seed{'s' if seeds != 1 else ''}" if unit else str(seeds)
    if repeated:
        text += f" ({len(runs)} runs; seed{'s' if len(repeated) > 1 else ''} {', '.join(map(str, repeated))} repeated)"
    return text


def check_group_seeds(group: str, runs: list[Run]) -> None:
    seeds, repeated = seed_counts(runs)
    for seed in repeated:
        _warn(
            f"group '{group}': seed {seed} is repeated ({', '.join(r.source for r in runs if r.seed == seed)}); "
            f"counted as {seeds} seed{'s' if seeds != 1 else ''} of {len(runs)} runs"
        )


def _mean_std_iqm(values: list[float]) -> dict:
    x = np.asarray(values, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None, "iqm": iqm(x)}


def mean_pm_std(mean: float, std: float | None) -> str:
    """'1.234 ± 0.100', or '1.234 (one run)' where there is no spread to give."""
    return f"{fmt(mean)} ± {fmt(std)}" if std is not None else f"{fmt(mean)} (one run)"


def summarize_group(runs: list[Run], threshold: float | None, train_window: int) -> dict:
    finals = [r.evals[-1][2] for r in runs]
    final = _mean_std_iqm(finals)
    reached = []
    if threshold is not None:
        for r in runs:
            hit = next((steps for steps, _, v in r.evals if v >= threshold), None)
            if hit is not None:
                reached.append(hit)
    sps = [float(np.median(r.sps)) for r in runs if r.sps]
    train_finals = [train_return_curve(r, train_window)[1][-1] for r in runs if r.episodes]
    train = _mean_std_iqm(train_finals) if train_finals else {"mean": None, "std": None, "iqm": None}
    seeds, repeated = seed_counts(runs)
    return {
        "env": runs[0].env,
        "seeds": seeds,
        "num_runs": len(runs),
        "repeated_seeds": repeated,
        "seed_values": [r.seed for r in runs],
        "final_values": finals,
        "final_mean": final["mean"],
        "final_std": final["std"],
        "final_iqm": final["iqm"],
        "final_env_steps_mean": float(np.mean([r.evals[-1][0] for r in runs])),
        "threshold": threshold,
        "steps_to_threshold_mean": float(np.mean(reached)) if reached else None,
        "seeds_reached": len(reached),
        "sps_learning": float(np.mean(sps)) if sps else None,  # mean over runs of each run's median
        "train_window": train_window,
        "train_return_final_values": train_finals,
        "train_return_final_mean": train["mean"],
        "train_return_final_std": train["std"],
        "train_return_final_iqm": train["iqm"],
        "runs": [r.source for r in runs],
    }


# ------------------------------------------------------------------------------------------------ output
def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.3f}"


def table_rows(
    summaries: dict[str, dict], groups: dict[str, list[Run]], metric: str, threshold: float | None
) -> tuple[list[str], list[list[str]]]:
    several_envs = len({s["env"] for s in summaries.values()}) > 1
    train_window = next(iter(summaries.values()))["train_window"]
    header = ["group", *(["env"] if several_envs else []), "seeds", f"final {metric} (mean ± std)", "IQM", "env steps"]
    if threshold is not None:
        header.append(f"env steps to {threshold:g}")
    header += ["steps/s learning", f"train return, last {train_window} ep. (mean ± std)"]
    rows = []
    for group, s in summaries.items():
        row = [
            group,
            *([s["env"]] if several_envs else []),
            seeds_text(groups[group], unit=False),
            mean_pm_std(s["final_mean"], s["final_std"]),
            fmt(s["final_iqm"]),
            f"{s['final_env_steps_mean']:,.0f}",
        ]
        if threshold is not None:
            row.append(
                f"{s['steps_to_threshold_mean']:,.0f} ({s['seeds_reached']}/{s['num_runs']})"
                if s["seeds_reached"]
                else f"not reached (0/{s['num_runs']})"
            )
        row.append(f"{s['sps_learning']:,.0f}" if s["sps_learning"] is not None else "-")
        row.append(
            mean_pm_std(s["train_return_final_mean"], s["train_return_final_std"])
            if s["train_return_final_mean"] is not None
            else "-"
        )
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def curves_figure(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    groups: dict[str, list[Run]],
    ylabel: str,
    title: str,
    threshold: float | None = None,
):
    """One panel per environment (own y scale): per group the mean over seeds with a 95% bootstrap CI, seeds as thin
    lines. ``curves[group]`` holds each seed's (frames, values); groups without curves are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    envs = list(dict.fromkeys(groups[g][0].env for g in curves))
    ncols = min(len(envs), 3)
    nrows = math.ceil(len(envs) / ncols)
    size = (8, 5) if len(envs) == 1 else (5.5 * ncols, 4.5 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, dpi=120, squeeze=False)
    panels = dict(zip(envs, axes.flat))
    for ax in list(axes.flat)[len(envs) :]:
        ax.remove()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for group, seed_curves in curves.items():
        color = colors[list(groups).index(group) % len(colors)]  # a group keeps its color in every figure
        ax = panels[groups[group][0].env]
        for x, y in seed_curves:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
        grid, on_grid = common_grid(seed_curves, group)
        mean = on_grid.mean(axis=0)
        low, high = bootstrap_ci(on_grid)
        label = f"{group}: {seeds_text(groups[group])}"
        if len(grid) == 1:
            ax.errorbar(grid, mean, yerr=[mean - low, high - mean], fmt="o", color=color, label=label, capsize=4)
        else:
            ax.plot(grid, mean, color=color, linewidth=2, label=label)
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    for env, ax in panels.items():
        if threshold is not None:
            ax.axhline(threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("environment frames")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1.5M
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{title}: mean over seeds, 95% bootstrap CI", fontsize=11)
    fig.tight_layout()
    return fig


def save_figure(fig, out: Path, stem: str) -> list[Path]:
    import matplotlib.pyplot as plt

    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def plot(
    groups: dict[str, list[Run]], metric: str, threshold: float | None, train_window: int, out: Path
) -> list[Path]:
    """The eval-metric figure and, for the groups with training episodes, the training-return figure."""
    evals = {g: [eval_curve(r) for r in runs] for g, runs in groups.items()}
    paths = save_figure(
        curves_figure(evals, groups, f"eval {metric}", f"eval {metric}", threshold), out, f"curves_{metric}"
    )
    train = {g: [train_return_curve(r, train_window) for r in runs if r.episodes] for g, runs in groups.items()}
    if not any(train.values()):
        _warn("no run has training episodes (episode rows); no training-return curves")
        for stale in (out / "curves_train_return.png", out / "curves_train_return.svg"):
            stale.unlink(missing_ok=True)  # from an earlier comparison into the same --out
        return paths
    for group, runs in groups.items():
        if len(train[group]) < len(runs):
            _warn(
                f"group '{group}': {len(runs) - len(train[group])} of {len(runs)} runs have no training episodes; "
                "left out of the training-return curves"
            )
    train = {g: c for g, c in train.items() if c}
    return paths + save_figure(
        curves_figure(
            train, groups, f"training return (mean of last {train_window} episodes)", "training episode return"
        ),
        out,
        "curves_train_return",
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401 - a core dependency; only a broken install lacks it
    except ImportError:
        raise UserError(
            "drl.compare draws its curves with matplotlib, which is not installed here: "
            "pip install matplotlib (or reinstall drl)"
        ) from None
    metric = args.metric.removeprefix("eval/")
    if not metric or "/" in metric:
        raise UserError(f"--metric '{args.metric}' must be an eval metric name such as return_mean")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UserError("--threshold must be a finite number")
    if args.train_window < 1:
        raise UserError(f"--train-window must be at least 1 (got {args.train_window})")
    if args.wandb and args.chain:
        raise UserError("--chain reads local run directories; compare them without --wandb")
    if args.wandb:
        runs = load_wandb(args.wandb, args.inputs, metric)
    elif not args.inputs and not args.chain:
        raise UserError(
            "give run directories, directories of runs or glob prefixes to compare, or --chain SEG1 "
            "SEG2 ... (or --wandb ENTITY/PROJECT)"
        )
    else:
        runs = load_local(args.inputs, metric) if args.inputs else []
        for dirs in args.chain:
            chain = load_chain(dirs, metric)
            if chain.evals:
                runs.append(chain)
            else:
                _warn(f"chain {chain.source}: no evaluation rows with '{metric}'; skipped")
        if not runs:
            raise UserError(f"no segment of the chains has eval metric '{metric}'; pick one with --metric")
    groups = group_runs(runs)
    for group, members in groups.items():
        members.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0, r.source))
        check_group_configs(group, members)
        check_group_seeds(group, members)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory '{out}' ({exc.strerror}); pass another --out") from None

    summaries = {g: summarize_group(members, args.threshold, args.train_window) for g, members in groups.items()}
    header, rows = table_rows(summaries, groups, metric, args.threshold)
    images = plot(groups, metric, args.threshold, args.train_window, out)
    md_path, json_path = out / f"table_{metric}.md", out / f"summary_{metric}.json"
    note = (
        f"Final = each seed's last evaluation of `{metric}`; ± is the std over seeds (ddof=1); IQM over seeds' "
        f"final scores; steps/s learning = each run's median steps/s over the logged intervals after "
        f"learning started (mean over runs); train return = mean of each seed's last "
        f"{args.train_window} training episodes. Seeds count distinct seed values; the statistics use every run.\n"
    )
    md_path.write_text(f"# eval {metric}\n\n" + markdown_table(header, rows) + "\n" + note)
    json_path.write_text(json.dumps({"metric": metric, "groups": summaries}, indent=2) + "\n")
    print(text_table(header, rows))
    print(f"drl.compare: wrote {', '.join(str(p) for p in [*images, md_path, json_path])}")
    return 0


if __name__ == "__main__":
    run_cli("drl.compare", main)
