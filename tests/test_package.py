"""Package hygiene: import infercore loads no runtime, __all__ is sorted and complete."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import infercore as ic

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
