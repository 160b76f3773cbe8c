"""Checkpoints: written atomically (temporary file, then rename), loaded with ``weights_only=True``."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from drl.errors import UserError


class CheckpointError(UserError):
    pass


def save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; pass an existing file (see RUN_DIR/checkpoints/)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint '{path}' is unreadable, truncated or corrupt ({first[:120]}); "
                              "use an earlier checkpoint or start a new run") from None
    if not isinstance(payload, dict) or "agent" not in payload or "config" not in payload:
        raise CheckpointError(f"checkpoint '{path}' is not a drl checkpoint; pass a file written by drl.train")
    return payload
