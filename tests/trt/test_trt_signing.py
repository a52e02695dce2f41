"""Signed TensorRT models on the fake TensorRT: an ONNX built from the verified private copy, and a
serialized engine with its sidecar (both files signed); a swapped file never runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import ModuleType

import models
import numpy as np
import pytest
from onnx import TensorProto, helper

import infercore as ic
from infercore import signing

pytest.importorskip("model_signing")
pytest.importorskip("OpenSSL")
pytest.importorskip("onnxruntime")

from tests import signed_models as sm


def _sub_mul(path: Path) -> Path:
    """The evil twin of models.add_mul: sum = a - b."""
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("a", "b", "sum", "prod")]
    nodes = [helper.make_node("Sub", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])]
    return models._save(helper.make_graph(nodes, "sub_mul", io[:2], io[2:]), path)


def _feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {"a": rng.standard_normal((2, 4)).astype(np.float32), "b": rng.standard_normal((2, 4)).astype(np.float32)}


def _plan(onnx_path: Path, cache_dir: Path, dest: Path) -> Path:
    """Build the engine (into the cache) and copy it with its sidecar to ``dest``."""
    before = set(cache_dir.glob("*.engine")) if cache_dir.exists() else set()
    ic.load(onnx_path, backend="tensorrt", device="cuda").close()
    built = next(iter(set(cache_dir.glob("*.engine")) - before))
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built, dest)
    shutil.copy(built.with_name(built.name + ".json"), dest.with_name(dest.name + ".json"))
    return dest


def test_signed_engine_covers_its_sidecar_and_a_swap_never_runs(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    priv, pub = sm.ec_key(tmp_path / "keys")
    good = _plan(models.add_mul(tmp_path / "good.onnx"), cache_dir, tmp_path / "signed" / "model.plan")
    evil = _plan(_sub_mul(tmp_path / "evil.onnx"), cache_dir, tmp_path / "evil" / "model.plan")
    ic.sign(good, key=priv)
    assert ic.verify(good, public_key=pub).files == ("model.plan", "model.plan.json")
    f = _feeds()
    verifier = ic.Verifier(public_key=pub)

    def swap(original: Path, verified: Path) -> None:
        for name in ("model.plan", "model.plan.json"):
            shutil.copy(evil.parent / name, original.parent / name)

    monkeypatch.setattr(signing, "after_verify_hook", swap)
    with ic.load(good, device="cuda", verify=verifier) as eng:
        assert eng.backend_name == "tensorrt" and (eng.path.parent / "model.plan.json").exists()
        np.testing.assert_array_equal(eng.run(f)["sum"], f["a"] + f["b"])  # the signed engine, not a - b
    monkeypatch.setattr(signing, "after_verify_hook", None)
    with ic.load(good, device="cuda") as eng:  # on disk it is the evil engine now
        np.testing.assert_array_equal(eng.run(f)["sum"], f["a"] - f["b"])
    with pytest.raises(ic.SignatureError) as e:
        ic.load(good, device="cuda", verify=verifier)
    assert e.value.changed == ("model.plan", "model.plan.json")


def test_onnx_built_by_tensorrt_from_the_verified_copy(
    fake_trt: ModuleType, tmp_path: Path, cache_dir: Path
) -> None:
    priv, pub = sm.ec_key(tmp_path / "keys")
    path = models.add_mul(tmp_path / "m.onnx")
    ic.sign(path, key=priv)
    f = _feeds()
    with ic.load(path, backend="tensorrt", device="cuda", verify=ic.Verifier(public_key=pub)) as eng:
        np.testing.assert_array_equal(eng.run(f)["prod"], f["a"] * f["b"])
    _sub_mul(path)
    with pytest.raises(ic.SignatureError) as e:
        ic.load(path, backend="tensorrt", device="cuda", verify=ic.Verifier(public_key=pub))
    assert e.value.changed == ("m.onnx",)
