"""The zoo: trained agents shipped with drl, each a folder ``drl/zoo/NAME/`` in ``drl.export``'s layout (model card
``README.md``, ``config.yaml``, ``model.safetensors``, ``replay.mp4``).

``drl.load_agent("zoo:NAME")`` and ``python -m drl.evaluate zoo:NAME`` load one; ``python -m drl.evaluate
--list-zoo`` lists them with the env and score from their cards. ``DRL_ZOO_DIR`` points the zoo at another folder.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from drl.errors import UserError

ZOO_DIR_ENV = "DRL_ZOO_DIR"


def root() -> Path:
    """The zoo folder: ``$DRL_ZOO_DIR``, else this package's folder."""
    return Path(os.environ.get(ZOO_DIR_ENV) or Path(__file__).resolve().parent)


def names() -> list[str]:
    """The agents in the zoo: sub-folders holding an exported model."""
    from drl.exported import is_export

    folder = root()
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_export(p)) if folder.is_dir() else []


def resolve(name: str) -> Path:
    """The folder of zoo agent ``name`` (an unknown name is a one-line error listing the available ones)."""
    available = names()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        listing = f"available: {', '.join(available)}" if available else f"the zoo ({root()}) is empty"
        raise UserError(f"unknown zoo agent '{name}'{hint}; {listing}")
    return root() / name


def entries() -> list[dict]:
    """name, env and score (mean_reward from the model card) of every zoo agent."""
    from drl.exported import CARD, card_score, read_card

    out = []
    for name in names():
        card = root() / name / CARD
        env, score = card_score(read_card(card)) if card.is_file() else ("?", "?")
        out.append({"name": name, "env": env, "score": score})
    return out


def format_list() -> str:
    rows = entries()
    if not rows:
        return f"the zoo ({root()}) is empty"
    table = [("name", "env", "mean_reward"), *((r["name"], r["env"], r["score"]) for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)
