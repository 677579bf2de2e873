"""Model specs: the strings the CLI and ``graphc.load`` accept for a model.

- ``path/to/model.onnx``: an ONNX file (``--input-shape`` fixes symbolic input dims);
- ``path/to/graph.json``: a graphc IR dump saved with :func:`graphc.ir.save_json`;
- ``torchvision:NAME``: a torchvision classification model with random (seeded) weights, in
  eval mode, at its own input size (224, 299 for inception_v3, ``image_size`` for ViTs);
- ``timm:NAME``: a timm model (the ``timm`` extra) with random (seeded) weights, in eval mode,
  at the input size of its default pretrained config;
- ``path/to/file.py:factory``: ``factory()`` returns a module, or ``(module, example_input)``;
  without an example, ``--input-shape`` gives the shape of a random input.

Trained weights come in separately (``weights=FILE``, the CLI's ``--weights``), for any torch
spec: a ``.safetensors`` file, or a state dict saved with ``torch.save`` and read with
``weights_only=True``, so loading weights never unpickles arbitrary objects. The keys must match
the module's ``state_dict`` exactly (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper,
as training scripts save, is unwrapped).

Every failure (missing file, unreadable ONNX, unknown name, a factory that raises) is an
:class:`~graphc.errors.InputError` with a one-line message naming the problem.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphc.errors import GraphcError, InputError
from graphc.ir import Graph
from graphc.ir.types import MAX_DIM


@dataclass
class ModelSpec:
    """A resolved spec: a torch module with its example inputs, or a file of a graph format."""

    spec: str
    kind: str  # "torch" | "onnx" | "ir"
    module: Any = None
    example_inputs: tuple = ()
    path: Path | None = None
    input_shapes: list = field(default_factory=list)

    def load(self) -> Graph:
        if self.kind == "torch":
            from graphc.errors import library_output
            from graphc.frontends.fx import load_module

            with library_output():
                return load_module(self.module, self.example_inputs, name=_graph_name(self))
        if self.kind == "ir":
            from graphc.ir import load_json

            return load_json(self.path)
        from graphc.frontends.onnx import load_onnx

        try:
            return load_onnx(str(self.path), input_shapes=self.input_shapes or None)
        except GraphcError:
            raise
        except Exception as e:  # the ONNX library failing on a damaged file
            raise InputError(f"{self.path} is not a readable ONNX model ({type(e).__name__}: {_first_line(e)})") from None


def parse_input_shape(text, what: str = "input shape") -> list[tuple[int, ...]]:
    """``"1,3,224,224"`` or ``"1x3x224x224"`` (or a list of such, or of int tuples) -> list of
    shapes; InputError, naming ``what`` was bad, on anything else (an empty dimension too)."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) or (text and isinstance(text[0], int)) else list(text)
    shapes = []
    for item in items:
        if isinstance(item, str):
            try:
                shape = tuple(int(p) for p in item.strip().replace("x", ",").split(","))
            except ValueError:
                raise InputError(f"bad {what} {item!r}: expected comma-separated integers like 1,3,224,224") from None
        else:
            shape = tuple(int(d) for d in item)
        if not shape or any(d < 1 for d in shape):
            raise InputError(f"bad {what} {item!r}: every dimension must be a positive integer")
        if any(d > MAX_DIM for d in shape):
            raise InputError(f"bad {what} {item!r}: a dimension is past int64")
        shapes.append(shape)
    return shapes


EXPECTED = "FILE.onnx, FILE.json, torchvision:NAME, timm:NAME or FILE.py:factory"


def resolve(spec: str, input_shape=None, weights=None) -> ModelSpec:
    """Turn a spec string into a :class:`ModelSpec` (builds torch models, checks files);
    ``weights`` (a file) replaces a torch model's weights (see the module docstring)."""
    ms = _resolve(spec, input_shape)
    if weights is not None:
        if ms.kind != "torch":
            raise InputError(f"--weights applies to torch model specs (torchvision:, timm:, FILE.py:factory), "
                             f"not to {spec}: an {ms.kind.upper()} file carries its own weights")
        load_weights(ms.module, weights)
    return ms


def _resolve(spec: str, input_shape) -> ModelSpec:
    if not spec.strip():
        raise InputError(f"no model given (expected {EXPECTED})")
    shapes = dict(input_shape) if isinstance(input_shape, dict) else parse_input_shape(input_shape)
    if isinstance(shapes, dict) and not spec.lower().endswith(".onnx"):
        raise InputError("input shapes by name apply to ONNX models only")
    if spec.startswith("torchvision:"):
        return _torchvision(spec, spec.split(":", 1)[1], shapes)
    if spec.startswith("timm:"):
        return _timm(spec, spec.split(":", 1)[1], shapes)
    head, sep, fn = spec.rpartition(":")
    if sep and head.endswith(".py"):
        return _factory(spec, Path(head), fn, shapes)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".json"):
        _check_file(path)
        if suffix == ".onnx":
            _sniff_onnx(path)
        return ModelSpec(spec, "onnx" if suffix == ".onnx" else "ir", path=path, input_shapes=shapes)
    if not path.exists():
        raise InputError(f"no such model file or spec: {spec} (expected {EXPECTED})")
    raise InputError(f"{spec}: unknown model format {suffix or '(no suffix)'}; expected {EXPECTED}")


def load_spec(spec: str, input_shape=None, input_shapes=None, weights=None) -> Graph:
    """The graphc Graph of a spec string."""
    return resolve(spec, input_shape if input_shape is not None else input_shapes, weights).load()


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__


def _check_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"no such model file: {path}")
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty")


def _sniff_onnx(path: Path) -> None:
    """An ONNX file is a protobuf, binary from its first byte: a text file is refused before
    the protobuf parser can misread it."""
    with open(path, "rb") as f:
        head = f.read(256)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        raise InputError(f"{path} is a text file, not an ONNX model")


def _torchvision(spec: str, name: str, shapes) -> ModelSpec:
    import torch

    try:
        import torchvision
    except ImportError:
        raise InputError("torchvision is not installed (pip install graphc[zoo])") from None
    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        near = difflib.get_close_matches(name, names, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise InputError(f"unknown torchvision classification model {name!r}{hint}")
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    if not shapes:
        side = getattr(model, "image_size", None) or (299 if name == "inception_v3" else 224)
        shapes = [(1, 3, side, side)]
    return ModelSpec(spec, "torch", module=model, example_inputs=_random(shapes), input_shapes=shapes)


def _timm(spec: str, name: str, shapes) -> ModelSpec:
    import torch

    try:
        import timm
    except ImportError:
        raise InputError("timm is not installed (pip install graphc[timm])") from None
    names = timm.list_models()
    if name not in names:
        # A pretrained tag (``convnext_atto.d2_in1k``) names the same architecture; weights
        # come from --weights, never from the network.
        arch = name.split(".", 1)[0]
        if arch not in names:
            near = difflib.get_close_matches(name, names, n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise InputError(f"unknown timm model {name!r}{hint}")
        name = arch
    torch.manual_seed(0)
    try:
        model = timm.create_model(name, pretrained=False).eval()
    except Exception as e:  # a model timm lists but cannot build without extra options
        raise InputError(f"{spec}: timm could not build it ({type(e).__name__}: {_first_line(e)})") from None
    if not shapes:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        shapes = [(1, *tuple(cfg.get("input_size", (3, 224, 224))))]
    return ModelSpec(spec, "torch", module=model, example_inputs=_random(shapes), input_shapes=shapes)


def load_weights(module, path) -> None:
    """Load a weights file into ``module`` in place (see the module docstring)."""
    import torch

    path = Path(path)
    _check_file(path)
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise InputError(f"{path}: reading .safetensors needs the safetensors package") from None
        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:
            raise InputError(f"{path} is not a readable safetensors file ({type(e).__name__}: {_first_line(e)})") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle of objects other than tensors is refused here, unrun
            raise InputError(f"{path} is not a weights-only state dict ({type(e).__name__}: {_first_line(e)}); "
                             "save one with torch.save(model.state_dict(), FILE) or use .safetensors") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise InputError(f"{path} does not fit the model: keys {'; '.join(parts)}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise InputError(f"{path} does not fit the model: {k} is {tuple(state[k].shape)} in the file, "
                         f"{tuple(own[k].shape)} in the model ({len(bad)} such tensors)")
    module.load_state_dict(state, strict=True)


def _factory(spec: str, path: Path, fn: str, shapes) -> ModelSpec:
    import torch

    _check_file(path)
    mod_name = f"graphc_factory_{abs(hash(str(path.resolve())))}"
    mspec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(mspec)
    try:
        mspec.loader.exec_module(module)
    except SystemExit as e:
        raise InputError(f"{path} called sys.exit({e.code!r}) while being imported") from None
    except Exception as e:
        raise InputError(f"{path} failed to import: {type(e).__name__}: {_first_line(e)}") from None
    factory = getattr(module, fn, None)
    if not callable(factory):
        raise InputError(f"{path} has no function {fn!r}")
    try:
        made = factory()
    except SystemExit as e:
        raise InputError(f"{spec}: the factory called sys.exit({e.code!r})") from None
    except Exception as e:
        raise InputError(f"{spec}: the factory raised {type(e).__name__}: {_first_line(e)}") from None
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise InputError(f"{spec}: the factory returned a {type(made).__name__}, not an nn.Module "
                         "(or a (module, example_input) pair)")
    if shapes:
        example = _random(shapes)
    elif example is None:
        raise InputError(f"{spec}: the factory gave no example input; pass --input-shape (e.g. 1,3,224,224)")
    elif isinstance(example, torch.Tensor):
        example = (example,)
    elif isinstance(example, (tuple, list)) and example and all(isinstance(t, torch.Tensor) for t in example):
        example = tuple(example)
    else:
        raise InputError(f"{spec}: the factory's example input is a {type(example).__name__}, "
                         "not a tensor or a tuple of tensors")
    made.eval()
    return ModelSpec(spec, "torch", module=made, example_inputs=example, input_shapes=[tuple(t.shape) for t in example])


def _random(shapes) -> tuple:
    import torch

    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(s, generator=g) for s in shapes)


def _graph_name(ms: ModelSpec) -> str:
    if ms.spec.startswith(("torchvision:", "timm:")):
        return ms.spec.split(":", 1)[1]
    return type(ms.module).__name__.lower()
