import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drl.sumtree import SumTree, importance_weights


def _check_structure(tree: SumTree) -> None:
    t = tree.tree
    P = tree.num_leaves
    assert t.shape == (2 * P,)
    assert P >= tree.capacity and P & (P - 1) == 0
    # Every internal node is exactly the float sum of its two children.
    np.testing.assert_array_equal(t[1:P], t[2 : 2 * P : 2] + t[3 : 2 * P : 2])
    # Padding leaves stay zero.
    assert np.all(t[P + tree.capacity :] == 0)


def _updates(draw, capacity, priority_strategy):
    ops = []
    for _ in range(draw(st.integers(1, 8))):
        n = draw(st.integers(0, 2 * capacity + 2))
        idx = draw(st.lists(st.integers(0, capacity - 1), min_size=n, max_size=n))
        pri = draw(st.lists(priority_strategy, min_size=n, max_size=n))
        ops.append((np.array(idx, dtype=np.int64), pri))
    return ops


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_random_updates_keep_tree_consistent(data):
    capacity = data.draw(st.integers(1, 40))
    tree = SumTree(capacity)
    model = np.zeros(capacity)
    running_max = 1.0
    prio = st.one_of(st.just(0.0), st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False), st.floats(1e-8, 1e-3))
    for idx, pri in _updates(data.draw, capacity, prio):
        pri = np.array(pri, dtype=np.float64)
        tree.update(idx, pri)
        for i, p in zip(idx, pri):  # reference model: sequential assignment, last value wins
            model[i] = p
        if pri.size:
            running_max = max(running_max, pri.max())
        np.testing.assert_array_equal(tree.leaves, model)
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), model)
        _check_structure(tree)
        expected = model.sum()
        assert math.isclose(tree.total, expected, rel_tol=1e-9, abs_tol=0.0) or (expected == 0 and tree.total == 0)
        assert tree.max_priority == running_max


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_integer_priorities_total_is_exact(data):
    capacity = data.draw(st.integers(1, 40))
    tree = SumTree(capacity)
    model = [0] * capacity
    for idx, pri in _updates(data.draw, capacity, st.integers(0, 10**12)):
        tree.update(idx, np.array(pri, dtype=np.float64))
        for i, p in zip(idx, pri):
            model[i] = p
        _check_structure(tree)
        assert tree.total == float(sum(model))
        assert int(tree.total) == sum(model)


def test_duplicate_indices_last_value_wins():
    tree = SumTree(5)
    tree.update(np.array([3, 1, 3, 3, 1]), np.array([7.0, 2.0, 0.0, 4.0, 9.0]))
    np.testing.assert_array_equal(tree.leaves, [0.0, 9.0, 0.0, 4.0, 0.0])
    assert tree.total == 13.0
    assert tree.max_priority == 9.0
    tree.update(np.array([1]), 0.5)  # scalar broadcast; max_priority is a running max
    assert tree.total == 4.5 and tree.max_priority == 9.0
    assert tree.min_priority() == 0.5
    _check_structure(tree)


def test_update_rejects_bad_input():
    tree = SumTree(4)
    with pytest.raises(IndexError):
        tree.update(np.array([4]), np.array([1.0]))
    with pytest.raises(IndexError):
        tree.update(np.array([-1]), np.array([1.0]))
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([-1.0]))
    with pytest.raises(ValueError):
        tree.update(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError):
        tree.sample(4, np.random.default_rng(0))  # total is 0


def test_sampling_frequencies_match_priorities():
    rng = np.random.default_rng(1234)
    capacity = 16
    pri = rng.uniform(0.05, 3.0, capacity)
    zero = np.array([0, 5, 6, 15])
    pri[zero] = 0.0
    tree = SumTree(capacity)
    tree.update(np.arange(capacity), pri)

    batch, n_batches = 64, 3125
    n = batch * n_batches  # 200k draws
    counts = np.zeros(capacity, dtype=np.int64)
    for _ in range(n_batches):
        idx = tree.sample(batch, rng)
        counts += np.bincount(idx, minlength=capacity)
    assert counts.sum() == n
    assert np.all(counts[zero] == 0)

    p = pri / pri.sum()
    freq = counts / n
    # Stratified sampling has per-leaf count variance <= the multinomial n*p*(1-p), so a 5-sigma binomial bound
    # (~0.0011 * 5 at worst for n = 200k) is a conservative tolerance; any bias of ~1% of mass would fail it.
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), np.abs(freq - p) / np.maximum(sigma, 1e-12)
    # Chi-square over the positive leaves (df = 11): the 1e-6 tail quantile is ~44.
    pos = p > 0
    chi2 = np.sum((counts[pos] - n * p[pos]) ** 2 / (n * p[pos]))
    assert chi2 < 44.0, chi2


@pytest.mark.parametrize("capacity,batch", [(1, 1), (10, 4), (10, 32), (37, 37), (64, 5)])
def test_stratified_sample_shape_and_range(capacity, batch):
    rng = np.random.default_rng(capacity * 100 + batch)
    tree = SumTree(capacity)
    tree.update(np.arange(capacity), rng.uniform(0.1, 1.0, capacity))
    for _ in range(20):
        idx = tree.sample(batch, rng)
        assert idx.shape == (batch,)
        assert np.issubdtype(idx.dtype, np.integer)
        assert idx.min() >= 0 and idx.max() < capacity  # padding leaves [capacity, P) never returned


def test_stratified_sample_is_stratified():
    # Equal priorities and batch_size == capacity: segment k covers exactly item k.
    tree = SumTree(8)
    tree.update(np.arange(8), np.ones(8))
    for seed in range(5):
        np.testing.assert_array_equal(tree.sample(8, np.random.default_rng(seed)), np.arange(8))


def _naive_find(t: np.ndarray, u: float) -> int:
    P = len(t) // 2
    i = 1
    while i < P:
        if u < t[2 * i]:
            i = 2 * i
        else:
            u -= t[2 * i]
            i = 2 * i + 1
    return i - P


def test_find_never_returns_zero_priority_leaf_under_rounding():
    # A case where float rounding makes the textbook descent (no guard) land on a zero leaf at the top end.
    pri = np.array(
        [0.0003415357753568293, 0.0, 83.27610351493956, 0.0, 0.0, 0.0756509194852435, 594.1900745245673, 0.0]
    )
    tree = SumTree(8)
    tree.update(np.arange(8), pri)
    top = np.nextafter(tree.total, 0.0)
    assert pri[_naive_find(tree.tree, top)] == 0.0  # the case really is adversarial

    # Values at and around every prefix-sum boundary, plus out-of-range values that must be clamped.
    cum = np.concatenate([[0.0], np.cumsum(pri)])
    vals = np.concatenate(
        [cum, np.nextafter(cum, -np.inf), np.nextafter(cum, np.inf), [top, tree.total, tree.total * 2, -1.0, np.inf]]
    )
    idx = tree.find(vals)
    assert np.all(pri[idx] > 0), (vals[pri[idx] == 0], idx[pri[idx] == 0])
    assert tree.find(np.array([top]))[0] == 6

    # Randomised: many trees with zeros, many draws near the top and near boundaries.
    rng = np.random.default_rng(7)
    for _ in range(300):
        cap = int(rng.integers(2, 20))
        pri = rng.random(cap) * 10.0 ** rng.integers(-6, 6, cap)
        pri[rng.random(cap) < 0.4] = 0.0
        if not pri.any():
            pri[rng.integers(cap)] = 1.0
        tree = SumTree(cap)
        tree.update(np.arange(cap), pri)
        cum = np.cumsum(pri)
        vals = np.concatenate(
            [
                np.nextafter(cum, -np.inf),
                np.nextafter(cum, np.inf),
                cum,
                [np.nextafter(tree.total, 0.0)],
                rng.random(64) * tree.total,
            ]
        )
        assert np.all(pri[tree.find(vals)] > 0)
        assert np.all(pri[tree.sample(32, rng)] > 0)


def test_importance_weights_hand_example():
    # N * P = [4, 1, 2] -> (.)^-1 = [0.25, 1, 0.5], max 1.
    w = importance_weights(np.array([0.2, 0.05, 0.1]), num_items=20, beta=1.0)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, [0.25, 1.0, 0.5], rtol=1e-6)
    # N * P = [1, 2, 4] -> (.)^-0.5 = [1, 1/sqrt2, 0.5].
    w = importance_weights(np.array([0.1, 0.2, 0.4]), num_items=10, beta=0.5)
    np.testing.assert_allclose(w, [1.0, 1.0 / math.sqrt(2.0), 0.5], rtol=1e-6)
    # N * P = [2, 8] -> (.)^-0.5 = [0.7071, 0.3536], normalised by max 0.7071 -> [1, 0.5].
    w = importance_weights(np.array([0.5, 2.0]), num_items=4, beta=0.5)
    np.testing.assert_allclose(w, [1.0, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(importance_weights(np.array([0.3, 0.7]), 2, 0.0), [1.0, 1.0])
