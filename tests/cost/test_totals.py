"""Graph totals: sums of the per-node table, params vs buffers, liveness peak, compare()."""
import pytest

from graphc.backends.cost import compare, peak_memory, per_node, totals


def test_totals_are_the_sums_of_the_per_node_table(residual_block):
    g = residual_block()
    t, rows = totals(g), per_node(g)
    assert t["macs"] == sum(r.macs for r in rows) == 2 * 4 * 4 * 9 * 64 + 10 * 4
    assert t["flops"] == sum(r.flops for r in rows)
    assert t["flops"] >= 2 * t["macs"]
    assert t["nodes"] == len(rows) == len(g)
    assert t["activation_bytes"] == sum(v.type.nbytes for n in g.nodes for v in n.outputs)


def test_params_count_weights_and_buffers_apart(residual_block):
    t = totals(residual_block())
    weights = 2 * 4 * 4 * 9 + 4 + 10 * 4 + 2 * 4  # convs, conv bias, fc, bn affine
    assert t["params"] == weights
    assert t["param_bytes"] == 4 * weights
    assert t["buffer_bytes"] == 2 * 4 * 4  # running mean and var
    assert t["input_bytes"] == 4 * 4 * 64


def test_figures_scale_with_batch_but_params_do_not(residual_block):
    t1, t4 = totals(residual_block(batch=1)), totals(residual_block(batch=4))
    assert t4["batch"] == 4 and t1["batch"] == 1
    for k in ("macs", "flops", "activation_bytes", "peak_bytes", "input_bytes"):
        assert t4[k] == 4 * t1[k], k
    assert t4["params"] == t1["params"]


def test_peak_is_liveness_over_topological_order(residual_block):
    g = residual_block(bn=False)
    act = 4 * 4 * 64  # bytes of one [1,4,8,8] f32 activation
    # at conv b: r (its input) and b's output are live; x is an input, not counted
    # at add: b and add; at r2: add and r2 -> the peak is two activations
    peak, at = peak_memory(g)
    assert peak == 2 * act
    assert at in {"a", "r", "b", "add", "r2"}
    # a value with a long life raises the peak: keep a's output alive until the end
    g2 = residual_block(bn=False)
    cat = g2.add_node("concat", [g2.node("a").output, g2.node("r2").output], {"dim": 1}, "keep")
    g2.set_outputs(list(g2.outputs) + [cat.output])
    assert peak_memory(g2)[0] > peak


def test_uncounted_ops_are_listed(residual_block):
    g = residual_block()
    r2 = g.node("r2")
    op = g.add_node("opaque", [r2.output], {"source": "onnx", "op_type": "Mystery", "domain": "",
                                          "attributes": {}, "out_types": [str(r2.output.type)]}, "mystery", after=r2)
    g.node("gap").set_input(0, op.output)
    assert totals(g)["uncounted"] == {"Mystery": 1}
    assert totals(residual_block())["uncounted"] == {}


def test_compare_reports_before_and_after_for_each_figure(residual_block):
    before, after = totals(residual_block(c=8)), totals(residual_block(c=4))
    rows = {r["key"]: r for r in compare(before, after)}
    for key in ("macs", "flops", "params", "param_bytes", "activation_bytes", "peak_bytes"):
        assert rows[key]["before"] == before[key] and rows[key]["after"] == after[key]
        assert rows[key]["delta"] == after[key] - before[key]
    assert rows["macs"]["ratio"] == pytest.approx(after["macs"] / before["macs"])
    assert rows["macs"]["text"].startswith("MACs: ") and "->" in rows["macs"]["text"]
    assert "FLOPs" in rows["flops"]["text"]
