"""Latency for ``prune``: what a channel costs in time, and targets given in time.

MACs are not time. A channel of a layer at high resolution costs more than one at low
resolution even at equal MACs, a depthwise layer is bound by memory rather than compute, and
onnxruntime's blocked (NCHWc) convolution kernels run fastest when channel counts are a
multiple of their SIMD block. This module gives ``prune`` three things from the calibrated
cost model (:mod:`graphc.backends.latency`):

- :func:`seconds_per_unit`: for every prunable channel group, the predicted seconds saved per
  unit removed. It is a finite difference of the predicted latency: a quarter of the group's
  units (at least one) is cut on a copy and the per-node predictions of the nodes the group
  touches are compared. Groups that share no node are cut on the same copy (a greedy colouring
  of the "touch the same node" graph), so the whole table costs a handful of predictions, not
  one per group; each node's difference is credited to the one group of its colour touching it.
- :func:`simd_block`: the channel multiple the kernels like (16 with AVX-512, else 8).
- :func:`parse_target_latency`: ``"3ms"``, ``"0.004s"`` (absolute) or ``"0.6"`` (a fraction of
  the source's predicted latency).

The latency-aware importance (``importance=latency``) ranks the units of all groups together by
``magnitude / max(magnitude in its group) / seconds saved per unit``: a unit goes first when it
is weak and its layer is slow, so at a given latency more channels stay where they are cheap.
This is the ratio form of a latency-saliency knapsack (HALP, Shen et al., NeurIPS 2022); the
paper's exact solver is not used: a greedy ranking by value per cost is the knapsack's
fractional optimum, which the rounding of kept counts then adjusts.
"""
from __future__ import annotations

import re

import numpy as np

from graphc.errors import PassError
from graphc.passes.channel_groups import ChannelGroup, prune_groups

__all__ = ["seconds_per_unit", "simd_block", "parse_target_latency", "calibration_for", "predicted_seconds"]

_TARGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*(ms|s)?\s*$", re.IGNORECASE)


def parse_target_latency(text: str) -> tuple[float, bool]:
    """``(value, absolute)``: seconds when ``text`` has a unit (``s`` or ``ms``), else a fraction
    in (0, 1] of the source's predicted latency. A bare number is never read as seconds: a
    batch-1 CNN runs in well under a second, so ``0.5`` would be ambiguous."""
    m = _TARGET.match(str(text))
    if not m:
        raise ValueError(f"target-latency must be a time like 3ms or 0.004s, or a fraction in (0, 1], got {text!r}")
    value, unit = float(m.group(1)), (m.group(2) or "").lower()
    if not value > 0:
        raise ValueError(f"target-latency must be > 0, got {text!r}")
    if unit == "ms":
        return value / 1e3, True
    if unit == "s":
        return value, True
    if value > 1:
        raise ValueError(f"target-latency {text!r}: a bare number is a fraction in (0, 1]; write a time with its unit (3ms, 0.004s)")
    return value, False


def simd_block() -> int:
    """Channels per SIMD block of onnxruntime's NCHWc kernels on this CPU: 16 floats with
    AVX-512, 8 with AVX2 (and on CPUs graphc cannot read, which covers most others)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return 16 if " avx512f" in line else 8
    except OSError:
        pass
    return 8


def calibration_for(threads: int | None):
    """The calibration latencies are predicted with: single-thread CPU time for ``threads=1``
    (steady on a busy machine), else the default thread setting; calibrated now (quickly) when
    this machine has none cached."""
    from graphc.backends.calibration import calibrate, load_calibration

    clock = "cpu" if threads == 1 else "wall"
    return load_calibration(threads=threads, clock=clock) or calibrate(quick=True, threads=threads, clock=clock)


def predicted_seconds(graph, calib) -> float:
    from graphc.backends.latency import predict

    return predict(graph, calib).total_ms / 1e3


def _touched(group: ChannelGroup) -> set[str]:
    """Names of the nodes whose cost a cut of ``group`` changes: producers and readers of its
    members."""
    names = set()
    for m in group.members:
        if m.value.producer is not None:
            names.add(m.value.producer.name)
        names.update(u.node.name for u in m.value.uses())
    return names


def _colours(touch: list[set[str]]) -> list[list[int]]:
    """Greedy colouring: groups of one colour touch no node in common."""
    colours: list[tuple[list[int], set[str]]] = []
    for i, names in sorted(enumerate(touch), key=lambda t: -len(t[1])):
        for members, used in colours:
            if used.isdisjoint(names):
                members.append(i)
                used |= names
                break
        else:
            colours.append(([i], set(names)))
    return [m for m, _ in colours]


def seconds_per_unit(graph, groups: list[ChannelGroup], calib, *, fraction: float = 0.25) -> dict[int, float]:
    """``{group id: predicted seconds saved per unit removed}`` for the prunable groups."""
    from graphc.backends.latency import predict
    from graphc.passes.prune import _on_copy

    groups = [g for g in groups if g.prunable]
    if not groups:
        return {}
    base = predict(graph, calib).per_node
    touch = [_touched(g) for g in groups]
    out: dict[int, float] = {}
    for colour in _colours(touch):
        vmap: dict = {}
        copy = graph.clone(value_map=vmap)
        cuts = {}
        steps = []
        for i in colour:
            g = groups[i]
            k = min(g.size - 1, max(1, int(round(fraction * g.size))))
            cuts[i] = k
            steps.append((_on_copy(g, vmap), np.arange(k, g.size)))
        try:
            prune_groups(copy, steps)
        except PassError as e:
            raise PassError(f"prune: cannot estimate the latency of a channel ({e})") from e
        after = predict(copy, calib).per_node
        for i in colour:
            saved_ms = sum(base.get(n, 0.0) - after.get(n, 0.0) for n in touch[i])
            out[groups[i].id] = max(saved_ms, 0.0) / 1e3 / cuts[i]
    return out


def latency_scores(groups: list[ChannelGroup], magnitudes: list[np.ndarray], saved: dict[int, float]) -> list[np.ndarray]:
    """Per unit: its magnitude over its group's largest, per second the unit saves. A group
    whose units save no predicted time ranks last (its cut would cost accuracy for nothing)."""
    positive = [s for s in saved.values() if s > 0]
    floor = (min(positive) if positive else 1.0) * 1e-3
    out = []
    for g, s in zip(groups, magnitudes):
        top = s.max() if s.size and s.max() > 0 else 1.0
        out.append((s / top) / max(saved.get(g.id, 0.0), floor))
    return out
