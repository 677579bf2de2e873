"""Pipeline strings: ``fold-bn,prune(ratio=0.5,importance=l1),fixpoint(fuse-resconv,dce)``.

Grammar (no braces: a shell expands ``{a,b}``)::

    pipeline := item ("," item)*
    item     := NAME | NAME "(" option ("," option)* ")" | "fixpoint(" (item | "max=" INT) ... ")"
    option   := KEY "=" VALUE          VALUE := bare | "quoted" | '[' bare ("," bare)* ']'

NAME is a registered pass or a preset (a preset expands to its own pipeline, recursively).
KEY may be kebab-case (``min-channels``) or snake_case; both name the dataclass field
``min_channels``. A value is typed by the field's annotation: int, float, bool, str,
``Literal[...]``, ``X | None`` (``none``), and tuples/lists of those (``[a,b]`` or one bare value).

Invariants: parsing never runs a pass; every error is one :class:`~graphc.errors.ParseError`
line that quotes the pipeline and, for an unknown name, lists the close registered names.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from graphc.errors import ParseError
from graphc.registry import Pass, all_passes, all_presets, preset_options_pass

DEFAULT_FIXPOINT_CAP = 20
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@dataclass
class PassStep:
    """One pass with its options (``instance`` is the configured frozen dataclass)."""

    instance: Pass
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def exact(self) -> bool:
        return bool(self.instance.exact)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        opts = ",".join(f"{k.rstrip('_').replace('_', '-')}={format_value(v)}" for k, v in self.options.items())
        return f"{self.name}({opts})"


@dataclass
class FixpointStep:
    """Steps rerun in order until a whole round changes nothing (at most ``cap`` rounds)."""

    steps: list
    cap: int = DEFAULT_FIXPOINT_CAP

    @property
    def name(self) -> str:
        return str(self)

    def __str__(self) -> str:
        inner = ",".join(str(s) for s in self.steps)
        return f"fixpoint({inner}{'' if self.cap == DEFAULT_FIXPOINT_CAP else f',max={self.cap}'})"


@dataclass
class Pipeline:
    steps: list
    text: str = ""

    def passes(self) -> list[PassStep]:
        """Every pass step, fixpoint groups flattened."""
        out: list[PassStep] = []

        def walk(steps):
            for s in steps:
                walk(s.steps) if isinstance(s, FixpointStep) else out.append(s)

        walk(self.steps)
        return out

    @property
    def exact(self) -> bool:
        """True when every pass is exact (the numeric check is then enforced)."""
        return all(p.exact for p in self.passes())

    @property
    def needs_data(self) -> bool:
        return any(getattr(p.instance, "needs_data", False) for p in self.passes())

    @property
    def uses_data(self) -> bool:
        """True when a pass trains on data given to it (also one with a data-free mode)."""
        return any(getattr(p.instance, "needs_data", False) or getattr(p.instance, "uses_data", False)
                   for p in self.passes())

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.steps)


def format_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (tuple, list, frozenset, set)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


def close_names(word: str, names) -> str:
    near = difflib.get_close_matches(word, list(names), n=4, cutoff=0.5)
    return f" (did you mean: {', '.join(near)}?)" if near else ""


# -- option types ---------------------------------------------------------------------------------
def option_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation of a pass dataclass (strings resolved where possible)."""
    if not dataclasses.is_dataclass(cls):
        return {}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation naming something its module never imported
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


def describe_type(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(tp))
    if origin in (tuple, list, frozenset, set):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"[{describe_type(args[0]) if args else 'str'},...]"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def coerce(raw: str | list, tp, where: str):
    """``raw`` (a bare string, or a list of them from ``[a,b]``) as a value of type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and isinstance(raw, str) and raw.lower() in ("none", "null"):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(raw, a, where)
            except ParseError:
                continue
        raise ParseError(f"{where}: expected {describe_type(tp)}, got {format_value(raw)!r}")
    if origin in (tuple, list, frozenset, set):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item = args[0] if args else str
        items = raw if isinstance(raw, list) else [raw]
        values = [coerce(x, item, where) for x in items]
        return tuple(values) if origin is tuple else origin(values)
    if isinstance(raw, list):
        raise ParseError(f"{where}: expected one {describe_type(tp)}, got a list")
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == raw or (isinstance(c, str) and c.replace("_", "-") == raw.replace("_", "-")):
                return c
        raise ParseError(f"{where}: expected one of {', '.join(map(str, choices))}, got {raw!r}"
                         f"{close_names(raw, map(str, choices))}")
    if tp is bool:
        if raw.lower() in _BOOLS:
            return _BOOLS[raw.lower()]
        raise ParseError(f"{where}: expected true or false, got {raw!r}")
    if tp is int:
        try:
            return int(raw, 0) if raw.lower().startswith(("0x", "0b", "0o")) else int(raw)
        except ValueError:
            raise ParseError(f"{where}: expected an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ParseError(f"{where}: expected a number, got {raw!r}") from None
    if tp is str or tp is Any or isinstance(tp, str):
        return raw
    raise ParseError(f"{where}: option type {describe_type(tp)} cannot be set from a pipeline string")


# -- the parser -----------------------------------------------------------------------------------
# fixpoint(...) inside fixpoint(...) deeper than this is refused: the parser and the manager
# recurse per level, and no useful pipeline comes near it.
MAX_NESTING = 16


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.i = 0
        self.depth = 0
        self.expanding: list[str] = []

    def fail(self, msg: str):
        shown = self.text if len(self.text) <= 120 else self.text[:100] + f"... ({len(self.text)} characters)"
        raise ParseError(f"pipeline {shown!r}: {msg}")

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.i] if self.i < len(self.text) else ""

    def skip_ws(self):
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def eat(self, ch: str):
        if self.peek() != ch:
            got = repr(self.text[self.i]) if self.i < len(self.text) else "the end"
            self.fail(f"expected {ch!r} at column {self.i + 1}, got {got}")
        self.i += 1

    def bare(self, stop: str) -> str:
        self.skip_ws()
        if self.peek() in ("'", '"'):
            q = self.text[self.i]
            j = self.text.find(q, self.i + 1)
            if j < 0:
                self.fail(f"unclosed quote at column {self.i + 1}")
            s, self.i = self.text[self.i + 1:j], j + 1
            return s
        j = self.i
        while j < len(self.text) and self.text[j] not in stop:
            j += 1
        s, self.i = self.text[self.i:j].strip(), j
        return s

    def items(self, close: str) -> list:
        """Comma-separated items up to ``close`` ('' = end of text)."""
        steps = []
        while True:
            steps.extend(self.item())
            c = self.peek()
            if c == ",":
                self.i += 1
                continue
            if c == close:
                return steps
            self.fail(f"unexpected {c!r} at column {self.i + 1}")

    def name(self) -> str:
        start = self.i
        name = self.bare(",()=[]")
        if not name:
            self.fail(f"missing pass name at column {start + 1}")
        if any(ch.isspace() for ch in name):
            self.fail(f"bad pass name {name!r}")
        return name

    def item(self) -> list:
        name = self.name()
        if name == "fixpoint":
            return [self.fixpoint()]
        passes = all_passes()
        if name in passes:
            return [self.pass_step(passes[name])]
        presets = all_presets()
        if name in presets:
            given = None
            if self.peek() == "(":
                target = preset_options_pass(name)
                if target is None or target not in passes:
                    self.fail(f"preset {name!r} takes no options (it expands to {presets[name]})")
                given = self.pass_step(passes[target])
            if name in self.expanding:
                self.fail(f"preset {name!r} expands to itself")
            sub = _Parser(presets[name])
            sub.expanding = self.expanding + [name]
            try:
                steps = sub.parse().steps
            except ParseError as e:
                self.fail(f"preset {name!r}: {e}")
            return steps if given is None else [self.configured(s, given) for s in steps]
        self.fail(f"unknown pass {name!r}{close_names(name, list(passes) + list(presets) + ['fixpoint'])}")

    def configured(self, step, given: PassStep):
        """``step`` with the options given to its preset merged in, when it is their pass."""
        if not isinstance(step, PassStep) or step.name != given.name:
            return step
        opts = {**step.options, **given.options}
        try:
            return PassStep(type(step.instance)(**opts), opts)
        except (TypeError, ValueError) as e:
            self.fail(f"pass {step.name!r}: {e}")

    def fixpoint(self) -> FixpointStep:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(f"fixpoint(...) nested more than {MAX_NESTING} deep")
        self.eat("(")
        steps, cap = [], DEFAULT_FIXPOINT_CAP
        while True:
            save = self.i
            key = self.bare(",()=[]")
            if self.peek() == "=":
                if key != "max":
                    self.fail(f"fixpoint takes one option, max=N, got {key!r}")
                self.i += 1
                cap = coerce(self.bare(",)"), int, "fixpoint option max")
                if cap < 1:
                    self.fail("fixpoint max must be at least 1")
            else:
                self.i = save
                steps.extend(self.item())
            c = self.peek()
            if c == ",":
                self.i += 1
                continue
            if c == ")":
                self.i += 1
                break
            self.fail(f"expected ',' or ')' in fixpoint(...) at column {self.i + 1}")
        if not steps:
            self.fail("fixpoint() needs at least one pass")
        self.depth -= 1
        return FixpointStep(steps, cap)

    def pass_step(self, cls: type[Pass]) -> PassStep:
        opts: dict[str, Any] = {}
        if self.peek() == "(":
            self.i += 1
            fields = option_types(cls)
            if self.peek() == ")":
                self.i += 1
            else:
                while True:
                    key = self.bare(",()=[]")
                    if not key:
                        self.fail(f"missing option name for pass {cls.name!r} at column {self.i + 1}")
                    if self.peek() != "=":
                        self.fail(f"option {key!r} of pass {cls.name!r} needs a value ({key}=...)")
                    self.i += 1
                    field_name = key.replace("-", "_")
                    if field_name not in fields and f"{field_name}_" in fields:
                        field_name += "_"  # an option named by a Python keyword (lambda) is a field lambda_
                    if field_name not in fields:
                        shown = [f.rstrip("_").replace("_", "-") for f in fields]
                        what = f"options: {', '.join(shown)}" if shown else "it takes no options"
                        near = close_names(key.replace("_", "-"), shown)
                        self.fail(f"unknown option {key!r} for pass {cls.name!r}{near or f' ({what})'}")
                    if field_name in opts:
                        self.fail(f"option {key!r} of pass {cls.name!r} given twice")
                    raw = self.value()
                    where = f"pipeline {self.text!r}: option {key!r} of pass {cls.name!r}"
                    opts[field_name] = coerce(raw, fields[field_name], where)
                    c = self.peek()
                    if c == ",":
                        self.i += 1
                        continue
                    if c == ")":
                        self.i += 1
                        break
                    self.fail(f"expected ',' or ')' after option {key!r} at column {self.i + 1}")
        try:
            inst = cls(**opts)
        except (TypeError, ValueError) as e:
            self.fail(f"pass {cls.name!r}: {e}")
        return PassStep(inst, opts)

    def value(self):
        if self.peek() == "[":
            self.i += 1
            vals = []
            if self.peek() == "]":
                self.i += 1
                return vals
            while True:
                vals.append(self.bare(",]()"))
                c = self.peek()
                self.i += 1
                if c == "]":
                    return vals
                if c != ",":
                    self.fail(f"expected ',' or ']' in a list at column {self.i}")
        v = self.bare(",()[]")
        if v == "":
            self.fail(f"missing value at column {self.i + 1}")
        return v

    def parse(self) -> Pipeline:
        if not self.text.strip():
            self.fail("empty pipeline")
        steps = self.items("")
        if self.i < len(self.text):
            self.fail(f"unexpected {self.text[self.i]!r} at column {self.i + 1}")
        return Pipeline(steps, self.text)


def parse_pipeline(spec) -> Pipeline:
    """A :class:`Pipeline` from a string, a Pass instance or class, a registered function, a
    Pipeline, or a list of these."""
    if isinstance(spec, Pipeline):
        return spec
    if isinstance(spec, str):
        return _Parser(spec).parse()
    if isinstance(spec, Pass):
        opts = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)} if dataclasses.is_dataclass(spec) else {}
        return Pipeline([PassStep(spec, opts)], spec.name)
    if isinstance(spec, type) and issubclass(spec, Pass):
        return parse_pipeline(spec())
    if isinstance(spec, (list, tuple)):
        steps = []
        for s in spec:
            steps.extend(parse_pipeline(s).steps)
        if not steps:
            raise ParseError("empty pipeline")
        p = Pipeline(steps)
        p.text = str(p)
        return p
    raise ParseError(f"a pipeline is a string like 'fold-bn,dce' or a list of passes, got {type(spec).__name__}")
