"""The unification projection is the exact Euclidean projection: checked against exhaustive
enumeration of sign patterns and of block assignments on small tensors."""
import itertools

import pytest
import torch

from graphc.errors import InputError
from graphc.passes.unify_blocks import apply_structure, from_blocks, parse_block, project, to_blocks


def _closest_unified(b):
    """Brute force: over every sign pattern, the best value v >= 0 (<s, b>/k clamped)."""
    k = b.numel()
    best = float("inf")
    for s in itertools.product((1.0, -1.0), repeat=k):
        s = torch.tensor(s, dtype=b.dtype)
        v = max(0.0, float((s * b).sum()) / k)
        best = min(best, float(((b - s * v) ** 2).sum()))
    return best


@pytest.mark.parametrize("block", ["cin4", "kernel", "cin2"])
def test_blocks_round_trip_and_tile(block):
    spec = parse_block(block)
    w = torch.randn(6, 8, 3, 3)
    b = to_blocks(w, spec)
    assert b.shape[1] == spec.block_size(w.shape)
    assert torch.equal(from_blocks(b, w.shape, spec), w)
    if spec.kind == "cin":  # one block: k consecutive input channels at one tap of one filter
        assert torch.equal(b[0], w[0, :spec.k, 0, 0])
        assert torch.equal(b[1], w[0, :spec.k, 0, 1])
    else:
        assert torch.equal(b[1], w[0, 1].reshape(-1))


def test_unified_block_is_the_closest():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 2, 2, generator=g, dtype=torch.float64)
    spec = parse_block("cin4")
    p = project(w, spec, n_unify=to_blocks(w, spec).shape[0], n_prune=0)
    zb, wb = to_blocks(p.z, spec), to_blocks(w, spec)
    for z, b in zip(zb, wb):
        assert torch.allclose(z.abs(), z.abs()[0].expand_as(z))  # one magnitude, own signs
        assert torch.all(torch.sign(z) == torch.sign(b))
        assert float(((b - z) ** 2).sum()) == pytest.approx(_closest_unified(b), rel=1e-12, abs=1e-15)
        for _ in range(20):  # and no perturbed unified block is closer
            s = torch.sign(z) * torch.where(torch.rand(4, generator=g, dtype=torch.float64) < 0.2, -1.0, 1.0)
            v = z.abs()[0] * (1 + 0.1 * torch.randn((), generator=g, dtype=torch.float64))
            assert float(((b - s * v) ** 2).sum()) >= float(((b - z) ** 2).sum()) - 1e-12


@pytest.mark.parametrize("n_unify,n_prune", [(8, 0), (0, 3), (5, 3), (3, 2), (2, 4), (0, 0), (1, 1)])
def test_budgeted_assignment_is_optimal(n_unify, n_prune):
    """Every way of choosing which blocks to prune / unify / leave free is no closer."""
    g = torch.Generator().manual_seed(n_unify * 10 + n_prune)
    w = torch.randn(2, 4, 2, 1, generator=g, dtype=torch.float64) * torch.rand(2, 4, 2, 1, generator=g, dtype=torch.float64)
    spec = parse_block("cin2")
    wb = to_blocks(w, spec)
    n = wb.shape[0]
    p = project(w, spec, n_unify, n_prune)
    assert int((p.cls == 1).sum()) == n_unify and int((p.cls == 2).sum()) == n_prune
    assert float(((w - p.z) ** 2).sum()) == pytest.approx(p.dist, rel=1e-9, abs=1e-12)
    cost = {0: [0.0] * n, 1: [_closest_unified(b) for b in wb], 2: [float((b * b).sum()) for b in wb]}
    best = min(sum(cost[c][i] for i, c in enumerate(cls))
               for cls in itertools.product((0, 1, 2), repeat=n)
               if cls.count(1) == n_unify and cls.count(2) == n_prune)
    assert p.dist == pytest.approx(best, rel=1e-9, abs=1e-12)


def test_shared_pattern_is_optimal_per_group():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 6, 2, 2, generator=g, dtype=torch.float64)
    spec = parse_block("cin3-shared")
    p = project(w, spec, n_unify=to_blocks(w, spec).shape[0], n_prune=0)
    # every filter and tap of input-channel group j uses one pattern (up to the value's sign)
    zb = to_blocks(p.z, spec).reshape(3, 2, 4, 3)
    for j in range(2):
        pats = {tuple(torch.sign(r * r[0]).tolist()) for r in zb[:, j].reshape(-1, 3)}
        assert len(pats) == 1
        blocks = to_blocks(w, spec).reshape(3, 2, 4, 3)[:, j].reshape(-1, 3)
        brute = min(sum(float((b * b).sum()) - float((torch.tensor(s, dtype=b.dtype) * b).sum()) ** 2 / 3
                        for b in blocks) for s in itertools.product((1.0, -1.0), repeat=3))
        mine = float(((blocks - zb[:, j].reshape(-1, 3)) ** 2).sum())
        assert mine == pytest.approx(brute, rel=1e-12)


def test_fixed_structure_projection_keeps_signs_and_zeros():
    w = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    spec = parse_block("kernel")
    p = project(w, spec, n_unify=20, n_prune=8)
    moved = apply_structure(p.z + 0.01 * torch.randn_like(w), spec, p.cls, p.signs)
    mb = to_blocks(moved, spec)
    assert torch.all(mb[p.cls == 2] == 0)
    uni = mb[p.cls == 1]
    assert torch.allclose(uni.abs(), uni.abs()[:, :1].expand_as(uni))


@pytest.mark.parametrize("bad", ["cin1", "row4", "cin", "cin16-shared", "", "cin128"])
def test_bad_block_names(bad):
    with pytest.raises(InputError, match="unify"):
        parse_block(bad)
