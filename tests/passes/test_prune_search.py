"""prune(search=ncs): per-group channel ratios found by NCS, at a MACs budget or under an
accuracy-loss bound."""
import pytest
import torch

import graphc
from graphc.backends.cost import totals
from graphc.data import load_data
from graphc.errors import DataError, PassError
from graphc.models.examples import train_example
from graphc.passes.olmp import search_batch
from graphc.passes.prune import prune_graph
from graphc.passes.prune_search import _accuracy, prunable_group_count
from graphc.registry import PassContext, get_pass


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def resnet(digits):
    model, _ = train_example("small-resnet", digits, epochs=1)
    return graphc.load(model, example_inputs=digits.sample(1))


def test_search_at_a_macs_budget_beats_or_matches_the_uniform_ratio(resnet, digits):
    full = totals(resnet)["macs"]
    uni = resnet.clone()
    st_uni = get_pass("prune")(target_macs=0.5).run(uni, PassContext()).stats
    g = resnet.clone()
    st = get_pass("prune")(target_macs=0.5, search="ncs", evaluations=40, search_batch=300).run(
        g, PassContext(data=digits, quiet=True)).stats
    g.verify()
    assert totals(g)["macs"] <= 0.5 * full
    n = prunable_group_count(resnet)
    assert len(st["prune.ratios"]) == n and st["prune.start_ratio"] == st_uni["prune.ratio"]
    x, y = search_batch(digits, 300, torch.device("cpu"))
    # The uniform ratios are the search's start point: the winner is at least as accurate.
    assert _accuracy(g, x, y) >= _accuracy(uni, x, y)
    assert -st["prune.search_fitness"] == pytest.approx(_accuracy(g, x, y), abs=1e-5)


def test_search_without_a_budget_keeps_accuracy_within_the_bound(resnet, digits):
    g = resnet.clone()
    st = get_pass("prune")(search="random", acc_loss=0.1, evaluations=30, search_batch=300).run(
        g, PassContext(data=digits, quiet=True)).stats
    x, y = search_batch(digits, 300, torch.device("cpu"))
    assert _accuracy(g, x, y) >= st["prune.search_acc_before"] - 0.1
    assert totals(g)["macs"] == st["prune.macs"] <= totals(resnet)["macs"]


def test_search_needs_data_and_per_group_ratios_must_match(resnet):
    assert get_pass("prune")(search="ncs").needs_data and not get_pass("prune")().needs_data
    with pytest.raises(DataError, match="needs data"):
        get_pass("prune")(search="ncs").run(resnet.clone(), PassContext())
    with pytest.raises(PassError, match="ratios for"):
        prune_graph(resnet.clone(), ratio=[0.5])
