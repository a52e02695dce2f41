"""``infercore backends``: which backends are registered, and whether they work here."""

from __future__ import annotations

import argparse
import json

VERDICT = None  # exit status 1 is not used


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backends",
        help="list backends: available, version, devices, why not",
        description="List every registered backend: whether it works here (and why not, with the pip "
        "install that fixes it), its version, devices, the file suffixes it reads, its priority and plugin.",
        epilog="example:\n  infercore backends --json",
    )
    p.add_argument("--json", action="store_true", help="print JSON to stdout instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import available_backends
    from ..plugins import registry

    infos = available_backends()
    problems = registry.problems()
    if args.json:
        rows = [
            {"name": i.name, "available": i.available, "version": i.version, "devices": list(i.devices),
             "suffixes": list(i.suffixes), "priority": i.priority, "extra": i.extra, "plugin": i.plugin,
             "reason": i.reason}
            for i in infos.values()
        ]
        # a plugin that failed to load provides no backend: it is a row with no name
        rows += [
            {"name": None, "available": False, "version": None, "devices": [], "suffixes": [], "priority": None,
             "extra": None, "plugin": plugin, "reason": reason}
            for plugin, reason in problems.items()
        ]
        print(json.dumps(rows, indent=2))
        return 0
    header = ("backend", "available", "version", "devices", "reads", "priority", "plugin")
    rows_t = [
        (i.name, "yes" if i.available else "no", i.version or "-", ", ".join(i.devices) or "-",
         " ".join(i.suffixes) or "-", str(i.priority), i.plugin)
        for i in infos.values()
    ]
    widths = [max(len(r[c]) for r in (header, *rows_t)) for c in range(len(header))]
    for row in (header, *rows_t):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    missing = [i for i in infos.values() if not i.available]
    if missing or problems:
        print()
        for i in missing:
            print(f"{i.name}: {i.reason}")
        for plugin, reason in problems.items():
            print(f"plugin {plugin!r} not loaded: {reason}")
    return 0
