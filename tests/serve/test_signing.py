"""Signed version directories in the model repository: a version whose model.sig is missing or does
not verify is not loaded, is listed UNAVAILABLE with why, logged and counted, and does not count for
the version policy; what is served is the verified private copy, whatever the repository becomes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model_signing")
pytest.importorskip("OpenSSL")
pytest.importorskip("httpx")

import httpx

import infercore as ic
from infercore import signing
from infercore.cli.main import main as cli
from infercore.errors import BadRequest
from infercore.serve.metrics import ServeMetrics
from infercore.serve.repository import ModelConfig, ModelRepository, SignatureConfig
from tests import signed_models as sm
from tests.serve.conftest import affine, affine_model, running


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {"key": sm.ec_key(d, "key"), "attacker": sm.ec_key(d, "attacker")}


def _case(backend: str) -> sm.Case:
    pytest.importorskip(sm.MODULES[backend])
    return sm.CASES[backend]()


def _version(model_dir: Path, v: int, case: sm.Case, key: Path, *, evil: bool = False) -> Path:
    """REPO/<model>/<v>/ with the model's files and a labels file, signed whole (model.sig inside)."""
    vdir = model_dir / str(v)
    case.write(vdir, evil=evil)
    (vdir / "labels.txt").write_text("left\nright\n")
    ic.sign(vdir, key=key)
    return vdir


def _config(model_dir: Path, case: sm.Case, pub: Path | None, extra: str = "") -> None:
    signature = f"signature: {{public_key: {pub}}}\n" if pub is not None else ""
    (model_dir / "config.yaml").write_text(
        f"backend: {case.backend}\nthreads: 1\nbatching: false\nversion_policy: {{latest: 1}}\n{signature}{extra}"
    )


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def _tamper(vdir: Path, case: sm.Case, how: str) -> str:
    """Tamper with a signed version directory; the file the refusal must name."""
    if how == "changed byte":
        victim = vdir / case.main
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        return case.main
    if how == "missing file":
        victim = vdir / (case.companions[0] if case.companions else "labels.txt")
        victim.unlink()
        return victim.name
    if how == "extra file":
        (vdir / "model.onnx.evil" if case.backend != "ort" else vdir / "libpayload.so").write_bytes(b"\x7fELF")
        return "model.onnx.evil" if case.backend != "ort" else "libpayload.so"
    raise AssertionError(how)


@pytest.mark.parametrize("backend", ["ort", "openvino", "litert"])
@pytest.mark.parametrize("tamper", ["changed byte", "missing file", "extra file", "wrong key"])
def test_a_tampered_version_is_skipped_by_the_version_policy(tmp_path, keys, backend, tamper, caplog):
    case = _case(backend)
    model_dir = tmp_path / "m"
    priv, pub = keys["key"]
    _version(model_dir, 1, case, priv)
    v2 = _version(model_dir, 2, case, keys["attacker"][0] if tamper == "wrong key" else priv, evil=True)
    named = "" if tamper == "wrong key" else _tamper(v2, case, tamper)
    _config(model_dir, case, pub)
    repo = ModelRepository(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="infercore.serve"):
            entry = repo.load("m")
        assert list(entry.versions) == [1]  # latest: 1 with a refused v2 serves v1
        mv = repo.get("m")
        assert mv.version == 1 and mv.backend == backend
        assert _close(mv.engine.run(case.feeds), case.raw_outputs())
        rows = {r["version"]: r for r in repo.index()}
        assert rows["1"]["state"] == "READY"
        assert rows["2"]["state"] == "UNAVAILABLE" and "signature" in rows["2"]["reason"]
        reason = "invalid" if tamper == "wrong key" else "mismatch"
        assert f"signature {reason}" in rows["2"]["reason"] and named in rows["2"]["reason"]
        assert repo.signatures.failures == {("m", "2", reason): 1}
        assert any("model version refused" in r.getMessage() and getattr(r, "version", None) == 2 for r in caplog.records)
        metrics = ServeMetrics(repo).render().decode()
        assert f'infercore_signature_failure_total{{model="m",reason="{reason}",version="2"}} 1.0' in metrics
    finally:
        repo.close()


@pytest.mark.parametrize("backend", ["ort", "openvino", "litert"])
def test_a_version_swapped_after_it_verified_is_not_what_is_served(tmp_path, keys, backend, monkeypatch):
    case = _case(backend)
    model_dir = tmp_path / "m"
    priv, pub = keys["key"]
    v1 = _version(model_dir, 1, case, priv)
    _config(model_dir, case, pub)
    want, evil = case.raw_outputs(), case.raw_outputs(evil=True)
    assert not _close(want, evil)
    swapped = []

    def swap(original: Path, verified: Path) -> None:
        case.write(original, evil=True)  # the repository's files become the evil model's
        swapped.append(original)

    monkeypatch.setattr(signing, "after_verify_hook", swap)
    repo = ModelRepository(tmp_path)
    try:
        mv = repo.load("m").versions[1]
        assert swapped == [v1] and (v1 / case.main).read_bytes() == case.evil[case.main]
        got = mv.engine.run(case.feeds)
        assert _close(got, want) and not _close(got, evil)
        assert mv.path == v1 / case.main and mv.verified is not None and mv.verified.root.exists()
    finally:
        repo.close()
    assert not mv.verified.root.exists()  # the private copy goes with the version


def test_a_reload_that_brings_a_tampered_version_keeps_serving_the_old_one(tmp_path, keys):
    case = _case("ort")
    model_dir = tmp_path / "m"
    priv, pub = keys["key"]
    v1 = _version(model_dir, 1, case, priv)
    _config(model_dir, case, pub)
    want = case.raw_outputs()
    repo = ModelRepository(tmp_path)
    try:
        repo.load("m")
        v2 = _version(model_dir, 2, case, priv, evil=True)
        (v2 / "labels.txt").write_text("tampered")
        assert list(repo.load("m").versions) == [1]  # the reload verified v2, refused it, kept v1
        assert _close(repo.get("m").engine.run(case.feeds), want)
        # now v1 on disk is tampered too: the reload fails, and the v1 already served keeps running
        # from its verified private copy
        case.write(v1, evil=True)
        with pytest.raises(BadRequest, match=r"no version that the version policy selects passed"):
            repo.load("m")
        mv = repo.get("m")
        assert mv.version == 1 and _close(mv.engine.run(case.feeds), want)
        rows = {r["version"]: r for r in repo.index()}
        assert rows["1"]["state"] == "READY" and "reload refused" in rows["1"]["reason"]
        assert rows["2"]["state"] == "UNAVAILABLE"
        assert repo.signatures.failures[("m", "2", "mismatch")] == 2
        assert repo.signatures.failures[("m", "1", "mismatch")] == 1
    finally:
        repo.close()


def test_unsigned_versions(tmp_path, keys, caplog):
    case = _case("ort")
    model_dir = tmp_path / "m"
    priv, pub = keys["key"]
    case.write(model_dir / "1")  # no model.sig
    _config(model_dir, case, pub)
    repo = ModelRepository(tmp_path)
    try:
        with pytest.raises(BadRequest, match=r"signature missing: .*no signature") as e:
            repo.load("m")
        assert isinstance(e.value.__cause__, ic.SignatureError)
        assert repo.signatures.failures == {("m", "1", "missing"): 1}
        with pytest.raises(BadRequest, match=r"not served: .*no signature"):
            repo.get("m")
        # required: false lets an unsigned version load; a signed one must still verify
        (model_dir / "config.yaml").write_text(
            f"backend: ort\nbatching: false\nsignature: {{public_key: {pub}, required: false}}\n"
        )
        with caplog.at_level(logging.WARNING, logger="infercore.serve"):
            assert repo.load("m").versions[1].verified is None
        assert any(r.getMessage().startswith("unsigned model version loaded") for r in caplog.records)
        v2 = _version(model_dir, 2, case, priv)
        (v2 / "labels.txt").write_text("tampered")
        assert list(repo.load("m").versions) == [1]
    finally:
        repo.close()


def test_the_servers_key_cannot_be_lowered_by_a_config_in_the_repository(tmp_path, keys):
    """config.yaml sits beside the models: whoever can replace a model can write it too."""
    case = _case("ort")
    model_dir = tmp_path / "m"
    attacker_priv, attacker_pub = keys["attacker"]
    _version(model_dir, 1, case, attacker_priv, evil=True)
    _config(model_dir, case, attacker_pub, extra="")
    (model_dir / "config.yaml").write_text(
        f"backend: ort\nbatching: false\nsignature: {{public_key: {attacker_pub}, required: false}}\n"
    )
    repo = ModelRepository(tmp_path, signature=SignatureConfig(public_key=keys["key"][1]))
    try:
        with pytest.raises(BadRequest, match="does not verify with the public key"):
            repo.load("m")
        assert not repo.is_ready("m")
        # and a load request cannot change the signature setting at all
        with pytest.raises(BadRequest, match="signature cannot be changed by a load request"):
            repo.load("m", {"signature": {"public_key": str(attacker_pub), "required": False}})
    finally:
        repo.close()


def test_relative_key_paths_are_read_from_the_model_directory(tmp_path, keys):
    case = _case("ort")
    model_dir = tmp_path / "m"
    _version(model_dir, 1, case, keys["key"][0])
    (model_dir / "keys").mkdir()
    (model_dir / "keys" / "pub.pem").write_bytes(keys["key"][1].read_bytes())
    _config(model_dir, case, Path("keys/pub.pem"))
    repo = ModelRepository(tmp_path)
    try:
        assert list(repo.load("m").versions) == [1]
    finally:
        repo.close()
    (model_dir / "config.yaml").write_text("backend: ort\nsignature: {public_key: nope.pem}\n")
    repo = ModelRepository(tmp_path)
    try:
        with pytest.raises(BadRequest, match=r"config.yaml signature: public_key: no such file: .*nope\.pem"):
            repo.load("m")
    finally:
        repo.close()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"public_key": "a.pem", "certificate_chain": ["ca.pem"]}, "exactly one of public_key"),
        ({"required": True}, "exactly one of public_key"),
        ({"public_key": "a.pem", "required": "yes"}, r"signature\.required must be true or false"),
        ({"public_key": "a.pem", "key": "b"}, r"unknown key\(s\) key"),
        ({"certificate_chain": []}, "must be a list of PEM file paths"),
        ("a.pem", "signature must be a Mapping"),
    ],
)
def test_bad_signature_config_names_the_key(raw, says):
    with pytest.raises(ValueError, match=says):
        ModelConfig.from_dict({"signature": raw})


def test_certificate_chain_config(tmp_path):
    pki = sm.pki(tmp_path / "pki")
    case = _case("ort")
    model_dir = tmp_path / "repo" / "m"
    case.write(model_dir / "1")
    ic.sign(model_dir / "1", key=pki.leaf_key, certificate=pki.leaf, certificate_chain=[pki.intermediate])
    (model_dir / "config.yaml").write_text(
        f"backend: ort\nbatching: false\nsignature: {{certificate_chain: [{pki.root}]}}\n"
    )
    assert ModelConfig.from_dict({"signature": {"certificate_chain": str(pki.root)}}).signature == SignatureConfig(
        certificate_chain=(pki.root,)
    )
    repo = ModelRepository(tmp_path / "repo")
    try:
        assert _close(repo.load("m").versions[1].engine.run(case.feeds), case.raw_outputs())
    finally:
        repo.close()


def test_server_with_required_signatures_serves_what_verifies(tmp_path, keys):
    """End to end: the server starts although one model has no version that verifies, lists it
    UNAVAILABLE with why, serves the others, and counts the refusal on its metrics port."""
    priv, pub = keys["key"]
    good = affine_model(tmp_path / "good" / "1" / "model.onnx", 2.0).parent
    ic.sign(good, key=priv)
    bad = affine_model(tmp_path / "bad" / "1" / "model.onnx", 3.0).parent
    ic.sign(bad, key=priv)
    affine_model(bad / "model.onnx", 4.0)  # replaced after signing
    with running(tmp_path, signature=SignatureConfig(public_key=pub)) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        rows = httpx.post(f"{base}/v2/repository/index", json={}).json()
        by = {(r["name"], r["version"]): r for r in rows}
        assert by[("good", "1")]["state"] == "READY"
        assert by[("bad", "1")]["state"] == "UNAVAILABLE" and "model.onnx" in by[("bad", "1")]["reason"]
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = httpx.post(f"{base}/v2/models/good/infer", json=body)
        assert r.status_code == 200
        y = next(o for o in r.json()["outputs"] if o["name"] == "y")
        np.testing.assert_allclose(np.reshape(y["data"], (2, 4)), affine(x, 2.0)["y"])
        r = httpx.post(f"{base}/v2/models/bad/infer", json=body)
        assert r.status_code == 400 and "signature" in r.json()["error"]
        assert httpx.get(f"{base}/v2/models/bad/ready").status_code != 200
        metrics = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
        assert 'infercore_signature_failure_total{model="bad",reason="mismatch",version="1"} 1.0' in metrics


def test_cli_require_signatures_refuses_a_bad_key_before_serving(tmp_path, keys, capsys):
    (tmp_path / "repo").mkdir()
    assert cli(["serve", str(tmp_path / "repo"), "--require-signatures", str(tmp_path / "nope.pub")]) == 2
    assert "--require-signatures: no such file" in capsys.readouterr().err
    sm.rsa_key(tmp_path)
    assert cli(["serve", str(tmp_path / "repo"), "--require-signatures", str(tmp_path / "rsa.pub")]) == 2
    assert "RSA key" in capsys.readouterr().err
