"""The package layout shows the layers (docs/architecture.md), and no module imports from a layer
above its own: data flows down, never back up.

Each module of ``src/infercore`` is given a layer by the first prefix of ``LAYERS`` that matches
its dotted name; every ``import`` of an infercore module it makes, at the top or inside a function,
must go to the same layer or one below. A module of no layer fails the test: a new module must be
placed here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "infercore"

# (layer, module prefixes), bottom first
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core types",
        (
            "errors", "specs", "protocol", "buffers", "optional", "arguments", "modelfiles", "progress",
            "facade",
        ),
    ),
    ("backends", ("backends",)),
    ("core", ("plugins", "engine")),
    ("above the engine", ("inputs", "metrics", "batching", "layout", "preprocess")),
    ("tools", ("compare", "bench", "quantize", "convert", "optimize", "monitor", "signing")),
    ("serving and integrations", ("serve", "integrations", "testing")),
    ("command line and the package facade", ("cli", "__init__")),
]  # fmt: skip


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported infercore module relative to the package) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "__init__":
        package = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [".".join([*target, a.name]) for a in node.names] if not node.module else [".".join(target)]
            elif node.module and (node.module == "infercore" or node.module.startswith("infercore.")):
                target = node.module.split(".")[1:]
                names = [".".join([*target, a.name]) for a in node.names] if not target else [".".join(target)]
            else:
                continue
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".", 1)[1]) for a in node.names if a.name.startswith("infercore.")]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_layer_above(path: Path) -> None:
    module = _module_name(path)
    own = _layer(module)
    assert own is not None, f"{module} belongs to no layer: place it in LAYERS and docs/architecture.md"
    if module == "__init__":
        return  # the facade re-exports every layer, lazily
    for line, target in _imports(path, module):
        if not target or target.split(".")[0] not in {p.split(".")[0] for _, ps in LAYERS for p in ps}:
            continue  # a name of the package facade (``from .. import __version__``)
        theirs = _layer(target)
        assert theirs is not None, f"{module}:{line} imports {target}, which belongs to no layer"
        assert theirs <= own, (
            f"{module}:{line} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]}), a layer above it"
        )


def test_every_module_is_placed_in_the_architecture_page() -> None:
    page = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    missing = sorted(
        {_module_name(p) for p in _modules()} - {"__init__"}
        - {m for m in {_module_name(p) for p in _modules()} if f"`{m.split('.')[-1]}" in page or m in page}
    )  # fmt: skip
    assert not missing, f"docs/architecture.md does not place: {', '.join(missing)}"


def test_no_module_is_over_800_lines() -> None:
    big = {_module_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > 800}
    assert not big, f"modules over 800 lines: {big}"
