"""The folder ``drl.export`` writes and ``drl.load_agent``, ``drl.evaluate`` and the zoo read: its file names, the
model file (written and read back as a checkpoint-like payload) and the model card's front matter."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from drl import config
from drl.errors import UserError, first_line

MODEL, CARD, CONFIG, VIDEO = "model.safetensors", "README.md", "config.yaml", "replay.mp4"
FORMAT = "drl-model"


# ------------------------------------------------------------------------------------------------- the model file
def is_export(folder: Path) -> bool:
    return (Path(folder) / MODEL).is_file()


def online_weights(payload: dict) -> dict:
    """A checkpoint ``payload``'s online Q-network state dict, the part an export holds."""
    online = payload["agent"].get("online") if isinstance(payload["agent"], dict) else None
    if not isinstance(online, dict):
        raise UserError(
            "this agent's state has no 'online' network (the built-in dqn and drqn agents have one); "
            "it cannot be exported"
        )
    return online


def write_model(path: Path, payload: dict) -> None:
    """The online network's weights of a checkpoint ``payload`` (in the dtype they have: ``drl.export --dtype``
    rounds them first), with what loading them needs as metadata."""
    from safetensors.torch import save_file

    online = online_weights(payload)
    metadata = {
        "format": FORMAT,
        "obs_shape": json.dumps(list(payload["obs_shape"])),
        "obs_dtype": payload.get("obs_dtype", "uint8"),
        "num_actions": str(payload["num_actions"]),
        "num_extras": str(payload.get("num_extras", 0)),
        "env_steps": str(payload["counters"]["env_steps"]),
        "experiment": payload["config"].get("name", ""),
        "dtype": weights_dtype(online),
    }
    save_file({k: v.detach().cpu().contiguous() for k, v in online.items()}, str(path), metadata=metadata)


def weights_dtype(state: dict) -> str:
    """The dtype of a state dict's floating-point tensors, e.g. ``"float32"`` (``"mixed"`` if they differ)."""
    dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else "mixed"


def read_model(folder: Path, cfg: config.Config) -> dict:
    """An exported folder's model as a payload ``drl.checkpoint.load_agent_state`` loads (``online_only``)."""
    from safetensors import SafetensorError, safe_open

    path = Path(folder) / MODEL
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            online = {key: f.get_tensor(key) for key in f.keys()}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"its metadata says format {metadata.get('format')!r}, not {FORMAT!r}")
        spec = {
            "obs_shape": json.loads(metadata["obs_shape"]),
            "obs_dtype": metadata["obs_dtype"],
            "num_actions": int(metadata["num_actions"]),
            "num_extras": int(metadata["num_extras"]),
        }
        env_steps = int(metadata["env_steps"])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"'{path}' is not a model written by drl.export ({first_line(exc, 120)}); export the run again"
        ) from None
    return {
        "agent": {"online": online},
        "online_only": True,
        "config": cfg.model_dump(),
        "counters": {"env_steps": env_steps},
        **spec,
    }


# ------------------------------------------------------------------------------------------------- the model card
def read_card(path: Path) -> dict:
    """The YAML front matter of a model card (``{}`` when it has none)."""
    text = Path(path).read_text()
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    data = yaml.safe_load(text[4:end]) if end > 0 else None
    return data if isinstance(data, dict) else {}


def card_score(card: dict) -> tuple[str, str]:
    """(env, "mean +/- std") from a card's model-index ("?" where missing)."""
    try:
        result = card["model-index"][0]["results"][0]
        return str(result["dataset"]["name"]), str(result["metrics"][0]["value"])
    except (KeyError, IndexError, TypeError):
        return "?", "?"
