"""Keys, certificates and real models for the signing tests (written to tmp dirs, never committed).

Each backend's case is a real model and an *evil* model with the same inputs and file names but other
weights, so a test can swap one for the other and tell from the outputs which one ran:

- ort: PP-OCR's direction classifier with its weights in external data (model.onnx + model.onnx.data);
- openvino: the same model as OpenVINO IR (model.xml + model.bin);
- litert: MediaPipe hand_landmark_lite (model.tflite), evil: hand_landmark_full (same I/O).
"""

from __future__ import annotations

import datetime
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


# -- keys and certificates (written with cryptography; docs/signing.md does the same with openssl) --
def write_key(directory: Path, name: str, key: Any, password: bytes | None = None) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    priv = directory / f"{name}.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    pub = directory / f"{name}.pub"
    pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return priv, pub


def ec_key(directory: Path, name: str = "key", curve: str = "p256", password: bytes | None = None) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric import ec

    curves = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1(), "k256": ec.SECP256K1()}
    return write_key(directory, name, ec.generate_private_key(curves[curve]), password)


def rsa_key(directory: Path, name: str = "rsa") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return write_key(directory, name, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def ed25519_key(directory: Path, name: str = "ed") -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return write_key(directory, name, ed25519.Ed25519PrivateKey.generate())


@dataclass(frozen=True)
class PKI:
    root: Path  # the CA certificate a verifier trusts
    intermediate: Path  # goes into the signature with the leaf
    leaf: Path  # the signer's certificate
    leaf_key: Path
    other_root: Path  # a CA that issued nothing here


def pki(directory: Path) -> PKI:
    """A self-signed root CA, an intermediate CA, and a code-signing leaf (all P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(name: str, key: Any, issuer: tuple[str, Any] | None, ca: bool) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = (subject, key) if issuer is None else (
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]),
            issuer[1],
        )
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        usage = dict.fromkeys(
            ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "encipher_only", "decipher_only"), False
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True
            )
        else:
            b = b.add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def save(name: str, c: x509.Certificate) -> Path:
        p = directory / f"{name}.crt"
        p.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return p

    root_key, int_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = save("root", cert("Model Root CA", root_key, None, True))
    inter = save("intermediate", cert("Model Intermediate CA", int_key, ("Model Root CA", root_key), True))
    leaf = save("leaf", cert("model builder", leaf_key, ("Model Intermediate CA", int_key), False))
    other = save("other-root", cert("Other CA", other_key, None, True))
    leaf_pem, _ = write_key(directory, "leaf", leaf_key)
    return PKI(root, inter, leaf, leaf_pem, other)


# -- real models, one per backend -----------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    backend: str
    main: str  # the model file's name
    files: dict[str, bytes]  # every file of the model, by name
    evil: dict[str, bytes]  # another model with the same inputs and file names
    feeds: dict[str, np.ndarray]
    raw: Callable[[Path], Any]  # the runtime's own session (infercore.backends.*.raw_session)

    def write(self, directory: Path, evil: bool = False) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in (self.evil if evil else self.files).items():
            (directory / name).write_bytes(data)
        return directory / self.main

    def raw_outputs(self, evil: bool = False) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            sess = self.raw(self.write(Path(tmp), evil))
            try:
                return sess.run(self.feeds)
            finally:
                sess.close()

    @property
    def companions(self) -> list[str]:
        return sorted(n for n in self.files if n != self.main)


def _read_all(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@functools.cache
def _cls_onnx() -> tuple[bytes, bytes]:
    """PP-OCR's classifier, and an evil twin (every float weight shifted), as inline ONNX bytes."""
    import onnx
    from onnx import numpy_helper

    from infercore.modelfiles import graph_tensors
    from infercore.testing import models

    model = onnx.load(str(models.ppocr_cls()))
    # its weights are Constant nodes: make them initializers, which external data can hold
    weights = [
        n for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].name == "value" and n.attribute[0].t.data_type == 1
        and int(np.prod(n.attribute[0].t.dims)) > 1
    ]
    for n in weights:
        model.graph.initializer.append(
            numpy_helper.from_array(numpy_helper.to_array(n.attribute[0].t), n.output[0])
        )
        model.graph.node.remove(n)
    good = model.SerializeToString()
    for t in graph_tensors(model.graph):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size > 1:
            t.CopyFrom(numpy_helper.from_array(a * np.float32(1.5), t.name))
    return good, model.SerializeToString()


def _cls_feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(0).uniform(0, 1, (1, 3, 48, 192)).astype(np.float32)}


@functools.cache
def ort_case() -> Case:
    import onnx

    from infercore.backends import ort

    def external(data: bytes) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory() as tmp:
            model = onnx.load_from_string(data)
            onnx.save(
                model, str(Path(tmp) / "model.onnx"), save_as_external_data=True,
                all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0,
            )
            return _read_all(Path(tmp))

    good, evil = _cls_onnx()
    return Case("ort", "model.onnx", external(good), external(evil), _cls_feeds(), ort.raw_session)


@functools.cache
def openvino_case() -> Case:
    import openvino as ov

    from infercore.backends import ov as ov_backend

    def ir(data: bytes) -> dict[str, bytes]:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src.onnx"
            src.write_bytes(data)
            out = Path(tmp) / "ir"
            out.mkdir()
            ov.save_model(ov.convert_model(str(src)), str(out / "model.xml"), compress_to_fp16=False)
            return _read_all(out)

    good, evil = _cls_onnx()
    return Case("openvino", "model.xml", ir(good), ir(evil), _cls_feeds(), ov_backend.raw_session)


@functools.cache
def litert_case() -> Case:
    from infercore.backends import litert
    from infercore.testing import models

    good = models.mediapipe("hand_landmark_lite").read_bytes()
    evil = models.mediapipe("hand_landmark_full").read_bytes()
    feeds = {"input_1": np.random.default_rng(0).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)}
    return Case("litert", "model.tflite", {"model.tflite": good}, {"model.tflite": evil}, feeds, litert.raw_session)


CASES = {"ort": ort_case, "openvino": openvino_case, "litert": litert_case}
MODULES = {"ort": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert"}
