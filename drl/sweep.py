"""``python -m drl.sweep EXPERIMENT --space SPACE.yaml --trials N [--jobs J] [--storage URL] [--study-name NAME]
[--out DIR] [key=value ...]``: a hyperparameter search with Optuna (``pip install -e ".[sweep]"``).

SPACE.yaml maps dotted config keys to distributions, checked against the config schema (the key exists, and the
config validates at ``low``, at ``high`` and at every choice) before any trial runs::

    agent.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    agent.n_step: {type: int, low: 1, high: 5}
    network.hidden: {type: categorical, choices: [32, 64]}

Each trial is an ordinary run directory ``OUT/trial-NNNN`` trained from the experiment (with the overrides) and the
trial's values; its objective is the final evaluation's ``return_mean`` (maximized). A TPE sampler proposes the
values (seeded: ``--seed``, default the config's seed) and a median pruner stops a trial at an evaluation whose
return is below the median of the finished trials at that env step (``--pruner none`` to keep every trial). The
study lives in ``--storage`` (default ``sqlite:///OUT/optuna.db``): the same command again continues it until N
trials have ended (completed, pruned or failed; trials cut short by Ctrl-C do not count). ``--jobs J`` runs J
worker processes on the same storage. At the end: a table of the trials, ``OUT/importance.png`` (parameter
importances, from 2 completed trials on) and ``OUT/best.yaml``, the best trial's config (``python -m drl.train
OUT/best.yaml``).
"""

from __future__ import annotations

import argparse
import copy
import math
import multiprocessing
import os
import sys
from pathlib import Path

from drl import config
from drl.cli import add_import_option, run_cli
from drl.errors import TrainingDiverged, UserError, require

TYPES = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m drl.sweep", description="Hyperparameter search with Optuna.")
    parser.add_argument("experiment", help="experiment name or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for every trial, e.g. total_steps=50000")
    parser.add_argument("--space", required=True, metavar="SPACE.yaml", help="dotted config keys -> distributions")
    parser.add_argument("--trials", required=True, type=int, metavar="N", help="trials in the study, in all")
    parser.add_argument("--jobs", type=int, default=1, metavar="J", help="worker processes (default 1)")
    parser.add_argument("--storage", metavar="URL", help="Optuna storage (default sqlite:///OUT/optuna.db)")
    parser.add_argument("--study-name", metavar="NAME", help="study name (default EXPERIMENT-sweep)")
    parser.add_argument("--out", metavar="DIR", help="sweep directory (default OUTPUT_DIR/sweeps/STUDY_NAME)")
    parser.add_argument("--seed", type=int, help="sampler seed (default: the config's seed)")
    parser.add_argument("--pruner", choices=["median", "none"], default="median", help="default median")
    parser.add_argument(
        "--prune-startup",
        type=int,
        default=5,
        metavar="K",
        help="finished trials before any trial is pruned (default 5)",
    )
    parser.add_argument(
        "--prune-warmup",
        type=int,
        default=0,
        metavar="STEPS",
        help="env steps of a trial before it can be pruned (default 0)",
    )
    add_import_option(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)
    for name, low in (("trials", 1), ("jobs", 1), ("prune_startup", 0), ("prune_warmup", 0)):
        if getattr(args, name) < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low} (got {getattr(args, name)})")
    return args


# ------------------------------------------------------------------------------------------------------ the space
def with_params(data: dict, params: dict) -> config.Config:
    """The config ``data`` (a config's plain data) with dotted ``params`` set, validated."""
    data = copy.deepcopy(data)
    for key, value in params.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise config.ConfigError(f"config key '{part}' of '{key}' is not a section")
        node[last] = value
    return config.validate(data)


def _number(value, kind: str, what: str):
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if kind == "int" and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, int if kind == "int" else (int, float)) and not isinstance(value, bool)
    if not ok or (kind == "float" and not math.isfinite(value)):
        raise UserError(f"{what} must be {'an integer' if kind == 'int' else 'a number'} (got {value!r})")
    return float(value) if kind == "float" else value


def _distribution(key: str, spec, where: str):
    """The Optuna distribution of one space entry (a one-line ``UserError`` for a malformed one)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in TYPES:
        raise UserError(f"{where}: {key} must be a mapping with type: float, int or categorical (got {spec!r})")
    extra = set(spec) - TYPES[kind] - {"type"}
    if extra:
        raise UserError(
            f"{where}: {key}: unknown field(s) {', '.join(sorted(extra))} for type {kind}; "
            f"allowed: {', '.join(sorted(TYPES[kind]))}"
        )
    try:
        if kind == "categorical":
            choices = spec.get("choices")
            if (
                not isinstance(choices, list)
                or not choices
                or not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices)
            ):
                raise UserError(
                    f"{where}: {key}: choices must be a non-empty list of numbers, strings, booleans "
                    f"or null (got {choices!r})"
                )
            return CategoricalDistribution(choices)
        if "low" not in spec or "high" not in spec:
            raise UserError(f"{where}: {key}: type {kind} needs low and high")
        low, high = (_number(spec[b], kind, f"{where}: {key}.{b}") for b in ("low", "high"))
        step = None if spec.get("step") is None else _number(spec["step"], kind, f"{where}: {key}.step")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise UserError(f"{where}: {key}.log must be true or false (got {log!r})")
        if kind == "float":
            return FloatDistribution(low, high, log=log, step=step)
        return IntDistribution(low, high, log=log, step=step or 1)
    except ValueError as exc:  # Optuna's own checks: low <= high, log needs low > 0, no step with log
        raise UserError(f"{where}: {key}: {exc}") from None


def extremes(distribution) -> list:
    """The values a distribution can take at its ends (every choice of a categorical)."""
    return list(distribution.choices) if hasattr(distribution, "choices") else [distribution.low, distribution.high]


def load_space(path: Path, base: dict) -> dict:
    """``{dotted key: Optuna distribution}`` from SPACE.yaml; each key is checked against the config schema."""
    where = str(path)
    if not path.is_file():
        raise UserError(f"space file '{path}' does not exist")
    space = config.load_yaml(path)
    if not space:
        raise UserError(
            f"{where} is empty; give at least one key, e.g. agent.lr: {{type: float, low: 1.0e-4, "
            "high: 1.0e-2, log: true}"
        )
    distributions = {}
    for key, spec in space.items():
        distributions[key] = _distribution(str(key), spec, where)
        for value in extremes(distributions[key]):
            try:
                with_params(base, {key: value})
            except config.ConfigError as exc:
                raise UserError(f"{where}: {key}={value!r} does not fit the config: {exc}") from None
    return distributions


# ------------------------------------------------------------------------------------------------------ trials
def ended(study) -> int:
    """Trials that ran to an end: completed, pruned or failed, not those cut short by Ctrl-C."""
    from optuna.trial import TrialState

    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and not t.user_attrs.get("interrupted")
        for t in study.trials
    )


def run_trial(trial, base: dict, out: Path) -> tuple[float | None, bool]:
    """Train one trial's run directory; (final return_mean, pruned). Each evaluation is reported to the trial."""
    from drl.api import create_run_dir
    from drl.distributed import trainer_class

    cfg = with_params(base, trial.params)
    run_dir = out / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))

    def report(row: dict) -> bool:  # the trainer's eval hook: true stops the run there
        trial.report(row["return_mean"], row["env_steps"])
        return trial.should_prune()

    with trainer_class(cfg)(cfg, create_run_dir(cfg, run_dir)) as trainer:
        trainer.add_eval_hook(report)
        result = trainer.run()
    trial.set_user_attr("env_steps", result["env_steps"])
    if result["interrupted"]:
        raise KeyboardInterrupt
    return result["eval"].get("return_mean"), result["stopped_early"] and result["env_steps"] < cfg.total_steps


def optimize(study, distributions: dict, base: dict, out: Path, trials: int) -> None:
    """Ask, train and tell ``trials`` trials (a diverged trial fails and the sweep goes on)."""
    from optuna.trial import TrialState

    for _ in range(trials):
        trial = study.ask(distributions)
        try:
            value, pruned = run_trial(trial, base, out)
        except TrainingDiverged as exc:
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            print(f"drl.sweep: trial {trial.number} failed: {exc}", flush=True)
            continue
        except BaseException as exc:
            trial.set_user_attr("interrupted", isinstance(exc, KeyboardInterrupt))
            study.tell(trial, state=TrialState.FAIL)
            raise
        steps = trial.user_attrs["env_steps"]
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
        shown = "-" if value is None else f"{value:.3f}"
        print(
            f"drl.sweep: trial {trial.number} {'pruned' if pruned else 'complete'} at {steps:,} env steps, "
            f"return {shown}: {format_params(trial.params)}",
            flush=True,
        )


def format_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def open_study(args: argparse.Namespace, storage: str, name: str, seed: int, worker: int = 0):
    """The study (created, or loaded to continue), with a TPE sampler whose seed moves on with the trials already
    in the study (a continued sweep does not repeat the first one's draws) and the median pruner."""
    optuna = require("optuna", "drl.sweep", "sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.NopPruner()
        if args.pruner == "none"
        else optuna.pruners.MedianPruner(n_startup_trials=args.prune_startup, n_warmup_steps=args.prune_warmup)
    )
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", pruner=pruner, load_if_exists=True
        )
    except (ValueError, ImportError, optuna.exceptions.OptunaError) as exc:
        raise UserError(f"cannot open the study '{name}' in {storage} ({str(exc).splitlines()[0][:160]})") from None
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials) + 1000 * worker)
    return study


def _worker(
    args: argparse.Namespace,
    storage: str,
    name: str,
    seed: int,
    worker: int,
    distributions: dict,
    base: dict,
    out: Path,
    trials: int,
) -> None:
    """One of ``--jobs`` processes: its share of the trials on the shared storage."""
    os.environ["TQDM_DISABLE"] = "1"  # no interleaved progress bars
    try:
        optimize(open_study(args, storage, name, seed, worker), distributions, base, out, trials)
    except UserError as exc:
        print(f"drl.sweep: error: worker {worker}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(
    args, storage: str, name: str, seed: int, distributions: dict, base: dict, out: Path, remaining: int
) -> None:
    jobs = min(args.jobs, remaining)
    if base["compute"]["threads"] == 0:  # J processes using all cores each oversubscribe the CPU badly
        from drl.runtime import cpu_count

        base = copy.deepcopy(base)
        base["compute"]["threads"] = max(1, cpu_count() // jobs)
    context = multiprocessing.get_context("spawn")
    shares = [remaining // jobs + (i < remaining % jobs) for i in range(jobs)]
    procs = [
        context.Process(target=_worker, args=(args, storage, name, seed, i, distributions, base, out, n))
        for i, n in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:  # the workers got the signal too: their trials stop and they exit
        for proc in procs:
            proc.join()
        raise
    failed = [i for i, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise UserError(f"sweep worker(s) {', '.join(map(str, failed))} failed (see their output above)")


# ------------------------------------------------------------------------------------------------------ results
def trial_table(study) -> str:
    """One line per trial: number, state, value, env steps trained and the parameters."""
    keys = sorted({k for t in study.trials for k in t.params})
    header = ["trial", "state", "value", "env_steps", *keys]
    rows = []
    for t in study.trials:
        value = "-" if t.value is None else f"{t.value:.4g}"
        params = [
            f"{t.params[k]:.4g}" if isinstance(t.params.get(k), float) else str(t.params.get(k, "-")) for k in keys
        ]
        rows.append([str(t.number), t.state.name.lower(), value, f"{t.user_attrs.get('env_steps', '-')}", *params])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header, *rows])


def plot_importance(study, path: Path) -> str:
    """``path``: a bar chart of Optuna's parameter importances; returns what was done, in one line."""
    import optuna
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return f"no parameter importance: it needs 2 completed trials, the study has {len(complete)}"
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        return f"no parameter importance ({str(exc).splitlines()[0][:160]})"
    if not importances:
        return "no parameter importance: the completed trials share no parameter"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance for the final evaluation return")
    ax.set_title(f"{study.study_name}: {len(complete)} completed trials")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"parameter importance: {path}"


def write_best(study, base: dict, path: Path) -> str:
    """``path``: the best completed trial's config, as that trial trained it; returns what was done, in one line."""
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        return "no best config: no trial has completed"
    best = study.best_trial
    trained = Path(best.user_attrs.get("run_dir", "")) / "config.yaml"
    cfg = config.load_run_config(trained.parent) if trained.is_file() else with_params(base, best.params)
    header = (
        f"# best trial {best.number} of study '{study.study_name}': final return_mean {best.value:.4g}\n"
        f"# {format_params(best.params)}\n# train it: python -m drl.train {path}\n"
    )
    path.write_text(header + config.to_yaml(cfg))
    return f"best config (trial {best.number}, return {best.value:.4g}): {path}"


# ------------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str]) -> int:
    args = parse_args(argv)
    require("optuna", "drl.sweep", "sweep")
    cfg = config.load(args.experiment, args.overrides, imports=args.imports)
    base = cfg.model_dump()
    distributions = load_space(Path(args.space), base)
    name = args.study_name or f"{cfg.name}-sweep"
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "sweeps" / name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the sweep directory '{out}' ({exc.strerror}); pass another --out") from None
    storage = args.storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    seed = cfg.seed if args.seed is None else args.seed
    study = open_study(args, storage, name, seed)
    remaining = max(0, args.trials - ended(study))
    print(
        f"drl.sweep: study '{name}' ({storage}): {ended(study)} of {args.trials} trials ended, running "
        f"{remaining} ({min(args.jobs, remaining) or 1} job{'s' if min(args.jobs, remaining) > 1 else ''}); "
        f"runs in {out}",
        flush=True,
    )
    if remaining and args.jobs > 1:
        run_workers(args, storage, name, seed, distributions, base, out, remaining)
    elif remaining:
        optimize(study, distributions, base, out, remaining)
    study = open_study(args, storage, name, seed)  # the workers' trials too
    print(trial_table(study))
    for line in (plot_importance(study, out / "importance.png"), write_best(study, base, out / "best.yaml")):
        print(f"drl.sweep: {line}")
    return 0


if __name__ == "__main__":
    run_cli("drl.sweep", main)
