"""Signed models: sign, verify, and never load what does not verify (infercore.signing).

Real models per backend (tests/signed_models.py); every refusal is checked for its reason and the
file it names; what a verified load runs is checked against the raw runtime on the signed model.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model_signing")
pytest.importorskip("OpenSSL")

import infercore as ic
from infercore import signing
from infercore.cli.main import main as cli
from tests import onnx_models as m
from tests import signed_models as sm


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    k = {name: sm.ec_key(d, name, curve) for name, curve in (("key", "p256"), ("other", "p384"))}
    k["secret"] = sm.ec_key(d, "secret", "p521", password=b"s3cret")
    k["rsa"] = sm.rsa_key(d)
    k["ed25519"] = sm.ed25519_key(d)
    k["k256"] = sm.ec_key(d, "k256", "k256")
    return k


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return sm.pki(tmp_path_factory.mktemp("pki"))


def _case(backend: str) -> sm.Case:
    pytest.importorskip(sm.MODULES[backend])
    return sm.CASES[backend]()


def _model_signing_cli() -> str:
    exe = Path(sys.executable).with_name("model_signing")
    assert exe.exists(), f"model-signing installs its console script beside {sys.executable}"
    return str(exe)


def _tiny(path: Path) -> tuple[Path, np.ndarray]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return m.add_bias(path)


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


# -- what a signature covers ---------------------------------------------------------------------
def test_one_file_model_is_signed_as_that_file(tmp_path, keys):
    path, _ = _tiny(tmp_path / "add.onnx")
    sig = ic.sign(path, key=keys["key"][0])
    assert sig == tmp_path / "add.onnx.sig"
    result = ic.verify(path, public_key=keys["key"][1])
    assert result.files == ("add.onnx",) and result.signature == sig and result.method == "public_key"
    # unrelated files beside a one-file model are not part of it
    (tmp_path / "notes.txt").write_text("not the model")
    assert ic.verify(path, public_key=keys["key"][1]).files == ("add.onnx",)


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_a_model_is_all_its_files(tmp_path, keys, backend):
    case = _case(backend)
    path = case.write(tmp_path / "model")
    (tmp_path / "model" / "README.md").write_text("beside the model, not part of it")
    ic.sign(path, key=keys["key"][0])
    assert ic.verify(path, public_key=keys["key"][1]).files == tuple(sorted(case.files))
    for companion in case.companions:  # the weights are covered: a changed byte there fails, naming them
        f = tmp_path / "model" / companion
        data = f.read_bytes()
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(ic.SignatureError) as e:
            ic.verify(path, public_key=keys["key"][1])
        assert e.value.reason == "mismatch" and e.value.changed == (companion,)
        assert companion in str(e.value) and f"Hash mismatch for '{companion}'" in str(e.value)
        f.write_bytes(data)


def test_a_directory_is_signed_whole_with_its_signature_inside(tmp_path, keys):
    d = tmp_path / "1"
    _tiny(d / "model.onnx")
    (d / "labels.txt").write_text("a\nb\n")
    (d / "sub").mkdir()
    (d / "sub" / "vocab.txt").write_text("x")
    sig = ic.sign(d, key=keys["key"][0])
    assert sig == d / "model.sig"
    assert ic.verify(d, public_key=keys["key"][1]).files == ("labels.txt", "model.onnx", "sub/vocab.txt")
    (d / "extra.bin").write_bytes(b"\0")
    with pytest.raises(ic.SignatureError, match=r"not in the signature: extra\.bin") as e:
        ic.verify(d, public_key=keys["key"][1])
    assert e.value.extra == ("extra.bin",) and "Extra files found in model" in str(e.value)
    # a path the verifier is told to leave out is not an extra file
    assert ic.verify(d, public_key=keys["key"][1], ignore_paths=["extra.bin"]).files[-1] == "sub/vocab.txt"
    (d / "extra.bin").unlink()
    (d / "sub" / "vocab.txt").unlink()
    with pytest.raises(ic.SignatureError) as e:
        ic.verify(d, public_key=keys["key"][1])
    assert e.value.reason == "mismatch" and e.value.missing == ("sub/vocab.txt",)


def test_a_model_file_verifies_against_its_directory_signature(tmp_path, keys):
    case = _case("ort")
    path = case.write(tmp_path / "3")
    sig = ic.sign(tmp_path / "3", key=keys["key"][0])  # a serve version directory, signed whole
    assert ic.verify(path, public_key=keys["key"][1], signature=sig).files == ("model.onnx", "model.onnx.data")
    (tmp_path / "3" / "config.json").write_text("{}")
    ic.sign(tmp_path / "3", key=keys["key"][0])  # now the signature covers a file that is not the model's
    with pytest.raises(ic.SignatureError, match=r"missing: config\.json.*verify the directory"):
        ic.verify(path, public_key=keys["key"][1], signature=sig)


def test_a_signature_of_the_model_file_alone_does_not_cover_its_weights(tmp_path, keys):
    case = _case("ort")
    path = case.write(tmp_path)
    subprocess.run(
        [_model_signing_cli(), "sign", "key", str(path), "--private_key", str(keys["key"][0]),
         "--signature", str(tmp_path / "model.onnx.sig")],
        check=True, capture_output=True,
    )  # model-signing itself signs the one file it is given
    with pytest.raises(ic.SignatureError, match=r"covers model\.onnx alone.*model\.onnx\.data") as e:
        ic.verify(path, public_key=keys["key"][1])
    assert e.value.extra == ("model.onnx.data",)


# -- refusals ------------------------------------------------------------------------------------
def test_wrong_key_no_signature_and_garbage_are_refused(tmp_path, keys):
    path, _ = _tiny(tmp_path / "add.onnx")
    with pytest.raises(ic.SignatureError, match=r"no signature: .*add\.onnx\.sig does not exist") as e:
        ic.verify(path, public_key=keys["key"][1])
    assert e.value.reason == "missing"
    ic.sign(path, key=keys["key"][0])
    with pytest.raises(ic.SignatureError, match=r"does not verify with the public key .*other\.pub") as e:
        ic.verify(path, public_key=keys["other"][1])
    assert e.value.reason == "invalid" and e.value.files == ()
    (tmp_path / "add.onnx.sig").write_text('{"not": "a bundle"}')
    with pytest.raises(ic.SignatureError, match="not a model-signing signature") as e:
        ic.verify(path, public_key=keys["key"][1])
    assert e.value.reason == "invalid"


def test_a_changed_signature_payload_does_not_verify(tmp_path, keys):
    """Editing the signed manifest (to match a tampered model) breaks the signature itself."""
    import base64

    path, _ = _tiny(tmp_path / "add.onnx")
    sig = ic.sign(path, key=keys["key"][0])
    bundle = json.loads(sig.read_text())
    payload = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    sig.write_text(json.dumps(bundle))
    with pytest.raises(ic.SignatureError) as e:
        ic.verify(path, public_key=keys["key"][1])
    assert e.value.reason == "invalid"


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "k256"])
def test_keys_model_signing_cannot_use_are_refused_by_name(tmp_path, keys, kind):
    path, _ = _tiny(tmp_path / "add.onnx")
    what = {"rsa": "an RSA key", "ed25519": "an Ed25519 key", "k256": "an elliptic-curve key on secp256k1"}[kind]
    with pytest.raises(ic.ArgumentError, match=f"holds {what}: model-signing 1.1.1 .* P-256, P-384 or P-521") as e:
        ic.sign(path, key=keys[kind][0])
    assert e.value.parameter == "key"
    with pytest.raises(ic.ArgumentError, match=f"holds {what}") as e:
        ic.verify(path, public_key=keys[kind][1])
    assert e.value.parameter == "public_key"


def test_p384_p521_and_an_encrypted_key(tmp_path, keys):
    path, _ = _tiny(tmp_path / "add.onnx")
    ic.sign(path, key=keys["other"][0])
    ic.verify(path, public_key=keys["other"][1])
    with pytest.raises(ic.ArgumentError, match="not given but private key is encrypted") as e:
        ic.sign(path, key=keys["secret"][0])
    assert e.value.parameter == "password"
    with pytest.raises(ic.ArgumentError, match="password is wrong"):
        ic.sign(path, key=keys["secret"][0], password="nope")
    ic.sign(path, key=keys["secret"][0], password="s3cret")
    assert ic.verify(path, public_key=keys["secret"][1]).files == ("add.onnx",)


def test_bad_arguments_name_the_parameter(tmp_path, keys):
    path, _ = _tiny(tmp_path / "add.onnx")
    with pytest.raises(ic.ArgumentError, match="exactly one of public_key") as e:
        ic.Verifier()
    with pytest.raises(ic.ArgumentError) as e:
        ic.Verifier(public_key=keys["key"][1], certificate_chain=[keys["key"][1]])
    with pytest.raises(ic.ArgumentError, match="no such file") as e:
        ic.verify(path, public_key=tmp_path / "nope.pub")
    assert e.value.parameter == "public_key"
    with pytest.raises(ic.ArgumentError, match="that is a private key") as e:
        ic.verify(path, public_key=keys["key"][0])
    with pytest.raises(ic.ArgumentError, match="relative") as e:
        ic.verify(path, public_key=keys["key"][1], ignore_paths=["/etc/passwd"])
    assert e.value.parameter == "ignore_paths"
    with pytest.raises(ic.ModelLoadError, match="model not found"):
        ic.sign(tmp_path / "nope.onnx", key=keys["key"][0])
    with pytest.raises(ic.ArgumentError, match="does not exist") as e:
        ic.sign(path, key=keys["key"][0], signature=tmp_path / "no" / "dir" / "x.sig")
    assert e.value.parameter == "signature"
    with pytest.raises(ic.ArgumentError) as e:
        ic.load(path, verify="pub.pem")
    assert e.value.parameter == "verify"


def test_links_inside_a_model_are_refused(tmp_path, keys):
    d = tmp_path / "1"
    _tiny(d / "model.onnx")
    ic.sign(d, key=keys["key"][0])
    (d / "link.onnx").symlink_to(d / "model.onnx")
    with pytest.raises(ic.SignatureError, match=r"link\.onnx is a symbolic link") as e:
        ic.verify(d, public_key=keys["key"][1])
    assert e.value.reason == "mismatch" and e.value.extra == ("link.onnx",)
    with pytest.raises(ic.SignatureError, match="symbolic link"):
        ic.Verifier(public_key=keys["key"][1]).verified_copy(d)


def test_a_linked_weights_directory_is_refused_in_place_and_by_the_copy(tmp_path, keys):
    import onnx

    case = _case("ort")
    d = tmp_path / "m"
    path = case.write(d)
    (tmp_path / "elsewhere").mkdir()
    shutil.move(d / "model.onnx.data", tmp_path / "elsewhere" / "model.onnx.data")
    (d / "weights").symlink_to(tmp_path / "elsewhere")
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "weights/model.onnx.data"
    onnx.save(model, str(path))
    with pytest.raises(ic.ArgumentError, match="symlink"):
        ic.sign(path, key=keys["key"][0])
    (d / "weights").unlink()
    shutil.copytree(tmp_path / "elsewhere", d / "weights")
    ic.sign(path, key=keys["key"][0])
    assert ic.verify(path, public_key=keys["key"][1]).files == ("model.onnx", "weights/model.onnx.data")
    shutil.rmtree(d / "weights")
    (d / "weights").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ic.SignatureError, match="weights is a symbolic link"):
        ic.verify(path, public_key=keys["key"][1])
    with pytest.raises(ic.SignatureError, match="weights is a symbolic link"):
        ic.load(path, verify=ic.Verifier(public_key=keys["key"][1]))


# -- certificates --------------------------------------------------------------------------------
def test_certificate_chain(tmp_path, keys, pki):
    case = _case("ort")
    path = case.write(tmp_path)
    ic.sign(path, key=pki.leaf_key, certificate=pki.leaf, certificate_chain=[pki.intermediate])
    result = ic.verify(path, certificate_chain=[pki.root])
    assert result.method == "certificate" and result.files == ("model.onnx", "model.onnx.data")
    with pytest.raises(ic.SignatureError, match="certificate is not trusted") as e:
        ic.verify(path, certificate_chain=[pki.other_root])
    assert e.value.reason == "invalid"
    with pytest.raises(ic.SignatureError, match=r"made with a certificate .*not with a key"):
        ic.verify(path, public_key=keys["key"][1])
    with pytest.raises(ic.ArgumentError, match="does not match") as e:
        ic.sign(path, key=keys["key"][0], certificate=pki.leaf)
    assert e.value.parameter == "certificate"
    # and a tampered model fails as with a key
    data = (tmp_path / "model.onnx.data").read_bytes()
    (tmp_path / "model.onnx.data").write_bytes(data[:100] + b"\xff" + data[101:])
    with pytest.raises(ic.SignatureError) as e:
        ic.verify(path, certificate_chain=[pki.root])
    assert e.value.changed == ("model.onnx.data",)


# -- model-signing's own configuration, fresh per call ---------------------------------------------
def test_ignored_paths_never_leak_from_one_verification_into_the_next(tmp_path, keys):
    """sigstore/model-transparency#650: a reused verifying config kept the ignored paths of a
    signature it had read; the next model's extra file with that name then passed."""
    a, b = tmp_path / "a", tmp_path / "b"
    _tiny(a / "model.onnx")
    _tiny(b / "model.onnx")
    (a / "scratch.txt").write_text("left out on purpose")
    ic.sign(a, key=keys["key"][0], ignore_paths=["scratch.txt"])  # recorded in a's signature
    ic.sign(b, key=keys["key"][0])
    (b / "scratch.txt").write_text("smuggled in")
    verifier = ic.Verifier(public_key=keys["key"][1])
    assert verifier.verify(a).files == ("model.onnx",)
    with pytest.raises(ic.SignatureError) as e:
        verifier.verify(b)
    assert e.value.extra == ("scratch.txt",)


# -- interoperability with model-signing's CLI -------------------------------------------------------
def test_signatures_cross_verify_with_the_model_signing_cli(tmp_path, keys):
    ms = _model_signing_cli()
    priv, pub = keys["key"]
    one, _ = _tiny(tmp_path / "one" / "add.onnx")
    d = tmp_path / "dir"
    _case("ort").write(d)

    def ms_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ms, *args], capture_output=True, text=True, check=False)

    # model-signing signs, infercore verifies (a file; a directory with model.sig inside)
    assert ms_run("sign", "key", str(one), "--private_key", str(priv), "--signature", str(one) + ".sig").returncode == 0
    assert ms_run("sign", "key", str(d), "--private_key", str(priv), "--signature", str(d / "model.sig")).returncode == 0
    assert ic.verify(one, public_key=pub).files == ("add.onnx",)
    assert ic.verify(d, public_key=pub).files == ("model.onnx", "model.onnx.data")
    # infercore signs, model-signing verifies (and refuses the same tampering)
    ic.sign(one, key=priv)
    ic.sign(d, key=priv)
    ok = ms_run("verify", "key", str(one), "--signature", str(one) + ".sig", "--public_key", str(pub))
    assert ok.returncode == 0, ok.stderr
    ok = ms_run("verify", "key", str(d), "--signature", str(d / "model.sig"), "--public_key", str(pub))
    assert ok.returncode == 0, ok.stderr
    # a model of several files signed by infercore: model-signing verifies the directory holding them
    multi = _case("ort").write(tmp_path / "multi")
    (tmp_path / "multi" / "notes.txt").write_text("not the model's: left out, and listed as such")
    ic.sign(multi, key=priv)
    ok = ms_run("verify", "key", str(tmp_path / "multi"), "--signature", str(multi) + ".sig", "--public_key", str(pub))
    assert ok.returncode == 0, ok.stderr
    (d / "evil.bin").write_bytes(b"x")
    bad = ms_run("verify", "key", str(d), "--signature", str(d / "model.sig"), "--public_key", str(pub))
    assert bad.returncode == 1 and "evil.bin" in bad.stderr
    with pytest.raises(ic.SignatureError, match=r"evil\.bin"):
        ic.verify(d, public_key=pub)


# -- no network ------------------------------------------------------------------------------------
_OFFLINE = r"""
import sys, infercore as ic
from tests import onnx_models as m, signed_models as sm
from pathlib import Path
d = Path(sys.argv[1]); priv, pub = sm.ec_key(d, "k"); pki = sm.pki(d / "pki")
p, _ = m.add_bias(d / "add.onnx")
ic.sign(p, key=priv); ic.verify(p, public_key=pub)
ic.sign(p, key=pki.leaf_key, certificate=pki.leaf, certificate_chain=[pki.intermediate], signature=d / "c.sig")
ic.verify(p, certificate_chain=[pki.root], signature=d / "c.sig")
with ic.load(p, verify=ic.Verifier(public_key=pub)) as e: e.run({"x": __import__("numpy").ones((1, 16), "float32")})
print("offline ok")
"""


def _unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0


def test_signing_and_verifying_make_no_network_call(tmp_path, monkeypatch):
    """In a network namespace without interfaces where the machine allows it (unshare -n), else with
    every socket connect and name lookup refused in this process."""
    root = Path(__file__).resolve().parents[1]
    if _unshare_works():
        proc = subprocess.run(
            ["unshare", "-n", sys.executable, "-c", _OFFLINE, str(tmp_path)],
            capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, check=False,
        )
        assert proc.returncode == 0 and "offline ok" in proc.stdout, proc.stderr[-2000:]
        return
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(sys, "argv", ["-c", str(tmp_path)])
    exec(compile(_OFFLINE, "offline", "exec"), {"__name__": "offline"})
    assert calls == []


# -- what is verified is what is loaded ----------------------------------------------------------------
@pytest.mark.parametrize("backend", ["ort", "openvino", "litert"])
def test_verified_load_runs_the_signed_model_from_a_private_copy(tmp_path, keys, backend):
    case = _case(backend)
    path = case.write(tmp_path / "model")
    ic.sign(path, key=keys["key"][0])
    want = case.raw_outputs()
    with ic.load(path, verify=ic.Verifier(public_key=keys["key"][1])) as eng:
        assert eng.backend_name == backend
        private = eng.path.parents[1]
        assert eng.path != path and eng.path.name == case.main
        assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.getuid()
        assert sorted(p.name for p in eng.path.parent.iterdir()) == sorted(case.files)
        assert _close(eng.run(case.feeds), want)
    assert not private.exists()  # removed when the engine closed


@pytest.mark.parametrize("backend", ["ort", "openvino", "litert"])
def test_a_file_swapped_between_verify_and_load_never_runs(tmp_path, keys, backend, monkeypatch):
    case = _case(backend)
    path = case.write(tmp_path / "model")
    ic.sign(path, key=keys["key"][0])
    want, evil = case.raw_outputs(), case.raw_outputs(evil=True)
    assert not _close(want, evil)  # the swap would show in the outputs
    swapped = []

    def swap(original: Path, verified: Path) -> None:  # the attacker's window: after the check
        case.write(original.parent, evil=True)
        swapped.append(original)

    monkeypatch.setattr(signing, "after_verify_hook", swap)
    with ic.load(path, verify=ic.Verifier(public_key=keys["key"][1])) as eng:
        got = eng.run(case.feeds)
    assert swapped == [path] and _close(got, want) and not _close(got, evil)
    monkeypatch.setattr(signing, "after_verify_hook", None)
    with ic.load(path) as eng:  # the file on disk is the evil one now: opening it by path runs it
        assert _close(eng.run(case.feeds), evil)
    with pytest.raises(ic.SignatureError):  # and a verified load refuses it
        ic.load(path, verify=ic.Verifier(public_key=keys["key"][1]))


# a one-file model (litert) has no companion to lose or add: its directory cases are in tests/serve
TAMPERING = [
    *((b, t) for b in ("ort", "openvino", "litert") for t in ("changed byte", "wrong key")),
    ("ort", "missing file"),
    ("openvino", "missing file"),
    ("ort", "extra file"),
]


@pytest.mark.parametrize(("backend", "tamper"), TAMPERING)
def test_a_tampered_model_is_never_loaded(tmp_path, keys, backend, tamper):
    case = _case(backend)
    path = case.write(tmp_path)
    priv, pub = keys["key"]
    ic.sign(path, key=keys["other"][0] if tamper == "wrong key" else priv)
    expect: dict[str, tuple[str, ...]] = {}
    victim = tmp_path / (case.companions[0] if case.companions else case.main)
    if tamper == "changed byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x10
        victim.write_bytes(bytes(data))
        expect["changed"] = (victim.name,)
    elif tamper == "missing file":
        victim.unlink()
        expect["missing"] = (victim.name,)
    elif tamper == "extra file":  # the model file now reads one more weights file, the attacker's
        expect = _add_weights_file(case, tmp_path)
    with pytest.raises(ic.SignatureError) as e:
        ic.load(path, verify=ic.Verifier(public_key=pub))
    err = e.value
    if tamper == "wrong key":
        assert err.reason == "invalid" and "does not verify with the public key" in str(err)
    else:
        assert err.reason == "mismatch", err
        for field, names in expect.items():
            assert getattr(err, field) == names, err
            assert all(n in str(err) for n in names)


def _add_weights_file(case: sm.Case, d: Path) -> dict[str, tuple[str, ...]]:
    """Point the ONNX model's weights at one more external-data file (a copy, so it still loads)."""
    import onnx

    model = onnx.load(str(d / case.main), load_external_data=False)
    moved = 0
    for t in model.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location" and not moved:
                entry.value, moved = "injected.data", 1
    shutil.copy(d / "model.onnx.data", d / "injected.data")
    onnx.save(model, str(d / case.main))
    return {"changed": (case.main,), "extra": ("injected.data",)}


def test_a_refused_load_leaves_no_private_copy(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    path, _ = _tiny(tmp_path / "add.onnx")
    ic.sign(path, key=keys["key"][0])
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ic.SignatureError):
        ic.load(path, verify=ic.Verifier(public_key=keys["key"][1]))
    assert list((tmp_path / "tmp").iterdir()) == []
    _tiny(path)
    ic.sign(path, key=keys["key"][0])
    with ic.load(path, verify=ic.Verifier(public_key=keys["key"][1])) as eng:
        assert eng.path.is_relative_to(tmp_path / "tmp")
    assert list((tmp_path / "tmp").iterdir()) == []


# -- the CLI -------------------------------------------------------------------------------------------
def test_cli_sign_and_verify_exit_codes(tmp_path, keys, capsys):
    case = _case("ort")
    path = case.write(tmp_path / "m")
    priv, pub = keys["key"]
    assert cli(["sign", str(path), "--key", str(priv)]) == 0
    assert "wrote " in capsys.readouterr().err and (tmp_path / "m" / "model.onnx.sig").exists()
    assert cli(["verify", str(path), "--public-key", str(pub), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] is True and out["files"] == ["model.onnx", "model.onnx.data"]
    assert cli(["sign", str(path), "--key", str(priv), "-o", str(tmp_path / "x.sig")]) == 0
    assert (tmp_path / "x.sig").exists()
    capsys.readouterr()
    assert cli(["sign", str(path), "--key", str(priv), "-o", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    # verification failed: 1, with the file named (JSON too)
    data = (tmp_path / "m" / "model.onnx.data").read_bytes()
    (tmp_path / "m" / "model.onnx.data").write_bytes(data[:-4] + b"\0\0\0\0")
    assert cli(["verify", str(path), "--public-key", str(pub)]) == 1
    assert "model.onnx.data" in capsys.readouterr().err
    assert cli(["verify", str(path), "--public-key", str(pub), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] is False and out["reason"] == "mismatch" and out["changed"] == ["model.onnx.data"]
    assert cli(["verify", str(path), "--public-key", str(keys["other"][1])]) == 1
    assert cli(["verify", str(path), "--public-key", str(pub), "--signature", str(tmp_path / "none.sig")]) == 1
    capsys.readouterr()
    # errors: 2, naming the flag
    assert cli(["verify", str(path), "--public-key", str(keys["rsa"][1])]) == 2
    assert "--public-key: " in capsys.readouterr().err
    assert cli(["sign", str(path), "--key", str(keys["rsa"][0])]) == 2
    assert "--key: " in capsys.readouterr().err
    assert cli(["verify", str(tmp_path / "nope.onnx"), "--public-key", str(pub)]) == 2
    (tmp_path / "a-file").write_text("")
    assert cli(["sign", str(path), "--key", str(priv), "-o", str(tmp_path / "a-file" / "x.sig")]) == 2
    assert "-o/--output " in capsys.readouterr().err
    assert cli(["sign", str(path), "--key", str(priv), "-o", str(tmp_path / "new" / "x.sig"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["signature"] == str(tmp_path / "new" / "x.sig")
    with pytest.raises(SystemExit) as e:
        cli(["verify", str(path)])  # neither --public-key nor --certificate-chain
    assert e.value.code == 2


def test_cli_certificates(tmp_path, pki, capsys):
    path, _ = _tiny(tmp_path / "add.onnx")
    argv = ["sign", str(path), "--key", str(pki.leaf_key), "--certificate", str(pki.leaf), "--chain", str(pki.intermediate)]
    assert cli(argv) == 0
    assert cli(["verify", str(path), "--certificate-chain", str(pki.root)]) == 0
    assert cli(["verify", str(path), "--certificate-chain", str(pki.other_root)]) == 1
    capsys.readouterr()
    assert cli(["sign", str(path), "--key", str(pki.leaf_key), "--chain", str(pki.intermediate)]) == 2
    assert "--chain goes with --certificate" in capsys.readouterr().err


def test_cli_refuses_without_the_sign_extra(tmp_path, keys, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "model_signing", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "model_signing" else real(n, *a))
    path, _ = _tiny(tmp_path / "add.onnx")
    assert cli(["verify", str(path), "--public-key", str(keys["key"][1])]) == 2
    assert 'pip install "infercore[sign]"' in capsys.readouterr().err
