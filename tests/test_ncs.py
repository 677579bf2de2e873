"""NCS on analytic problems: a shifted sphere, a constrained toy problem, and the released
code's acceptance rule as an ablation."""
import numpy as np
import pytest

from graphc.ncs import ncs, random_search

SHIFT = np.array([3.1, -2.4, 1.7, 0.5, -4.2])


def sphere(x):
    return float(((x - SHIFT) ** 2).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_ncs_finds_the_minimum_of_a_shifted_sphere(seed):
    res = ncs(sphere, -10, 10, dim=5, evaluations=5000, r=0.9, seed=seed)
    assert res.evaluations == 5000
    assert res.f < 1e-2
    np.testing.assert_allclose(res.x, SHIFT, atol=0.1)
    assert res.accepted > 0
    # The same budget of blind samples lands far from it: the search, not luck, found it.
    assert random_search(sphere, -10, 10, dim=5, evaluations=5000, seed=seed).f > 100 * res.f


def test_ncs_respects_a_constraint_given_as_an_infeasible_fitness():
    calls = []

    def f(x):
        calls.append(x.copy())
        if x[0] + x[1] > 4:  # feasible set: x0 + x1 <= 4; unconstrained optimum (3, 3) is outside
            return 1e3
        return float(((x - 3) ** 2).sum())

    res = ncs(f, 0, 5, dim=2, evaluations=5000, seed=0)
    assert res.x.sum() <= 4
    np.testing.assert_allclose(res.x, [2, 2], atol=0.1)
    assert res.f == pytest.approx(2.0, abs=0.05)
    pts = np.array(calls)
    assert len(pts) == 5000 and (pts >= 0).all() and (pts <= 5).all()


def test_ncs_is_deterministic_per_seed():
    a = ncs(sphere, -10, 10, dim=5, evaluations=500, seed=3)
    b = ncs(sphere, -10, 10, dim=5, evaluations=500, seed=3)
    c = ncs(sphere, -10, 10, dim=5, evaluations=500, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_released_variant_never_moves_on_a_positive_fitness():
    x0 = np.zeros(5)
    rel = ncs(sphere, -10, 10, x0=x0, sigma=1.0, evaluations=2000, seed=0, variant="released")
    pub = ncs(sphere, -10, 10, x0=x0, sigma=1.0, evaluations=2000, seed=0)
    assert rel.accepted == 0 and pub.accepted > 0
    # Sampling around the start point only: the best stays near x0 (|x0 - shift|^2 = 35.75).
    assert rel.f > 10 * pub.f
    # With a negative fitness the released rule accepts children like the published one.
    neg = ncs(lambda x: sphere(x) - 1e3, -10, 10, x0=x0, sigma=1.0, evaluations=2000, seed=0, variant="released")
    assert neg.accepted > 0 and neg.f + 1e3 < rel.f


def test_ncs_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ncs(sphere, 1, 0, dim=2)
    with pytest.raises(ValueError):
        ncs(sphere, 0, 1, dim=2, popsize=1)
    with pytest.raises(ValueError):
        ncs(sphere, 0, 1, dim=2, variant="other")
