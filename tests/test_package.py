"""Package hygiene: import infercore loads no runtime, __all__ is sorted and complete, the version
is written in one place."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import infercore as ic

ROOT = Path(__file__).resolve().parents[1]
INIT = ROOT / "src" / "infercore" / "__init__.py"

RUNTIMES = ("onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime", "tensorrt", "cuda", "torch",
            "onnx", "nncf", "tensorflow", "PIL", "tokenizers")


def test_import_loads_no_runtime():
    code = "import sys, json, infercore; print(json.dumps(sorted(sys.modules)))"
    mods = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    loaded = [m for m in mods if m.split(".")[0] in RUNTIMES]
    assert loaded == []
    assert "numpy" in mods and "pluggy" in mods


def test_discovery_loads_no_runtime_either():
    """Listing the registered names imports no backend module and no runtime."""
    code = ("import sys, json, infercore; infercore.registry.names(); "
            "print(json.dumps(sorted(sys.modules)))")
    mods = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert [m for m in mods if m.split(".")[0] in RUNTIMES] == []
    assert "infercore.backends.ort" not in mods


def test_all_is_sorted_and_complete():
    assert list(ic.__all__) == sorted(ic.__all__)
    public = {
        name for name, value in vars(ic).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public - {"annotations"} <= set(ic.__all__)
    assert set(ic._LAZY) <= set(ic.__all__)
    for name in ic.__all__:
        assert hasattr(ic, name), name


def test_missing_runtime_names_the_extra(monkeypatch):
    from infercore.optional import require

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    try:
        require("openvino", "openvino")
    except ic.BackendUnavailableError as e:
        assert 'pip install "infercore[openvino]"' in str(e)
        assert isinstance(e, ImportError)
    else:
        raise AssertionError("expected BackendUnavailableError")


def test_installed_version_is_the_package_version():
    """pyproject.toml takes the version from infercore.__version__, so the installed metadata agrees
    (a stale editable install fails here: reinstall with `pip install -e .`)."""
    assert importlib.metadata.version("infercore") == ic.__version__


def test_version_is_a_literal_setuptools_can_read_without_importing():
    """setuptools reads `attr = "infercore.__version__"` from the source without importing infercore
    only while the assignment is a plain string literal."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    values = [
        node.value for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__"
                                                for t in node.targets)
    ]
    assert len(values) == 1, "__version__ must be assigned exactly once at module level"
    assert isinstance(values[0], ast.Constant) and values[0].value == ic.__version__
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^dynamic = \[[^\]]*"version"', pyproject, re.M)
    assert re.search(r'^version = \{ *attr = "infercore.__version__" *\}', pyproject, re.M)


def files_naming_the_version(version: str, root: Path = ROOT) -> list[str]:
    """Files under pyproject.toml, README, src, docs, benchmarks, examples and scripts that spell out
    `version` as a token of its own. CHANGELOG.md is left out: its release headings name versions."""
    token = re.compile(rb"(?<![\d.])" + re.escape(version.encode()) + rb"(?!\w|\.\w)")
    candidates = [root / "pyproject.toml", root / "README.md"]
    for top in ("src", "docs", "benchmarks", "examples", "scripts"):
        for path in sorted((root / top).rglob("*")):
            parts = path.relative_to(root).parts
            if any(p == "__pycache__" or p.endswith(".egg-info") for p in parts):
                continue  # build output: the egg-info's PKG-INFO repeats the version by design
            candidates.append(path)
    return [
        path.relative_to(root).as_posix() for path in candidates
        if path.is_file() and token.search(path.read_bytes())
    ]


def test_version_is_written_in_one_place():
    assert files_naming_the_version(ic.__version__) == ["src/infercore/__init__.py"]


def test_version_search_finds_a_stray_copy(tmp_path):
    """The search itself: a second copy is found, a longer or shorter version is not."""
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "1.2.3"\n')
    (tmp_path / "src" / "pkg" / "__init__.py").write_text('__version__ = "1.2.3"\n')
    (tmp_path / "src" / "pkg.egg-info").mkdir()
    (tmp_path / "src" / "pkg.egg-info" / "PKG-INFO").write_text("Version: 1.2.3\n")
    (tmp_path / "docs" / "a.md").write_text("Released as v1.2.3.\n")
    (tmp_path / "docs" / "b.md").write_text("Not it: 1.2.30, 1.2.3.dev0, 1.2.3rc1, 11.2.3, 0.1.2.3\n")
    assert files_naming_the_version("1.2.3", tmp_path) == [
        "pyproject.toml", "src/pkg/__init__.py", "docs/a.md"]
