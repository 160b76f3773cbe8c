"""``python -m drl.train EXPERIMENT [key=value ...]`` or ``python -m drl.train --resume RUN_DIR [key=value ...]``."""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from drl import checkpoint, config
from drl.cli import run_cli
from drl.errors import UserError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m drl.train", description="Train an agent on a named experiment (experiments/*.yaml).",
        epilog="experiments: " + ", ".join(config.available_experiments()))
    parser.add_argument("experiment", nargs="?", help="experiment name or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. agent.lr=1e-4 env.num_envs=8")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument("--run-dir", metavar="DIR", help="run directory (default: OUTPUT_DIR/NAME-seedS-TIMESTAMP)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.resume and args.experiment and "=" in args.experiment:
        args.overrides.insert(0, args.experiment)
        args.experiment = None
    if not args.resume and not args.experiment:
        parser.error("give an EXPERIMENT (one of: " + ", ".join(config.available_experiments()) + ") or --resume RUN_DIR")
    return args


def prepare_run_dir(cfg: config.Config, run_dir: str | None, overwrite: bool) -> Path:
    path = Path(run_dir) if run_dir else Path(cfg.output_dir) / f"{cfg.name}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists():
        if not overwrite:
            raise UserError(f"run directory '{path}' already exists; use --resume {path} to continue it, "
                            "--overwrite to replace it, or another --run-dir")
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise UserError(f"cannot create run directory '{path}' ({exc.strerror}); set output_dir=... to a writable "
                        "folder") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"run directory '{path}' is not writable; set output_dir=... to a writable folder")
    return path


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from drl.loop import Trainer, write_run_files  # heavy imports after argument checks

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            raise UserError(f"cannot resume '{run_dir}': no such run directory (expected {run_dir}/config.yaml)")
        cfg = config.validate(config.apply_overrides(config.load_yaml(run_dir / "config.yaml"), args.overrides))
        payload = checkpoint.load(run_dir / "checkpoints" / "latest.pt")
        if payload["config"].get("name") != cfg.name:
            raise UserError(f"checkpoint belongs to experiment '{payload['config'].get('name')}', not '{cfg.name}'")
        write_run_files(cfg, run_dir)
    else:
        cfg = config.load(args.experiment, args.overrides)
        run_dir = prepare_run_dir(cfg, args.run_dir, args.overwrite)
        write_run_files(cfg, run_dir)
        payload = None
    trainer = Trainer(cfg, run_dir, resume_from=payload)
    try:
        print(f"drl: run directory {run_dir} (device {trainer.device}, bf16 {trainer.bf16}, "
              f"{trainer.threads} threads, replay {trainer.replay.bytes_per_transition():.0f} B/transition)")
        result = trainer.run()
    finally:
        trainer.close()
    state = "interrupted, checkpoint written" if result["interrupted"] else "done"
    print(f"drl: {state} at {result['env_steps']:,} env steps; resume with: python -m drl.train --resume {run_dir}")
    return 0


if __name__ == "__main__":
    run_cli("drl.train", main)
