"""Extract the Python API surface of the real TensorRT and cuda-python bindings into JSON.

The fakes in ``tests/trt/`` are checked against these files (``test_surface.py``): a fake may offer
only names the real version has, with the same parameter names.

The real wheels download on any machine but need NVIDIA's libraries to import. TensorRT's
``tensorrt.so`` imports just nine C entry points from ``libnvinfer``/``libnvonnxparser``/
``libnvinfer_plugin`` (``createInferRuntime_INTERNAL`` ...), and none of them is called while the
module initialises, so this script compiles stand-ins that return NULL (with ``gcc``), imports the
real module against them in a subprocess, and records what Python sees. cuda-bindings imports
without a driver (it loads ``libcuda`` lazily); it needs the ``cuda-pathfinder`` wheel beside it.

    pip download --no-deps -d /tmp/w tensorrt-cu12-bindings==11.4.0.106 tensorrt-cu12-bindings==10.16.1.11
    pip download --no-deps -d /tmp/w cuda-bindings==12.9.4 cuda-pathfinder
    python tests/trt/extract_surface.py /tmp/w/tensorrt_cu12_bindings-11.4.0.106-*.whl \\
        /tmp/w/cuda_bindings-12.9.4-*.whl --with /tmp/w/cuda_pathfinder-*.whl

Writes ``tests/trt/surface/tensorrt-<version>.json`` and ``cuda-bindings-<version>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

_STUB_C = """
void *createInferBuilder_INTERNAL(void *l, int v) { return 0; }
void *createInferRefitter_INTERNAL(void *e, void *l, int v) { return 0; }
void *createInferRuntime_INTERNAL(void *l, int v) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *r, void *l, int v) { return 0; }
void *createNvOnnxParser_INTERNAL(void *n, void *l, int v) { return 0; }
void *getBuilderPluginRegistry(int t) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return 0; }
int initLibNvInferPlugins(void *l, const char *ns) { return 0; }
"""

# Runs in the subprocess: import the module, walk it, print JSON.
_DUMP = r'''
import enum, importlib, inspect, json, re, sys

def split_top(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{": depth += 1
        if ch in ")]}": depth -= 1
        if ch == "," and depth == 0:
            out.append(cur); cur = ""
        else:
            cur += ch
    if cur.strip(): out.append(cur)
    return [p.strip() for p in out]

def pybind_sigs(name, doc):
    """Parameter names of each overload, from pybind11's 'name(a: T, b: U = x) -> R' lines."""
    sigs = []
    for line in (doc or "").splitlines():
        line = re.sub(r"^\d+\. ", "", line.strip())
        if not line.startswith(name + "("):
            continue
        inner = line[len(name) + 1:]
        depth, end = 1, 0
        for i, ch in enumerate(inner):
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth == 0:
                end = i; break
        params = []
        for p in split_top(inner[:end]):
            pname = p.split(":")[0].split("=")[0].strip()
            if pname and pname not in ("self", "*args", "**kwargs"):
                params.append(pname + ("=" if "=" in p else ""))
        sigs.append(params)
    return sigs

def callable_entry(name, obj):
    try:
        sig = inspect.signature(obj)
        params = [p.name + ("=" if p.default is not inspect.Parameter.empty else "")
                  for p in sig.parameters.values() if p.name not in ("self", "args", "kwargs")]
        return {"kind": "function", "params": [params]}
    except (TypeError, ValueError):
        return {"kind": "function", "params": pybind_sigs(name, getattr(obj, "__doc__", ""))}

def enum_members(cls):
    members = getattr(cls, "__members__", None)
    return sorted(members) if isinstance(members, dict) or hasattr(members, "keys") else None

def class_entry(cls):
    entry = {"kind": "class", "bases": [b.__name__ for b in cls.__mro__[1:] if b is not object]}
    members = enum_members(cls)
    if members is not None:
        entry["kind"] = "enum"
        entry["members"] = members
    attrs = {}
    for name in sorted(dir(cls)):
        if name.startswith("__") and name not in ("__init__", "__call__", "__getitem__", "__len__", "__iter__",
                                                   "__int__", "__index__"):
            continue
        if members is not None and name in members:
            continue
        raw = None
        for klass in cls.__mro__:
            if name in vars(klass):
                raw = vars(klass)[name]; break
        if raw is None:
            raw = getattr(cls, name, None)
        if isinstance(raw, property) or type(raw).__name__ in ("getset_descriptor", "member_descriptor"):
            attrs[name] = {"kind": "property", "writable": bool(getattr(raw, "fset", None) is not None)}
        elif isinstance(raw, staticmethod) or type(raw).__name__ == "builtin_function_or_method":
            e = callable_entry(name, getattr(cls, name)); e["kind"] = "staticmethod"; attrs[name] = e
        elif callable(raw):
            attrs[name] = {"kind": "method", "params": callable_entry(name, raw)["params"]}
        else:
            attrs[name] = {"kind": "value", "type": type(raw).__name__}
    entry["attrs"] = attrs
    return entry

modname, label = sys.argv[1], sys.argv[2]
mod = importlib.import_module(modname)
surface = {"package": label, "module": modname, "version": str(getattr(mod, "__version__", "")),
           "functions": {}, "classes": {}, "values": {}}
for name in sorted(dir(mod)):
    if name.startswith("_"):
        continue
    obj = getattr(mod, name)
    if inspect.ismodule(obj):
        continue
    if inspect.isclass(obj):
        surface["classes"][name] = class_entry(obj)
    elif callable(obj):
        surface["functions"][name] = callable_entry(name, obj)["params"]
    else:
        surface["values"][name] = type(obj).__name__
print(json.dumps(surface))
'''


def _unzip(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into)


def _dump(module: str, label: str, pythonpath: Path, libpath: Path | None) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), PYTHONWARNINGS="ignore")
    if libpath is not None:
        env["LD_LIBRARY_PATH"] = str(libpath)
    done = subprocess.run(
        [sys.executable, "-c", _DUMP, module, label],
        env=env,
        cwd=pythonpath,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"importing {module} failed:\n{done.stderr}")
    result: dict[str, object] = json.loads(done.stdout)
    return result


def extract_tensorrt(wheel: Path, work: Path) -> dict[str, object]:
    m = re.match(r"tensorrt_cu\d+_bindings-(\d+)\.", wheel.name)
    if not m:
        raise SystemExit(f"{wheel.name}: expected a tensorrt-cuXX-bindings wheel")
    major = m.group(1)
    site, libs = work / "site", work / "libs"
    site.mkdir()
    libs.mkdir()
    _unzip(wheel, site)
    src = work / "stub.c"
    src.write_text(_STUB_C)
    for lib in ("nvinfer", "nvonnxparser", "nvinfer_plugin"):
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-o", str(libs / f"lib{lib}.so.{major}"), str(src)], check=True
        )
    return _dump("tensorrt_bindings", "tensorrt", site, libs)


def extract_cuda(wheel: Path, extra: list[Path], work: Path) -> dict[str, object]:
    site = work / "site"
    site.mkdir()
    _unzip(wheel, site)
    for w in extra:
        _unzip(w, site)
    surface = _dump("cuda.bindings.runtime", "cuda-bindings", site, None)
    version = re.match(r"cuda_bindings-([^-]+)-", wheel.name)
    surface["version"] = version.group(1) if version else ""
    return surface


def _compact_json(surface: dict[str, object]) -> str:
    """One line per class and function: small, and a new version's diff reads class by class."""
    lines = ["{"]
    keys = sorted(surface)
    for i, key in enumerate(keys):
        value = surface[key]
        end = "," if i < len(keys) - 1 else ""
        if isinstance(value, dict) and value:
            lines.append(f" {json.dumps(key)}: {{")
            items = sorted(value.items())
            for j, (name, entry) in enumerate(items):
                sep = "," if j < len(items) - 1 else ""
                lines.append(
                    f"  {json.dumps(name)}: {json.dumps(entry, sort_keys=True, separators=(',', ':'))}{sep}"
                )
            lines.append(f" }}{end}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", nargs="+", type=Path)
    ap.add_argument(
        "--with",
        dest="extra",
        action="append",
        type=Path,
        default=[],
        help="extra wheel put on the path (cuda-pathfinder for cuda-bindings)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "surface")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for wheel in args.wheels:
        with tempfile.TemporaryDirectory() as tmp:
            if wheel.name.startswith("tensorrt"):
                surface = extract_tensorrt(wheel, Path(tmp))
                name = f"tensorrt-{surface['version']}.json"
            elif wheel.name.startswith("cuda_bindings"):
                surface = extract_cuda(wheel, args.extra, Path(tmp))
                name = f"cuda-bindings-{surface['version']}.json"
            else:
                raise SystemExit(f"{wheel.name}: not a tensorrt-cuXX-bindings or cuda-bindings wheel")
        target = args.out / name
        target.write_text(_compact_json(surface))
        classes = surface["classes"]
        print(f"{target}: {len(classes)} classes, {len(surface['functions'])} functions")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
