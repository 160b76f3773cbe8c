"""Proportional prioritization (Schaul et al. 2016) over a sampler's entries, in a sum tree (``drl.sumtree``).

An entry is what a sampler draws: a transition (its flat slot id) or a sequence start (``env * K + k``). New entries
get the largest priority seen so far; the learner's TD errors replace it (``update``). Priorities are stored as
``(|td| + eps) ** alpha``; a sequence's TD errors are mixed as R2D2 does, ``eta * max + (1 - eta) * mean``.

TD errors on a CUDA device are mixed there and copied to pinned host memory without waiting for the update that
computes them; the tree takes them the next time it is read or written (``Prioritizer.tree``), so every draw,
insert and clear sees them, in the order the calls were made, with no device sync per update.
"""

from __future__ import annotations

import numpy as np
import torch

from drl.sumtree import SumTree, importance_weights


class Prioritizer:
    def __init__(self, num_entries: int, alpha: float = 0.6, priority_eps: float = 1e-6, eta: float = 0.9):
        self._tree = SumTree(num_entries)
        self.alpha, self.priority_eps, self.eta = alpha, priority_eps, eta
        # an update whose errors are still on their way to the host: (entries, pinned float32 [B], copy done)
        self._staged: tuple[np.ndarray, torch.Tensor, torch.cuda.Event] | None = None

    @property
    def tree(self) -> SumTree:
        """The sum tree, holding the priorities of every update so far (see the module docstring)."""
        self._apply_staged()
        return self._tree

    def _apply_staged(self) -> None:
        """Put the staged update's priorities in the tree, waiting for their copy to the host if it is not done."""
        if self._staged is not None:
            entries, errors, copied = self._staged
            self._staged = None
            copied.synchronize()
            self._set(entries, errors)

    def nbytes(self) -> int:
        return self._tree.tree.nbytes

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
        """td_errors [B] for transitions; [T, B] with ``mask`` (on td_errors' device) for sequences (eta * max +
        (1 - eta) * mean). On CUDA the priorities reach the tree later, before it is next used (see the module
        docstring)."""
        errors = self.errors(td_errors, mask)
        self._apply_staged()  # the update before this one goes in first
        if errors.device.type != "cuda":
            self._set(entries, errors.cpu())
            return
        host = torch.empty(errors.shape, dtype=errors.dtype, pin_memory=True)
        host.copy_(errors, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self._staged = (np.array(entries, copy=True), host, copied)

    def errors(self, td_errors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``|td|`` [B] per entry, on td_errors' device: a sequence's masked errors mixed over its steps."""
        if mask is not None:
            td = td_errors.detach().abs().float() * mask
            count = mask.sum(0).clamp(min=1)
            td_errors = self.eta * td.max(0).values + (1 - self.eta) * td.sum(0) / count
        return td_errors.detach().abs().float()

    def _set(self, entries: np.ndarray, errors: torch.Tensor) -> None:
        """Priorities ``(|td| + eps) ** alpha`` of ``entries`` from errors float32 [B] on the host."""
        p = errors.numpy().astype(np.float64) + self.priority_eps
        self._tree.update(entries, p**self.alpha)
        self._tree.max_priority = max(self._tree.max_priority, float(p.max()))

    def state_dict(self) -> dict:
        tree = self.tree
        return {"tree": torch.from_numpy(tree.tree.copy()), "max_priority": tree.max_priority}

    def load_state_dict(self, state: dict) -> None:
        tree = self.tree
        tree.tree[:] = state["tree"].numpy()
        tree.max_priority = state["max_priority"]
