"""``python -m drl.train EXPERIMENT [key=value ...] [--init-from RUN_DIR [--init-optimizer]]`` or
``python -m drl.train --resume RUN_DIR [key=value ...]``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from drl import config
from drl.cli import add_import_option, run_cli
from drl.errors import UserError, first_line
from drl.metrics import SESSIONS

_last_result: dict | None = None  # the result of this process's last main(): run_seeds stops after an interrupted seed


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m drl.train",
        description="Train an agent on a named experiment (experiments/*.yaml).",
        epilog="experiments: " + ", ".join(config.available_experiments()),
    )
    parser.add_argument("experiment", nargs="?", help="experiment name or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. agent.lr=1e-4 env.num_envs=8")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start a new run from the weights of RUN_DIR (its checkpoint, else its weights.safetensors): "
        "online and target networks; fresh replay, counters and epsilon schedule (drl/segments.py)",
    )
    parser.add_argument(
        "--init-optimizer",
        action="store_true",
        help="with --init-from: also take the optimizer state (needs RUN_DIR/checkpoints/latest.pt)",
    )
    parser.add_argument("--run-dir", metavar="DIR", help="run directory (default: OUTPUT_DIR/NAME-seedS-TIMESTAMP)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    parser.add_argument(
        "--seeds",
        metavar="S,S,...",
        help="run the experiment once per seed (one W&B group); with --run-dir DIR the runs go to DIR/seedS",
    )
    parser.add_argument(
        "--parallel",
        metavar="N",
        type=int,
        default=1,
        help="with --seeds: run up to N seeds at once as subprocesses (default 1, sequential)",
    )
    add_import_option(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the overrides
    if args.resume and args.experiment and "=" in args.experiment:
        args.overrides.insert(0, args.experiment)
        args.experiment = None
    if args.resume and args.init_from:
        raise UserError(
            "--init-from starts a new run from another run's weights, --resume continues a run; give one of them"
        )
    if args.init_optimizer and not args.init_from:
        raise UserError("--init-optimizer takes the optimizer state of the --init-from run; add --init-from RUN_DIR")
    if not args.resume and not args.experiment:
        parser.error(
            "give an EXPERIMENT (one of: " + ", ".join(config.available_experiments()) + ") or --resume RUN_DIR"
        )
    return args


def prepare_run_dir(cfg: config.Config, run_dir: str | None, overwrite: bool) -> tuple[Path, Path | None]:
    """Create the run directory. With ``overwrite`` an existing one is moved aside (returned second) and deleted
    only once the new run has been set up (``finish_run_dir``), so a failing start loses nothing."""
    path = (
        Path(run_dir)
        if run_dir
        else Path(cfg.output_dir) / f"{cfg.name}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    old = None
    if path.exists():
        if not overwrite:
            raise UserError(
                f"run directory '{path}' already exists; use --resume {path} to continue it, "
                "--overwrite to replace it, or another --run-dir"
            )
        old = path.with_name(f"{path.name}.replaced-{os.getpid()}")
        try:
            path.rename(old)
        except OSError as exc:
            raise UserError(
                f"cannot replace run directory '{path}' ({exc.strerror}); remove it or use another --run-dir"
            ) from None
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        finish_run_dir(None, old, path)
        raise UserError(
            f"cannot create run directory '{path}' ({exc.strerror}); set output_dir=... to a writable folder"
        ) from None
    if not os.access(path, os.W_OK):
        finish_run_dir(path, old, path)
        raise UserError(f"run directory '{path}' is not writable; set output_dir=... to a writable folder")
    return path, old


def finish_run_dir(failed: Path | None, old: Path | None, path: Path) -> None:
    """After a failed start remove the new directory ``failed`` and put a moved-aside ``old`` one back;
    after a good start (``failed=None`` and the new one in place) delete ``old``."""
    if failed is not None:
        shutil.rmtree(failed, ignore_errors=True)
        if old is not None:
            old.rename(path)
    elif old is not None and path.exists():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.rename(path)


def record_session(run_dir: Path, argv: list[str], trainer) -> None:
    """Append this start of training to ``RUN_DIR/sessions.jsonl``: the command, the env step it starts from, the
    machine (CPU, bf16, threads, library versions) and the time. A resumed run adds a line; ``drl.export`` writes
    them into the model card."""
    from drl import runtime

    record = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": shlex.join(["python", "-m", "drl.train", *argv]),
        "start_env_steps": int(trainer.counters.env_steps),
        "device": str(trainer.device),
        "bf16": bool(trainer.bf16),
        "threads": int(trainer.threads),
        "keep_freed_memory": bool(trainer.keep_freed_memory),
        "machine": runtime.machine_info(),
    }
    with open(run_dir / SESSIONS, "a") as f:
        f.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.seeds is not None:
        return run_seeds(args)
    old = parent = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            raise UserError(f"cannot resume '{run_dir}': no such run directory (expected {run_dir}/config.yaml)")
        cfg = config.load_run_config(run_dir, args.overrides)
        from drl import checkpoint  # heavy import (torch) after the config checks: bad input fails fast

        payload = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
        checkpoint.check_experiment(payload, cfg.name, "resume the run directory that wrote it")
    else:
        if any(
            o.split("=", 1)[0].strip().split(".")[0] == "init_from" and o.replace(" ", "") != "init_from=null"
            for o in args.overrides
        ):
            raise UserError("init_from is written by --init-from, not set by an override: use --init-from RUN_DIR")
        cfg = config.load(args.experiment, args.overrides, imports=args.imports)
        if cfg.init_from is not None and not args.init_from:  # e.g. a segment's config.yaml as the experiment
            raise UserError(
                f"init_from is written by --init-from, not set in a config: use --init-from "
                f"{cfg.init_from.run_dir} (or init_from=null to start from scratch)"
            )
        if args.init_from:
            from drl import segments  # heavy import (torch) after the config checks

            parent = segments.load_parent(args.init_from, args.init_optimizer)
            cfg.init_from = parent.record()
        if cfg.distributed.collectors:  # Ray is optional: without it, one line before anything is written
            from drl.distributed import require_ray

            require_ray(cfg.distributed.address)
        run_dir, old = prepare_run_dir(cfg, args.run_dir, args.overwrite)
        payload = None
    from drl.distributed import trainer_class  # Trainer, or the distributed Learner (distributed.collectors > 0)
    from drl.loop import replay_ratio, write_run_files  # heavy imports (torch) after the config checks

    try:  # set-up errors (device, env, memory, checkpoint contents) are one line; a new run dir is removed again
        trainer = trainer_class(cfg)(
            cfg, run_dir, resume_from=payload, **({"init_from": parent} if parent is not None else {})
        )
    except BaseException as exc:
        if not args.resume:
            finish_run_dir(run_dir, old, run_dir)
        if isinstance(exc, (UserError, KeyboardInterrupt)) or not isinstance(exc, Exception):
            raise
        first = first_line(exc, 200, default="")
        raise UserError(
            f"could not set up the run: {type(exc).__name__}: {first} (rerun with --debug for the traceback)"
        ) from exc
    finish_run_dir(None, old, run_dir)
    # after the set-up, so a failed resume leaves config.yaml as it was; the run's own config (a distributed
    # learner trains on a copy with prioritized replay)
    write_run_files(trainer.cfg, run_dir)
    record_session(run_dir, argv, trainer)
    overlap = getattr(trainer, "overlap_env", None)  # the single-process loop's; a distributed learner steps no env
    overlap_text = "" if overlap is None else f", overlap_env {overlap}"
    try:
        print(
            f"drl: run directory {run_dir} (device {trainer.device}, bf16 {trainer.bf16}, "
            f"{trainer.threads} threads{overlap_text}, keep_freed_memory {trainer.keep_freed_memory}, "
            f"replay {trainer.replay.bytes_per_transition():.0f} B/transition, "
            f"replay ratio {replay_ratio(cfg, trainer.agent.sampler):g})"
        )
        if parent is not None:
            print(
                f"drl: started from {parent.path} (its step {parent.env_steps:,}; {parent.chain_env_steps:,} env "
                f"steps along the chain){'; optimizer state too' if parent.optimizer is not None else ''}"
            )
        result = trainer.run()
    finally:
        trainer.close()
    state = "interrupted, checkpoint written" if result["interrupted"] else "done"
    print(f"drl: {state} at {result['env_steps']:,} env steps; resume with: python -m drl.train --resume {run_dir}")
    global _last_result
    _last_result = result
    # stopped by SIGINT / SIGTERM: the shell convention 128 + signal (130 / 143), so a scheduler or script can
    # tell "interrupted, resumable" from "done"; the checkpoint is complete either way
    return 128 + result["signal"] if result["interrupted"] and result.get("signal") else 0


# ---------------------------------------------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds '{text}' must be comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds '{text}' must list distinct seeds >= 0, e.g. --seeds 0,1,2")
    return seeds


def run_seeds(args: argparse.Namespace) -> int:
    """One run per seed, all in the experiment's W&B group; sequential in this process or N subprocesses."""
    global _last_result
    if args.resume:
        raise UserError("--seeds starts new runs; resume each run directory with --resume RUN_DIR")
    if args.parallel < 1:
        raise UserError(f"--parallel must be >= 1 (got {args.parallel})")
    seeds = parse_seeds(args.seeds)
    cfg = config.load(args.experiment, args.overrides, imports=args.imports)  # config errors once, before any run
    extra = (["--overwrite"] if args.overwrite else []) + [f"--import={m}" for m in args.imports]
    if args.init_from:  # every seed starts from the same parent
        extra += ["--init-from", args.init_from, *(["--init-optimizer"] if args.init_optimizer else [])]
    if args.debug:
        extra.append("--debug")
    parallel = min(args.parallel, len(seeds))
    overrides = list(args.overrides)
    if parallel > 1 and cfg.compute.threads == 0:  # N processes using all cores each oversubscribe the CPU badly
        from drl.runtime import cpu_count

        overrides.append(f"compute.threads={max(1, cpu_count() // parallel)}")
    per_seed = [
        [
            args.experiment,
            *overrides,
            f"seed={s}",
            *(["--run-dir", str(Path(args.run_dir) / f"seed{s}")] if args.run_dir else []),
            *extra,
        ]
        for s in seeds
    ]
    print(
        f"drl: {cfg.name}: seeds {', '.join(map(str, seeds))} ({'sequential' if parallel == 1 else f'{parallel} at once'})"
    )
    if parallel == 1:
        for seed, seed_argv in zip(seeds, per_seed):
            _last_result = None
            main(seed_argv)
            if _last_result and _last_result["interrupted"]:
                print(f"drl: stopped after seed {seed}; the remaining seeds were not started")
                return 128 + (_last_result.get("signal") or 2)
        return 0
    return _run_parallel(seeds, per_seed, parallel)


def _relay(proc: subprocess.Popen, prefix: str) -> None:
    assert proc.stdout is not None  # started with stdout=PIPE
    for line in proc.stdout:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def _run_parallel(seeds: list[int], per_seed: list[list[str]], parallel: int) -> int:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}  # no interleaved progress bars
    queue = list(zip(seeds, per_seed))
    running: list[tuple[int, subprocess.Popen, threading.Thread]] = []
    failed: list[int] = []
    try:
        while queue or running:
            while queue and len(running) < parallel:
                seed, seed_argv = queue.pop(0)
                proc = subprocess.Popen(
                    [sys.executable, "-m", "drl.train", *seed_argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    bufsize=1,
                    env=env,
                )
                relay = threading.Thread(target=_relay, args=(proc, f"[seed {seed}] "), daemon=True)
                relay.start()
                running.append((seed, proc, relay))
            for item in list(running):
                seed, proc, relay = item
                if proc.poll() is not None:
                    relay.join()
                    running.remove(item)
                    if proc.returncode != 0:
                        failed.append(seed)
            time.sleep(0.2)
    except KeyboardInterrupt:  # the children got the signal too: they checkpoint and exit
        for _, proc, relay in running:
            proc.wait()
            relay.join()
        raise
    if failed:
        print(f"drl: seeds {', '.join(map(str, failed))} failed (see their output above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli("drl.train", main)
