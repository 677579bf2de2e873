"""The pass interface and registry.

A pass is a frozen dataclass: its fields are its options, ``name`` is its kebab-case name
(the same on the CLI), and ``run(graph, ctx) -> PassResult``. A plain function
``f(graph, ctx) -> bool`` can be registered too (:func:`register_function_pass`). Third-party
passes arrive through the ``graphc.passes`` entry-point group.

Each pass declares ``exact`` (outputs unchanged up to float rounding) or lossy, and which
cached analyses it keeps valid (``preserves``).
"""
from __future__ import annotations

import dataclasses
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
    (invalidated by the manager after a change), an RNG seed, and a progress flag."""

    def __init__(self, *, data=None, seed: int = 0, quiet: bool = False, example_inputs=None):
        self.data = data
        self.seed = seed
        self.quiet = quiet
        self.example_inputs = example_inputs
        self._analyses: dict[str, Any] = {}

    def analysis(self, name: str, graph: Graph, compute: Callable[[Graph], Any]):
        """Cached analysis result, recomputed after any change that did not preserve it."""
        if name not in self._analyses:
            self._analyses[name] = compute(graph)
        return self._analyses[name]

    def invalidate(self, keep: frozenset | set = frozenset()) -> None:
        for k in list(self._analyses):
            if k not in keep:
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


_PASSES: dict[str, type[Pass]] = {}
_PRESETS: dict[str, str] = {}


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


def register_preset(name: str, pipeline: str) -> None:
    _PRESETS[name] = pipeline


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
