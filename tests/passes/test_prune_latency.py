"""prune's latency options: target-latency reached on the cost model, the latency importance
(what a channel costs in predicted time) and SIMD rounding. A fixed calibration stands in for
the machine's, so nothing here times anything."""
import pytest

from graphc.backends.calibration import Calibration
from graphc.backends.latency import predict
from graphc.errors import GraphcError, PassError
from graphc.passes import prune_latency
from graphc.passes.channel_groups import channel_groups
from graphc.passes.prune import Prune
from graphc.passes.prune_latency import parse_target_latency, seconds_per_unit
from graphc.registry import PassContext

CALIB = Calibration(overhead_s=1e-6, bandwidth=1e10, rates={"conv": 1e10, "dwconv": 2e9, "gemm": 1e10,
                                                            "elementwise": 1e9, "reduce": 1e9})


@pytest.fixture(autouse=True)
def fixed_calibration(monkeypatch):
    monkeypatch.setattr(prune_latency, "calibration_for", lambda threads: CALIB)


def two_resolutions(h):
    """Equal weights magnitudes, very different time per channel: ``hi`` runs at 32x32,
    ``lo`` after a 8x8 pool at 4x4."""
    b = h.Builder((1, 3, 32, 32))
    a = b.op("relu", b.conv(b.x, 16, name="hi"))
    p = b.op("max_pool2d", a, kernel_size=[8, 8], stride=[8, 8])
    c = b.op("relu", b.conv(p, 16, name="lo"))
    f = b.op("flatten", b.op("adaptive_avg_pool2d", c, output_size=[1, 1]), start_dim=1, end_dim=-1)
    return b.out(b.linear(f, 4, name="fc"))


def out_channels(g, name):
    return next(n for n in g.nodes if n.name == name).outputs[0].shape[1]


def test_parse_target_latency():
    assert parse_target_latency("3ms") == (pytest.approx(0.003), True)
    assert parse_target_latency("0.004s") == (0.004, True)
    assert parse_target_latency("0.5") == (0.5, False)
    for bad in ("2", "0", "-1ms", "fast", "3 us", ""):
        with pytest.raises(ValueError):
            parse_target_latency(bad)


def test_bad_options_fail_on_construction():
    from graphc.pipeline_parse import parse_pipeline

    for spec in ("prune(target-latency=2)", "prune(target-latency=0.5,target-macs=0.5)", "prune(latency-threads=0)",
                 "prune(round-to=-1)", "prune(round-to=0)", "prune(round-to=simd8)"):
        with pytest.raises(GraphcError):
            parse_pipeline(spec)


def test_seconds_per_unit_prices_high_resolution_channels_higher_and_batches_exactly(h):
    g = two_resolutions(h)
    groups = channel_groups(g)
    saved = seconds_per_unit(g, groups, CALIB)
    by_node = {grp.id: {m.node for m in grp.members} for grp in groups if grp.prunable}
    hi = next(i for i, nodes in by_node.items() if "hi" in nodes)
    lo = next(i for i, nodes in by_node.items() if "lo" in nodes and "hi" not in nodes)
    assert saved[hi] > 4 * saved[lo] > 0
    # one group at a time gives the same figures as the coloured batches
    for grp in groups:
        if grp.prunable:
            alone = seconds_per_unit(g, [grp], CALIB)
            assert alone[grp.id] == pytest.approx(saved[grp.id], rel=1e-9)


def test_latency_importance_cuts_where_time_is(h):
    uniform, aware = two_resolutions(h), two_resolutions(h)
    Prune(ratio=0.25).run(uniform, PassContext())
    Prune(ratio=0.25, importance="latency").run(aware, PassContext())
    uniform.verify(), aware.verify()
    assert out_channels(uniform, "hi") == out_channels(uniform, "lo") == 12
    # the same number of units removed, all from the expensive layer
    assert (out_channels(aware, "hi"), out_channels(aware, "lo")) == (8, 16)
    assert predict(aware, CALIB).total_ms < predict(uniform, CALIB).total_ms


@pytest.mark.parametrize("importance", ["l1", "latency"])
def test_target_latency_is_reached_by_the_least_pruning(h, importance):
    g = two_resolutions(h)
    full = predict(g, CALIB).total_ms
    res = Prune(target_latency="0.6", importance=importance).run(g, PassContext())
    after = predict(g, CALIB).total_ms
    assert res.changed and after <= 0.6 * full
    assert res.stats["prune.predicted_ms"] == pytest.approx(after, rel=1e-3)
    assert res.stats["prune.target_ms"] == pytest.approx(0.6 * full, rel=1e-3)
    # one bisection step less pruning misses the target
    g2 = two_resolutions(h)
    Prune(ratio=max(0.0, res.stats["prune.ratio"] - 1 / 128), importance=importance).run(g2, PassContext())
    assert predict(g2, CALIB).total_ms > 0.6 * full


def test_absolute_target_and_out_of_reach(h):
    g = two_resolutions(h)
    full_s = predict(g, CALIB).total_ms / 1e3
    res = Prune(target_latency=f"{full_s * 0.7 * 1e3:.6f}ms").run(g, PassContext())
    assert predict(g, CALIB).total_ms / 1e3 <= full_s * 0.7 and res.changed
    with pytest.raises(PassError, match="out of reach"):
        Prune(target_latency="0.0000001s").run(two_resolutions(h), PassContext())
    for bad in (dict(target_latency="0.5", search="ncs"), dict(importance="latency", search="ncs")):
        with pytest.raises(PassError, match="search="):
            Prune(**bad).run(two_resolutions(h), PassContext())


def test_round_to_simd_block(h, monkeypatch):
    monkeypatch.setattr(prune_latency, "simd_block", lambda: 8)
    g = two_resolutions(h)
    Prune(ratio=0.3, importance="latency", round_to="simd").run(g, PassContext())
    kept = [out_channels(g, "hi"), out_channels(g, "lo")]
    assert all(k % 8 == 0 for k in kept) and sum(kept) < 32
