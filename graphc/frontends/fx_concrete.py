"""A symbolic trace that knows each tensor's shape: the second try of the fx front-end.

Plain symbolic tracing fails on Python control flow over a tensor's metadata, which modern
vision code is full of: TF-style "same" padding (``ih, iw = x.size()[-2:]``, then
``if pad_h > 0``), ``if x.device.type != 'meta'`` around an autocast region, window sizes
chosen from ``H``. graphc's IR has static shapes, fixed by the example input, so those
values are constants of the import anyway: :class:`ConcreteTracer` runs each traced call on
real tensors beside the symbolic one, and a proxy answers ``shape``, ``size()``, ``dim()``,
``numel()``, ``device`` and ``dtype`` with the real tensor's values (the graph records no
node for them). Anything that depends on tensor *values* still fails, as it must.

Invariants: the real run never writes to the model: parameters and buffers are cloned when
the trace first reads them; a call whose real run fails leaves its proxy without a value
(its metadata is then symbolic again, as in a plain trace).
"""
from __future__ import annotations

import torch
import torch.fx as fx

_META = ("shape", "device", "dtype", "ndim", "is_cuda")


def _real(a):
    if isinstance(a, fx.Proxy):
        return getattr(a, "_value", None)
    if isinstance(a, (list, tuple)):
        vals = [_real(i) for i in a]
        return type(a)(vals) if not hasattr(a, "_fields") else type(a)(*vals)
    if isinstance(a, dict):
        return {k: _real(v) for k, v in a.items()}
    if isinstance(a, slice):
        return slice(_real(a.start), _real(a.stop), _real(a.step))
    return a


def _has_missing(a) -> bool:
    if isinstance(a, fx.Proxy):
        return getattr(a, "_value", None) is None
    if isinstance(a, (list, tuple)):
        return any(_has_missing(i) for i in a)
    if isinstance(a, dict):
        return any(_has_missing(i) for i in a.values())
    if isinstance(a, slice):
        return any(_has_missing(i) for i in (a.start, a.stop, a.step))
    return False


def concrete_proxy_class(base: type) -> type:
    """``base`` (an fx Proxy class) whose tensor metadata comes from the real value."""

    class ConcreteProxy(base):
        _value = None

        def __getattr__(self, k):
            v = self.__dict__.get("_value")
            if k in _META and isinstance(v, torch.Tensor):
                return getattr(v, k)
            return super().__getattr__(k)

        def size(self, *dim):
            if isinstance(self._value, torch.Tensor):
                return self._value.size(*dim)
            return self.tracer.create_proxy("call_method", "size", (self, *dim), {})

        def dim(self):
            if isinstance(self._value, torch.Tensor):
                return self._value.dim()
            return self.tracer.create_proxy("call_method", "dim", (self,), {})

        def numel(self):
            if isinstance(self._value, torch.Tensor):
                return self._value.numel()
            return self.tracer.create_proxy("call_method", "numel", (self,), {})

        def __len__(self):
            if isinstance(self._value, (torch.Tensor, tuple, list)):
                return len(self._value)
            return super().__len__()

    return ConcreteProxy


def concrete_tracer_class(base: type, proxy_base: type) -> type:
    """``base`` (an fx Tracer class whose proxies are ``proxy_base``) that runs every traced
    call on real values too."""
    proxy_cls = concrete_proxy_class(proxy_base)

    class ConcreteTracer(base):
        def __init__(self, example_inputs: tuple):
            super().__init__()
            self._examples = list(example_inputs)
            self._placeholders = 0
            self._real_calls = 0  # > 0 while a layer runs on real values

        def trace(self, root, concrete_args=None):
            # Read before tracing: while it runs, fx routes module attribute reads through the
            # tracer itself.
            self._state = {**dict(root.named_parameters(remove_duplicate=False)),
                           **dict(root.named_buffers(remove_duplicate=False))}
            self._modules_by_name = dict(root.named_modules(remove_duplicate=False))
            return super().trace(root, concrete_args)

        def proxy(self, node):
            return proxy_cls(node, self)

        # While a layer runs on real values, fx's patches of Module.__call__/__getattr__ (still
        # in place: lifting them costs a setattr on nn.Module, which Python propagates to every
        # subclass, per call) pass straight through to the layer.
        def call_module(self, m, forward, args, kwargs):
            if self._real_calls:
                return forward(*args, **kwargs)
            return super().call_module(m, forward, args, kwargs)

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            if self._real_calls:
                return attr_val
            return super().getattr(attr, attr_val, parameter_proxy_cache)

        def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):
            p = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
            if isinstance(p, fx.Proxy):
                try:
                    p._value = self._run(kind, target, args, kwargs)
                except Exception:  # a call the real run cannot make: its metadata stays symbolic
                    p._value = None
            return p

        def _run(self, kind, target, args, kwargs):
            if kind == "placeholder":
                i = self._placeholders
                self._placeholders += 1
                if i < len(self._examples):  # a copy: the model may write to its input
                    return self._examples[i].clone()
                return args[0] if args else None
            if kind == "get_attr":
                t = self._state.get(target)
                return t.detach().clone() if t is not None else None
            if _has_missing(args) or _has_missing(kwargs):
                return None
            a, k = _real(args), _real(kwargs)
            with torch.no_grad():
                if kind == "call_function":
                    return target(*a, **k)
                if kind == "call_method":
                    return getattr(a[0], target)(*a[1:], **k)
                if kind == "call_module":  # a layer's own forward must not be traced
                    self._real_calls += 1
                    try:
                        return self._modules_by_name[target](*a, **k)
                    finally:
                        self._real_calls -= 1
            return None

    return ConcreteTracer
