"""edp-train's collapse guard and its one-number targets, on LeNet-5 over digits (tiny budgets:
a few dozen steps per lasso run)."""
import numpy as np
import pytest
import torch

from graphc.backends.cost import totals
from graphc.errors import ParseError
from graphc.models import build
from graphc.passes.decompose import find_pairs
from graphc.passes.edp_groups import cost_after
from graphc.passes.edp_train import group_shrink, pair_sparsity
from graphc.pipeline_parse import parse_pipeline
from graphc.registry import PassContext, all_passes


def test_group_shrink_guard_spares_the_strongest_groups():
    torch.manual_seed(0)
    a = torch.randn(6, 5, 1, 1) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])[None, :, None, None]
    bias = torch.randn(6)
    # A threshold far above every norm: unguarded, every column and row would vanish.
    cols, rows = group_shrink(a.clone(), bias.clone(), 100.0, 100.0)
    assert (cols, rows) == (False, False)
    b = a.clone()
    cols, rows = group_shrink(b, bias.clone(), 100.0, 0.0, min_cols=2)
    assert cols and not rows
    kept = b.view(6, 5).norm(dim=0) > 0
    assert kept.tolist() == [False, False, False, True, True]  # the two strongest columns
    assert torch.equal(b.view(6, 5)[:, 3:], a.view(6, 5)[:, 3:])  # spared, not shrunk


def decomposed_lenet(lenet_graph):
    torch.manual_seed(0)
    g = lenet_graph(build("lenet5", 8).eval())
    all_passes()["decompose"]().run(g, PassContext())
    return g


def test_a_collapsing_lambda_is_bounded_and_reported(lenet_graph, caplog):
    caplog.set_level("INFO", logger="graphc")
    ctx = PassContext(data="digits", quiet=True)
    edp = all_passes()["edp-train"]
    g = decomposed_lenet(lenet_graph)
    res = edp(lambda_col=50.0, lambda_row=50.0, max_steps=8, finetune=0).run(g, ctx)
    assert res.stats["collapse_bounded"]
    assert "collapse guard" in caplog.text and "min-rank" in caplog.text
    for p in find_pairs(g):
        zc, nc, zr, nr = pair_sparsity(p)
        assert zc < nc and zr < nr, p.name  # every layer keeps a column and an output channel
    # The guard is what kept them: asked to allow it (0), the same lambda empties a layer.
    g0 = decomposed_lenet(lenet_graph)
    res0 = edp(lambda_col=50.0, lambda_row=50.0, max_steps=8, finetune=0, min_rank=0, min_channels=0).run(g0, ctx)
    assert not res0.stats["collapse_bounded"]
    assert any(pair_sparsity(p)[0] == pair_sparsity(p)[1] for p in find_pairs(g0))


@pytest.mark.parametrize("target", [{"target_macs": 0.5}, {"target_params": 0.3}])
def test_target_lands_within_five_percent(lenet_graph, target):
    g = decomposed_lenet(lenet_graph)
    ref = cost_after(g)
    kind, frac = next(iter(target.items()))
    kind = kind.split("_")[1]
    res = all_passes()["edp-train"](**target, max_steps=25, finetune=0, search_evals=4).run(
        g, PassContext(data="digits", quiet=True))
    s = res.stats["search"]
    assert 1 <= s["evaluations"] <= 4 and s["steps"] == res.stats["steps"]
    all_passes()["prune-merge"]().run(g, PassContext())
    reached = totals(g)[kind] / ref[kind]
    assert frac * 0.95 <= reached <= frac, (reached, s)
    assert s["reached"][kind] == totals(g)[kind]


def test_preset_takes_the_target_and_bad_values_are_refused():
    steps = parse_pipeline("edp(target-macs=0.5)").passes()
    edp = next(s.instance for s in steps if s.name == "edp-train")
    assert edp.target_macs == 0.5 and edp.no_data == "svd" and edp.needs_data
    for bad in ("edp(target-macs=-1)", "edp-train(min-rank=-1)", "edp-train(weighting=l7)", "edp(ratio=2)"):
        with pytest.raises(ParseError):
            parse_pipeline(bad)


@pytest.mark.parametrize("steps", [12, 1])  # on digits a check every 2 steps; 1 step: only the run's end check
def test_a_run_that_drops_far_under_the_target_lands_on_it(lenet_graph, steps):
    # A lambda strong enough to empty the layers between two checks: without landing the run
    # would end near the collapse guard's floor; it goes back to the last check above the
    # target and cuts from there instead.
    g = decomposed_lenet(lenet_graph)
    ref = cost_after(g)
    res = all_passes()["edp-train"](target_macs=0.5, lambda_col=50.0, lambda_row=50.0, max_steps=steps, finetune=0,
                                    search_evals=1).run(g, PassContext(data="digits", quiet=True))
    s = res.stats["search"]
    assert s["history"][0]["landed_from"] < 0.95  # the check found it far under the target
    all_passes()["prune-merge"]().run(g, PassContext())
    reached = totals(g)["macs"] / ref["macs"]
    assert 0.5 * 0.95 <= reached <= 0.5, (reached, s)


def test_a_diverged_run_is_an_error_not_a_pruned_model(lenet_graph):
    # NaN groups would read as zero groups (a "pruned" network at 10% accuracy): refused instead.
    from graphc.errors import PassError

    g = decomposed_lenet(lenet_graph)
    with pytest.raises(PassError, match="diverged"):
        all_passes()["edp-train"](target_macs=0.5, lr=1e12, max_steps=4, finetune=0, search_evals=1).run(
            g, PassContext(data="digits", quiet=True))


def test_auto_weighting_follows_the_target(lenet_graph):
    edp = all_passes()["edp-train"]
    assert edp().resolved_weighting == "cost"
    assert edp(target_macs=0.5).resolved_weighting == "cost"
    assert edp(target_params=0.1).resolved_weighting == "params"
    assert edp(target_macs=0.5, target_params=0.1).resolved_weighting == "cost"
    assert edp(target_params=0.1, weighting="macs").resolved_weighting == "macs"
    # Under a params target the penalties are the params weights: a column of fc1 weighs more
    # than one of conv2 by the ratio of their weight counts (basis filter + coefficient column).
    g = decomposed_lenet(lenet_graph)
    pairs = find_pairs(g)
    col_params = {p.name: p.basis.input(1).param.data[0].size + p.coef.input(1).shape[0] for p in pairs}
    by_name = {p.name: w for p, w in zip(pairs, edp(target_params=0.1)._weights(g, pairs))}
    cost = {p.name: w for p, w in zip(pairs, edp(target_macs=0.5)._weights(g, pairs))}
    assert by_name["fc1"][0] / by_name["conv2"][0] == pytest.approx(col_params["fc1"] / col_params["conv2"])
    assert by_name["fc1"][0] / by_name["conv2"][0] > cost["fc1"][0] / cost["conv2"][0]
    res = edp(target_params=0.3, max_steps=25, finetune=0, search_evals=3).run(
        g, PassContext(data="digits", quiet=True))
    assert res.stats["weighting"] == "params"


def test_a_diverging_rate_is_backed_off_in_the_lasso_and_its_search(lenet_graph):
    edp = all_passes()["edp-train"]
    g = decomposed_lenet(lenet_graph)
    res = edp(lr=50.0, max_steps=25, finetune=5, search_evals=2, target_macs=0.5).run(
        g, PassContext(data="digits", quiet=True))
    assert res.stats["lr_backoffs"] >= 1 and res.stats["lr"] == 50.0 / 4 ** res.stats["lr_backoffs"]
    assert all(np.isfinite(p.data).all() for p in g.params.values())
