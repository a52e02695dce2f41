"""Plugin discovery: built-ins through the same hook as external plugins, entry points, env var."""

from __future__ import annotations

import json
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import infercore as ic
from infercore.specs import BackendInfo, TensorSpec


class DoublerBackend:
    """A third-party backend for '.dbl' files: y = 2 * x, float32 [n]."""

    name = "doubler"
    device = "cpu"
    inputs = (TensorSpec("x", np.float32, (None,)),)
    outputs = (TensorSpec("y", np.float32, (None,)),)
    metadata: dict[str, str] = {}

    def run(self, feeds, outputs):
        return {"y": feeds["x"] * 2}

    def bind(self, inputs, outputs):
        backend = self

        class Binding:
            def __init__(self):
                self.inputs = inputs
                self.outputs = {"y": np.empty_like(inputs["x"])}

            def run(self):
                np.multiply(self.inputs["x"], 2, out=self.outputs["y"])

            def close(self):
                pass

        assert backend
        return Binding()

    def close(self):
        pass


class DoublerFactory:
    def probe(self):
        return BackendInfo("doubler", True, version="1.0", devices=("cpu",))

    def open(self, path, *, device, precision, threads, options):
        return DoublerBackend()


def make_plugin(name="doubler", available=True):
    mod = types.ModuleType(f"infercore_{name}_plugin")

    class Factory(DoublerFactory):
        def probe(self):
            return BackendInfo(name, available, reason=None if available else "needs the doubler SDK")

    @ic.hookimpl
    def register_backends(register):
        register(name, Factory(), suffixes=(".dbl",), priority=10)

    mod.register_backends = register_backends
    return mod


def test_builtins_are_registered_through_the_hook():
    pm = ic.registry.plugin_manager()
    assert pm.get_plugin("builtin") is not None
    names = ic.registry.names()
    for name in ("ort", "openvino", "litert", "tensorrt", "reference"):
        assert name in names


def test_in_process_plugin_is_discovered_and_runs(tmp_path):
    plugin = make_plugin()
    ic.registry.add_plugin(plugin)
    info = ic.available_backends()["doubler"]
    assert info.available and info.plugin == plugin.__name__ and info.suffixes == (".dbl",)
    model = tmp_path / "m.dbl"
    model.write_bytes(b"")
    with ic.load(model) as eng:  # picked by suffix
        assert eng.backend_name == "doubler"
        np.testing.assert_array_equal(eng.run(np.array([1, 2], np.float32))["y"], [2, 4])
        with eng.bind({"x": (3,)}) as io:
            io.inputs["x"][...] = [1, 2, 3]
            io.run()
            np.testing.assert_array_equal(io.outputs["y"], [2, 4, 6])
        with pytest.raises(ic.InputSpecError):  # the Engine validates for every backend
            eng.run(np.array([1, 2], np.float64))


def test_unavailable_plugin_is_reported_not_picked(tmp_path):
    ic.registry.add_plugin(make_plugin("sdkless", available=False))
    info = ic.available_backends()["sdkless"]
    assert not info.available and "doubler SDK" in info.reason
    model = tmp_path / "m.dbl"
    model.write_bytes(b"")
    with pytest.raises(ic.BackendUnavailableError, match="sdkless: needs the doubler SDK"):
        ic.load(model)


def test_duplicate_names_are_refused_and_reported(tmp_path):
    """A plugin cannot take a built-in's name; it is reported, and the built-in still works."""
    impostor = make_plugin("ort")
    ic.registry.add_plugin(impostor, name="impostor")
    assert ic.registry.get("ort").plugin == "builtin"
    problems = ic.registry.problems()
    assert "already registered by plugin 'builtin'" in problems["impostor"]
    with pytest.raises(ic.UnknownBackendError, match="plugin 'impostor' was not loaded"):
        ic.registry.get("nosuchbackend")


def test_plugin_whose_hook_raises_is_contained(tmp_path):
    """A failing hook loses that plugin's backends (even those registered before it failed)."""
    mod = types.ModuleType("infercore_halfway_plugin")

    @ic.hookimpl
    def register_backends(register):
        register("halfway", DoublerFactory(), suffixes=(".hw",))
        raise ImportError("libhalfway.so: cannot open shared object file")

    mod.register_backends = register_backends
    ic.registry.add_plugin(mod)
    assert "halfway" not in ic.registry.names() and "ort" in ic.registry.names()
    assert "libhalfway.so" in ic.registry.problems()["infercore_halfway_plugin"]
    model = tmp_path / "m.hw"
    model.write_bytes(b"")
    with pytest.raises(ic.UnknownBackendError, match=r"libhalfway\.so"):
        ic.load(model)


def test_entry_points_and_INFERCORE_PLUGINS(tmp_path, monkeypatch):
    """A real entry point in a dist-info on sys.path, filtered by INFERCORE_PLUGINS."""
    site = tmp_path / "site"
    pkg = site / "infercore_ep_plugin.py"
    site.mkdir()
    pkg.write_text(
        "import infercore, tests.test_plugins as t\n"
        "@infercore.hookimpl\n"
        "def register_backends(register):\n"
        "    register('epdoubler', t.DoublerFactory(), suffixes=('.epd',))\n"
    )
    dist = site / "infercore_ep_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: infercore-ep-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[infercore.backends]\nepdoubler = infercore_ep_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    assert any(ep.name == "epdoubler" for ep in metadata.entry_points(group="infercore.backends"))
    try:
        for env, expected in ((None, True), ("", False), ("other", False), ("epdoubler,other", True)):
            if env is None:
                monkeypatch.delenv("INFERCORE_PLUGINS", raising=False)
            else:
                monkeypatch.setenv("INFERCORE_PLUGINS", env)
            ic.registry.reset()
            assert ("epdoubler" in ic.registry.names()) is expected, env
            assert "ort" in ic.registry.names()  # built-ins always load
    finally:
        monkeypatch.delenv("INFERCORE_PLUGINS", raising=False)
        ic.registry.reset()
        sys.modules.pop("infercore_ep_plugin", None)


@pytest.mark.parametrize("name", ["MyToy", "trt", "ONNXRUNTIME", ""])
def test_names_that_could_not_be_looked_up_are_refused_and_reported(name):
    """Lookups are case-insensitive and know the built-ins' aliases: a plugin registering 'MyToy'
    (unreachable) or 'trt' (routed to TensorRT) would break discovery or hide itself."""
    ic.registry.add_plugin(make_plugin(name), name="oddname")
    assert "ort" in ic.available_backends()  # discovery still works for everyone
    reason = ic.registry.problems()["oddname"]
    assert "lower-case" in reason or "alias of the built-in" in reason
    assert ic.registry.get("tensorrt").plugin == "builtin"


def test_priorities_are_shown_and_left_out_entry_points_are_named(monkeypatch, capsys):
    from infercore.cli import main

    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ort"]["priority"] > rows["openvino"]["priority"] > rows["reference"]["priority"]
    fake_ep = metadata.EntryPoint("skipped", "nowhere", "infercore.backends")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [fake_ep] if group == "infercore.backends" else [])
    monkeypatch.setenv("INFERCORE_PLUGINS", "other")
    ic.registry.reset()
    try:
        with pytest.raises(ic.UnknownBackendError, match=r"INFERCORE_PLUGINS='other' leaves out the installed plugin\(s\) skipped"):
            ic.registry.get("skipped")
    finally:
        monkeypatch.undo()
        ic.registry.reset()


def test_raw_exceptions_from_a_plugin_become_infercore_errors(tmp_path):
    """A backend that lets KeyError/ValueError through still gives callers one error tree."""
    mod = types.ModuleType("infercore_raw_plugin")

    class Raw(DoublerBackend):
        def run(self, feeds, outputs):
            raise KeyError("internal table")

        def bind(self, inputs, outputs):
            binding = super().bind(inputs, outputs)
            binding.run = lambda: (_ for _ in ()).throw(ValueError("bad state"))
            return binding

    class RawFactory(DoublerFactory):
        def open(self, path, **kw):
            if path.read_bytes() == b"corrupt":
                raise ValueError("cannot parse")
            return Raw()

    @ic.hookimpl
    def register_backends(register):
        register("rawbackend", RawFactory(), suffixes=(".raw",))

    mod.register_backends = register_backends
    ic.registry.add_plugin(mod)
    bad = tmp_path / "bad.raw"
    bad.write_bytes(b"corrupt")
    with pytest.raises(ic.ModelLoadError, match=r"rawbackend could not open .*bad\.raw: ValueError\('cannot parse'\)"):
        ic.load(bad)
    good = tmp_path / "m.raw"
    good.write_bytes(b"")
    with ic.load(good) as eng:
        with pytest.raises(ic.BackendRuntimeError, match=r"rawbackend failed running m\.raw: KeyError") as e:
            eng.run(np.ones(3, np.float32))
        assert isinstance(e.value.__cause__, KeyError)
        with eng.bind({"x": (3,)}) as io, pytest.raises(ic.BackendRuntimeError, match="ValueError"):
            io.run()
        assert eng.stats.errors == 2


def test_entry_point_that_cannot_import_is_contained(tmp_path, monkeypatch, capsys):
    """``pip install`` of a broken plugin must not break ``ic.load`` of every other model."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "infercore_bad_plugin.py").write_text("import a_module_that_is_not_installed\n")
    dist = site / "infercore_bad_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: infercore-bad-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[infercore.backends]\nbad = infercore_bad_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("INFERCORE_PLUGINS", raising=False)
    ic.registry.reset()
    try:
        assert "ort" in ic.registry.names()
        reason = ic.registry.problems()["bad"]
        assert "ModuleNotFoundError" in reason and "a_module_that_is_not_installed" in reason
        from infercore.cli import main

        assert main(["backends"]) == 0
        assert "plugin 'bad' not loaded" in capsys.readouterr().out
        assert main(["backends", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert {"name": None, "plugin": "bad"}.items() <= next(r for r in rows if r["plugin"] == "bad").items()
    finally:
        ic.registry.reset()


def test_probe_that_raises_is_contained():
    mod = types.ModuleType("infercore_broken_plugin")

    class Broken(DoublerFactory):
        def probe(self):
            raise RuntimeError("driver exploded")

    @ic.hookimpl
    def register_backends(register):
        register("broken", Broken(), suffixes=(".brk",))

    mod.register_backends = register_backends
    ic.registry.add_plugin(mod)
    info = ic.available_backends()["broken"]
    assert not info.available and "driver exploded" in info.reason


def test_suffix_falls_back_to_next_available_backend(tmp_path):
    ic.registry.add_plugin(make_plugin("first", available=False))
    second = make_plugin("second")
    second_factory_register = second.register_backends

    @ic.hookimpl
    def register_backends(register):
        second_factory_register(register=lambda n, f, **kw: register(n, f, suffixes=kw["suffixes"], priority=1))

    second.register_backends = register_backends
    ic.registry.add_plugin(second)
    model = Path(tmp_path / "m.dbl")
    model.write_bytes(b"")
    with ic.load(model) as eng:
        assert eng.backend_name == "second"
