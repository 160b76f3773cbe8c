"""Read a W&B ``.wandb`` run file (what offline runs write) back with wandb's own record format.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1 little-endian, version 0), then 32 KiB
blocks (the header occupies the start of the first one). Each chunk in a block is crc32 (4 bytes) + payload length
(uint16 little-endian) + type (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST) + payload; a block tail shorter than a chunk
header is zero padding. Payloads (joined across FIRST..LAST) are serialized
``wandb.proto.wandb_internal_pb2.Record`` messages.

``read_run(path)`` collects what a run logged: run info (id, project, group, job type, name), config, history
rows, summary and ``define_metric`` records (used by the tests to check what an offline run recorded).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from drl.errors import UserError

HEADER_IDENT = b":W&B"
HEADER_MAGIC = 0xBEE1
HEADER_SIZE = 7
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(UserError):
    pass


def iter_payloads(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if len(data) < HEADER_SIZE or data[:4] != HEADER_IDENT:
        raise WandbFileError(f"'{path}' is not a W&B run file (no :W&B header)")
    magic, version = struct.unpack("<HB", data[4:7])
    if magic != HEADER_MAGIC or version != 0:
        raise WandbFileError(f"'{path}' has an unknown W&B header (magic {magic:#x}, version {version})")
    pos, pending = HEADER_SIZE, b""
    while pos < len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER:  # zero padding at the end of a block
            pos += left_in_block
            continue
        if pos + CHUNK_HEADER > len(data):
            break  # a header cut by a crash
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        start = pos + CHUNK_HEADER
        if kind == 0 and length == 0:  # pre-allocated / padded space
            pos += left_in_block
            continue
        if start + length > len(data):
            break  # a payload cut by a crash
        payload = data[start : start + length]
        pos = start + length
        if kind == FULL:
            pending = b""
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""
        else:
            raise WandbFileError(f"'{path}' is corrupt: chunk type {kind} at byte {pos - length - CHUNK_HEADER}")


def iter_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    for payload in iter_payloads(path):
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # wandb's pb2 has no stubs: built at import
        record.ParseFromString(payload)
        yield record


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _history_value(item):
    which = item.WhichOneof("value")
    if which is None:
        return json.loads(item.value_json) if item.value_json else None
    if which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    return getattr(item, which)


def read_run(path: Path) -> dict:
    """Everything useful in one ``.wandb`` file, as plain Python values."""
    out: dict = {"run": {}, "config": {}, "history": [], "summary": {}, "metrics": [], "exit_code": None}

    def update_config(config_record) -> None:
        for item in config_record.update:
            out["config"][_key(item)] = json.loads(item.value_json)

    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out["run"] = {
                "id": r.run_id,
                "entity": r.entity,
                "project": r.project,
                "group": r.run_group,
                "job_type": r.job_type,
                "name": r.display_name,
            }
            update_config(r.config)
        elif kind == "config":
            update_config(record.config)
        elif kind == "history":
            row = {_key(item): _history_value(item) for item in record.history.item}
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][_key(item)] = json.loads(item.value_json)
            for item in record.summary.remove:
                out["summary"].pop(_key(item), None)
        elif kind == "metric":
            m = record.metric
            out["metrics"].append({"name": m.name, "glob_name": m.glob_name, "step_metric": m.step_metric})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def find_run_files(run_dir: Path) -> list[Path]:
    """The ``.wandb`` files under RUN_DIR/wandb/, oldest first (a resumed run adds one per session)."""
    files = [p for p in Path(run_dir).glob("wandb/*run-*/run-*.wandb") if not p.parent.is_symlink()]  # latest-run
    return sorted(files, key=lambda p: p.stat().st_mtime)
