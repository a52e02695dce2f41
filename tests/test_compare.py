"""``ic.compare`` and ``infercore compare``: the verdict rule, generated inputs, the CLI, and real
models that must agree across runtimes (and a bf16 run that must not, at fp32 tolerance)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import infercore as ic
from infercore.cli import main
from infercore.compare import TOLERANCES, Tolerance, compare, compare_arrays
from infercore.specs import BackendInfo, TensorSpec
from infercore.testing import models
from infercore.testing.conformance import build_onnx, mlp_case

FP32, BF16 = TOLERANCES["fp32"], TOLERANCES["bf16"]


def _bf16(a: np.ndarray) -> np.ndarray:
    """Truncate float32 to bfloat16's 8-bit mantissa: what a bf16 run does to a result."""
    return (a.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


# -- the verdict rule ---------------------------------------------------------------------------
def test_identical_outputs_pass() -> None:
    a = np.random.default_rng(0).standard_normal((4, 100)).astype(np.float32)
    c = compare_arrays(a, a.copy(), FP32)
    assert c.passed and c.max_abs == 0 and c.mismatch == 0 and c.cosine == pytest.approx(1.0)


def test_fp32_noise_passes_and_bf16_rounding_fails_at_fp32() -> None:
    a = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    noisy = a * (1 + np.float32(1e-6) * np.random.default_rng(2).standard_normal(a.shape).astype(np.float32))
    assert compare_arrays(a, noisy, FP32).passed
    c = compare_arrays(a, _bf16(a), FP32)
    assert not c.passed and c.mismatch > 0.1, c
    assert compare_arrays(a, _bf16(a), BF16).passed


def test_nearly_zero_output_judged_by_the_absolute_floor() -> None:
    """A detector on random pixels: ~1e-6 everywhere, relative error and cosine mean nothing."""
    rng = np.random.default_rng(3)
    ref = (rng.random(4096) * 1e-6).astype(np.float32)
    other = (ref * rng.uniform(0.5, 1.5, ref.shape)).astype(np.float32)  # 50% relative differences
    c = compare_arrays(ref, other, FP32)
    assert c.passed and not c.cosine_judged, c
    assert "nearly zero" in c.note
    zeros = compare_arrays(np.zeros(64, np.float32), np.full(64, 1e-8, np.float32), FP32)
    assert zeros.passed
    # but a real signal that appears on one side only is a mismatch
    assert not compare_arrays(np.zeros(64, np.float32), np.full(64, 0.01, np.float32), FP32).passed


def test_floor_scales_with_the_output_magnitude() -> None:
    ref = np.linspace(-1000, 1000, 1001).astype(np.float32)
    assert compare_arrays(ref, ref + 0.5, FP32).passed  # 0.05% of the largest magnitude
    assert not compare_arrays(ref, ref + 5.0, FP32).passed  # 0.5%: beyond fp32 tolerance


def test_shape_nan_int_and_bool() -> None:
    a = np.ones((2, 3), np.float32)
    assert not compare_arrays(a, np.ones((3, 2), np.float32), FP32).passed
    b = a.copy()
    b[0, 0] = np.nan
    nan_one_side = compare_arrays(a, b, FP32)
    assert nan_one_side.mismatch == pytest.approx(1 / 6)
    assert compare_arrays(b, b.copy(), FP32).passed  # NaN in the same places agrees
    ints = np.arange(1000, dtype=np.int64)
    assert compare_arrays(ints, ints.copy(), FP32).passed
    off_by_one = ints.copy()
    off_by_one[:10] += 1
    assert not compare_arrays(ints, off_by_one, TOLERANCES["fp32"]).passed
    assert compare_arrays(ints, off_by_one, TOLERANCES["int8"]).passed
    flags = np.zeros(100, bool)
    assert not compare_arrays(flags, ~flags, FP32).passed


# -- generated inputs ---------------------------------------------------------------------------
def test_zero_d_outputs_are_compared() -> None:
    """A 0-d output (a scalar score) used to raise TypeError: arithmetic on 0-d arrays gives scalars."""
    same = compare_arrays(np.array(3.0, np.float32), np.array(3.0, np.float32), FP32)
    assert same.passed and same.shape == () and same.max_abs == 0.0
    off = compare_arrays(np.array(16000, np.int64), np.array(16001, np.int64), FP32)
    assert not off.passed and off.max_abs == 1.0 and off.mismatch == 1.0


def test_feeds_for_another_backend_never_wrap() -> None:
    """A backend declaring int32 where the reference took int64 gets the same values or fails."""
    from types import SimpleNamespace

    from infercore.compare import _feeds_for

    other = SimpleNamespace(backend_name="other", inputs=[TensorSpec("ids", np.int32, (None,))])
    ok = np.array([0, 2**31 - 1], np.int64)
    got = _feeds_for(other, {"ids": ok})["ids"]
    assert got.dtype == np.int32 and got.tolist() == ok.tolist()
    with pytest.raises(ic.InputSpecError, match=re.escape("given int64 values span [0, 2147483648]")):
        _feeds_for(other, {"ids": np.array([0, 2**31], np.int64)})  # int32 would wrap to -2**31


# -- a fake backend that rounds to bf16, registered as a plugin ----------------------------------
class _Bf16Rounding:
    """The reference backend with every float output truncated to bfloat16."""

    name = "bf16sim"

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.device, self.inputs, self.outputs, self.metadata = (
            "cpu",
            inner.inputs,
            inner.outputs,
            inner.metadata,
        )

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            k: _bf16(v) if v.dtype == np.float32 else v for k, v in self._inner.run(feeds, outputs).items()
        }

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        self._inner.close()


class _Bf16Factory:
    def probe(self) -> BackendInfo:
        return BackendInfo("bf16sim", True)

    def open(
        self,
        path: Path,
        *,
        device: str,
        precision: str | None,
        threads: int | None,
        options: Mapping[str, Any],
    ) -> _Bf16Rounding:
        from infercore.backends.reference import ReferenceFactory

        inner = ReferenceFactory().open(path, device=device, precision=None, threads=None, options={})
        return _Bf16Rounding(inner)


class _Plugin:
    @ic.hookimpl
    def register_backends(self, register: Any) -> None:
        register("bf16sim", _Bf16Factory(), suffixes=(".onnx",), priority=-300)


@pytest.fixture
def bf16sim() -> Iterator[None]:
    plugin = _Plugin()
    ic.registry.add_plugin(plugin, "bf16sim")
    yield
    ic.registry.remove_plugin(plugin)


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    return build_onnx(mlp_case(), tmp_path)


def test_compare_tiny_model_across_backends(mlp: Path) -> None:
    names = [b for b in ("ort", "openvino", "reference") if ic.available_backends()[b].available]
    report = compare(mlp, names, seed=3, keep_outputs=True)
    assert report.passed, report.table()
    assert report.reference == names[0] and report.tolerance_name == "fp32"
    assert [c.output for c in report.comparisons] == ["y", "p"] * (len(names) - 1)
    assert set(report.feeds) == {"x", "s"} and report.feeds["x"].shape == (1, 8)
    want = mlp_case().reference(report.feeds)
    for label in names:
        np.testing.assert_allclose(report.outputs[label]["p"], want["p"], rtol=1e-5, atol=1e-6)
    assert "AGREE" in report.table()


def test_bf16_results_are_a_mismatch_at_fp32_tolerance(mlp: Path, bf16sim: None) -> None:
    report = compare(mlp, ["reference", "bf16sim"], seed=0, shapes={"x": (16, 8), "s": (16, 4)})
    assert not report.passed and "MISMATCH" in report.verdict()
    bad = [c for c in report.comparisons if not c.passed]
    assert bad and all(c.backend == "bf16sim" for c in bad)
    assert compare(mlp, ["reference", "bf16sim"], tolerance="bf16").passed
    custom = Tolerance(rtol=1e-2, atol=1e-6, atol_scale=1e-2, min_cosine=0.999, max_mismatch=0.0)
    assert compare(mlp, ["reference", "bf16sim"], tolerance=custom).tolerance_name == "custom"


def test_cli_exit_codes_and_json(
    mlp: Path, bf16sim: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["compare", str(mlp), "--backends", "reference,ort", "--json", "--seed", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "infercore.compare/1" and doc["passed"] is True and doc["seed"] == 5
    assert set(doc) == {
        "schema",
        "model",
        "passed",
        "reference",
        "seed",
        "tolerance",
        "backends",
        "inputs",
        "outputs",
        "notes",
    }
    assert set(doc["tolerance"]) == {
        "name",
        "rtol",
        "atol",
        "atol_scale",
        "min_cosine",
        "max_mismatch",
        "int_atol",
    }
    assert [b["label"] for b in doc["backends"]] == ["reference", "ort"]
    assert all(b["error"] is None and b["run_ms"] >= 0 for b in doc["backends"])
    assert {i["name"]: i["shape"] for i in doc["inputs"]} == {"x": [1, 8], "s": [1, 4]}
    out = doc["outputs"][0]
    assert set(out) >= {
        "output",
        "backend",
        "reference",
        "shape",
        "dtype",
        "max_abs",
        "max_rel",
        "cosine",
        "cosine_judged",
        "mismatch",
        "scale",
        "atol",
        "rtol",
        "passed",
        "note",
    }

    saved = tmp_path / "in.npz"
    code = main(["compare", str(mlp), "-b", "reference,bf16sim", "--plain", "--save-inputs", str(saved)])
    assert code == 1
    text = capsys.readouterr().out
    assert "MISMATCH" in text and "bf16sim" in text
    assert main(["compare", str(mlp), "-b", "reference,bf16sim", "--tolerance", "bf16", "--plain"]) == 0
    capsys.readouterr()
    # the saved inputs replay exactly
    assert main(["compare", str(mlp), "-b", "reference,ort", "--inputs", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"][0]["source"] == "given"
    assert main(["compare", str(tmp_path / "missing.onnx"), "-b", "reference,ort"]) == 2
    assert main(["compare", str(mlp), "-b", "reference,nosuch"]) == 2  # a usage error: never 1 (mismatch)
    capsys.readouterr()
    # a backend that cannot read the file: exit 2, the error in the report
    if ic.available_backends()["litert"].available:
        assert main(["compare", str(mlp), "-b", "ort,litert", "--json"]) == 2
        doc = json.loads(capsys.readouterr().out)
        assert doc["passed"] is False and "litert" not in [o["backend"] for o in doc["outputs"]]
        assert doc["backends"][1]["error"]


def test_cli_refuses_values_that_do_not_fit_and_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with one line naming the input/file, never 0 with a silently changed value or a traceback."""
    from onnx import TensorProto

    from tests import onnx_models

    model = onnx_models.identity(tmp_path / "sr.onnx", TensorProto.INT64, shape=())
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "one.npy", np.array(16000, np.int64))
    np.save(tmp_path / "f.npy", np.array(16000.0))
    base = ["compare", str(model), "-b", "reference,ort", "--plain"]
    for extra, says in (
        (["--input", "x=nan"], "input 'x' takes int64 integers: expected a whole number, got nan"),
        (["--input", "x=16000.5"], "input 'x' takes int64 integers: expected a whole number, got 16000.5"),
        (["--input", "x=-1e30"], "input 'x': -1e+30 is outside the range of int64"),
        (["--input", "x=99999999999999999999999"], "input 'x': 99999999999999999999999 is outside the range"),
        (["--input", f"x={tmp_path / 'f.npy'}"], "given dtype float64 cannot become the model's int64"),
        (
            ["--input", f"x={tmp_path / 'empty.npy'}"],
            "input 'x': " + str(tmp_path / "empty.npy") + " is empty",
        ),
        (["--input", "x=abc"], "--input x=abc: expected a number, true/false or a .npy file"),
        (["--inputs", str(tmp_path / "empty.npz")], str(tmp_path / "empty.npz") + " is empty (0 bytes)"),
        (["--input", "y=1"], "--input names 'y', which the model does not take; its inputs are x"),
    ):
        assert main([*base, *extra]) == 2, extra
        captured = capsys.readouterr()
        assert captured.err.startswith("infercore compare: error: ") and captured.err.count("\n") == 1
        assert says in captured.err, (extra, captured.err)
    with pytest.raises(SystemExit) as exited:  # argparse's own: usage, then the reason
        main([*base, "--shape", "x=1xa"])
    assert exited.value.code == 2 and "expected sizes like 1x3x224x224 in 'x=1xa'" in capsys.readouterr().err
    saved = tmp_path / "saved.npz"
    assert main([*base, "--input", "x=16000", "--save-inputs", str(saved)]) == 0
    with np.load(saved) as z:
        assert z["x"].dtype == np.int64 and int(z["x"]) == 16000
    assert main([*base, "--input", f"x={tmp_path / 'one.npy'}"]) == 0
    assert main([*base, "--inputs", str(tmp_path / "one.npy")]) == 0  # a .npy feeds a single-input model


@pytest.mark.parametrize(
    "args",
    [
        ["--tolerance", "fp64"],
        ["--seed", "abc"],
        ["--rtol", "-1"],
        ["--rtol", "nan"],
        ["--atol", "inf"],
        ["--atol", "x"],
    ],
)
def test_cli_usage_errors_exit_2(mlp: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["compare", str(mlp), "-b", "reference,ort", *args])
    assert e.value.code == 2
    assert f"argument {args[0]}" in capsys.readouterr().err


def test_compare_refuses_bad_arguments(mlp: Path) -> None:
    with pytest.raises(ValueError, match="at least two"):
        compare(mlp, ["ort"])
    with pytest.raises(ic.ArgumentError, match=r"backends: expected one of fp32, fp16, bf16, int8.*'fp8'"):
        compare(mlp, ["ort", "reference:fp8"])
    with pytest.raises(ic.UnknownBackendError):
        compare(mlp, ["ort", "nosuch"])
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"rtol: expected a finite number in \[0, inf\)"):
            compare(mlp, ["reference", "ort"], rtol=bad)
        with pytest.raises(ValueError, match=r"atol: expected a finite number in \[0, inf\)"):
            compare(mlp, ["reference", "ort"], atol=bad)


# -- real models --------------------------------------------------------------------------------
def _need(*backends: str) -> None:
    for b in backends:
        info = ic.available_backends()[b]
        if not info.available:
            pytest.skip(f"{b} unavailable: {info.reason}")


def _model(get: Any, *args: str) -> Path:
    try:
        path: Path = get(*args)
    except models.ModelUnavailable as e:
        pytest.skip(f"model not available here: {e}")
    return path


@pytest.mark.slow
def test_minilm_agrees_and_bf16_is_caught_at_fp32() -> None:
    _need("ort", "openvino")
    path = _model(models.minilm)
    report = compare(path, ["ort", "openvino"], shapes={"input_ids": (2, 32)})
    assert report.passed, report.table()
    assert {i.name: i.shape for i in report.inputs}["token_type_ids"] == (2, 32)
    bf16 = compare(path, ["ort", "openvino:bf16"], shapes={"input_ids": (2, 32)})
    assert bf16.tolerance_name == "bf16"
    if not _ov_has_bf16():
        pytest.skip("this CPU has no bf16: OpenVINO runs f32 whatever the hint")
    assert bf16.passed, bf16.table()  # measured: cosine 0.99998, within bf16 tolerance
    assert not compare(path, ["ort", "openvino:bf16"], tolerance="fp32").passed


def _ov_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_ppocr_det_agrees_on_text_and_on_random_pixels() -> None:
    _need("ort", "openvino")
    path = _model(models.ppocr_det)
    img = models.text_image()  # 96 x 640: both multiples of 32
    x = ((img.astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    text = compare(path, ["ort", "openvino"], inputs={"x": x})
    assert text.passed, text.table()
    assert text.comparisons[0].cosine_judged and text.comparisons[0].scale > 0.5  # it found the text
    noise = compare(path, ["ort", "openvino"], seed=1)  # 64 x 64 random pixels: output ~0 everywhere
    assert noise.passed, noise.table()
    assert not noise.comparisons[0].cosine_judged


def test_silero_ifless_agrees_with_a_valid_sample_rate() -> None:
    _need("ort", "openvino")
    path = _model(models.silero_vad, "ifless")
    report = compare(path, ["ort", "openvino"], inputs={"sr": 16000}, shapes={"input": (1, 512)})
    assert report.passed, report.table()
    assert [c.output for c in report.comparisons] == ["output", "stateN"]
    assert report.feeds["sr"].shape == ()


@pytest.mark.parametrize("name", ["hand_landmark_lite", "palm_detection_lite"])
def test_mediapipe_agrees_on_litert_and_openvino(name: str) -> None:
    _need("litert", "openvino")
    report = compare(_model(models.mediapipe, name), ["litert", "openvino"])
    assert report.passed, report.table()
    assert len(report.comparisons) >= 2


@pytest.mark.slow
def test_pose_landmark_bf16_is_a_real_mismatch() -> None:
    """Measured: OpenVINO bf16 against f32, cosine 0.93 on some outputs; compare must say so."""
    _need("litert", "openvino")
    path = _model(models.mediapipe, "pose_landmark_full")
    assert compare(path, ["litert", "openvino"]).passed
    if not _ov_has_bf16():
        pytest.skip("this CPU has no bf16: OpenVINO runs f32 whatever the hint")
    report = compare(path, ["litert", "openvino:bf16"], tolerance="fp32")
    assert not report.passed
    assert min(c.cosine for c in report.comparisons if c.cosine_judged and c.cosine is not None) < 0.99
    assert not compare(path, ["litert", "openvino:bf16"]).passed  # beyond bf16 tolerance, too


def test_infinities_compare_without_numpy_warnings():
    import warnings

    from infercore.compare import TOLERANCES, compare_arrays

    ref = np.array([np.inf, -np.inf, 1.0, np.nan, np.inf, 2.0], np.float32)
    got = np.array([np.inf, np.inf, 1.0, np.nan, 3.0, np.inf], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = compare_arrays(ref, got, TOLERANCES["fp32"], output="y")
    # equal infinities and NaNs agree; opposite infinities, and a finite value against inf, do not
    # (rtol * |inf| once made any value "close" to an infinite reference)
    assert r.mismatch == pytest.approx(0.5)


@pytest.mark.parametrize("first", ["function", "module"])
def test_ic_compare_and_the_module_both_work_whichever_import_came_first(first: str, tmp_path: Path) -> None:
    """`ic.compare` (the function) and `infercore.compare` (the module) share a name: after
    `import infercore.compare` the package's attribute is the module, which must still be callable,
    and after `ic.compare` the module must still be what `import infercore.compare as c` gives."""
    import subprocess
    import sys

    model = build_onnx(mlp_case(), tmp_path)
    script = f"""
import infercore as ic
if {first == "function"!r}:
    ic.compare
import infercore.compare as module
report = ic.compare({str(model)!r}, backends=["ort", "reference"], seed=0)
assert report.passed, report.table()
assert module.Tolerance and module.TOLERANCES["fp32"].rtol == 1e-4
assert ic.compare is module
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_quantized_model_is_judged_at_int8_tolerance(tmp_path: Path) -> None:
    """ddddocr's common_old.onnx (ConvInteger, DynamicQuantizeLinear) was a MISMATCH at fp32 between
    onnxruntime and OpenVINO (0.8% of elements, cosine 0.99999): runtimes round integer steps
    differently. A quantized model is judged at int8 unless a tolerance is named."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("openvino")
    from .onnx_models import mlp

    src, _ = mlp(tmp_path / "mlp.onnx")
    path = tmp_path / "mlp.int8.onnx"
    quantization.quantize_dynamic(str(src), str(path), weight_type=quantization.QuantType.QInt8)
    report = compare(path, ["ort", "openvino"])
    assert report.tolerance_name == "int8" and report.passed
    (note,) = report.notes
    assert "the model itself is quantized (quantized ops" in note and "DynamicQuantizeLinear" in note
    assert report.to_dict()["notes"] == [note] and f"note: {note}" in report.table()
    named = compare(path, ["ort", "openvino"], tolerance="fp32")
    assert named.tolerance_name == "fp32" and named.notes == ()
    plain = compare(src, ["ort", "openvino"])
    assert plain.tolerance_name == "fp32" and plain.notes == ()


def test_the_cli_names_the_flags_when_the_model_refuses_generated_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare said 'Give real inputs, values or shapes for the inputs' (Python's words) without the
    shapes it had generated; it now says both, with the flags."""
    from onnx import TensorProto, helper, numpy_helper, save

    pads = numpy_helper.from_array(np.array([0, 600, 0, 600], np.int64), "pads")
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect")], "pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])], [pads],
    )  # fmt: skip
    path = tmp_path / "pad600.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ic.InputsRejectedError, match=r"inputs=.*shapes=") as e:
        compare(path, ["ort", "reference"])
    assert e.value.generated == ("x",) and e.value.tensor == "x"
    assert main(["compare", str(path), "-b", "ort,reference"]) == 2
    err = capsys.readouterr().err
    assert "x [1, 512] generated" in err and "-s NAME=AxBxC" in err and "--inputs DATA" in err
    assert "shapes=" not in err
    sized = compare(path, ["ort", "reference"], shapes={"n": 700})  # sized: onnxruntime runs it
    assert sized.inputs[0].shape == (1, 700) and "ort" not in sized.failed_backends
