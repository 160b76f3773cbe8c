"""Proportional prioritization (Schaul et al. 2016) over a sampler's entries, in a sum tree (``drl.sumtree``).

An entry is what a sampler draws: a transition (its flat slot id) or a sequence start (``env * K + k``). New entries
get the largest priority seen so far; the learner's TD errors replace it (``update``). Priorities are stored as
``(|td| + eps) ** alpha``; a sequence's TD errors are mixed as R2D2 does, ``eta * max + (1 - eta) * mean``.
"""

from __future__ import annotations

import numpy as np
import torch

from drl.sumtree import SumTree, importance_weights


class Prioritizer:
    def __init__(self, num_entries: int, alpha: float = 0.6, priority_eps: float = 1e-6, eta: float = 0.9):
        self.tree = SumTree(num_entries)
        self.alpha, self.priority_eps, self.eta = alpha, priority_eps, eta

    def nbytes(self) -> int:
        return self.tree.tree.nbytes

    def insert(self, entries: np.ndarray) -> None:
        """New entries: the largest priority seen so far."""
        if len(entries):
            self.tree.update(entries, self.tree.max_priority**self.alpha)

    def clear(self, entries: np.ndarray) -> None:
        """Entries that can no longer be drawn (a slot that became final): priority 0."""
        if len(entries):
            self.tree.update(entries, 0.0)

    def draw(self, need: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``need`` entries drawn proportionally to priority (stratified), with their probabilities."""
        entries = self.tree.sample(need, rng)
        return entries, self.tree.get(entries) / self.tree.total

    def weights(self, probabilities: np.ndarray, num_items: int, beta: float) -> np.ndarray:
        """Importance weights float32 [B] of a batch drawn with ``probabilities`` from ``num_items`` entries."""
        return importance_weights(probabilities, num_items, beta)

    def update(self, entries: np.ndarray, td_errors: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """td_errors [B] for transitions; [T, B] with ``mask`` for sequences (eta * max + (1 - eta) * mean)."""
        if mask is not None:
            td = td_errors.detach().abs().float().cpu() * mask.cpu()
            count = mask.cpu().sum(0).clamp(min=1)
            td_errors = self.eta * td.max(0).values + (1 - self.eta) * td.sum(0) / count
        p = td_errors.detach().abs().float().cpu().numpy().astype(np.float64) + self.priority_eps
        self.tree.update(entries, p**self.alpha)
        self.tree.max_priority = max(self.tree.max_priority, float(p.max()))

    def state_dict(self) -> dict:
        return {"tree": torch.from_numpy(self.tree.tree.copy()), "max_priority": self.tree.max_priority}

    def load_state_dict(self, state: dict) -> None:
        self.tree.tree[:] = state["tree"].numpy()
        self.tree.max_priority = state["max_priority"]
