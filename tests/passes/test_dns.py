"""dns: the surgery rule (cut at 0.9 t, splice above 1.1 t), straight-through masks, and the
pass end to end on digits (masked weights exact zeros, both back-ends agree)."""
import numpy as np
import pytest
import torch

import graphc
from graphc.backends.torch import emit_torch, run_graph
from graphc.data import load_data
from graphc.errors import DataError
from graphc.models import build
from graphc.passes.dns import MaskedModel, dns_rule, prunable_layers, threshold
from graphc.registry import PassContext, get_pass


def test_dns_rule_cuts_at_0_9t_splices_above_1_1t_and_keeps_the_band():
    t = 1.0
    w = torch.tensor([0.5, 0.9, 0.95, 1.05, 1.1, 1.11, 2.0, 0.95, 1.05])
    mask = torch.tensor([1., 1., 1., 1., 0., 0., 0., 0., 0.])
    out = dns_rule(w, mask, t)
    # <= 0.9t cut; (0.9t, 1.1t] keeps its previous state (hysteresis); > 1.1t kept.
    assert out.tolist() == [0, 0, 1, 1, 0, 1, 1, 0, 0]
    assert mask.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]  # not edited in place
    assert threshold(0.2, 0.1, 3.0) == pytest.approx(0.5)
    assert threshold(0.2, 0.1, -5.0) == 0.0


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture()
def lenet300(digits):
    torch.manual_seed(0)
    return graphc.load(build("lenet300", size=8).eval(), example_inputs=digits.sample(2))


def test_masked_model_forward_is_masked_and_gradient_reaches_cut_weights(lenet300):
    layers = prunable_layers(lenet300)
    assert [la.node for la in layers] == ["fc1", "fc2", "fc3"]
    mm = MaskedModel(lenet300, layers, torch.device("cpu"))
    mm.surgery(0, 1.0)
    w = mm.raw(layers[0].weight)
    m = mm.masks[layers[0].weight]
    assert 0 < float(m.mean()) < 1
    torch.testing.assert_close(mm.module.param(layers[0].weight), w * m)
    x = torch.randn(4, 1, 8, 8)
    mm.module(x).sum().backward()
    assert (w.grad[m == 0] != 0).any()  # cut weights still learn, so they can come back


def test_dns_prunes_with_exact_zeros_and_both_backends_agree(lenet300, digits):
    ctx = PassContext(data=digits, quiet=True)
    res = get_pass("dns")(c=1.0, iterations=150, lr=0.05).run(lenet300, ctx)
    assert res.changed
    lenet300.verify()
    st = res.stats
    assert st["compression"] > 2 and st["kept"] < st["weights"]
    assert set(st["layers"]) == {"fc1", "fc2", "fc3"}
    assert 0 <= st["acc_after"] <= 1 and "train" in st["split"]
    w = lenet300.params["fc1.weight"]
    assert w.mask is not None and (w.data[~w.mask] == 0).all() and w.mask.mean() < 0.6
    x = digits.sample(16)
    ref = run_graph(lenet300, [x])[0]
    out = emit_torch(lenet300)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_dns_target_params_sets_the_uniform_knob(lenet300, digits):
    ctx = PassContext(data=digits, quiet=True)
    res = get_pass("dns")(target_params=0.05, iterations=20, prune_until=0.05).run(lenet300, ctx)
    kept = res.stats["kept"] / res.stats["weights"]
    assert 0.03 < kept < 0.08
    assert res.stats["c"] > 1


def test_dns_without_data_says_so(lenet300):
    with pytest.raises(DataError, match="dns.*needs data"):
        get_pass("dns")(iterations=5).run(lenet300, PassContext())


def test_dns_rule_in_place_matches_the_rule_and_keeps_the_mask_where_w_is_nan():
    from graphc.passes.dns import dns_rule_

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        w = torch.rand(4000, generator=g, dtype=dtype)
        w[::97] = float("nan")
        mask = (torch.rand(4000, generator=g) < 0.5).to(dtype)
        t = 0.5
        want = mask.clone()
        want[w <= 0.9 * t] = 0
        want[w > 1.1 * t] = 1
        out = dns_rule_(w, mask, t)
        assert out.data_ptr() == mask.data_ptr() and out.dtype == dtype
        assert torch.equal(out, want) and torch.equal(dns_rule(w, want, t), want)


def test_masks_follow_the_module_to_another_dtype(lenet300):
    mm = MaskedModel(lenet300, prunable_layers(lenet300), torch.device("cpu"))
    mm.surgery(0, 1.0)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        ref = mm.module(x).double()
        mm.module.double()
        out = mm.module(x.double())
    assert all(m.dtype == torch.float64 for m in mm.masks.values()) and mm.masks is mm.module.masks
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))
