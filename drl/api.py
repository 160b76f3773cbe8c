"""Use drl from Python: load a config, train, read the result, load a trained agent.

import drl
cfg = drl.load_config("cartpole", overrides=["total_steps=50000"])
result = drl.learn(cfg, run_dir="runs/cartpole-api")       # the run directory is created here
print(result.eval["return_mean"], result.metrics("eval")[-1])
agent = drl.load_agent("runs/cartpole-api")                # act with the trained weights (or an exported
                                                           # folder, or "zoo:NAME")
actions, state = agent.act(obs, agent.initial_state(len(obs)), epsilon=0.0)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from drl import config as _config
from drl.config import Config


def load_config(experiment: str, overrides: list[str] | tuple = (), imports: list[str] | tuple = ()) -> Config:
    """A named experiment (``experiments/NAME.yaml``) or a YAML path, with ``key=value`` overrides; ``imports`` are
    modules that register envs, agents or encoders (added to the config's own ``imports``)."""
    return _config.load(experiment, list(overrides), imports=list(imports))


@dataclass
class Result:
    """What a finished ``learn`` returns."""

    run_dir: Path
    env_steps: int
    eval: dict  # the final evaluation row: return_mean, return_std, return_median, ...
    interrupted: bool = False  # stopped by SIGINT / SIGTERM (the checkpoint is written; resumable)
    config: Config | None = field(default=None, repr=False)

    def metrics(self, event: str | None = None) -> list[dict]:
        """Rows of ``metrics.jsonl`` (``event``: "train", "episode" or "eval"; None for all)."""
        from drl.metrics import read_metrics

        rows = read_metrics(self.run_dir / "metrics.jsonl")
        return rows if event is None else [r for r in rows if r["event"] == event]


def default_run_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / f"{cfg.name}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def create_run_dir(cfg: Config, run_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Create the run directory (default ``OUTPUT_DIR/NAME-seedS-TIMESTAMP``); an existing one needs
    ``overwrite``. Writes ``config.yaml``."""
    from drl.loop import write_run_files
    from drl.train import finish_run_dir, prepare_run_dir

    path, old = prepare_run_dir(cfg, None if run_dir is None else str(run_dir), overwrite)
    finish_run_dir(None, old, path)
    write_run_files(cfg, path)
    return path


def learn(cfg: Config, run_dir: str | Path | None = None, overwrite: bool = False) -> Result:
    """Train ``cfg`` to ``cfg.total_steps`` in a new run directory (created here) and return the result."""
    from drl.distributed import trainer_class  # drl.loop.Trainer, or the Ray learner for distributed.collectors > 0

    if not isinstance(cfg, Config):
        raise TypeError("learn(cfg): pass a drl config, e.g. drl.load_config('cartpole')")
    Trainer = trainer_class(cfg)
    path = create_run_dir(cfg, run_dir, overwrite)
    with Trainer(cfg, path) as trainer:
        out = trainer.run()
    return Result(path, out["env_steps"], out["eval"], out["interrupted"], cfg)


def resolve_source(source: str | Path) -> Path:
    """The folder of ``zoo:NAME`` (an agent shipped with drl, ``drl.zoo``), else ``source`` as a path."""
    if str(source).startswith("zoo:"):
        from drl import zoo

        return zoo.resolve(str(source)[len("zoo:") :])
    return Path(source)


def load_policy(source: str | Path, checkpoint_path: str | Path | None = None) -> tuple[Path, Config, dict]:
    """(folder, config, payload) of a run directory (its checkpoint, default ``checkpoints/latest.pt``), a folder
    written by ``drl.export`` (its ``model.safetensors``) or ``zoo:NAME``; bad input is a one-line ``UserError``."""
    from drl import checkpoint, exported
    from drl.errors import UserError

    folder = resolve_source(source)
    if not (folder / "config.yaml").is_file():
        raise UserError(
            f"'{folder}' is not a run directory or an exported model (expected {folder}/config.yaml); "
            "pass a directory written by drl.train or drl.export"
        )
    cfg = _config.load_run_config(folder)
    if checkpoint_path is None and exported.is_export(folder):
        return folder, cfg, exported.read_model(folder, cfg)
    payload = checkpoint.load(Path(checkpoint_path) if checkpoint_path else folder / "checkpoints" / "latest.pt")
    checkpoint.check_experiment(payload, cfg.name, "pass that run's directory or a checkpoint of this run")
    return folder, cfg, payload


def load_agent(run_dir: str | Path, checkpoint_path: str | Path | None = None, device: str = "cpu"):
    """The agent of a run directory with its checkpoint's weights (default ``RUN_DIR/checkpoints/latest.pt``), of a
    folder written by ``drl.export``, or of ``"zoo:NAME"`` (an agent shipped with drl), ready for
    ``agent.act(obs, state, epsilon)``; ``agent.spec`` says what observations it takes."""
    import torch

    from drl import checkpoint, runtime
    from drl.agent import EnvSpec, make_agent

    _, cfg, payload = load_policy(run_dir, checkpoint_path)
    dev = runtime.resolve_device(device)
    spec = EnvSpec(
        tuple(payload["obs_shape"]),
        getattr(torch, payload.get("obs_dtype", "uint8")),
        int(payload["num_actions"]),
        int(payload.get("num_extras", 0)),
    )
    agent = make_agent(
        cfg, spec, dev, runtime.use_bf16(cfg.compute, dev), torch.Generator(device=dev).manual_seed(cfg.seed)
    )
    checkpoint.load_agent_state(agent, payload, "pass the checkpoint of this run")
    setattr(agent, "spec", spec)  # noqa: B010 - for the caller; not part of the Agent protocol
    return agent
