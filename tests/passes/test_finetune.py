"""finetune: trains weights without touching structure, keeps exact zeros, distils from the
pipeline's source graph, and refuses bad options with a PassError."""
import numpy as np
import pytest
import torch

import graphc
from graphc.data import load_data
from graphc.errors import DataError, PassError
from graphc.models import build
from graphc.registry import PassContext, get_pass
from graphc.training import Distill


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def _lenet(digits, seed=0):
    torch.manual_seed(seed)
    return graphc.load(build("lenet5", size=8).eval(), example_inputs=digits.sample(2))


def _shapes(g):
    return [n.op for n in g.nodes], {k: p.data.shape for k, p in g.params.items()}


def test_finetune_trains_weights_keeps_structure_and_reports_held_out_accuracy(digits):
    g = _lenet(digits)
    before = _shapes(g)
    res = get_pass("finetune")(epochs=1, lr=0.05).run(g, PassContext(data=digits, quiet=True))
    assert res.changed and res.stats["steps"] > 0
    assert _shapes(g) == before
    assert res.stats["acc_after"] > res.stats["acc_before"] + 0.3  # random init -> trained
    assert "val" in res.stats["split"]
    g.verify()


def test_finetune_holds_zeros_unless_told_not_to(digits):
    for hold in (True, False):
        g = _lenet(digits)
        name = next(k for k, p in g.params.items() if p.data.ndim == 4)
        w = g.params[name].data.copy()
        w[: w.shape[0] // 2] = 0
        g.params[name].set_data(w)
        res = get_pass("finetune")(epochs=0.5, lr=0.05, hold_zeros=hold).run(g, PassContext(data=digits, quiet=True))
        zero_now = not g.params[name].data[: w.shape[0] // 2].any()
        assert zero_now == hold
        assert (res.stats["zeros_held"] >= w[: w.shape[0] // 2].size) == hold


def test_distill_term_is_zero_for_the_teacher_itself_and_positive_otherwise():
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    t = torch.nn.Linear(5, 3)
    hook = Distill(t, temperature=2.0)
    with torch.no_grad():
        assert float(hook.batch_loss(t(x), x, None)) == pytest.approx(0.0, abs=1e-6)
        assert float(hook.batch_loss(t(x) * -1, x, None)) > 0.01


def test_distill_from_source_in_a_pipeline_recovers_a_pruned_model(digits):
    g = _lenet(digits)
    get_pass("finetune")(epochs=2, lr=0.05).run(g, PassContext(data=digits, quiet=True))
    src = g.clone()
    from graphc.manager import PassManager

    ctx = PassContext(data=digits, quiet=True)
    report = PassManager("prune(ratio=0.6),finetune(epochs=1,lr=0.02,distill=source)").run(g, ctx)
    assert ctx.source is not None and len(ctx.source.nodes) == len(src.nodes)
    rec = [r for r in report.passes if r.name == "finetune"][0]
    assert rec.stats["distill"] == "source"
    assert rec.stats["acc_after"] > rec.stats["acc_before"]
    # the source copy is the unpruned graph: its params are the trained ones
    assert sum(p.data.size for p in g.params.values()) < sum(p.data.size for p in src.params.values())


def test_source_is_kept_only_when_a_pass_distils(digits):
    from graphc.manager import PassManager

    g = _lenet(digits)
    ctx = PassContext(data=digits, quiet=True)
    PassManager("finetune(max_steps=2)").run(g, ctx)
    assert ctx.source is None


def test_finetune_refuses_bad_options_and_missing_data(digits):
    g = _lenet(digits)
    with pytest.raises(PassError, match="epochs must be > 0"):
        get_pass("finetune")(epochs=0).run(g, PassContext(data=digits, quiet=True))
    with pytest.raises(PassError, match="no source graph"):
        get_pass("finetune")(distill="source").run(g, PassContext(data=digits, quiet=True))
    with pytest.raises(DataError):
        get_pass("finetune")().run(g, PassContext(quiet=True))


def test_a_diverging_rate_is_backed_off_never_written_back(digits):
    # lr=1e4 blows LeNet's weights up within a few steps; the pass retries from the graph's own
    # weights at a quarter of the rate (three times at most) or refuses, and in neither case is a
    # non-finite model written back.
    g = _lenet(digits)
    before = {k: p.data.copy() for k, p in g.params.items()}
    with pytest.raises(PassError, match="diverged"):
        get_pass("finetune")(epochs=0.5, lr=1e4).run(g, PassContext(data=digits, quiet=True))
    assert all(np.array_equal(g.params[k].data, v) for k, v in before.items())
    res = get_pass("finetune")(epochs=0.5, lr=20.0).run(g, PassContext(data=digits, quiet=True))
    assert res.stats["lr_backoffs"] >= 1 and res.stats["lr"] == 20.0 / 4 ** res.stats["lr_backoffs"]
    assert all(np.isfinite(p.data).all() for p in g.params.values())


def test_a_run_that_ends_at_chance_counts_as_diverged():
    from graphc.passes.finetune import _diverged

    m = torch.nn.Linear(2, 2)
    assert "accuracy" in _diverged(m, 0.90, 0.115, 10)  # a working model driven to chance
    assert _diverged(m, 0.90, 0.85, 10) is None  # a fine-tune that lost a little
    assert _diverged(m, 0.10, 0.08, 10) is None  # nothing to lose: a model at chance
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    assert _diverged(m, 0.90, 0.90, 10) == "non-finite weights"
