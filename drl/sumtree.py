"""Vectorized sum tree for proportional prioritized replay (Schaul et al. 2016).

Layout: one flat float64 array ``tree`` of size ``2 * P`` where ``P`` is ``capacity`` rounded up to a power of two.
Node 1 is the root, node ``i`` has children ``2i`` and ``2i + 1``, node 0 is unused. Item ``k`` (``0 <= k <
capacity``) lives in leaf ``P + k``; padding leaves ``[P + capacity, 2P)`` stay 0 forever.

Every internal node is recomputed as ``left + right`` from its children whenever something below it changes, so
the tree never accumulates drift from delta updates: each internal node is exactly (bit-for-bit) the float sum of
its two children, and with integer-valued priorities (below 2**53) every sum is exact.

No per-item Python loops: ``update`` and ``find`` loop over tree levels only (``log2(P)`` iterations), vectorized
over the batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SumTree", "importance_weights"]


class SumTree:
    """Sum tree over ``capacity`` non-negative priorities, all initially 0.

    Indices are item indices in ``[0, capacity)`` (not tree node ids). Priorities are float64.
    ``max_priority`` is the running max of every priority ever set, starting at 1.0 (new items are usually inserted
    with it).
    """

    @staticmethod
    def padded_size(capacity: int) -> int:
        """P: ``capacity`` rounded up to a power of two (the tree holds ``2 * P`` float64 nodes)."""
        return 1 << (int(capacity) - 1).bit_length()

    def __init__(self, capacity: int) -> None:
        capacity = int(capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.num_leaves = self.padded_size(capacity)
        self.depth = self.num_leaves.bit_length() - 1  # number of levels below the root
        self.tree = np.zeros(2 * self.num_leaves, dtype=np.float64)
        self.max_priority = 1.0

    def __len__(self) -> int:
        return self.capacity

    @property
    def total(self) -> float:
        """Sum of all priorities (the root)."""
        return float(self.tree[1])

    @property
    def leaves(self) -> np.ndarray:
        """Read-only float64 view ``[capacity]`` of the priorities."""
        view = self.tree[self.num_leaves : self.num_leaves + self.capacity]
        view.flags.writeable = False
        return view

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"indices out of range [0, {self.capacity})")
        return idx

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Priorities (float64, same shape as ``indices``) of items ``indices``."""
        shape = np.shape(indices)
        idx = self._check_indices(indices)
        return self.tree[idx + self.num_leaves].reshape(shape)

    def update(self, indices: np.ndarray, priorities: np.ndarray | float) -> None:
        """Set ``priority[indices] = priorities`` (a scalar broadcasts); the last value wins for repeated indices.

        Priorities must be finite and >= 0. Parents of touched leaves are then recomputed level by level.
        """
        idx = self._check_indices(indices)
        pri = np.asarray(priorities, dtype=np.float64)
        pri = np.full(idx.shape, pri) if pri.ndim == 0 else pri.reshape(-1)
        if pri.shape != idx.shape:
            raise ValueError(f"priorities shape {pri.shape} does not match indices shape {idx.shape}")
        if idx.size == 0:
            return
        if not np.all(np.isfinite(pri)) or pri.min() < 0:
            raise ValueError("priorities must be finite and >= 0")
        # Keep the last occurrence of each index: unique over the reversed arrays returns first occurrences.
        uniq, first_in_rev = np.unique(idx[::-1], return_index=True)
        nodes = uniq + self.num_leaves
        self.tree[nodes] = pri[::-1][first_in_rev]
        self.max_priority = max(self.max_priority, float(pri.max()))
        tree = self.tree
        for _ in range(self.depth):
            nodes = np.unique(nodes >> 1)  # sorted unique parents of this level
            tree[nodes] = tree[2 * nodes] + tree[2 * nodes + 1]

    def min_priority(self) -> float:
        """Smallest non-zero priority (0.0 when all are zero). O(capacity), vectorized."""
        leaves = self.leaves
        positive = leaves[leaves > 0]
        return float(positive.min()) if positive.size else 0.0

    def find(self, values: np.ndarray) -> np.ndarray:
        """Item index (int64, same shape as ``values``) whose prefix-sum interval contains each value.

        Item ``k`` owns ``[sum(p[:k]), sum(p[:k+1]))``. Values are clamped into ``[0, total)``. Never returns an
        item with priority 0 while ``total > 0``: when descending, a zero-sum child is never entered, even if
        floating point rounding makes the remaining value overshoot the other child's sum.
        """
        if not self.tree[1] > 0:
            raise ValueError("cannot search a sum tree whose total is 0")
        vals = np.asarray(values, dtype=np.float64)
        shape = vals.shape
        u = np.clip(vals.reshape(-1), 0.0, np.nextafter(self.tree[1], 0.0))
        tree = self.tree
        node = np.ones(u.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * node
            left_sum = tree[left]
            right_sum = tree[left + 1]
            # Current node has a positive sum, so at least one child is positive; enter only positive children.
            go_right = ((u >= left_sum) & (right_sum > 0)) | ~(left_sum > 0)
            u = np.where(go_right, u - left_sum, u)
            node = left + go_right
        return (node - self.num_leaves).reshape(shape)

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Stratified proportional sample: int64 ``[batch_size]`` item indices in ``[0, capacity)``.

        ``[0, total)`` is split into ``batch_size`` equal segments with one uniform draw in each, so
        ``P(i) = p_i / total`` marginally. Probabilities for importance weights: ``get(idx) / total``.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = self.tree[1]
        values = (np.arange(batch_size, dtype=np.float64) + rng.random(batch_size)) * (total / batch_size)
        return self.find(values)


def importance_weights(probabilities: np.ndarray, num_items: int, beta: float) -> np.ndarray:
    """float32 weights ``(N * P(i)) ** -beta / max_j (N * P(j)) ** -beta`` for a sampled batch.

    ``probabilities`` are the sampling probabilities ``P(i)`` (all > 0) of the batch, ``num_items`` is ``N``, the
    number of items in replay. The largest weight in the batch is 1.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        return p.astype(np.float32)
    if not np.all(p > 0):
        raise ValueError("probabilities must be > 0")
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    w = (float(num_items) * p) ** (-float(beta))
    return (w / w.max()).astype(np.float32)
