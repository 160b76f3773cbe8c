"""Run outputs: metrics as JSON lines (one row per log event) in the run directory.

Every row carries ``event`` (train / episode / eval), ``env_steps`` (agent steps summed over envs), ``frames``
(env_steps x frame skip) and ``wall_time`` (seconds since the run started, carried across resumes). The rows of a
run started from another run's weights (``drl.train --init-from``) also carry ``chain_env_steps``: the env steps of
the whole chain of runs (``init_from.chain_env_steps`` in its config, plus this run's ``env_steps``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    def __init__(self, run_dir: Path, frame_skip: int, trackers=(), chain_offset: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.frame_skip = frame_skip
        self.chain_offset = chain_offset  # env steps of the runs before this one (None: not a segment)
        # every written row is forwarded to each tracker's log_row (drl.tracking: W&B, TensorBoard)
        self.trackers = [t for t in trackers if t is not None]
        self.file = open(self.path, "a", buffering=1)

    def write(self, event: str, env_steps: int, wall_time: float, **values) -> dict:
        row = {
            "event": event,
            "env_steps": int(env_steps),
            "frames": int(env_steps * self.frame_skip),
            **({} if self.chain_offset is None else {"chain_env_steps": int(self.chain_offset + env_steps)}),
            "wall_time": round(wall_time, 3),
            **{k: _clean(v) for k, v in values.items()},
        }
        self.file.write(json.dumps(row) + "\n")
        for tracker in self.trackers:
            tracker.log_row(row)
        return row

    def close(self) -> None:
        self.file.close()


SESSIONS = "sessions.jsonl"  # RUN_DIR/sessions.jsonl: one line per start of training (drl.train.record_session)


def read_sessions(run_dir: Path) -> list[dict]:
    """The run's sessions, one per start or resume of training; [] for a run that predates the file."""
    path = run_dir / SESSIONS
    return read_metrics(path) if path.is_file() else []  # JSON lines, as metrics.jsonl


def read_metrics(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a crash mid-write
    return rows
