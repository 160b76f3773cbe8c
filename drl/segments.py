"""Training in segments: a run that cannot last long enough (a deathmatch needs millions of steps, a machine is
lent for hours) is trained as a chain of runs, each started from the weights of the one before.

- Every checkpoint also writes ``RUN_DIR/weights.safetensors``: the online network's weights in bf16 (integer
  buffers as they are), small enough to commit (7.1 MB for the Doom DRQN network), with metadata: format, env
  steps (the run's own and the chain's), experiment, observation shape and dtype, actions, extra inputs, the config
  keys that decide the network's tensors and the SHA-256 of the resolved config.
- ``python -m drl.train EXPERIMENT [overrides] --init-from RUN_DIR [--init-optimizer]`` starts a new run (its own
  directory, env-step counter, replay and ε schedule) whose online and target networks are the parent's online
  network: from ``RUN_DIR/checkpoints/latest.pt`` when it is there (exact; ``--init-optimizer`` also takes Adam's
  moments and step count from it, with the new config's ``agent.lr`` and ``agent.adam_eps``), else from
  ``RUN_DIR/weights.safetensors`` (bf16 -> fp32). The new run's ``config.yaml`` records the parent (``init_from``)
  and its metrics rows carry ``chain_env_steps``, the env steps of the whole chain.
- ``python -m drl.compare --chain SEG1 SEG2 ...`` draws the segments as one run on the summed axis.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from drl.checkpoint import cast_floats
from drl.config import Config, InitFromConfig, to_yaml
from drl.errors import UserError, first_line

WEIGHTS = "weights.safetensors"
FORMAT = "drl-segment-weights"
VERSION = 1
# config keys that decide the online network's tensors (dropout has none); named when a parent does not fit
NETWORK_KEYS = (
    "agent.algo",
    "agent.aux.features",
    "network.encoder",
    "network.hidden",
    "network.dueling",
    "network.lstm_size",
    "network.mlp_layers",
    "network.batch_norm",
)


def network_signature(config: dict) -> dict:
    """The values of ``NETWORK_KEYS`` in a config's plain data (``Config.model_dump()``); missing keys are None."""
    out = {}
    for key in NETWORK_KEYS:
        node: object = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


# ---------------------------------------------------------------------------------------------- the weights file
def save_weights(
    path: Path,
    online: dict,
    cfg: Config,
    env_steps: int,
    obs_shape,
    obs_dtype: torch.dtype,
    num_actions: int,
    num_extras: int,
    frames_per_step: int,
) -> None:
    """Write ``online`` (a state dict) to ``path`` in bf16 with its metadata, atomically."""
    from safetensors.torch import save

    tensors = cast_floats(online, torch.bfloat16)
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "dtype": "bfloat16",
        "experiment": cfg.name,
        "env_steps": str(int(env_steps)),
        "chain_env_steps": str(int(cfg.chain_offset + env_steps)),
        "frames_per_step": str(int(frames_per_step)),
        "obs_shape": json.dumps(list(obs_shape)),
        "obs_dtype": str(obs_dtype).removeprefix("torch."),
        "num_actions": str(int(num_actions)),
        "num_extras": str(int(num_extras)),
        "network": json.dumps(network_signature(cfg.model_dump())),
        "config_sha256": hashlib.sha256(to_yaml(cfg).encode()).hexdigest(),
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(save(tensors, metadata=metadata))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        from drl.checkpoint import CheckpointError

        raise CheckpointError(
            f"cannot write '{path}' ({exc.strerror}); free disk space or fix the folder's permissions, then resume"
        ) from None


def read_weights(path: Path) -> tuple[dict, dict]:
    """(state dict in fp32 (integer buffers as stored), metadata) of a weights file; a bad file is one line."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"its metadata says format {metadata.get('format')!r}, not {FORMAT!r}")
        if int(metadata.get("version", 0)) > VERSION:
            raise ValueError(f"version {metadata['version']} is newer than this drl's ({VERSION})")
        meta = {
            "env_steps": int(metadata["env_steps"]),
            "chain_env_steps": int(metadata["chain_env_steps"]),
            "obs_shape": tuple(json.loads(metadata["obs_shape"])),
            "num_actions": int(metadata["num_actions"]),
            "num_extras": int(metadata["num_extras"]),
            "network": json.loads(metadata["network"]),
            "experiment": metadata.get("experiment", ""),
            "frames_per_step": int(metadata["frames_per_step"]),
        }
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"'{path}' is not a weights file written by drl.train ({first_line(exc, 120)}); "
            "pass a run directory written by drl.train"
        ) from None
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, meta


# ---------------------------------------------------------------------------------------------- the parent
@dataclass
class Parent:
    """The weights a new run starts from (``load_parent``)."""

    run_dir: Path
    source: str  # "checkpoint" or "weights"
    path: Path  # the file read
    online: dict  # the online network's state dict (fp32)
    optimizer: dict | None  # the optimizer's state dict (--init-optimizer), else None
    env_steps: int  # the parent's own env steps at those weights
    chain_env_steps: int  # env steps of the whole chain at those weights
    obs_shape: tuple
    num_actions: int
    num_extras: int
    network: dict  # network_signature of the parent's config

    def record(self) -> InitFromConfig:
        """The new run's ``init_from`` config section."""
        return InitFromConfig.model_validate(
            {
                "run_dir": str(self.run_dir),
                "source": self.source,
                "env_steps": self.env_steps,
                "chain_env_steps": self.chain_env_steps,
                "optimizer": self.optimizer is not None,
            }
        )


def load_parent(run_dir: str | Path, optimizer: bool = False) -> Parent:
    """The weights in ``run_dir``: its checkpoint (``checkpoints/latest.pt``) if there, else ``weights.safetensors``.
    ``optimizer``: also the optimizer state, which only the checkpoint holds. Problems are one-line ``UserError``s."""
    from drl import checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--init-from '{run_dir}': no such run directory; pass the directory of the run to start from")
    latest, weights = run_dir / "checkpoints" / "latest.pt", run_dir / WEIGHTS
    if latest.is_file():
        payload = checkpoint.load(latest)
        online = payload["agent"].get("online") if isinstance(payload["agent"], dict) else None
        if not isinstance(online, dict):
            raise UserError(
                f"--init-from '{run_dir}': its checkpoint's agent has no 'online' network (the built-in "
                "dqn and drqn agents have one); it cannot start another run"
            )
        state = None
        if optimizer:
            state = payload["agent"].get("optimizer")
            if not isinstance(state, dict):
                raise UserError(
                    f"--init-from '{run_dir}': its checkpoint holds no optimizer state; drop "
                    "--init-optimizer to start with a fresh optimizer"
                )
        env_steps = int(payload["counters"]["env_steps"])
        init = payload["config"].get("init_from")
        before = int(init.get("chain_env_steps", 0)) if isinstance(init, dict) else 0  # the parent's own offset
        return Parent(
            run_dir,
            "checkpoint",
            latest,
            dict(online),
            state,
            env_steps,
            int(before) + env_steps,
            tuple(payload["obs_shape"]),
            int(payload["num_actions"]),
            int(payload.get("num_extras", 0)),
            network_signature(payload["config"]),
        )
    if weights.is_file():
        if optimizer:
            raise UserError(
                f"--init-optimizer needs the parent's optimizer state, which only a checkpoint holds: "
                f"'{run_dir}' has {WEIGHTS} (the network's weights) but no checkpoints/latest.pt; drop "
                "--init-optimizer to start with a fresh optimizer, or put the checkpoint there"
            )
        online, meta = read_weights(weights)
        return Parent(
            run_dir,
            "weights",
            weights,
            online,
            None,
            meta["env_steps"],
            meta["chain_env_steps"],
            meta["obs_shape"],
            meta["num_actions"],
            meta["num_extras"],
            meta["network"],
        )
    raise UserError(
        f"--init-from '{run_dir}': no weights there (expected {latest} or {weights}); pass a run "
        "directory written by drl.train"
    )


def _value(v) -> str:
    """A config value as an override writes it: 64, true, [256,256], enemy."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def _shape(t) -> str:
    return str(tuple(t.shape))


def start_from(agent, parent: Parent, cfg: Config, obs_shape, num_actions: int, num_extras: int) -> None:
    """Set ``agent``'s online and target networks to the parent's online network and, with its optimizer state, the
    optimizer (``agent.lr`` and ``agent.adam_eps`` stay the new config's). A parent whose network does not fit is a
    one-line ``UserError`` naming what differs."""
    where = f"--init-from '{parent.run_dir}'"
    fix = "the config must match the parent's network"
    mine = {"observations": tuple(obs_shape), "actions": int(num_actions), "extra inputs": int(num_extras)}
    theirs = {"observations": tuple(parent.obs_shape), "actions": parent.num_actions, "extra inputs": parent.num_extras}
    differ = [k for k in mine if mine[k] != theirs[k]]
    if differ:
        what = "; ".join(f"{k} {theirs[k]} there, {mine[k]} here" for k in differ)
        raise UserError(
            f"{where}: its network was trained on other inputs or actions ({what}); {fix} (the same "
            "env settings: observation size, frame stack, buttons, game variables)"
        )
    state = agent.state_dict()
    own = state.get("online") if isinstance(state, dict) else None
    if not isinstance(own, dict):
        raise UserError(
            "this agent's state has no 'online' network (the built-in dqn and drqn agents have one); "
            "--init-from cannot load weights into it"
        )
    keys = network_signature(cfg.model_dump())
    config_diff = [k for k in NETWORK_KEYS if k in parent.network and parent.network.get(k) != keys[k]]
    missing = [k for k in own if k not in parent.online]
    extra = [k for k in parent.online if k not in own]
    shapes = [k for k in own if k in parent.online and tuple(own[k].shape) != tuple(parent.online[k].shape)]
    if missing or extra or shapes:
        if shapes:
            tensor = f"{shapes[0]} is {_shape(parent.online[shapes[0]])} there, {_shape(own[shapes[0]])} here"
        else:
            tensor = (
                f"{len(missing)} tensors of this network are not there (e.g. {missing[0]})"
                if missing
                else f"{len(extra)} tensors there are not in this network (e.g. {extra[0]})"
            )
        named = "".join(f"{k} is {_value(parent.network[k])} there, {_value(keys[k])} here; " for k in config_diff)
        hint = f" (set {' '.join(f'{k}={_value(parent.network[k])}' for k in config_diff)})" if config_diff else ""
        raise UserError(f"{where}: its network does not fit this config ({named}{tensor}); {fix}{hint}")
    online = {k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in parent.online.items()}
    new = {**state, "online": online, "target": online}
    if parent.optimizer is not None:
        optimizer = {
            **parent.optimizer,
            "param_groups": [
                {**g, **{k: v for k, v in (("lr", cfg.agent.lr), ("eps", cfg.agent.adam_eps)) if k in g}}
                for g in parent.optimizer.get("param_groups", [])
            ],
        }
        new["optimizer"] = optimizer
    try:
        agent.load_state_dict(new)
    except (RuntimeError, KeyError, ValueError) as exc:
        part = "optimizer state" if parent.optimizer is not None else "weights"
        raise UserError(
            f"{where}: its {part} does not fit this agent ({first_line(exc, 100)}); {fix}"
            + ("; or drop --init-optimizer" if parent.optimizer is not None else "")
        ) from None
