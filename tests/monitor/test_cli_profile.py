"""``infercore profile``: writes a profile the library reads back, refuses bad paths and data
before or with a clear one-line error, and follows the CLI's exit statuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infercore.cli.main import main
from infercore.monitor import Profile
from tests import onnx_models as m

pytest.importorskip("onnxruntime")
pytest.importorskip("scipy")


def test_profile_command_writes_a_profile(tmp_path, capsys):
    path, w = m.mlp(tmp_path / "mlp.onnx", d_in=4, d_out=3)
    x = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, labels=m.mlp_numpy(x, w)[0].argmax(1))
    out = tmp_path / "sub" / "profile.json"
    assert main(["profile", str(path), "--data", str(tmp_path / "data.npz"), "-o", str(out),
                 "--classifier", "logits", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == 300 and summary["quality"]["accuracy"] == 1.0
    p = Profile.load(out)
    assert set(p.tensors) == {"x", "logits", "probs"} and p.quality["output"] == "logits"
    np.testing.assert_allclose(p.tensors["x"].stats.mean, x.mean(0), rtol=1e-5, atol=1e-6)
    # -o -: the profile itself on stdout
    assert main(["profile", str(path), "--data", str(tmp_path / "data.npz"), "-o", "-", "--inputs-only"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["format"] == "infercore.profile" and set(printed["tensors"]) == {"x"}


def test_profile_command_errors(tmp_path, capsys):
    path, _ = m.mlp(tmp_path / "mlp.onnx", d_in=4, d_out=3)
    np.save(tmp_path / "bad.npy", np.zeros((10, 5), np.float32))
    assert main(["profile", str(path), "--data", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "infercore profile: error" in err and "'x'" in err and not (tmp_path / "p.json").exists()
    assert main(["profile", str(path), "--data", str(tmp_path / "bad.npy"), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["profile", str(path), "--data", str(tmp_path / "bad.npy")]) == 2
    assert "-o/--output FILE is required" in capsys.readouterr().err
    assert main(["profile", str(path), "--data", str(tmp_path / "bad.npy"), "-o", "p.json", "--classifier", "nope"]) == 2
    assert "--classifier" in capsys.readouterr().err
