"""The CLI: backends, inspect, run; one clear line and a non-zero exit on errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from infercore.cli import main
from tests import onnx_models as m

pytest.importorskip("onnxruntime")


def test_backends_table_and_json(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "ort" in out and "reference" in out and "available" in out
    assert main(["backends", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ort = next(r for r in rows if r["name"] == "ort")
    assert ort["available"] and ".onnx" in ort["suffixes"]


def test_inspect(tmp_path, capsys):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "opset: ai.onnx 17" in out and "x" in out and "[batch, 8]" in out and "dynamic: batch" in out
    assert main(["inspect", str(path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 8], "dim_names": ["batch", None]}]
    assert facts["opset"] == {"ai.onnx": 17} and facts["size_bytes"] == path.stat().st_size


def test_run_writes_outputs(tmp_path, capsys):
    path, w = m.mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_file = tmp_path / "out.npz"
    assert main(["run", str(path), "--input", f"x={tmp_path / 'x.npy'}", "--output", str(out_file)]) == 0
    assert "probs: float32 [3, 4]" in capsys.readouterr().out
    with np.load(out_file) as z:
        np.testing.assert_allclose(z["probs"], m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
    np.savez(tmp_path / "feeds.npz", x=x)
    assert main(["run", str(path), "--input", str(tmp_path / "feeds.npz")]) == 0


def test_errors_are_one_line_without_traceback(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "x64.npy", np.ones((1, 8)))
    for args, expect in (
        (["inspect", str(tmp_path / "missing.onnx")], "model file not found"),
        (["run", str(path), "--input", f"x={tmp_path / 'x64.npy'}"], "expected dtype float32, got float64"),
        (["run", str(path), "--input", "x=nope.npy"], "file not found"),
        (["inspect", str(path), "--backend", "nope"], "no backend named 'nope'"),
    ):
        proc = subprocess.run([sys.executable, "-m", "infercore.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 1, proc
        assert expect in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "infercore.cli", "--debug", "inspect", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
