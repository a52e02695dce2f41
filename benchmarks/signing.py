"""What verifying a signed model costs, against one plain sha256 pass over the same files.

    python benchmarks/signing.py [--quick] [--json results/signing.json] [--size-mb 500]

Models: MiniLM exported to ONNX with its weights in external data (model.onnx + model.onnx.data;
PP-OCRv4 recognition when MiniLM cannot be exported here), and a synthetic ONNX model with ~500 MB
of external data, written under a temporary directory and deleted at the end.

Per round, in alternating order (A B C D, then D C B A): one sha256 pass over the model's files
(hashlib, 1 MiB reads, one file after the other: the floor any verification pays), model-signing's
hashing alone (``hashing.Config().hash``, as ``ic.verify`` configures it: "ms hash"), ``ic.verify``
(model-signing 1.1.1: read the signature, check it with the public key, hash every file, compare),
and ``Verifier.verified_copy`` (what ``load(verify=)`` and the server add: copy the files into a
private directory, verify the copy, remove it). The files sit in the page cache for every case
(written or read just before), so the figures are CPU cost, not disk speed. Reported: medians and
the median of per-round ratios to the sha256 pass; the target is verify <= 1.2x sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import infercore as ic
from _common import machine, write_json
from infercore.modelfiles import model_files

TARGET = 1.2


def sha256_pass(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        out.append(h.hexdigest())
    return out


def with_external_data(src: Path, dest: Path) -> Path:
    """``src`` re-saved as model.onnx + model.onnx.data (every initializer outside the graph)."""
    import onnx

    dest.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src))
    out = dest / "model.onnx"
    onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=1024)
    return out


def real_model(dest: Path) -> tuple[str, Path]:
    from infercore.testing import models

    try:
        return "minilm (onnx + external data)", with_external_data(models.minilm(), dest)
    except models.ModelUnavailable as e:
        print(f"MiniLM unavailable ({e}); using PP-OCRv4 recognition", file=sys.stderr)
        return "ppocr_rec (onnx + external data)", with_external_data(models.ppocr_rec(), dest)


def synthetic_model(dest: Path, size_mb: int) -> Path:
    """y = x + w[:16], with w a float32 initializer of ``size_mb`` MB in model.onnx.data."""
    from onnx import TensorProto, helper

    dest.mkdir(parents=True, exist_ok=True)
    n = size_mb * (1 << 20) // 4
    rng = np.random.default_rng(0)
    with open(dest / "model.onnx.data", "wb") as fh:
        left = n
        while left:
            k = min(left, 1 << 24)
            fh.write(rng.standard_normal(k, dtype=np.float32).tobytes())
            left -= k
    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.append(n)
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "model.onnx.data"), ("offset", "0"), ("length", str(n * 4))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Constant", [], ["starts"], value=helper.make_tensor("s", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["ends"], value=helper.make_tensor("e", TensorProto.INT64, [1], [16])),
        helper.make_node("Slice", ["w", "starts", "ends"], ["w16"]),
        helper.make_node("Add", ["x", "w16"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "synthetic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = dest / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def measure(name: str, path: Path, keys: tuple[Path, Path], rounds: int) -> dict[str, Any]:
    priv, pub = keys
    files = model_files(path)
    size = sum(f.stat().st_size for f in files)
    t0 = time.perf_counter()
    ic.sign(path, key=priv)
    sign_s = time.perf_counter() - t0
    verifier = ic.Verifier(public_key=pub)
    assert verifier.verify(path).files == tuple(sorted(f.name for f in files))

    def copy_verify() -> None:
        verifier.verified_copy(path).close()

    import model_signing

    sig = path.with_name(path.name + ".sig")

    def model_signing_hash() -> None:  # model-signing's hashing alone, as verify configures it
        model_signing.hashing.Config().set_ignored_paths(paths=[sig.name]).hash(path.parent)

    cases: dict[str, Callable[[], object]] = {
        "sha256": lambda: sha256_pass(files),
        "model_signing_hash": model_signing_hash,
        "verify": lambda: verifier.verify(path),
        "copy_verify": copy_verify,
    }
    for fn in cases.values():  # warm the page cache and the imports
        fn()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    ratios: dict[str, list[float]] = {"model_signing_hash": [], "verify": [], "copy_verify": []}
    items = list(cases.items())
    for r in range(rounds):
        this: dict[str, float] = {}
        for key, fn in items if r % 2 == 0 else items[::-1]:
            t = time.perf_counter()
            fn()
            this[key] = time.perf_counter() - t
            samples[key].append(this[key])
        for key in ratios:
            ratios[key].append(this[key] / this["sha256"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    row = {
        "model": name,
        "files": [f.name for f in files],
        "bytes": size,
        "rounds": rounds,
        "sign_s": sign_s,
        "sha256_s": med["sha256"],
        "sha256_mb_s": size / med["sha256"] / 1e6,
        "model_signing_hash_s": med["model_signing_hash"],
        "model_signing_hash_ratio": statistics.median(ratios["model_signing_hash"]),
        "verify_s": med["verify"],
        "verify_ratio": statistics.median(ratios["verify"]),
        "verify_ratio_range": [min(ratios["verify"]), max(ratios["verify"])],
        "copy_verify_s": med["copy_verify"],
        "copy_verify_ratio": statistics.median(ratios["copy_verify"]),
        "samples_s": samples,
    }
    row["within_target"] = row["verify_ratio"] <= TARGET
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds and a 100 MB synthetic model")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--size-mb", type=int, default=None, help="synthetic model size (default 500; --quick 100)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per model (default 9; --quick 3)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    size_mb = args.size_mb or (100 if args.quick else 500)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="infercore-bench-signing-"))
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        priv, pub = tmp / "key.pem", tmp / "key.pub"
        priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        name, real = real_model(tmp / "real")
        rows.append(measure(name, real, (priv, pub), rounds))
        synthetic = synthetic_model(tmp / "synthetic", size_mb)
        rows.append(measure(f"synthetic {size_mb} MB (onnx + external data)", synthetic, (priv, pub), rounds))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'model':44} {'MB':>7} {'sha256 s':>9} {'MB/s':>6} {'ms hash':>8} {'verify s':>9} {'ratio':>6} "
          f"{'copy+verify s':>13} {'ratio':>6} {'sign s':>7}")
    for r in rows:
        print(f"{r['model']:44} {r['bytes'] / 1e6:7.1f} {r['sha256_s']:9.3f} {r['sha256_mb_s']:6.0f} "
              f"{r['model_signing_hash_ratio']:8.3f} {r['verify_s']:9.3f} {r['verify_ratio']:6.3f} "
              f"{r['copy_verify_s']:13.3f} {r['copy_verify_ratio']:6.3f} {r['sign_s']:7.3f}")
    verdict = all(r["within_target"] for r in rows)
    print(f"verify <= {TARGET}x one sha256 pass: {'yes' if verdict else 'NO'} "
          f"(median of {rounds} alternating rounds per model; page cache warm)")
    if args.json:
        import model_signing

        write_json(args.json, {"machine": machine(), "model_signing": model_signing.__version__,
                               "target_ratio": TARGET, "within_target": verdict, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
