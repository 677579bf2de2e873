"""Property: the `fuse` preset never changes what a network computes.

Random small CNNs from conv (any kernel/stride/padding/groups/dilation), BN with random
statistics, scale layers (some computed from params), pools, residual adds, relu, dead
branches, flatten and linear; each is fused and run against its unfused self. Examples are
tiny so 500 of them run in seconds. ``bench/fuzz.py`` draws from the same generator
(``_build``) for every exact pass and both back-ends at a larger count.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Thousands of tiny convs: thread start-up dominates them, and on a busy 2-core box
    # several threads per conv make each one a thousand times slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build(h, data):
    c = data.draw(st.integers(1, 4), label="channels")
    side = data.draw(st.integers(3, 8), label="side")
    b = h.Builder(shape=(1, c, side, side), seed=data.draw(st.integers(0, 2**16), label="seed"))
    v = b.x
    depth = data.draw(st.integers(1, 7), label="depth")
    for i in range(depth):
        n, c, hh, ww = v.shape
        kind = data.draw(st.sampled_from(["conv", "conv", "bn", "relu", "avgpool", "maxpool", "res",
                                          "scale", "pwconv", "dw", "noop", "constexpr", "dead", "convpool"]),
                         label=f"layer{i}")
        if kind in ("conv", "pwconv", "dw"):
            k = 1 if kind == "pwconv" else data.draw(st.sampled_from([1, 2, 3]), label="k")
            stride = data.draw(st.sampled_from([1, 1, 2]), label="stride")
            pad = data.draw(st.integers(0, k // 2 + 1), label="pad") if kind != "pwconv" else 0
            if hh + 2 * pad < k or ww + 2 * pad < k:
                continue
            groups = c if kind == "dw" else 1
            cout = c if kind == "dw" else data.draw(st.integers(1, 5), label="cout")
            v = b.conv(v, cout, k=k, stride=stride, padding=pad, groups=groups,
                       bias=data.draw(st.booleans(), label="bias"), name=f"conv{i}")
        elif kind == "noop":
            # Ops that move no data, or move it and back: drop-identity must see through them.
            how = data.draw(st.sampled_from(["dropout", "flat", "perm", "id"]), label="noop")
            if how == "dropout":
                v = b.op("dropout", v, p=0.3, name=f"drop{i}")
            elif how == "flat":
                v = b.op("reshape", b.op("flatten", v, start_dim=1, name=f"flat{i}"), shape=list(v.shape), name=f"unflat{i}")
            elif how == "perm":
                v = b.op("permute", b.op("permute", v, dims=[0, 2, 3, 1], name=f"nhwc{i}"), dims=[0, 3, 1, 2], name=f"nchw{i}")
            else:
                v = b.op("identity", v, name=f"id{i}")
        elif kind == "convpool" and hh >= 2 and ww >= 2:
            # conv -> average pool, which absorb-pool turns into one strided conv.
            k = data.draw(st.sampled_from([1, 3]), label="cp_k")
            v = b.conv(v, data.draw(st.integers(1, 5), label="cp_cout"), k=k, name=f"cpconv{i}",
                       bias=data.draw(st.booleans(), label="cp_bias"))
            v = b.op("avg_pool2d", v, kernel_size=[2, 2], stride=[2, 2], name=f"cppool{i}")
        elif kind == "constexpr":
            # A per-channel scale computed from params alone (ONNX exporters write such
            # subgraphs): fold-constants must evaluate it, then fold-bn can take the affine.
            a = b.const(np.random.default_rng(i).random((c, 1, 1)) + 0.5, name=f"ca{i}")
            s = b.op(data.draw(st.sampled_from(["mul", "add"]), label="const_op"), a,
                     b.const(np.full((c, 1, 1), 0.25), name=f"cb{i}"), name=f"cexpr{i}")
            v = b.op("mul", v, s, name=f"cscale{i}")
        elif kind == "dead":
            # A branch nothing reads: dce removes it, and nothing else may trip over it.
            b.op("relu", b.op("mul", v, b.const(2.0, name=f"dk{i}"), name=f"deadmul{i}"), name=f"dead{i}")
        elif kind == "bn":
            v = b.bn(v, name=f"bn{i}")
        elif kind == "relu":
            v = b.op("relu", v, name=f"relu{i}")
        elif kind == "scale":
            s = b.const(np.random.default_rng(i).random((c, 1, 1)) + 0.5, name=f"s{i}")
            v = b.op(data.draw(st.sampled_from(["mul", "add"]), label="affine"), v, s, name=f"scale{i}")
        elif kind in ("avgpool", "maxpool") and hh >= 2 and ww >= 2:
            op = "avg_pool2d" if kind == "avgpool" else "max_pool2d"
            kk = data.draw(st.sampled_from([1, 2]), label="pool_k")
            v = b.op(op, v, kernel_size=[kk, kk], stride=[kk, kk], name=f"pool{i}")
        elif kind == "res":
            # Residual block: [BN] conv 'same' (+BN) + (scaled) identity, optionally parallel 1x1.
            k = data.draw(st.sampled_from([1, 3]), label="res_k")
            groups = data.draw(st.sampled_from([1, c]), label="res_groups")
            y = b.conv(v, c, k=k, groups=groups, bias=data.draw(st.booleans(), label="res_bias"), name=f"res{i}")
            if data.draw(st.booleans(), label="res_bn"):
                y = b.bn(y, name=f"resbn{i}")
            if data.draw(st.booleans(), label="res_pw"):
                y = b.op("add", y, b.bn(b.conv(v, c, k=1, padding=0, bias=False, name=f"pw{i}"), name=f"pwbn{i}"),
                         name=f"pwadd{i}")
            ident = b.op("mul", v, b.const(0.5, name=f"half{i}"), name=f"id{i}") if data.draw(
                st.booleans(), label="res_scaled") else v
            v = b.op("add", y, ident, name=f"add{i}")
    if data.draw(st.booleans(), label="head"):
        if data.draw(st.booleans(), label="gap"):
            # Global pool -> flatten -> linear: absorb-pool may reorder it.
            v = b.op("adaptive_avg_pool2d", v, output_size=[1, 1], name="gap")
        v = b.op("flatten", v, start_dim=1, name="flat")
        v = b.linear(v, data.draw(st.integers(1, 6), label="fc1"), name="fc1")
        if data.draw(st.booleans(), label="fc_bn"):
            v = b.bn(v, name="fcbn")
        if data.draw(st.booleans(), label="fc2"):
            v = b.linear(v, data.draw(st.integers(1, 6), label="fc2_out"), name="fc2")
    return b.out(v)


def test_fuse_preserves_outputs(h):
    """One test owns the whole search and its tally, so the tally it asserts on is always its
    own (whatever worker runs it, whatever ran before)."""
    seen = {"err": 0.0, "examples": 0, "fused": 0}

    @settings(max_examples=500, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def fuse_keeps_outputs(data):
        g = _build(h, data)
        ref = g.clone()
        h.fuse(g)
        g.verify()
        assert len(g.nodes) <= len(ref.nodes)
        seen["examples"] += 1
        seen["fused"] += len(g.nodes) < len(ref.nodes)
        xs = [torch.randn(v.shape, generator=torch.Generator().manual_seed(7)) for v in ref.inputs]
        want, got = h.execute(ref, *xs), h.execute(g, *xs)
        for a, b in zip(want, got):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=h.RTOL, atol=h.ATOL)
            seen["err"] = max(seen["err"], float((a - b).abs().max()))
        assert not h.fuse(g).changed

    fuse_keeps_outputs()
    print(f"\nfuse fuzz: {seen['examples']} examples, {seen['fused']} got smaller, "
          f"largest |fused - reference| {seen['err']:.3g}")
    # The generator must exercise the passes, not just build graphs they leave alone.
    assert seen["examples"] >= 100
    assert seen["fused"] >= seen["examples"] // 3
