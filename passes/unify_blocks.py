"""Micro-structured blocks of a weight tensor and the Euclidean projection onto "unified"
blocks (Lin, Jiang et al., arXiv 2106.08301): within a unified block every weight has one
absolute value and keeps its own sign; a block whose value is zero is pruned.

Block shapes (``BlockSpec``), for a weight ``[O, I, *taps]`` (conv) or ``[O, I]`` (linear):

- ``cin<k>``: k consecutive input channels at one tap of one filter (for a linear layer, k
  consecutive entries of one row); needs I divisible by k. Blocks ordered (o, group, tap).
- ``kernel``: the whole kernel (all taps) of one (filter, input channel); needs 2+ taps.
- a ``-shared`` suffix (``cin4-shared``, ``kernel-shared``): the blocks of one *group* share
  one sign pattern as well (a cin group: the same input channels across every filter and tap;
  a kernel group: the same input channel across every filter), each block keeping its own
  signed value. This is the structure the exact realization (``unify-realize``) turns into a
  signed summation followed by a narrower conv.

The projection, per block b (k weights):

- unified, own signs: Z = sign(b) * mean|b|, at distance ||b||^2 - k mean|b|^2. Exact: for a
  value v >= 0 the closest signs are sign(b), and then v = mean|b| minimises the distance.
- unified, shared pattern s of its group: Z = s <s, b> / k, at ||b||^2 - <s, b>^2 / k; s is the
  pattern in {+-1}^k (first entry +1, the value's sign absorbs a flip) maximising
  sum_b <s, b>^2 over the group, found by enumerating all 2^(k-1) patterns: exact (k <= 12).
- pruned: Z = 0, at ||b||^2. Free (not constrained): Z = b, at 0.

With a budget (exactly P blocks pruned, exactly U unified, the rest free) the assignment of
blocks to the three classes minimising the total distance is a transportation problem; the
cases that sort (no free blocks: prune the P smallest ``cost_pruned - cost_unified``; no
pruning: unify the U cheapest; no unification: prune the P cheapest) are solved by sorting,
the mixed case by an LP whose constraint matrix is totally unimodular, so the simplex vertex
is the integral optimum. Shared patterns with a budget: the pattern is chosen for the group
first (the all-unified optimum), then the assignment is exact for that pattern; that order is
our reading, as the paper does not publish one.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import torch

from graphc.errors import InputError

__all__ = ["BlockSpec", "parse_block", "to_blocks", "from_blocks", "Projection", "project", "assign",
           "apply_structure", "MAX_SHARED_K"]

MAX_SHARED_K = 12  # 2^(k-1) patterns are enumerated per group


@dataclass(frozen=True)
class BlockSpec:
    kind: str  # "cin" or "kernel"
    k: int = 0  # block size for cin; the kernel size is the layer's
    shared: bool = False

    def __str__(self) -> str:
        base = "kernel" if self.kind == "kernel" else f"cin{self.k}"
        return base + ("-shared" if self.shared else "")

    def why_not(self, shape: tuple[int, ...]) -> str | None:
        """Why this block shape does not tile a weight of ``shape``, or None."""
        if len(shape) < 2:
            return f"weight of rank {len(shape)}"
        taps = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        if self.kind == "cin" and shape[1] % self.k:
            return f"{shape[1]} input channels are not a multiple of {self.k}"
        if self.kind == "kernel" and taps < 2:
            return "a kernel block needs a kernel of 2 or more taps"
        if self.shared and self.block_size(shape) > MAX_SHARED_K:
            return f"shared sign patterns are enumerated for blocks of at most {MAX_SHARED_K}"
        return None

    def block_size(self, shape: tuple[int, ...]) -> int:
        return self.k if self.kind == "cin" else int(np.prod(shape[2:]))

    def group_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(groups, blocks per group) of the shared sign patterns, blocks in ``to_blocks`` order."""
        o, i = shape[0], shape[1]
        taps = int(np.prod(shape[2:])) if len(shape) > 2 else 1
        if self.kind == "cin":
            return i // self.k, o * taps
        return i, o


_BLOCK = re.compile(r"^(?:cin(\d+)|kernel)(-shared)?$")


def parse_block(text: str) -> BlockSpec:
    m = _BLOCK.match(str(text).strip().lower())
    if not m:
        raise InputError(f"unify: block must be cin<k> or kernel, optionally with -shared (got {text!r})")
    if m.group(1) is not None:
        k = int(m.group(1))
        if not 2 <= k <= 64:
            raise InputError(f"unify: a cin block needs 2 <= k <= 64 (got {text!r})")
        if m.group(2) and k > MAX_SHARED_K:
            raise InputError(f"unify: shared sign patterns are enumerated for k <= {MAX_SHARED_K} (got {text!r})")
        return BlockSpec("cin", k, bool(m.group(2)))
    return BlockSpec("kernel", 0, bool(m.group(2)))


def to_blocks(w: torch.Tensor, spec: BlockSpec) -> torch.Tensor:
    """``[n_blocks, k]`` view-copy of ``w``; cin blocks ordered (o, group, tap)."""
    o, i = w.shape[0], w.shape[1]
    taps = int(np.prod(w.shape[2:])) if w.dim() > 2 else 1
    if spec.kind == "kernel":
        return w.reshape(o * i, taps)
    return w.reshape(o, i // spec.k, spec.k, taps).permute(0, 1, 3, 2).reshape(-1, spec.k)


def from_blocks(b: torch.Tensor, shape, spec: BlockSpec) -> torch.Tensor:
    o, i = shape[0], shape[1]
    taps = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    if spec.kind == "kernel":
        return b.reshape(tuple(shape))
    return b.reshape(o, i // spec.k, taps, spec.k).permute(0, 1, 3, 2).reshape(tuple(shape))


def _patterns(k: int, device) -> torch.Tensor:
    """All sign patterns of length k with a leading +1: ``[2^(k-1), k]``."""
    rows = [(1.0,) + p for p in itertools.product((1.0, -1.0), repeat=k - 1)]
    return torch.tensor(rows, device=device)


@dataclass
class Projection:
    """A projection's outcome for one weight: ``z`` (the projected weight, ``w``'s shape),
    ``cls`` per block (0 free, 1 unified, 2 pruned), ``signs`` per block (``[n, k]``, +-1) and
    the squared distance ``dist``."""

    z: torch.Tensor
    cls: torch.Tensor
    signs: torch.Tensor
    dist: float


def unified_costs(b: torch.Tensor, spec: BlockSpec, shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(signs ``[n, k]``, signed values ``[n]``, squared distance of unifying ``[n]``) per block."""
    k = b.shape[1]
    sq = (b * b).sum(1)
    if not spec.shared:
        signs = torch.where(b >= 0, 1.0, -1.0).to(b.dtype)
        v = b.abs().mean(1)
        return signs, v, (sq - k * v * v).clamp_min(0)
    groups, per = spec.group_shape(shape)
    pats = _patterns(k, b.device).to(b.dtype)
    # cin blocks are ordered (o, group, tap): a group's blocks are strided; kernel blocks
    # (o, input channel): likewise, with the input channel as the group.
    if spec.kind == "cin":
        o = shape[0]
        taps = per // o
        g = b.reshape(o, groups, taps, k).permute(1, 0, 2, 3).reshape(groups, per, k)
    else:
        g = b.reshape(shape[0], groups, k).permute(1, 0, 2)
    score = torch.einsum("gbk,pk->gbp", g, pats).pow(2).sum(1)  # [groups, patterns]
    best = pats[score.argmax(1)]  # [groups, k]
    if spec.kind == "cin":
        o = shape[0]
        taps = per // o
        signs = best[None, :, None, :].expand(o, groups, taps, k).reshape(-1, k)
    else:
        signs = best[None, :, :].expand(shape[0], groups, k).reshape(-1, k)
    v = (signs * b).sum(1) / k
    return signs.contiguous(), v, (sq - k * v * v).clamp_min(0)


def assign(cost_u: torch.Tensor, cost_p: torch.Tensor, n_unify: int, n_prune: int) -> torch.Tensor:
    """Class per block (0 free, 1 unified, 2 pruned) with exactly ``n_prune`` pruned and
    ``n_unify`` unified blocks, minimising the summed cost (free blocks cost 0)."""
    n = cost_u.numel()
    if n_unify < 0 or n_prune < 0 or n_unify + n_prune > n:
        raise InputError(f"unify: cannot unify {n_unify} and prune {n_prune} of {n} blocks")
    cls = torch.zeros(n, dtype=torch.long, device=cost_u.device)
    if n_prune == 0 or n_unify == 0:
        chosen = torch.argsort(cost_u if n_prune == 0 else cost_p, stable=True)[: n_unify + n_prune]
        cls[chosen] = 1 if n_prune == 0 else 2
        return cls
    if n_unify + n_prune == n:
        cls[:] = 1
        cls[torch.argsort(cost_p - cost_u, stable=True)[:n_prune]] = 2
        return cls
    return _assign_lp(cost_u, cost_p, n_unify, n_prune)


def _assign_lp(cost_u, cost_p, n_unify, n_prune) -> torch.Tensor:
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, hstack, identity, vstack

    cu = cost_u.double().cpu().numpy()
    cp = cost_p.double().cpu().numpy()
    n = cu.size
    # variables x_u (n) and x_p (n); x_free = 1 - x_u - x_p >= 0.
    c = np.concatenate([cu, cp])
    ones = csr_matrix(np.ones((1, n)))
    zeros = csr_matrix((1, n))
    a_eq = vstack([hstack([ones, zeros]), hstack([zeros, ones])])
    a_ub = hstack([identity(n), identity(n)])
    res = linprog(c, A_ub=a_ub, b_ub=np.ones(n), A_eq=a_eq, b_eq=[n_unify, n_prune], bounds=(0, 1),
                  method="highs-ds")
    if res.status != 0:  # pragma: no cover - the problem is always feasible and bounded
        raise RuntimeError(f"unify: assignment LP failed: {res.message}")
    x = np.rint(res.x).astype(np.int64)
    cls = x[:n] + 2 * x[n:]
    return torch.from_numpy(cls).to(cost_u.device)


def project(w: torch.Tensor, spec: BlockSpec, n_unify: int, n_prune: int) -> Projection:
    """The Euclidean projection of ``w`` onto weights with ``n_unify`` unified and ``n_prune``
    pruned blocks of shape ``spec`` (the rest free)."""
    b = to_blocks(w.detach(), spec)
    signs, v, cu = unified_costs(b, spec, tuple(w.shape))
    cp = (b * b).sum(1)
    cls = assign(cu, cp, n_unify, n_prune)
    zb = torch.where((cls == 1)[:, None], signs * v[:, None], torch.where((cls == 0)[:, None], b, 0.0))
    dist = float(torch.where(cls == 1, cu, torch.where(cls == 2, cp, 0.0)).sum())
    return Projection(from_blocks(zb, tuple(w.shape), spec), cls, signs, dist)


def apply_structure(w: torch.Tensor, spec: BlockSpec, cls: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """The projection onto a fixed structure (classes and signs held): a unified block becomes
    s <s, b> / k (its value may change sign), a pruned one zero, a free one stays."""
    b = to_blocks(w, spec)
    k = b.shape[1]
    v = (signs * b).sum(1, keepdim=True) / k
    zb = torch.where((cls == 1)[:, None], signs * v, torch.where((cls == 0)[:, None], b, torch.zeros_like(b)))
    return from_blocks(zb, tuple(w.shape), spec)
