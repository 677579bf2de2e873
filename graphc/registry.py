"""The pass interface and registry.

A pass is a frozen dataclass: its fields are its options, ``name`` is its kebab-case name
(the same on the CLI), and ``run(graph, ctx) -> PassResult``. A plain function
``f(graph, ctx) -> bool`` can be registered too (:func:`register_function_pass`). Third-party
passes arrive through the ``graphc.passes`` entry-point group.

Each pass declares ``exact`` (outputs unchanged up to float rounding) or lossy, whether it
``needs_data``, and which cached analyses it keeps valid (``preserves``). ``exact`` and
``needs_data`` belong to the configured instance: a class constant where they never depend on
the options, a property where they do (``prune-merge(threshold=0.1)`` is lossy).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from graphc.ir.graph import Graph

_log = logging.getLogger("graphc")


@dataclass
class PassResult:
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)


class PassContext:
    """What a pass may need beyond the graph: data for training passes, a cache of analyses
    (invalidated by the manager after a change, except those the pass preserves), an RNG seed,
    and a progress flag. ``source``: the graph as the pipeline received it (a copy), kept only
    when a pass of the pipeline declares ``wants_source`` (distillation from the source)."""

    def __init__(self, *, data=None, seed: int = 0, quiet: bool = False, example_inputs=None,
                 source: Graph | None = None):
        self.data = data
        self.source = source
        self.seed = seed
        self.quiet = quiet
        self.example_inputs = example_inputs
        self._analyses: dict[tuple, tuple[Graph, Any]] = {}
        # How often each analysis was computed (not served from the cache).
        self.analysis_runs: dict[str, int] = {}

    def analysis(self, name: str, graph: Graph, compute: Callable[[Graph], Any], key: Any = None):
        """The result of analysis ``name`` (``key``: its options) on ``graph``, computed once and
        kept until a pass that changes the graph and does not list ``name`` in its
        ``preserves`` has run."""
        k = (name, id(graph), key)
        entry = self._analyses.get(k)
        if entry is None or entry[0] is not graph:
            self.analysis_runs[name] = self.analysis_runs.get(name, 0) + 1
            entry = self._analyses[k] = (graph, compute(graph))
        return entry[1]

    def invalidate(self, keep: frozenset | set = frozenset()) -> None:
        for k in list(self._analyses):
            if k[0] not in keep:
                del self._analyses[k]

    def info(self, msg: str) -> None:
        """A note for whoever watches the run (the ``graphc`` logger; silent unless configured)."""
        _log.info(msg)


class Pass:
    """Base of all passes (subclass as a frozen dataclass)."""

    name: ClassVar[str] = ""
    exact: ClassVar[bool] = True
    needs_data: ClassVar[bool] = False
    preserves: ClassVar[frozenset] = frozenset()
    # True when the pass reads ``ctx.source`` (the manager then keeps a copy of the input graph).
    wants_source: ClassVar[bool] = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def options(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []

    @classmethod
    def summary(cls) -> str:
        """The docstring's first sentence (its first paragraph when that has no full stop)."""
        import re

        doc = (cls.__doc__ or "").strip()
        para = " ".join(doc.split("\n\n")[0].split())
        m = re.match(r"(.+?\.)(\s|$)", para)
        return m.group(1) if m else para


class PatternPass(Pass):
    """A pass that is a set of rewrite patterns (:mod:`graphc.ir.rewrite`) run to a fixed point
    by one worklist driver, then one sweep of the params nothing reads any more. Subclass as a
    frozen dataclass and define :meth:`patterns`; :meth:`stats` shapes the result's stats
    (default: the patterns' counters plus ``refused``, node name -> why no pattern rewrote it)."""

    def patterns(self) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def stats(self, res) -> dict:
        return {**res.counts, **res.groups, "refused": res.refused}

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        from graphc.ir.rewrite import apply_patterns

        res = apply_patterns(graph, self.patterns())
        if res.changed:
            graph.prune_unused_params()
        return PassResult(changed=res.changed, stats=self.stats(res))


_PASSES: dict[str, type[Pass]] = {}
_PRESETS: dict[str, str] = {}
_PRESET_OPTIONS: dict[str, str] = {}
_PRESET_DOCS: dict[str, str] = {}


def default_contract(cls: type[Pass]) -> tuple[bool, bool]:
    """(exact, needs_data) of ``cls`` with its default options (a pass whose contract depends on
    options it cannot default to is taken as lossy and needing data)."""
    try:
        inst = cls()
    except Exception:
        e, n = cls.__dict__.get("exact", False), cls.__dict__.get("needs_data", True)
        return (e if isinstance(e, bool) else False), (n if isinstance(n, bool) else True)
    return bool(inst.exact), bool(inst.needs_data)


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: add a pass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _PASSES and _PASSES[cls.name] is not cls:
        raise ValueError(f"pass {cls.name!r} registered twice")
    _PASSES[cls.name] = cls
    return cls


def register_function_pass(name: str | None | Callable = None, *, exact: bool = True, doc: str | None = None):
    """Decorator: register ``f(graph, ctx) -> bool`` as an option-less pass, named after the
    function (underscores as dashes) unless ``name`` is given. Usable bare or called."""
    if callable(name):
        return register_function_pass(None, exact=exact, doc=doc)(name)

    def deco(fn: Callable[[Graph, PassContext], bool]):
        pname = name or fn.__name__.replace("_", "-")

        def run(self, graph, ctx):
            return PassResult(changed=bool(fn(graph, ctx)))

        cls = dataclass(frozen=True)(type(
            fn.__name__, (Pass,),
            {"name": pname, "exact": exact, "run": run, "__doc__": doc or fn.__doc__ or pname,
             "__annotations__": {}},
        ))
        register_pass(cls)
        return fn

    return deco


def unregister_pass(name: str) -> None:
    """Remove a pass (tests and interactive sessions that register throw-away passes)."""
    _PASSES.pop(name, None)


def register_preset(name: str, pipeline: str, doc: str = "", options_to: str | None = None) -> None:
    """A named pipeline; ``doc`` (shown by ``graphc passes NAME``) says what it is for and shows
    a before/after IR fragment, as a pass's docstring does. ``options_to``: the pass of
    ``pipeline`` that options given to the preset configure (``edp(target-macs=0.5)`` sets
    edp-train's); None: the preset takes no options."""
    _PRESETS[name] = pipeline
    _PRESET_DOCS[name] = inspect.cleandoc(doc) if doc else ""
    if options_to is not None:
        _PRESET_OPTIONS[name] = options_to
    else:
        _PRESET_OPTIONS.pop(name, None)


def preset_options_pass(name: str) -> str | None:
    """The pass options given to preset ``name`` go to, if it takes any."""
    return _PRESET_OPTIONS.get(name)


def preset_doc(name: str) -> str:
    """The documentation a preset was registered with ("" when none)."""
    load_builtin_passes()
    return _PRESET_DOCS.get(name, "")


def get_pass(name: str) -> type[Pass]:
    load_builtin_passes()
    return _PASSES[name]


def all_passes() -> dict[str, type[Pass]]:
    load_builtin_passes()
    return dict(sorted(_PASSES.items()))


def all_presets() -> dict[str, str]:
    load_builtin_passes()
    return dict(sorted(_PRESETS.items()))


_loaded = False


def load_builtin_passes() -> None:
    """Import every module in graphc.passes, then entry-point plugins (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    import graphc.passes as pkg

    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        if not mod.startswith("_"):
            importlib.import_module(f"graphc.passes.{mod}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="graphc.passes"):
        _load_plugin(ep)


def _load_plugin(ep) -> None:
    """One ``graphc.passes`` entry point: a Pass class, a plain ``f(graph, ctx) -> bool``
    (registered under the entry point's name), or a module whose import registers passes.
    A broken plugin is reported on stderr and skipped: it must not take graphc down with it."""
    import sys
    import types

    try:
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Pass):
            if _PASSES.get(obj.name) is not obj:
                register_pass(obj)
        elif isinstance(obj, types.ModuleType):
            pass
        elif callable(obj):
            if ep.name not in _PASSES:
                register_function_pass(ep.name, exact=getattr(obj, "exact", True))(obj)
        else:
            raise TypeError(f"{ep.value} is neither a Pass class, a function nor a module")
    except Exception as e:
        print(f"graphc: warning: pass plugin {ep.name!r} ({ep.value}) not loaded: {type(e).__name__}: {e}",
              file=sys.stderr)
