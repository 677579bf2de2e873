"""``graphc passes [NAME]``: the registered passes and presets, or one of them in full."""
from __future__ import annotations

import dataclasses
import inspect
import json

from graphc.errors import InputError
from graphc.registry import default_contract


def _preserves(cls) -> frozenset:
    kept = getattr(cls, "preserves", frozenset())
    if isinstance(kept, property):  # decided per instance, like the contract
        try:
            kept = cls().preserves
        except Exception:
            kept = frozenset()
    return frozenset(kept)


def register(sub) -> None:
    p = sub.add_parser("passes", help="list the passes and presets, or show one in full",
                       description="Without NAME: every pass (name, exact/lossy, options with defaults, "
                                   "one-line doc) and every preset. With NAME: its full documentation.")
    p.add_argument("name", nargs="?", help="a pass or preset name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def pass_info(cls) -> dict:
    from graphc.pipeline_parse import describe_type, format_value, option_types

    types = option_types(cls)
    opts = []
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.init:
                d = _default(f)
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                opts.append({"name": f.name.rstrip("_").replace("_", "-"), "type": describe_type(types.get(f.name, f.type)),
                             "default": None if required else format_value(d), "required": required})
    # The contract belongs to a configured instance: show the default one's.
    exact, needs = default_contract(cls)
    return {"name": cls.name, "exact": exact, "needs_data": needs,
            "preserves": sorted(_preserves(cls)), "options": opts, "summary": cls.summary(),
            "doc": inspect.cleandoc(cls.__doc__ or ""), "module": cls.__module__}


def _opts_text(info: dict) -> str:
    return ", ".join(f"{o['name']}={o['default']}" if not o["required"] else f"{o['name']}=<{o['type']}>"
                     for o in info["options"])


def run(args) -> int:
    from graphc.pipeline_parse import close_names
    from graphc.registry import all_passes, all_presets, preset_doc

    passes, presets = all_passes(), all_presets()
    if args.name is None:
        infos = [pass_info(c) for c in passes.values()]
        if args.json:
            print(json.dumps({"passes": infos, "presets": presets}, indent=2))
            return 0
        width = max((len(i["name"]) for i in infos), default=4)
        print("passes:")
        for i in infos:
            kind = "exact" if i["exact"] else ("lossy, needs data" if i["needs_data"] else "lossy")
            opts = _opts_text(i)
            print(f"  {i['name']:<{width}}  {kind:<17}  {i['summary']}")
            if opts:
                print(f"  {'':<{width}}  {'':<17}  options: {opts}")
        if presets:
            print("\npresets:")
            pw = max(len(n) for n in presets)
            for n, text in presets.items():
                print(f"  {n:<{pw}}  = {text}")
        print("\n`graphc passes NAME` shows one in full; pipelines look like: fold-bn,absorb-pool(allow-equal=true),dce")
        return 0
    name = args.name
    if name in passes:
        info = pass_info(passes[name])
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        kind = "exact" if info["exact"] else "lossy"
        print(f"{name} ({kind}{', needs data (--data)' if info['needs_data'] else ''})\n")
        print(info["doc"] or info["summary"] or "(no documentation)")
        print("\noptions:" if info["options"] else "\noptions: none")
        for o in info["options"]:
            dflt = "required" if o["required"] else f"default {o['default']}"
            print(f"  {o['name']}: {o['type']} ({dflt})")
        if info["preserves"]:
            print(f"preserves analyses: {', '.join(info['preserves'])}")
        return 0
    if name in presets:
        if args.json:
            print(json.dumps({"preset": name, "pipeline": presets[name], "doc": preset_doc(name)}, indent=2))
            return 0
        from graphc.pipeline_parse import parse_pipeline

        doc = preset_doc(name)
        print(f"{name} (preset)\n\n  = {presets[name]}\n" + (f"\n{doc}\n" if doc else "") + "\npasses:")
        for step in parse_pipeline(presets[name]).passes():
            print(f"  {step.name:<16} {'exact' if step.exact else 'lossy'}  {type(step.instance).summary()}")
        return 0
    raise InputError(f"no pass or preset named {name!r}{close_names(name, list(passes) + list(presets))}")
