"""A plugin's own model format in the repository: served, and a version without a usable file is
listed UNAVAILABLE with why instead of vanishing from the index."""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import infercore as ic
from infercore.errors import BadRequest
from infercore.serve.repository import ModelRepository
from infercore.specs import BackendInfo, TensorSpec

from .conftest import affine, affine_model, running


class ScaleBackend:
    """A third-party format: a ``.scale`` file holds one number k; y = x * k, x float32 [N, 4]."""

    name = "scaler"
    device = "cpu"
    inputs = (TensorSpec("x", np.dtype(np.float32), (None, 4), ("N", None)),)
    outputs = (TensorSpec("y", np.dtype(np.float32), (None, 4), ("N", None)),)
    metadata: dict[str, str] = {}

    def __init__(self, path: Path) -> None:
        self.k = np.float32(float(path.read_text()))

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return {"y": feeds["x"] * self.k}

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Any:
        k = self.k

        class Binding:
            def __init__(self) -> None:
                self.inputs = inputs
                self.outputs = {"y": outputs.get("y", np.empty_like(inputs["x"]))}

            def run(self) -> None:
                np.multiply(self.inputs["x"], k, out=self.outputs["y"])

            def close(self) -> None:
                pass

        return Binding()

    def close(self) -> None:
        pass


class ScaleFactory:
    def probe(self) -> BackendInfo:
        return BackendInfo("scaler", True, version="1.0", devices=("cpu",))

    def open(self, path: Path, **kwargs: Any) -> ScaleBackend:
        return ScaleBackend(path)


@pytest.fixture
def scaler() -> None:
    plugin = types.ModuleType("infercore_scaler_plugin")

    @ic.hookimpl
    def register_backends(register: Any) -> None:
        register("scaler", ScaleFactory(), suffixes=(".scale",))

    plugin.register_backends = register_backends  # type: ignore[attr-defined]
    ic.registry.add_plugin(plugin)  # tests/conftest.py removes it after the test


def _model(root: Path, name: str, version: int, file: str, content: str = "3") -> Path:
    path = root / name / str(version) / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def _index(repo: ModelRepository) -> dict[tuple[str, str], tuple[str, str]]:
    return {(r["name"], r["version"]): (r["state"], r["reason"]) for r in repo.index()}


@pytest.mark.parametrize("config", [None, "backend: scaler\n"], ids=["by-suffix", "backend-named"])
def test_a_plugin_format_is_found_loaded_and_run(tmp_path: Path, scaler: None, config: str | None) -> None:
    model = _model(tmp_path, "sc", 1, "model.scale", "2.5")
    if config:
        (tmp_path / "sc" / "config.yaml").write_text(config)
    repo = ModelRepository(tmp_path)
    try:
        assert repo.scan() == {"sc": {1: model}}
        assert _index(repo) == {("sc", ""): ("UNAVAILABLE", "unloaded")}
        mv = repo.load("sc").versions[1]
        assert mv.backend == "scaler" and mv.path == model
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(mv.runner.run({"x": x})["y"], x * np.float32(2.5))
        assert _index(repo) == {("sc", "1"): ("READY", "")}
    finally:
        repo.close()


def test_a_named_backend_reads_the_only_model_file_whatever_its_suffix(tmp_path: Path, scaler: None) -> None:
    model = _model(tmp_path, "sc", 1, "model.onnx", "4")  # a .scale file under another suffix
    (tmp_path / "sc" / "config.yaml").write_text("backend: scaler\n")
    repo = ModelRepository(tmp_path)
    try:
        mv = repo.load("sc").versions[1]
        assert mv.backend == "scaler" and mv.path == model
        x = np.ones((1, 4), np.float32)
        np.testing.assert_array_equal(mv.runner.run({"x": x})["y"], x * 4)
    finally:
        repo.close()


def test_a_version_without_a_usable_file_is_listed_unavailable_with_why(tmp_path: Path) -> None:
    _model(tmp_path, "toym", 1, "model.toy")  # no backend reads .toy, none named
    (tmp_path / "empty" / "1").mkdir(parents=True)
    _model(tmp_path, "two", 1, "model.a")
    _model(tmp_path, "two", 1, "model.b")
    (tmp_path / "two" / "config.yaml").write_text("backend: reference\n")
    affine_model(tmp_path / "mixed" / "1" / "model.onnx", 2.0)
    _model(tmp_path, "mixed", 2, "model.toy")
    repo = ModelRepository(tmp_path)
    try:
        assert repo.scan() == {"mixed": {1: tmp_path / "mixed" / "1" / "model.onnx"}}
        index = _index(repo)
        assert set(index) == {("toym", "1"), ("empty", "1"), ("two", "1"), ("mixed", ""), ("mixed", "2")}
        assert {state for state, _ in index.values()} == {"UNAVAILABLE"}
        toym = index["toym", "1"][1]
        assert "toym/1" in toym and "model.toy" in toym and ".onnx" in toym and "backend:" in toym, toym
        assert "empty/1" in index["empty", "1"][1] and "no model file" in index["empty", "1"][1]
        two = index["two", "1"][1]
        assert "model.a, model.b" in two and "'reference'" in two and ".onnx" in two, two
        assert "mixed/2" in index["mixed", "2"][1] and "model.toy" in index["mixed", "2"][1]
        with pytest.raises(BadRequest, match=r"'toym' has no usable version: toym/1: .*model\.toy"):
            repo.load("toym")
        # the usable version serves; the other stays listed with its reason
        repo.load("mixed")
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_allclose(repo.get("mixed").runner.run({"x": x})["y"], affine(x, 2.0)["y"])
        index = _index(repo)
        assert index["mixed", "1"] == ("READY", "") and index["mixed", "2"][0] == "UNAVAILABLE"
        assert ("mixed", "") not in index
        assert {(r["name"], r["version"]) for r in repo.index(ready_only=True)} == {("mixed", "1")}
    finally:
        repo.close()


def test_the_server_serves_a_plugin_format_and_lists_what_it_cannot(tmp_path: Path, scaler: None) -> None:
    _model(tmp_path, "toym", 1, "model.scale", "3")
    (tmp_path / "toym" / "config.yaml").write_text("backend: scaler\nbatching: false\n")
    _model(tmp_path, "odd", 1, "model.odd")
    with running(tmp_path, grpc_port=None, metrics_port=None) as server:
        url = f"http://127.0.0.1:{server.ports['http']}"
        rows = httpx.post(f"{url}/v2/repository/index").json()
        index = {(r["name"], r["version"]): r["state"] for r in rows}
        assert index == {("toym", "1"): "READY", ("odd", "1"): "UNAVAILABLE"}
        assert "model.odd" in next(r["reason"] for r in rows if r["name"] == "odd")
        x = [[1.0, 2.0, 3.0, 4.0]]
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]}
        r = httpx.post(f"{url}/v2/models/toym/infer", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == (np.array(x, np.float32) * 3).ravel().tolist()
        r = httpx.post(f"{url}/v2/models/odd/infer", json=body)
        assert r.status_code == 400 and "odd/1" in r.text and "model.odd" in r.text, r.text
