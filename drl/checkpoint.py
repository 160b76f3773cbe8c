"""Checkpoints: tensors in safetensors, everything else in JSON, so loading never unpickles anything.

``latest.pt`` is a zip archive (deflated, level 1) of two records: ``tensors.safetensors`` (every tensor of the
payload, named by its path, e.g. ``agent/online/head.0.weight``) and ``state.json`` (the rest of the payload, with
``{"__tensor__": NAME}`` where a tensor was, ``{"__tuple__": [...]}`` for tuples and ``{"__items__": [[k, v], ...]}``
for dicts whose keys are not all strings, such as an optimizer's per-parameter state). Reading a record checks its
deflate stream and CRC-32, so flipped or zeroed bytes are caught; deflating also shrinks the mostly-zero parts
(replay frames, optimizer state of unused weights) to almost nothing. Writes are atomic (temporary file, fsync,
rename). Checkpoints written before this format (``torch.save`` archives) still load, with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from drl.errors import UserError, first_line

FORMAT = "drl-checkpoint"
VERSION = 1
STATE, TENSORS = "state.json", "tensors.safetensors"


class CheckpointError(UserError):
    pass


# ---------------------------------------------------------------------------------------------------- encoding
def _encode(value, tensors: dict, path: str, storages: set):
    """``value`` as JSON data; its tensors go to ``tensors`` (CPU, contiguous, no two sharing memory)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in storages:  # safetensors stores no aliases: a second view of the same memory is copied
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        name = path or "tensor"
        while name in tensors:
            name += "'"
        tensors[name] = tensor
        return {"__tensor__": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, tensors, f"{path}/{k}".lstrip("/"), storages) for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, tensors, path, storages), _encode(v, tensors, f"{path}/{k}".lstrip("/"), storages)]
                for k, v in value.items()
            ]
        }
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}", storages) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}/{i}", storages) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a checkpoint holds tensors and plain values; '{path}' is a {type(value).__name__}")


def _decode(data, tensors: dict):
    if isinstance(data, list):
        return [_decode(v, tensors) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if "__tuple__" in data:
        return tuple(_decode(v, tensors) for v in data["__tuple__"])
    if "__items__" in data:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in data["__items__"]}
    return {k: _decode(v, tensors) for k, v in data.items()}


def write(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` in the checkpoint format (not atomic: ``save`` is)."""
    tensors: dict[str, torch.Tensor] = {}
    state = {"format": FORMAT, "version": VERSION, "payload": _encode(payload, tensors, "", set())}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(STATE, json.dumps(state))
        archive.writestr(TENSORS, save_tensors(tensors))


def _record(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"record {name} fails its CRC-32 or deflate check: {first_line(exc, 80)}") from None


def read(archive: zipfile.ZipFile) -> dict:
    """The payload of an open checkpoint archive."""
    state = json.loads(_record(archive, STATE))
    if state.get("format") != FORMAT or not isinstance(state.get("version"), int) or state["version"] > VERSION:
        raise ValueError(f"unknown checkpoint format {state.get('format')!r} version {state.get('version')!r}")
    return _decode(state["payload"], load_tensors(_record(archive, TENSORS)))


# ---------------------------------------------------------------------------------------------------- files
def save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp, payload)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException as exc:  # e.g. disk full: the previous checkpoint stays as it was
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):
            why = getattr(exc, "strerror", None) or first_line(exc, 120)
            raise CheckpointError(
                f"cannot write checkpoint '{path}' ({why}); free disk space or fix the folder's "
                "permissions, then resume (the previous checkpoint is unchanged)"
            ) from None
        raise
    os.replace(tmp, path)  # atomic: readers see the old file or the new one, never a partial one
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _load_torch(path: Path, archive: zipfile.ZipFile) -> dict:
    """A checkpoint of the earlier format: a ``torch.save`` archive, loaded with ``weights_only=True``."""
    bad = archive.testzip()  # torch.load does not check the CRCs: flipped bytes would load silently
    if bad is not None:
        raise ValueError(f"record {bad} fails its CRC check")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower() and "unsupported global" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint '{path}' was refused: it holds pickled Python objects (code could run "
                "on loading) that a drl checkpoint never contains; load only checkpoints written "
                "by drl.train"
            ) from None
        raise CheckpointError(
            f"checkpoint '{path}' is unreadable, truncated or corrupt (not a torch checkpoint); "
            "use an earlier checkpoint or start a new run"
        ) from None


def load(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass an existing file (see RUN_DIR/checkpoints/)")
    try:
        with open(path, "rb") as f:
            if not zipfile.is_zipfile(f):
                raise ValueError("not a zip archive")
            with zipfile.ZipFile(f) as archive:
                payload = read(archive) if STATE in archive.namelist() else _load_torch(path, archive)
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        KeyError,
        UnicodeDecodeError,
        SafetensorError,
    ) as exc:
        raise CheckpointError(
            f"checkpoint '{path}' is unreadable, truncated or corrupt ({first_line(exc, 120)}); "
            "use an earlier checkpoint or start a new run"
        ) from None
    if not isinstance(payload, dict) or "agent" not in payload or "config" not in payload:
        raise CheckpointError(f"checkpoint '{path}' is not a drl checkpoint; pass a file written by drl.train")
    return payload


def check_experiment(payload: dict, name: str, fix: str) -> None:
    """The checkpoint was written by experiment ``name`` (else a one-line error ending in ``fix``)."""
    if payload["config"].get("name") != name:
        raise CheckpointError(
            f"checkpoint belongs to experiment '{payload['config'].get('name')}', not '{name}'; {fix}"
        )


def check_fits(payload: dict, obs_shape: tuple, num_actions: int, fix: str) -> None:
    """The checkpoint was written for these observations and actions (else a one-line error ending in ``fix``)."""
    if tuple(payload["obs_shape"]) != tuple(obs_shape) or payload["num_actions"] != num_actions:
        raise CheckpointError(
            f"checkpoint was written for observations {tuple(payload['obs_shape'])} and "
            f"{payload['num_actions']} actions, this config gives {tuple(obs_shape)} and "
            f"{num_actions}; {fix}"
        )


def cast_floats(state: dict, dtype: torch.dtype) -> dict:
    """A state dict's tensors on the CPU, contiguous, the floating-point ones cast to ``dtype`` (others as they are)."""
    return {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in state.items()
    }


def load_agent_state(agent, payload: dict, fix: str) -> None:
    """Load the checkpoint's weights into ``agent`` (a shape mismatch is a one-line error ending in ``fix``).

    A payload with ``online_only`` (an exported model: the online network's weights alone) sets the online and
    target networks to those weights and keeps the agent's fresh optimizer."""
    try:
        if payload.get("online_only"):
            online = payload["agent"]["online"]
            agent.load_state_dict({**agent.state_dict(), "online": online, "target": online})
        else:
            agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not fit this network ({first_line(exc, 100)}); {fix}") from None
