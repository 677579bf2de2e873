"""stream-merge's branch merge: parallel branches reading one input and joined by a channel
concat (inception style) become one wider conv.

Each branch (convs, pools and activations in a row) is composed into one conv from the shared
input: interior activations are dropped, a pool is its average (a max pool approximately), and
an inner conv's padding is treated as if applied at the input (exact only where it pads
nothing). The branch kernels are zero-padded to the widest, aligned by their padding, and their
filters stacked; a final activation common to every branch follows the merged conv.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphc.ir.graph import Graph, Node, Value
from graphc.ir.rewrite import erase_if_dead, replace_output
from graphc.passes._rewrite import (CONV_OPS, cast_like, compose_convs, conv_attrs, conv_parts, dense_kernel,
                                    dilate_kernel, f64, node_macs, sole_user)
from graphc.passes._stream import ACTIVATIONS, POOLS, Plan, _is_exact, _mark, _Planned, out_size
from graphc.passes.absorb_pool import _ints

__all__ = ["BranchMerge"]

@dataclass
class _Lin:
    """One branch composed into a conv from the shared input (float64, dense, dilation 1)."""

    w: np.ndarray | None = None
    b: np.ndarray | None = None
    stride: list[int] = field(default_factory=list)
    padding: list[int] = field(default_factory=list)
    exact: bool = True


def _then(state: _Lin, w: np.ndarray, b, stride, padding, exact: bool) -> _Lin | str:
    """``state`` followed by a dense conv (w, b, stride, padding)."""
    if state.w is None:
        return _Lin(w, b, list(stride), list(padding), exact and state.exact)
    a1 = {"stride": state.stride, "padding": state.padding, "dilation": [1] * len(stride), "groups": 1}
    a2 = {"stride": list(stride), "padding": [0] * len(stride), "dilation": [1] * len(stride), "groups": 1}
    res = compose_convs(state.w, state.b, a1, w, b, a2)
    if isinstance(res, str):
        return res
    nw, nb, attrs = res
    # Interior padding moves to the input: exact only where the inner conv pads nothing.
    pad = [p1 + s1 * p2 for p1, s1, p2 in zip(state.padding, state.stride, padding)]
    return _Lin(nw, nb, attrs["stride"], pad, state.exact and exact and not any(padding))


def _compose_branch(nodes: list[Node], channels: int) -> _Lin | str:
    state = _Lin()
    for n in nodes:
        if n.op in CONV_OPS:
            a = conv_attrs(n)
            w, b = conv_parts(n)
            wt = dense_kernel(dilate_kernel(f64(w), a["dilation"]), a["groups"])
            res = _then(state, wt, f64(b), a["stride"], a["padding"], True)
        elif n.op in POOLS:
            nd = POOLS[n.op]
            k = _ints(n.attrs["kernel_size"], nd)
            s = _ints(n.attrs.get("stride") or k, nd)
            p = _ints(n.attrs.get("padding", 0), nd)
            if any(d != 1 for d in _ints(n.attrs.get("dilation", 1), nd)):
                return f"{n.name}: dilated pool"
            # ceil_mode matters only where it adds a partial window.
            if out_size(n.input(0).shape[2:], k, s, p, [1] * nd) != list(n.output.shape[2:]):
                return f"{n.name}: the pool has a partial (ceil-mode) window"
            c = n.input(0).shape[1]
            w = np.zeros((c, c, *k))
            w[range(c), range(c)] = 1.0 / float(np.prod(k))
            exact = n.op.startswith("avg") and (not any(p) or n.attrs.get("count_include_pad", True)) \
                and n.attrs.get("divisor_override") is None
            res = _then(state, w, None, s, p, exact)
        else:  # an interior activation, dropped
            res = _Lin(state.w, state.b, state.stride, state.padding, False)
        if isinstance(res, str):
            return res
        state = res
    if state.w is None:
        return "a branch without a conv"
    return state


class BranchMerge(_Planned):
    """concat(branch_1(x), ..., branch_n(x)) on channels  ==>  [act](conv(x))."""

    kind = "branch"
    ops = ("concat",)

    def _branch(self, v: Value) -> tuple[Value, list[Node]] | str:
        nodes: list[Node] = []
        while True:
            n = v.producer
            if n is None or sole_user(v) is None:
                break
            if n.op in CONV_OPS:
                if conv_parts(n) is None:
                    return f"{n.name} weights are not constants"
            elif n.op not in POOLS and n.op not in ACTIVATIONS:
                break
            nodes.insert(0, n)
            v = n.input(0)
            if len(v.uses()) != 1 or v.is_output:
                break
        if not nodes:
            return "an operand is not a conv branch"
        return v, nodes

    def plan(self, cat: Node, graph: Graph):
        if len(cat.inputs) < 2 or cat.attrs["dim"] % len(cat.output.shape) != 1 or len(cat.output.shape) != 4:
            return None
        branches = []
        for v in cat.inputs:
            if sum(1 for u in cat.inputs if u is v) > 1:
                return "an operand appears twice"
            br = self._branch(v)
            if isinstance(br, str):
                return br
            branches.append(br)
        x = branches[0][0]
        if any(b[0] is not x for b in branches):
            return "the branches do not start from one input"
        tails = [b[1][-1] for b in branches]
        act = tails[0] if tails[0].op in ACTIVATIONS else None
        if any((t.op in ACTIVATIONS) != (act is not None) or (act is not None and (t.op, t.attrs) != (act.op, act.attrs))
               for t in tails):
            return "the branches end in different activations"
        if not any(n.op in CONV_OPS for _, ns in branches for n in ns):
            return None
        before = sum(node_macs(n) for _, ns in branches for n in ns)
        k_out = x.shape[1]

        def compose() -> tuple[list[_Lin], list[int], list[int]] | str:
            lins = []
            for _, ns in branches:
                lin = _compose_branch(ns[:-1] if act is not None else ns, k_out)
                if isinstance(lin, str):
                    return lin
                lins.append(lin)
            if any(lin.stride != lins[0].stride for lin in lins):
                return "the branches have different strides"
            pad = [max(lin.padding[i] for lin in lins) for i in range(2)]
            kern = [max(pad[i] - lin.padding[i] + lin.w.shape[2 + i] for lin in lins) for i in range(2)]
            return lins, pad, kern

        # The kernel size decides the cost: compose once here, build the weight in apply.
        res = compose()
        if isinstance(res, str):
            return res
        lins, pad, kern = res
        if out_size(x.shape[2:], kern, lins[0].stride, pad, [1, 1]) != list(cat.output.shape[2:]):
            return "the branches' outputs do not align"
        after = int(np.prod(cat.output.shape)) * k_out * int(np.prod(kern))
        exact = all(lin.exact for lin in lins) and all(_is_exact(n) for _, ns in branches for n in ns)

        def apply() -> str | None:
            ref = conv_parts(next(n for _, ns in branches for n in ns if n.op in CONV_OPS))[0]
            cout = sum(lin.w.shape[0] for lin in lins)
            w = np.zeros((cout, k_out, *kern))
            b = np.zeros(cout)
            o = 0
            for lin in lins:
                n_out, _, kh, kw = lin.w.shape
                dh, dw = pad[0] - lin.padding[0], pad[1] - lin.padding[1]
                w[o:o + n_out, :, dh:dh + kh, dw:dw + kw] = lin.w
                if lin.b is not None:
                    b[o:o + n_out] = lin.b
                o += n_out
            name = f"{cat.name}.merged"
            wv = graph.add_param(cast_like(w, ref), source=f"{name}.weight", name=f"{name}.weight")
            bv = graph.add_param(cast_like(b, ref), source=f"{name}.bias", name=f"{name}.bias")
            conv = graph.add_node("conv2d", [x, wv, bv], {"stride": lins[0].stride, "padding": pad,
                                                          "dilation": [1, 1], "groups": 1}, name, before=cat)
            out = conv.output
            if act is not None:
                out = graph.add_node(act.op, [out], dict(act.attrs), f"{name}.{act.op}", before=cat).output
            _mark(conv, [n for _, ns in branches for n in ns] + [cat.name], exact)
            replace_output(graph, cat, out)
            for t in tails:
                erase_if_dead(graph, t)
            return None

        return Plan(self.kind, before, after, exact, apply)


