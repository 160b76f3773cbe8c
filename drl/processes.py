"""Process-tree helpers (Linux /proc) for the Doom worker checks: soak script and reliability tests."""
from __future__ import annotations

import os


def children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def doom_workers(train_pid: int) -> list[int]:
    """The Doom worker processes of one training: children of its multiprocessing forkserver."""
    for kid in children(train_pid):
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if b"forkserver" in f.read():
                    return children(kid)
        except OSError:
            pass
    return []
