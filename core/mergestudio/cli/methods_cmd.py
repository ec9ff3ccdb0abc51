"""``mergestudio methods [NAME]``: the registered methods and their parameters."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("methods", help="list merge methods and their parameters")
    parser.add_argument("name", nargs="?", help="show one method in detail")
    parser.add_argument("--json", action="store_true", help="print the declarations as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.methods import all_methods, get_method
    from mergestudio.methods.plugins import all_post_processes

    plugins = [p for p in all_post_processes() if args.name in (None, p.name)]
    methods = all_methods() if not args.name else [] if plugins else [get_method(args.name)]
    if args.json:
        print(json.dumps([_as_dict(m) for m in methods], indent=2))
        return 0
    for method in methods:
        base = " (needs base_model)" if method.needs_base else ""
        print(f"{method.name:18} {method.family:18} {method.summary}{base}")
        if args.name or len(methods) == 1:
            print(f"    math:  {method.math}")
            if method.paper:
                print(f"    paper: {method.paper}")
        for param in method.params:
            scope = "per model" if param.per_model else "global"
            default = "required" if param.required else f"default {param.default}"
            print(f"    {param.name:14} {param.kind:6} {scope:9} {default:16} {param.doc}")
    if not args.json and plugins:
        print("\npost_process plug-ins (recipe key post_process: {name: …, parameters: {…}}):")
        for plugin in plugins:
            print(f"{plugin.name:18} {'post-process':18} {plugin.summary}")
            if plugin.paper:
                print(f"    paper: {plugin.paper}")
            for param in plugin.params:
                print(
                    f"    {param.name:14} {param.kind:6} {'global':9} {f'default {param.default}':16} {param.doc}"
                )
    return 0


def _as_dict(method: object) -> dict[str, object]:
    from dataclasses import asdict, fields

    # The declaration's data, not its code (function, check rules, streamed kernels).
    values = {f.name: getattr(method, f.name) for f in fields(method)}  # type: ignore[arg-type]
    data = {name: value for name, value in values.items() if name != "check" and not callable(value)}
    data["params"] = [asdict(p) for p in data["params"]]  # type: ignore[attr-defined,unused-ignore]
    return data
