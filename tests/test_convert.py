"""ic.convert / infercore convert: PyTorch and ONNX sources (the TensorFlow ones: test_convert_tf.py).

Outputs are checked against torch itself and the raw runtimes, independently of the report; the
quick tests use the TorchScript exporter and tiny models, the dynamo exporter and MiniLM are slow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import infercore as ic
from infercore.cli import main
from tests import onnx_models as m

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxslim")
from torch import nn  # noqa: E402


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


class ResNetLike(nn.Module):
    """A small ResNet: stem, two residual blocks with BatchNorm, global pooling, classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(Block(16), Block(16))
        self.fc = nn.Linear(16, 10)
        for bn in (b for b in self.modules() if isinstance(b, nn.BatchNorm2d)):  # trained-looking statistics
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.data.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.fc(self.blocks(torch.relu(self.stem(x))).mean((2, 3)))


class Branchy(nn.Module):
    """Data-dependent control flow: the TorchScript exporter traces one branch only."""

    def forward(self, x):
        if x.sum() > 100:
            return x * 2
        return x - 1


class Flatten1(nn.Module):
    """Reshapes with the batch size read as a Python int: traced as the constant it was."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(x.reshape(int(x.shape[0]), -1))


def torch_out(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def raw_ort(path: Path, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_resnet_to_onnx_verifies_and_agrees_with_torch(tmp_path):
    model = ResNetLike()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    res = ic.convert(model, "onnx", (torch.from_numpy(x),), dynamic={"x": {0: "batch"}},
                     exporter="torchscript", output=tmp_path / "net.onnx")  # fmt: skip
    rep = res.report
    assert res.artifact_path == tmp_path / "net.onnx" and res.artifact_path.is_file()
    assert rep.passed and rep.verified and rep.exporter == "torch.onnx.export (torchscript)"
    assert rep.checker == "passed" and rep.opset == 17 and rep.nodes and rep.parameters > 9000
    assert set(rep.backends) >= {"ort", "openvino"} and rep.sets >= 16
    assert {"x=1x3x32x32", "x=3x3x32x32"} <= set(rep.shapes)  # two batch sizes: the axis is dynamic
    assert all(c.passed and c.max_abs < 1e-4 for c in rep.checks)
    assert leftovers(tmp_path) == ["net.onnx"]  # the scratch directory is gone
    assert model.training  # converted and verified in eval mode, then given back as it was
    # independently of the report: raw ONNX Runtime at a batch size the check did not use
    x5 = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    (got,) = raw_ort(res.artifact_path, {"x": x5})
    ref = torch_out(model, x5)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # metadata, and every backend that reads .onnx agrees through ic.load / ic.compare
    with ic.load(res.artifact_path) as eng:
        md = eng.metadata
        assert eng.inputs[0].dim_names[0] == "batch"
    assert md["infercore.source"].startswith("pytorch nn.Module") and md["infercore.version"] == ic.__version__
    assert md["infercore.verification"].startswith("passed") and len(md["infercore.source_sha256"]) == 64
    assert md["infercore.exporter"] == "torch.onnx.export (torchscript)"
    assert ic.compare(res.artifact_path, ["ort", "openvino"], inputs={"x": x5}).passed
    assert "VERIFIED" in str(rep) and json.loads(rep.to_json())["schema"] == "infercore.convert/1"


def test_resnet_to_openvino_keeps_fp32_weights_unless_fp16_is_asked(tmp_path):
    model = ResNetLike()
    ex = (torch.zeros(1, 3, 32, 32),)
    f32 = ic.convert(model, "openvino", ex, dynamic={"x": {0: "batch"}}, output=tmp_path / "f32.xml")
    f16 = ic.convert(model, "openvino", ex, dynamic={"x": {0: "batch"}}, output=tmp_path / "f16.xml", precision="fp16")
    assert f32.report.exporter == "openvino.convert_model (PyTorch)" and f32.report.tolerance == "fp32"
    assert f16.report.tolerance == "fp16" and f16.report.passed
    params = f32.report.parameters
    assert (tmp_path / "f32.bin").stat().st_size >= 4 * params * 0.95  # float32 weights
    assert (tmp_path / "f16.bin").stat().st_size < 0.6 * (tmp_path / "f32.bin").stat().st_size
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = torch_out(model, x)
    from infercore.backends.ov import raw_session

    got = next(iter(raw_session(tmp_path / "f32.xml").run({"x": x}).values()))
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    with ic.load(tmp_path / "f32.xml") as eng:
        assert eng.metadata["infercore.precision"] == "fp32"
        assert eng.outputs[0].name == "output"


def test_data_dependent_branch_is_caught_only_by_the_callers_data(tmp_path):
    """TorchScript traces the branch of the example; generated inputs in [-1, 1) all take that
    branch too, so only data that takes the other one shows the graph is wrong."""
    ex = (torch.zeros(2, 4),)  # sum 0: the `x - 1` branch is traced
    blind = ic.convert(Branchy(), "onnx", ex, exporter="torchscript", output=tmp_path / "blind.onnx")
    assert blind.report.passed  # the trap: every generated set agrees
    assert any("TracerWarning" in n for n in blind.report.notes)
    big = {"x": np.full((2, 4), 20.0, np.float32)}  # sum 160: torch takes `x * 2`
    out = tmp_path / "branchy.onnx"
    with pytest.raises(ic.ConversionMismatchError) as err:
        ic.convert(Branchy(), "onnx", ex, exporter="torchscript", data=big, output=out)
    rep = err.value.report
    assert not rep.passed and str(out) in str(err.value)
    bad = [c for c in rep.checks if not c.passed]
    assert bad and all(c.shape == "x=2x4 (data)" for c in bad)
    assert {c.backend for c in bad} >= {"ort", "openvino"}
    assert bad[0].max_abs == pytest.approx(21.0)  # 40 from torch against 19 from the traced graph
    outcomes = {a.exporter: a.outcome for a in rep.attempts}
    assert outcomes["torch.onnx.export (torchscript)"] == "mismatch"
    assert outcomes["torch.onnx.export (dynamo)"] == "failed"  # the dynamo exporter refuses the branch
    assert not out.exists() and leftovers(tmp_path) == ["blind.onnx"]


def test_an_undeclared_dynamic_batch_is_refused_at_the_datas_batch_size(tmp_path):
    """The known-bad export: batch 1 fixed in the graph, real data at batch 4."""
    model = nn.Linear(4, 3)
    out = tmp_path / "fixed.onnx"
    data = {"input": np.ones((4, 4), np.float32)}
    with pytest.raises(ic.ConversionMismatchError) as err:
        ic.convert(model, "onnx", (torch.zeros(1, 4),), exporter="torchscript", data=data, output=out)
    rep = err.value.report
    bad = [c for c in rep.checks if not c.passed]
    assert bad and bad[0].shape == "input=4x4 (data)" and "does not fit" in bad[0].error
    assert "ort" in {c.backend for c in bad}
    assert "MISMATCH" in str(rep) and "input=4x4 (data)" in str(err.value)
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_batch_size_traced_as_a_constant_fails_at_the_other_batch(tmp_path):
    out = tmp_path / "flat.onnx"
    with pytest.raises(ic.ConversionError) as err:
        ic.convert(Flatten1(), "onnx", (torch.zeros(1, 3, 4),), dynamic={"x": {0: "batch"}}, output=out)
    assert "x=3x3x4" in str(err.value) or "dynamo" in str(err.value)
    assert not out.exists() and leftovers(tmp_path) == []


def test_verify_false_is_written_and_recorded(tmp_path):
    res = ic.convert(nn.Linear(4, 2), "onnx", (torch.zeros(1, 4),), exporter="torchscript", verify=False,
                     output=tmp_path / "u.onnx")  # fmt: skip
    assert not res.report.verified and res.report.checks == () and "NOT VERIFIED" in str(res.report)
    with ic.load(res.artifact_path) as eng:
        assert eng.metadata["infercore.verification"] == "not verified (verify=False)"


def test_onnx_to_simplified_onnx_and_to_ir(tmp_path):
    src, w = m.mlp(tmp_path / "mlp.onnx")
    res = ic.convert(src, "onnx", output=tmp_path / "mlp.slim.onnx")
    assert res.report.source.framework == "onnx" and res.report.simplified.startswith("onnxslim")
    x = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    _logits, probs = raw_ort(res.artifact_path, {"x": x})
    np.testing.assert_allclose(probs, m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
    ir = ic.convert(src, output=tmp_path / "mlp.xml")
    assert ir.report.target == "openvino" and ir.report.passed
    assert ic.compare(res.artifact_path, ["ort", "openvino"], inputs={"x": x}).passed
    with ic.load(tmp_path / "mlp.xml") as eng:
        np.testing.assert_allclose(eng.run({"x": x})["probs"], m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
    # the default output of a file source sits beside it, named after the target
    again = ic.convert(src, "openvino")
    assert again.artifact_path == tmp_path / "mlp.xml"


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"to": "coreml"}, "to"),
        ({"output": "model.pb"}, "output"),
        ({"output": "model.onnx", "to": "openvino"}, "output"),
        ({"output": "model.onnx", "precision": "int8"}, "precision"),
        ({"output": "model.onnx", "dynamic": {"nope": {0: "batch"}}}, "dynamic"),
        ({"output": "model.onnx", "dynamic": {"input": {0: ""}}}, "dynamic"),
        ({"output": "model.onnx", "exporter": "fx"}, "exporter"),
        ({"output": "model.onnx", "opset": 3}, "opset"),
        ({"output": "model.onnx", "output_names": ["a", "b"]}, "output_names"),
        ({}, "output"),
    ],
)
def test_arguments_are_checked_before_any_work(tmp_path, kwargs, parameter):
    if "output" in kwargs:
        kwargs["output"] = tmp_path / kwargs["output"]
    with pytest.raises(ic.ArgumentError) as err:
        ic.convert(nn.Linear(4, 2), example_inputs=(torch.zeros(1, 4),), **kwargs)
    assert err.value.parameter == parameter
    assert leftovers(tmp_path) == []


def test_sources_that_cannot_be_converted_are_named(tmp_path):
    with pytest.raises(ic.ArgumentError, match="example_inputs"):
        ic.convert(nn.Linear(4, 2), output=tmp_path / "x.onnx")
    with pytest.raises(ic.ArgumentError, match="model"):
        ic.convert(object(), output=tmp_path / "x.onnx")
    torch.save(nn.Linear(4, 2), tmp_path / "pickled.pt")
    with pytest.raises(ic.ConversionError, match="pickled"):
        ic.convert(tmp_path / "pickled.pt", output=tmp_path / "x.onnx")
    src, _ = m.mlp(tmp_path / "mlp.onnx")
    with pytest.raises(ic.ArgumentError, match="overwrite"):
        ic.convert(src, output=src)
    with pytest.raises(ic.ArgumentError, match="onnx"):
        ic.convert(src, output=tmp_path / "mlp.tflite")  # ONNX converts to onnx or openvino


def test_a_missing_extra_names_it(tmp_path, monkeypatch):
    src, _ = m.mlp(tmp_path / "mlp.onnx")
    monkeypatch.setitem(sys.modules, "onnxslim", None)
    with pytest.raises(ic.BackendUnavailableError, match=r'infercore\[convert-torch\]'):
        from infercore.convert.simplify import simplify_onnx

        simplify_onnx(src, tmp_path / "out.onnx")


def test_torchscript_file_and_cli(tmp_path, capsys):
    model = ResNetLike().eval()
    traced = torch.jit.trace(model, torch.zeros(1, 3, 32, 32))
    torch.jit.save(traced, tmp_path / "net.pt")
    out = tmp_path / "net.onnx"
    code = main(["convert", str(tmp_path / "net.pt"), "-o", str(out), "--example", "x=1x3x32x32",
                 "--dynamic", "x:0=batch", "--json"])  # fmt: skip
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["passed"] and rep["source"]["kind"] == "TorchScript" and rep["exporter"] == "torch.onnx.export (torchscript)"
    x = np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32)
    (got,) = raw_ort(out, {"x": x})
    assert np.abs(got - torch_out(model, x)).max() < 1e-4
    # ONNX to IR through the CLI, then a verification failure (exit 1) and a usage error (exit 2)
    assert main(["convert", str(out), "-o", str(tmp_path / "net.xml")]) == 0
    capsys.readouterr()
    torch.jit.save(torch.jit.trace(nn.Linear(4, 3), torch.zeros(1, 4)), tmp_path / "linear.pt")
    np.savez(tmp_path / "batch4.npz", x=np.ones((4, 4), np.float32))  # batch 4; no --dynamic: batch 1 fixed
    code = main(["convert", str(tmp_path / "linear.pt"), "-o", str(tmp_path / "b.onnx"), "--example", "x=1x4",
                 "--data", str(tmp_path / "batch4.npz")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1 and "MISMATCH" in captured.out and "nothing was written" in captured.err  # 1: the verdict
    assert not (tmp_path / "b.onnx").exists()
    assert main(["convert", str(out), "-o", str(tmp_path / "x.pb")]) == 2
    assert "--output" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "y.onnx")]) == 2


def test_help_lists_every_pair(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    for pair in (".pt2", ".keras", "SavedModel", ".tflite", ".onnx", "openvino", "tflite (fp32, fp16, int8)"):
        assert pair in text
    assert "exit status" in text and "1  the command ran and its verdict is negative: verification failed" in text


@pytest.mark.slow
def test_dynamo_exporter_and_exported_program(tmp_path):
    model = ResNetLike()
    x = torch.zeros(2, 3, 32, 32)
    res = ic.convert(model, "onnx", (x,), dynamic={"x": {0: "batch"}}, output=tmp_path / "d.onnx")
    assert res.report.exporter == "torch.onnx.export (dynamo)" and res.report.opset == 18 and res.report.passed
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model.eval(), (x,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, tmp_path / "net.pt2")
    res2 = ic.convert(tmp_path / "net.pt2", output=tmp_path / "ep.onnx")
    assert res2.report.source.kind == "ExportedProgram" and res2.report.passed
    assert {"x=1x3x32x32", "x=3x3x32x32"} <= set(res2.report.shapes)
    x7 = np.random.default_rng(5).standard_normal((7, 3, 32, 32)).astype(np.float32)
    for path in (res.artifact_path, res2.artifact_path):
        (got,) = raw_ort(path, {"x": x7})
        assert np.abs(got - torch_out(model, x7)).max() < 1e-4
    ir = ic.convert(tmp_path / "net.pt2", output=tmp_path / "ep.xml")
    assert ir.report.passed and ir.report.exporter == "openvino.convert_model (PyTorch)"


@pytest.mark.slow
def test_minilm_with_dynamic_batch_and_sequence(tmp_path):
    from infercore.testing import models

    transformers = pytest.importorskip("transformers")
    src = models.minilm_source()

    class Embed(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    model = Embed(transformers.AutoModel.from_pretrained(str(src)))  # the wrapper in train mode, BERT in eval
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(models.minilm_tokenizer()))
    tok.enable_padding()
    enc = tok.encode_batch(["infercore converts models", "a converted model is one shown to agree with its source",
                            "short", "the quick brown fox jumps over the lazy dog"])  # fmt: skip
    feeds = {"input_ids": np.array([e.ids for e in enc], np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
             "token_type_ids": np.array([e.type_ids for e in enc], np.int64)}  # fmt: skip
    assert feeds["attention_mask"].min() == 0  # padded: the mask matters
    ids = torch.ones(2, 16, dtype=torch.long)
    dyn = {0: "batch", 1: "sequence"}
    res = ic.convert(model, "onnx", {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                     "token_type_ids": torch.zeros_like(ids)},
                     dynamic={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn},
                     output_names=["embedding"], exporter="torchscript", data=feeds,
                     output=tmp_path / "minilm.onnx")  # fmt: skip
    rep = res.report
    assert rep.passed and rep.sets >= 17
    assert len({s.split("=")[1] for s in rep.shapes}) == 5  # 2 batch sizes x 2 sequence lengths, and the data's
    assert all(c.cosine > 0.99999 for c in rep.checks)
    assert model.training and not model.m.training  # each submodule's mode given back as it was
    # the real sentences through raw ONNX Runtime, against torch in eval mode
    (got,) = raw_ort(res.artifact_path, feeds)
    model.eval()
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))).numpy()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.99999


def test_a_file_with_a_fixed_batch_is_verified_on_its_data_row_by_row(tmp_path):
    src, b = m.add_bias(tmp_path / "bias.onnx", n=4, batch=1)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    res = ic.convert(src, "openvino", data={"x": x}, output=tmp_path / "bias.xml")
    rep = res.report
    assert rep.sets == 16 + 6 and "x=1x4 (data)" in rep.shapes  # the dataset, cut to the file's batch of 1
    with ic.load(res.artifact_path) as eng:
        np.testing.assert_array_equal(eng.run({"x": x[:1]})["y"], x[:1] + b)
    with pytest.raises(ic.ArgumentError) as err:
        ic.convert(src, "onnx", exporter="dynamo", output=tmp_path / "x.onnx")
    assert err.value.parameter == "exporter"
    with pytest.raises(ic.ArgumentError) as err:
        ic.convert(src, "onnx", opset=18, output=tmp_path / "x.onnx")
    assert err.value.parameter == "opset"


def test_the_cli_refuses_a_missing_extra_before_any_work(tmp_path, capsys, monkeypatch):
    src, _ = m.mlp(tmp_path / "mlp.onnx")
    monkeypatch.setitem(sys.modules, "onnxslim", None)
    import infercore.optional as optional

    real = optional.missing
    monkeypatch.setattr(optional, "missing", lambda mods: [x for x in mods if x == "onnxslim"] or real(mods))
    assert main(["convert", str(src), "-o", str(tmp_path / "slim.onnx")]) == 2
    assert 'pip install "infercore[convert-torch]"' in capsys.readouterr().err
    assert not (tmp_path / "slim.onnx").exists()
