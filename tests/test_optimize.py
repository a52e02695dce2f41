"""Structured pruning, distillation and the measured chain (infercore.optimize) on real models:
the digits CNN (trained here), a ResNet-style CNN with residual, grouped and depthwise
convolutions, torch's own transformer encoder, and MiniLM through transformers (slow).

Every pruned model is checked against the module it came from (whole filters kept, coupled layers
equally wide, outputs of the same shape) and converted through ``ic.convert``, whose file is then
run on raw ONNX Runtime as an independent reference.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np
import pytest

import infercore as ic

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")

from infercore.optimize.speed import NO_SPEEDUP, speed_flag  # noqa: E402
from infercore.testing import digits  # noqa: E402


@pytest.fixture(scope="module")
def split():
    return digits.load_split()


@pytest.fixture(scope="module")
def digits_model():
    return digits.digits_module()


@pytest.fixture
def one_thread():
    """Training on one thread: deterministic, and the fastest on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def _resnet(seed: int = 0):
    """The ResNet-style test model with batch norms that are not the identity (random statistics)."""
    m = digits.resnet((16, 32, 64), grouped=True, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def _ort_outputs(path, feeds):
    """The model file's outputs on raw ONNX Runtime; ``feeds`` a dict, or one array for its one input."""
    from infercore.backends.ort import raw_session

    sess = raw_session(path)
    try:
        return sess.run(feeds if isinstance(feeds, dict) else {sess.inputs[0].name: feeds})
    finally:
        sess.close()


def _convert(module, example, name, tmp_path):
    from infercore.convert import convert

    names = list(example) if isinstance(example, dict) else [name]
    args = example if isinstance(example, dict) else (example,)
    res = convert(module, "onnx", args, dynamic={n: {0: "batch"} for n in names}, input_names=names,
                  output=tmp_path / "pruned.onnx", exporter="torchscript", backends=["ort"])  # fmt: skip
    assert res.report.passed, res.report
    return res.artifact_path


# -- pruning -----------------------------------------------------------------------------------------
def test_prune_digits_cnn_keeps_whole_filters(digits_model, split):
    x_test = split[2]
    before = [p.detach().clone() for p in digits_model.parameters()]
    res = ic.prune(digits_model, x_test[:2], ratio=0.5)
    m = res.module
    # the caller's module is left as it was
    assert all(torch.equal(a, b) for a, b in zip(before, digits_model.parameters(), strict=True))
    assert [m[i].out_channels for i in (0, 2, 5)] == [16, 32, 64]
    assert (m[8].in_features, m[8].out_features, m[10].out_features) == (64 * 16, 64, 10)
    # structured: every kept filter of the first convolution is one of the original filters, whole
    orig = digits_model[0].weight.detach()
    for row, bias in zip(m[0].weight.detach(), m[0].bias.detach(), strict=True):
        hits = [i for i in range(orig.shape[0]) if torch.equal(orig[i], row)]
        assert len(hits) == 1 and digits_model[0].bias[hits[0]].item() == bias.item()
    r = res.report
    assert r.parameters_after < r.parameters_before / 3 and 0.2 < r.mac_ratio < 0.35
    assert r.parameters_after == sum(p.numel() for p in m.parameters())
    assert {x.name for x in r.layers} >= {"0", "2", "5", "8"}
    assert any(x.name == "10" and "output" in x.reason for x in r.left_alone)
    out = m(torch.from_numpy(x_test[:5]))
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    d = r.to_dict()
    assert d["schema"] == "infercore.prune/1" and json.loads(json.dumps(d))["ratio"] == 0.5
    assert "parameters" in str(r) and "left alone" in str(r)


def test_distill_recovers_pruned_accuracy(digits_model, split, one_thread):
    x_train, y_train, x_test, y_test = split
    dense = _accuracy(digits_model, x_test, y_test)
    pruned = ic.prune(digits_model, x_test[:2], ratio=0.5).module
    lost = _accuracy(pruned, x_test, y_test)
    res = ic.distill(pruned, digits_model, (x_train, y_train), epochs=2, lr=3e-3, eval_data=(x_test, y_test),
                     progress=False)  # fmt: skip
    got = _accuracy(res.module, x_test, y_test)
    r = res.report
    # the report's figures are the metrics of the module before and after, computed here by numpy
    assert r.before["accuracy"] == pytest.approx(lost) and r.after["accuracy"] == pytest.approx(got)
    assert r.teacher["accuracy"] == pytest.approx(dense)
    assert got >= dense - 0.03 and got > lost
    assert r.method == "distillation" and len(r.losses) == 2 and r.steps == 2 * -(-len(y_train) // 64)
    assert set(r.after) == {"accuracy", "precision", "recall", "f1"}


def test_distill_without_labels_and_with_callback(digits_model, split, one_thread):
    x_train, _, x_test, _ = split
    student = ic.prune(digits_model, x_test[:2], ratio=0.5).module
    res = ic.distill(student, digits_model, x_train[:256], epochs=1, eval_data=x_test[:100], progress=False)
    assert set(res.report.after) == {"cosine"} and res.report.after["cosine"] > 0.5
    assert any("no labels" in n for n in res.report.notes)
    seen = {}

    def fine_tune(s, t, data):
        seen["args"] = (s, t, data)

    res = ic.distill(student, digits_model, (x_train, np.zeros(len(x_train), np.int64)), fine_tune=fine_tune)
    assert seen["args"][0] is student and seen["args"][1] is digits_model
    assert res.report.method == "caller's fine_tune" and res.module is student


def test_prune_resnet_residual_grouped_depthwise(tmp_path):
    m = _resnet()
    x = torch.rand(2, 1, 32, 32)
    res = ic.prune(m, x, ratio=0.5)
    p = res.module
    b0, sep, b1, b2 = p.blocks
    # the residual stream at full resolution loses the same channels everywhere it is added
    width = p.stem[0].out_channels
    assert width == 8 and b0.conv2.out_channels == sep.pointwise.out_channels == width
    # grouped: still 4 groups of equal width; depthwise: still one channel per group
    assert b0.conv1.groups == 4 and b0.conv1.out_channels % 4 == 0 and b0.conv1.out_channels < 16
    assert sep.depthwise.groups == sep.depthwise.in_channels == sep.depthwise.out_channels == width
    # a projection shortcut is as wide as the block it joins
    assert b1.shortcut[0].out_channels == b1.conv2.out_channels == 16 and b2.conv2.out_channels == 32
    assert p.fc.out_features == 10
    with torch.no_grad():
        want = p(x).numpy()
    assert want.shape == (2, 10)
    path = _convert(p, x, "image", tmp_path)
    got = _ort_outputs(path, {"image": x.numpy()})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-5)


def test_prune_round_to_and_ignore():
    m = _resnet()
    x = torch.rand(1, 1, 32, 32)
    res = ic.prune(m, x, ratio=0.4, round_to=8)
    convs = [c for c in res.module.modules() if isinstance(c, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    kept = ic.prune(m, x, ratio=0.5, ignore=["blocks.3"]).module.blocks[3]
    assert kept.conv1.out_channels == kept.conv2.out_channels == 64
    rep = ic.prune(m, x, ratio=0.5, ignore=[m.blocks[3]]).report
    assert any(x.name == "blocks.3" and x.reason == "ignored by the caller" for x in rep.left_alone)


def test_prune_taylor_uses_gradients(digits_model, split, one_thread):
    x_train, y_train, x_test, _ = split
    with pytest.raises(ic.ArgumentError) as e:
        ic.prune(digits_model, x_test[:2], importance="taylor")
    assert e.value.parameter == "data"
    a = ic.prune(digits_model, x_test[:2], importance="taylor", data=(x_train[:256], y_train[:256])).module
    b = ic.prune(digits_model, x_test[:2], importance="l2").module
    assert a[0].out_channels == b[0].out_channels == 16
    # a different criterion keeps different filters
    assert not torch.equal(a[0].weight, b[0].weight)
    assert all(p.grad is None for p in a.parameters())


def test_prune_torch_transformer_encoder(tmp_path):
    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 64)
            layer = torch.nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True)
            self.enc = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = torch.nn.Linear(64, 5)

        def forward(self, ids):
            return self.head(self.enc(self.emb(ids)).mean(1))

    torch.manual_seed(0)
    m = Classifier().eval()
    ids = torch.randint(0, 100, (2, 12))
    res = ic.prune(m, ids, ratio=0.5)
    p = res.module
    assert p.enc.layers[0].linear1.out_features == 128 and p.head.out_features == 5
    assert p.enc.layers[0].self_attn.num_heads == 4
    with torch.no_grad():
        want = p(ids).numpy()
    path = _convert(p, ids, "ids", tmp_path)
    np.testing.assert_allclose(next(iter(_ort_outputs(path, {"ids": ids.numpy()}).values())), want, rtol=1e-4, atol=1e-5)


def test_prune_refuses_bad_arguments(digits_model, split):
    x = split[2][:2]
    cases = [
        (dict(ratio=0), "ratio"), (dict(ratio=1.0), "ratio"), (dict(ratio="half"), "ratio"), (dict(ratio=True), "ratio"),
        (dict(importance="l3"), "importance"), (dict(ignore=["no.such.layer"]), "ignore"), (dict(round_to=0), "round_to"),
        (dict(ignore=[torch.nn.Linear(2, 2)]), "ignore"), (dict(heads="yes"), "heads"),
    ]  # fmt: skip
    for kwargs, parameter in cases:
        with pytest.raises(ic.ArgumentError) as e:
            ic.prune(digits_model, x, **kwargs)
        assert e.value.parameter == parameter, kwargs
    with pytest.raises(ic.ArgumentError) as e:
        ic.prune("model.onnx", x)
    assert e.value.parameter == "module"
    with pytest.raises(ic.ArgumentError) as e:
        ic.prune(digits_model, None)
    assert e.value.parameter == "example_inputs"
    with pytest.raises(ic.InputSpecError, match="does not run on the example inputs"):
        ic.prune(digits_model, np.zeros((1, 3, 8, 8), np.float32))


def test_prune_refuses_a_module_it_would_break():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).reshape(x.shape[0], 8 * 4 * 4))  # a width fixed in code

    with pytest.raises(ic.PruningError):
        ic.prune(Fixed().eval(), torch.rand(2, 1, 4, 4), ratio=0.5)


def test_missing_torch_pruning_names_the_extra(monkeypatch, digits_model):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(ic.BackendUnavailableError, match=r'infercore\[prune\]'):
        ic.prune(digits_model, np.zeros((1, 1, 8, 8), np.float32))


# -- files: torch.export and TorchScript ---------------------------------------------------------------
def test_exported_and_scripted_programs_prune_like_modules(tmp_path, digits_model):
    from infercore.optimize.torchmodel import load_module

    m = _resnet()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        want = m(x)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    lifted, example = load_module(tmp_path / "m.pt2")
    assert isinstance(example, tuple) and example[0].shape == x.shape
    get = lifted.get_submodule
    assert isinstance(get("blocks.0.conv1"), torch.nn.Conv2d) and isinstance(get("stem.1"), torch.nn.BatchNorm2d)
    with torch.no_grad():
        torch.testing.assert_close(lifted(x), want)
    res = ic.prune(lifted, x[:1], ratio=0.5)
    get = res.module.get_submodule
    assert get("blocks.0.conv1").groups == 4 and get("stem.0").out_channels == 8
    assert res.module(x).shape == (3, 10)

    torch.jit.save(torch.jit.trace(m, (x,)), tmp_path / "m.pt")
    lifted, _ = load_module(tmp_path / "m.pt", (x,))
    with torch.no_grad():
        torch.testing.assert_close(lifted(x), want)
    assert ic.prune(lifted, x[:1], ratio=0.5).report.mac_ratio < 0.4
    with pytest.raises(ic.ArgumentError, match="TorchScript"):
        load_module(tmp_path / "m.pt")

    torch.save(digits_model, tmp_path / "pickled.pt")
    with pytest.raises(ic.ModelLoadError, match="pickled"):
        load_module(tmp_path / "pickled.pt")


# -- speed flags and reports -------------------------------------------------------------------------
def test_speed_flag():
    assert speed_flag(1.02, 0.98) == NO_SPEEDUP
    assert speed_flag(1.09, None) == NO_SPEEDUP
    assert speed_flag(1.0, 1.5) is None and speed_flag(2.0, 0.9) is None
    assert speed_flag(None, None) is None
    assert speed_flag(1.05, 1.05, min_speedup=1.02) is None


# -- real models, end to end (slow) ---------------------------------------------------------------------
@pytest.mark.slow
def test_prune_minilm_heads_and_mlp(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from infercore.testing import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel

    m = AutoModel.from_pretrained(str(models.minilm_source())).eval()
    ids = torch.randint(1000, 20000, (2, 16))
    feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    res = ic.prune(m, feeds, ratio=0.5)
    p = res.module
    for layer in p.encoder.layer:
        att = layer.attention.self
        assert att.num_attention_heads == 6 and att.query.out_features == att.key.out_features == 6 * 32
        assert layer.attention.output.dense.in_features == 192
        assert layer.intermediate.dense.out_features == 768 and layer.output.dense.in_features == 768
        assert layer.output.dense.out_features == 384  # the residual stream reaches the output: kept
    heads = [x for x in res.report.layers if x.kind == "attention heads"]
    assert len(heads) == 6 and all((x.before, x.after) == (12, 6) for x in heads)
    assert any(x.name == "embeddings.word_embeddings" for x in res.report.left_alone)
    with torch.no_grad():
        want = p(**feeds)[0].numpy()
    assert want.shape == (2, 16, 384)
    path = _convert(p, feeds, None, tmp_path)
    got = _ort_outputs(path, {k: v.numpy() for k, v in feeds.items()})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_optimize_chain_measures_every_step(tmp_path, digits_model, split, one_thread):
    x_train, y_train, x_test, y_test = split
    res = ic.optimize(
        digits_model, x_test[:2], (x_train, y_train), (x_test, y_test), steps=["prune", "distill", "convert", "int8"],
        target="ort", ratio=0.5, epochs=2, output_dir=tmp_path / "out", batches=(1, 16), rounds=2, round_s=0.05,
    )  # fmt: skip
    r = res.report
    assert [s.step for s in r.steps] == ["input", "prune", "distill", "convert", "int8"]
    assert [s.kind for s in r.steps] == ["input", "speed", "recovery", "format", "speed"]
    # every accuracy in the report is the model file's own on raw ONNX Runtime, computed here
    for s in r.steps:
        logits = next(iter(_ort_outputs(s.artifact, x_test).values()))
        assert s.metrics["accuracy"] == pytest.approx(float((logits.argmax(1) == y_test).mean()))
    assert r.steps[3].artifact == r.steps[2].artifact and r.steps[3].speedup == 1.0
    assert r.steps[1].size_bytes < r.steps[0].size_bytes / 3 and r.steps[4].size_bytes < r.steps[2].size_bytes
    assert r.steps[2].metrics["accuracy"] >= r.steps[0].metrics["accuracy"] - 0.05
    assert all(s.p50_ms > 0 and s.p99_ms >= s.p50_ms and s.best_batch in (1, 16) for s in r.steps)
    assert r.steps[0].total == 1.0 and r.steps[0].flag is None and r.steps[2].flag is None
    assert res.artifact_path == tmp_path / "out" / "model.onnx" and res.artifact_path.exists()
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["schema"] == "infercore.optimize/1" and len(saved["steps"]) == 5
    assert (tmp_path / "out" / "report.png").stat().st_size > 1000
    assert "| step |" in (tmp_path / "out" / "report.md").read_text()
    assert r.steps[1].details["prune"]["ratio"] == 0.5 and "VERIFIED" in r.steps[1].details["conversion"]["verdict"]

    with pytest.raises(ic.OptimizeDropError) as e:
        ic.optimize(digits_model, x_test[:2], None, (x_test, y_test), steps=["prune"], ratio=0.9, max_drop=0.01,
                    output_dir=tmp_path / "refused", rounds=1, round_s=0.05, batches=(1,), plot=False)  # fmt: skip
    rep = e.value.report
    assert not rep.passed and rep.drop > 0.01 and rep.final is None
    assert not (tmp_path / "refused" / "model.onnx").exists() and (tmp_path / "refused" / "report.json").exists()


def test_optimize_refuses_bad_chains(digits_model, split):
    x_test, y_test = split[2], split[3]
    for steps, word in ((["convert", "prune"], "before convert"), (["int8", "convert"], "after convert"),
                        (["prune", "quantize"], "unknown step"), ([], "no steps")):  # fmt: skip
        with pytest.raises(ic.ArgumentError, match=word) as e:
            ic.optimize(digits_model, x_test[:2], None, (x_test, y_test), steps=steps)
        assert e.value.parameter == "steps"
    with pytest.raises(ic.ArgumentError) as e:
        ic.optimize(digits_model, x_test[:2], None, (x_test, y_test), steps=["prune", "int8"])
    assert e.value.parameter == "data"
    with pytest.raises(ic.ArgumentError) as e:
        ic.optimize(digits_model, x_test[:2], None, (x_test, y_test), target="litert")
    assert e.value.parameter == "target"
    with pytest.raises(ic.ArgumentError) as e:
        ic.optimize(digits_model, x_test[:2], None, x_test, steps=["prune"], metric="accuracy")
    assert e.value.parameter == "metric"


@pytest.mark.slow
def test_cli_optimize_pt2(tmp_path, digits_model, split, capsys, one_thread):
    from infercore.cli.main import main

    x_train, y_train, x_test, y_test = split
    ep = torch.export.export(copy.deepcopy(digits_model), (torch.from_numpy(x_test[:2]),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    torch.export.save(ep, tmp_path / "digits.pt2")
    np.savez(tmp_path / "train.npz", x_train, labels=y_train)  # arr_0: the one input, whatever its name
    np.savez(tmp_path / "test.npz", x_test, labels=y_test)
    out = tmp_path / "out" / "digits.opt.onnx"
    code = main(["optimize", str(tmp_path / "digits.pt2"), "--data", str(tmp_path / "train.npz"), "--eval",
                 str(tmp_path / "test.npz"), "--steps", "prune,distill,convert", "--ratio", "0.5", "--epochs", "2",
                 "--rounds", "2", "--round-time", "0.05", "--batch", "1,8", "-o", str(out), "--json",
                 "--work-dir", str(tmp_path / "work")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rep = json.loads(captured.out)
    assert [s["step"] for s in rep["steps"]] == ["input", "prune", "distill", "convert"]
    assert out.exists() and rep["final"] is not None
    logits = next(iter(_ort_outputs(out, x_test).values()))
    assert rep["steps"][-1]["metrics"]["accuracy"] == pytest.approx(float((logits.argmax(1) == y_test).mean()))

    code = main(["optimize", str(tmp_path / "digits.pt2"), "--eval", str(tmp_path / "test.npz"), "--steps", "prune",
                 "--ratio", "0.9", "--max-drop", "0.01", "--rounds", "1", "--round-time", "0.05", "--batch", "1",
                 "-o", str(tmp_path / "refused.onnx"), "--work-dir", str(tmp_path / "refused")])  # fmt: skip
    assert code == 1 and not (tmp_path / "refused.onnx").exists() and (tmp_path / "refused" / "report.json").exists()
    assert "max_drop" in capsys.readouterr().out


def test_cli_optimize_refuses_before_work(tmp_path, capsys):
    from infercore.cli.main import main

    (tmp_path / "m.pt2").write_bytes(b"")
    code = main(["optimize", str(tmp_path / "m.pt2"), "--eval", "nope.npz", "--ratio", "2", "-o", str(tmp_path / "o.onnx")])
    assert code == 2 and "--ratio" in capsys.readouterr().err
    code = main(["optimize", str(tmp_path / "m.pt2"), "--eval", "x.npz", "-o", str(tmp_path / "o.xml")])
    assert code == 2 and ".onnx" in capsys.readouterr().err
    code = main(["optimize", str(tmp_path / "m.pt2"), "--eval", "x.npz", "--steps", "prune,distill"])
    assert code == 2 and "--data" in capsys.readouterr().err
    code = main(["optimize", str(tmp_path / "missing.pt2"), "--eval", "x.npz", "-o", str(tmp_path / "o.onnx")])
    assert code == 2 and "missing.pt2" in capsys.readouterr().err
    os.chmod(tmp_path, 0o500)
    try:
        if not os.access(tmp_path, os.W_OK):  # root writes anywhere
            code = main(["optimize", str(tmp_path / "m.pt2"), "--eval", "x.npz", "-o", str(tmp_path / "o.onnx")])
            assert code == 2 and "-o" in capsys.readouterr().err
    finally:
        os.chmod(tmp_path, 0o700)
