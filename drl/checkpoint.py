"""Checkpoints: written atomically (temporary file, then rename), loaded with ``weights_only=True``."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from drl.errors import UserError, first_line


class CheckpointError(UserError):
    pass


def save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException as exc:  # e.g. disk full: the previous checkpoint stays as it was
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):
            why = getattr(exc, "strerror", None) or first_line(exc, 120)
            raise CheckpointError(f"cannot write checkpoint '{path}' ({why}); free disk space or fix the folder's "
                                  "permissions, then resume (the previous checkpoint is unchanged)") from None
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


def load(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass an existing file (see RUN_DIR/checkpoints/)")
    try:
        if zipfile.is_zipfile(path):  # torch.load does not check the CRCs: flipped bytes would load silently
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"record {bad} fails its CRC check")
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower() and "unsupported global" in str(exc).lower():
            raise CheckpointError(f"checkpoint '{path}' was refused: it holds pickled Python objects (code could run "
                                  "on loading) that a drl checkpoint never contains; load only checkpoints written "
                                  "by drl.train") from None
        raise CheckpointError(f"checkpoint '{path}' is unreadable, truncated or corrupt (not a torch checkpoint); "
                              "use an earlier checkpoint or start a new run") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint '{path}' is unreadable, truncated or corrupt ({first_line(exc, 120)}); "
                              "use an earlier checkpoint or start a new run") from None
    if not isinstance(payload, dict) or "agent" not in payload or "config" not in payload:
        raise CheckpointError(f"checkpoint '{path}' is not a drl checkpoint; pass a file written by drl.train")
    return payload


def check_experiment(payload: dict, name: str, fix: str) -> None:
    """The checkpoint was written by experiment ``name`` (else a one-line error ending in ``fix``)."""
    if payload["config"].get("name") != name:
        raise CheckpointError(f"checkpoint belongs to experiment '{payload['config'].get('name')}', not '{name}'; "
                              f"{fix}")


def check_fits(payload: dict, obs_shape: tuple, num_actions: int, fix: str) -> None:
    """The checkpoint was written for these observations and actions (else a one-line error ending in ``fix``)."""
    if tuple(payload["obs_shape"]) != tuple(obs_shape) or payload["num_actions"] != num_actions:
        raise CheckpointError(f"checkpoint was written for observations {tuple(payload['obs_shape'])} and "
                              f"{payload['num_actions']} actions, this config gives {tuple(obs_shape)} and "
                              f"{num_actions}; {fix}")


def load_agent_state(agent, payload: dict, fix: str) -> None:
    """Load the checkpoint's weights into ``agent`` (a shape mismatch is a one-line error ending in ``fix``)."""
    try:
        agent.load_state_dict(payload["agent"])
    except (RuntimeError, KeyError, ValueError) as exc:
        from drl.errors import first_line
        raise CheckpointError(f"checkpoint does not fit this network ({first_line(exc, 100)}); {fix}") from None
