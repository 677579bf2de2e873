"""The channel-group analysis's connected components give scipy's partition."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from graphc.passes.channel_groups import _components


def partition(labels) -> set[frozenset]:
    out: dict[int, set] = {}
    for v, lab in enumerate(np.asarray(labels).tolist()):
        out.setdefault(lab, set()).add(v)
    return {frozenset(s) for s in out.values()}


def scipy_partition(n, r, c):
    return partition(connected_components(coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n)),
                                          directed=False)[1])


@pytest.mark.parametrize("seed", range(6))
def test_random_graphs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    m = int(rng.integers(0, 2 * n))
    r, c = rng.integers(0, n, m), rng.integers(0, n, m)
    assert partition(_components(n, r, c)) == scipy_partition(n, r, c)


def test_long_chains_in_any_order():
    n = 5000
    perm = np.random.default_rng(0).permutation(n)
    for order in (np.arange(n), np.arange(n)[::-1], perm):
        r, c = order[:-1], order[1:]
        assert partition(_components(n, r, c)) == {frozenset(range(n))}


def test_no_edges():
    assert partition(_components(3, np.zeros(0, np.int64), np.zeros(0, np.int64))) == {frozenset([0]), frozenset([1]), frozenset([2])}
