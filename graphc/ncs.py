"""Derivative-free search of a few continuous knobs: Negatively Correlated Search (NCS) and a
random-search baseline of the same budget.

NCS (Tang, Yang and Yao, "Negatively Correlated Search", IEEE JSAC 2016) keeps ``popsize``
Gaussian searchers (a mean x_i and a per-coordinate step sigma_i). Each generation every
searcher samples one child; the child replaces its parent when

    lambda * corr'(child) > f'(child)

where f' is the child's fitness normalised against its parent's (both measured from the best
fitness seen so far), corr' its Bhattacharyya distance to the nearest other searcher normalised
the same way against the parent's, and lambda ~ N(1, lambda_sigma) per searcher, lambda_sigma
shrinking linearly from ``lambda_range`` to 0 over the budget. So a child survives when it is
good *or* far from the others: the searchers are pushed apart (negatively correlated). Every
``epoch`` generations each sigma follows the 1/5 success rule (divided by ``r`` when more than
a fifth of its children survived, multiplied by ``r`` when fewer).

``variant="released"`` reproduces OLMP's released code (Li, Qian et al., IJCAI 2018), whose
replacement test also asks for a negative fitness: with the positive fitness OLMP uses, no
child is ever accepted, the searchers stay where they started and the search reduces to
sampling around the start point while the best sample is recorded. Published NCS is the
default; the released behaviour is kept as an ablation.

Invariants: the objective is called exactly ``evaluations`` times (the start population
included) with points inside the bounds (children leaving them are reflected back); the same
seed gives the same sequence of points; the result is the best point evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np

__all__ = ["SearchResult", "ncs", "random_search", "SEARCHERS"]


@dataclass
class SearchResult:
    x: np.ndarray
    f: float
    evaluations: int
    history: list[float] = field(default_factory=list)  # best fitness after each generation
    accepted: int = 0  # children that replaced their parent (NCS)


def _bounds(lower, upper, dim: int | None):
    lo = np.asarray(lower, dtype=np.float64).reshape(-1)
    hi = np.asarray(upper, dtype=np.float64).reshape(-1)
    if dim is not None:
        lo = np.broadcast_to(lo, (dim,)).copy()
        hi = np.broadcast_to(hi, (dim,)).copy()
    if lo.shape != hi.shape or (hi <= lo).any():
        raise ValueError("search bounds must have the same length with lower < upper")
    return lo, hi


def _reflect(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mirror points that left the box back into it (clipped when the mirror leaves too)."""
    x = np.where(x < lo, 2 * lo - x, x)
    x = np.where(x > hi, 2 * hi - x, x)
    return np.clip(x, lo, hi)


def _min_bhattacharyya(means: np.ndarray, sig: np.ndarray, others: np.ndarray, osig: np.ndarray) -> np.ndarray:
    """For each i: the Bhattacharyya distance between N(means[i], diag sig[i]^2) and the
    nearest N(others[j], diag osig[j]^2), j != i."""
    v1 = sig[:, None, :] ** 2
    v2 = osig[None, :, :] ** 2
    avg = (v1 + v2) / 2
    diff = means[:, None, :] - others[None, :, :]
    d = 0.125 * (diff ** 2 / avg).sum(-1) + 0.5 * (np.log(avg) - 0.5 * (np.log(v1) + np.log(v2))).sum(-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def ncs(
    f: Callable[[np.ndarray], float],
    lower: Sequence[float] | float,
    upper: Sequence[float] | float,
    *,
    dim: int | None = None,
    x0: Sequence[float] | None = None,
    sigma: float | Sequence[float] | None = None,
    popsize: int = 10,
    evaluations: int = 1600,
    r: float = 0.99,
    epoch: int | None = None,
    lambda_range: float = 0.1,
    seed: int = 0,
    variant: Literal["published", "released"] = "published",
    callback: Callable[[int, float, np.ndarray], None] | None = None,
) -> SearchResult:
    """Minimise ``f`` over the box [lower, upper] with NCS (see the module docstring).

    ``x0`` starts the searchers at that point (as OLMP does: the current per-layer values), the
    published variant spreading all but the first one step around it; without it they start
    uniformly in the box. ``sigma`` is the initial step (default:
    the box width / popsize, the NCS paper's); ``epoch`` the generations between step updates
    (default popsize). ``callback(evaluations, best_f, best_x)`` runs after each generation.
    Constraints are the objective's business: return a fitness worse than any feasible one for
    an infeasible point.
    """
    if x0 is not None and dim is None:
        dim = len(np.asarray(x0).reshape(-1))
    lo, hi = _bounds(lower, upper, dim)
    n = lo.size
    if popsize < 2 or evaluations < popsize:
        raise ValueError("ncs needs popsize >= 2 and evaluations >= popsize")
    if variant not in ("published", "released"):
        raise ValueError(f"unknown ncs variant {variant!r}: expected published or released")
    rng = np.random.default_rng(seed)
    step = (hi - lo) / popsize if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n,))
    sig = np.tile(np.maximum(step, 1e-12), (popsize, 1))
    if x0 is None:
        pop = lo + rng.random((popsize, n)) * (hi - lo)
    else:
        pop = np.tile(np.clip(np.asarray(x0, dtype=np.float64).reshape(-1), lo, hi), (popsize, 1))
        if variant == "published":
            # Identical searchers are at distance 0 from each other, so every first child would
            # win on diversity alone: spread them one step around x0 (the first stays on it).
            pop[1:] = _reflect(pop[1:] + sig[1:] * rng.standard_normal((popsize - 1, n)), lo, hi)
    epoch = epoch or popsize
    fit = np.array([float(f(x)) for x in pop])
    used = popsize
    best_i = int(np.argmin(fit))
    best_x, best_f = pop[best_i].copy(), float(fit[best_i])
    generations = max(1, (evaluations - popsize) // popsize)
    lam_sigma = lambda_range
    success = np.zeros(popsize, int)
    history: list[float] = []
    accepted = gen = 0
    while used + popsize <= evaluations:
        gen += 1
        kids = _reflect(pop + sig * rng.standard_normal((popsize, n)), lo, hi)
        kfit = np.array([float(f(x)) for x in kids])
        used += popsize
        k = int(np.argmin(kfit))
        if kfit[k] < best_f:
            best_f, best_x = float(kfit[k]), kids[k].copy()
        # Distances from the best seen make the two fitnesses comparable across scales.
        tf, tk = fit - best_f, kfit - best_f
        den = tf + tk
        norm_kfit = np.divide(tk, den, out=np.full(popsize, 0.5), where=den > 0)
        pc = _min_bhattacharyya(pop, sig, pop, sig)
        kc = _min_bhattacharyya(kids, sig, pop, sig)
        cden = pc + kc
        norm_kcorr = np.divide(kc, cden, out=np.full(popsize, 0.5), where=cden > 0)
        lam = 1 + lam_sigma * rng.standard_normal(popsize)
        lam_sigma = lambda_range * max(0.0, 1 - gen / generations)
        take = lam * norm_kcorr > norm_kfit
        if variant == "released":
            take &= kfit < 0
        pop[take], fit[take] = kids[take], kfit[take]
        success += take
        accepted += int(take.sum())
        if gen % epoch == 0:
            rate = success / epoch
            sig[rate > 0.2] /= r
            sig[rate < 0.2] *= r
            success[:] = 0
        history.append(best_f)
        if callback is not None:
            callback(used, best_f, best_x)
    # The budget's remainder (fewer than popsize evaluations) samples around the best.
    while used < evaluations:
        x = _reflect(best_x + sig.mean(0) * rng.standard_normal(n), lo, hi)
        fx = float(f(x))
        used += 1
        if fx < best_f:
            best_f, best_x = fx, x
    return SearchResult(x=best_x, f=best_f, evaluations=used, history=history, accepted=accepted)


def random_search(
    f: Callable[[np.ndarray], float],
    lower: Sequence[float] | float,
    upper: Sequence[float] | float,
    *,
    dim: int | None = None,
    x0: Sequence[float] | None = None,
    sigma: float | Sequence[float] | None = None,
    evaluations: int = 1600,
    seed: int = 0,
    callback: Callable[[int, float, np.ndarray], None] | None = None,
    **_ignored,
) -> SearchResult:
    """The baseline: ``evaluations`` independent samples, Gaussian around ``x0`` with step
    ``sigma`` when both are given (the same proposal NCS starts from), else uniform in the box;
    the best is kept."""
    if x0 is not None and dim is None:
        dim = len(np.asarray(x0).reshape(-1))
    lo, hi = _bounds(lower, upper, dim)
    rng = np.random.default_rng(seed)
    best_x, best_f = None, np.inf
    history = []
    for i in range(evaluations):
        if x0 is not None and sigma is not None:
            x = _reflect(np.asarray(x0, dtype=np.float64) + np.asarray(sigma) * rng.standard_normal(lo.size), lo, hi)
        else:
            x = lo + rng.random(lo.size) * (hi - lo)
        fx = float(f(x))
        if fx < best_f:
            best_f, best_x = fx, x
        history.append(best_f)
        if callback is not None and (i + 1) % 10 == 0:
            callback(i + 1, best_f, best_x)
    return SearchResult(x=best_x, f=float(best_f), evaluations=evaluations, history=history)


SEARCHERS = {"ncs": ncs, "ncs-released": lambda *a, **k: ncs(*a, variant="released", **k), "random": random_search}
