"""Beam search's top-k: the reference and the CPU speed wing's block shortcut (fast/cpu.py) against the definition."""
import numpy as np
import pytest

from minibertgen.fast import cpu
from minibertgen import ops


def _definition(values, k):
    """Sort each row by (value descending, index ascending) and keep k."""
    order = np.stack([np.lexsort((np.arange(row.size), -row))[:k] for row in values])
    return np.take_along_axis(values, order, axis=-1), order


@pytest.mark.parametrize("n, k", [(4 * 30522, 8), (16384, 1), (50358 * 2, 64), (70000, 3)])
def test_block_top_k_matches_the_definition(n, k):
    rng = np.random.default_rng(n + k)
    values = rng.standard_normal((3, n)).astype(np.float32)
    values[1, rng.integers(0, n, 50)] = 9.0  # a cluster of large scores in scattered blocks
    values[2, :] = -np.inf  # a row with few finite scores: the k-th best is in no block of its own
    values[2, rng.choice(n, k, replace=False)] = rng.standard_normal(k)
    values[0, n - 3] = 12.0  # the best score in the last block, which is short unless 256 divides n
    assert n >= 16 * cpu.TOP_K_BLOCK  # the block path is the one under test
    want_values, want_indices = _definition(values, k)
    for top_k in (cpu.top_k, ops.top_k.reference):
        got_values, got_indices = top_k(values, k)
        np.testing.assert_array_equal(got_values, want_values)
        np.testing.assert_array_equal(got_indices[:2], want_indices[:2])  # row 1: tied 9.0s, lower index first
        assert set(got_indices[2]) == set(want_indices[2])


def test_block_top_k_with_fewer_finite_scores_than_k():
    values = np.full((1, 64 * cpu.TOP_K_BLOCK), -np.inf, dtype=np.float32)
    values[0, [5, 9000]] = [1.0, 2.0]
    got_values, got_indices = cpu.top_k(values, 4)
    np.testing.assert_array_equal(got_values[0, :2], [2.0, 1.0])
    np.testing.assert_array_equal(got_indices[0, :2], [9000, 5])
    assert np.isneginf(got_values[0, 2:]).all() and len(set(got_indices[0])) == 4  # distinct picks


def test_block_top_k_falls_back_on_nan():
    values = np.random.default_rng(0).standard_normal((2, 64 * cpu.TOP_K_BLOCK)).astype(np.float32)
    values[0, ::7] = np.nan
    np.testing.assert_array_equal(cpu.top_k(values, 5)[1], ops.top_k.reference(values, 5)[1])
