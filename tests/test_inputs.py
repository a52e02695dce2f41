"""``infercore.inputs``: one rule for shapes, generated values, given values, data files and backend
specs, the one every tool takes its feeds from."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

import infercore as ic
from infercore import inputs
from infercore.inputs import (
    default_backends,
    iter_batches,
    labelled_batches,
    load_arrays,
    load_feeds,
    make_feeds,
    parse_backends,
    read_data,
    resolve_shapes,
)
from infercore.specs import TensorSpec

IDS = TensorSpec("input_ids", np.int64, (None, None), ("batch", "sequence"))
MASK = TensorSpec("attention_mask", np.int64, (None, None), ("batch", "sequence"))
TYPES = TensorSpec("token_type_ids", np.int64, (None, None), ("batch", "sequence"))
IMAGE = TensorSpec("x", np.float32, (1, 3, None, None))


# -- shapes -------------------------------------------------------------------------------------
def test_dynamic_dimensions_follow_one_documented_rule() -> None:
    shapes, notes = resolve_shapes([IDS, MASK], batch=8, shapes={"sequence": 128})
    assert shapes == {"input_ids": (8, 128), "attention_mask": (8, 128)}
    shapes, notes = resolve_shapes([IDS, MASK], shapes={"input_ids": [2, 16]})
    assert shapes == {"input_ids": (2, 16), "attention_mask": (2, 16)}  # named dims follow the input given
    assert "batch=2 (as in another input)" in notes["attention_mask"]
    shapes, notes = resolve_shapes([IDS])  # batch 1, any other dynamic dimension 64, and said so
    assert shapes == {"input_ids": (1, 64)}
    assert notes["input_ids"] == "batch=1 (batch); sequence=64 (default size of a dynamic dimension)"
    shapes, _ = resolve_shapes([IDS], dynamic_size=512)
    assert shapes == {"input_ids": (1, 512)}
    state = TensorSpec("state", np.float32, (2, None, 128), (None, "batch", None))  # [layers, batch, hidden]
    shapes, _ = resolve_shapes([IDS, state], batch=3)
    assert shapes["state"] == (2, 3, 128)
    unnamed = [TensorSpec(n, np.int64, (None, None)) for n in ("input_ids", "attention_mask", "token_type_ids")]
    shapes, _ = resolve_shapes(unnamed, shapes={"input_ids": (2, 128)})  # a runtime that drops dim names
    assert set(shapes.values()) == {(2, 128)}
    placeholders = TensorSpec("x", np.float32, (None, 3, None, None), ("?", None, "?", "?"))  # PP-OCR
    shapes, _ = resolve_shapes([placeholders], shapes={"x": (1, 3, 48, 320)})
    assert shapes["x"] == (1, 3, 48, 320)
    shapes, _ = resolve_shapes([placeholders])  # "?" is no symbol: height and width are not one size
    assert shapes["x"] == (1, 3, 64, 64)


def test_shape_errors_name_the_parameter() -> None:
    with pytest.raises(ic.ArgumentError, match=r"^batch: 4 asked, but no input has a dynamic batch") as e:
        resolve_shapes([IMAGE], batch=4, shapes={"x": [1, 3, 32, 32]})
    assert e.value.parameter == "batch"
    with pytest.raises(ic.ArgumentError, match=r"shapes: x=2x3x32x32 does not fit input x: float32 \[1, 3, \?, \?\]"):
        resolve_shapes([IMAGE], shapes={"x": [2, 3, 32, 32]})
    with pytest.raises(ic.ArgumentError, match=r"'nope' is neither an input nor a dimension name.*sequence"):
        resolve_shapes([IDS], shapes={"nope": 3})
    with pytest.raises(ic.ArgumentError, match=r"batch: expected a positive integer"):
        resolve_shapes([IDS], batch=0)


# -- generated values ---------------------------------------------------------------------------
def test_generated_values_follow_the_specs() -> None:
    specs = [
        IDS,
        MASK,
        TYPES,
        TensorSpec("position_ids", np.int64, (None, None), ("batch", "sequence")),
        TensorSpec("sr", np.int64, ()),
        TensorSpec("state", np.float32, (2, None, 128), (None, "batch", None)),
        TensorSpec("image", np.uint8, (1, 8, 8, 3)),
        TensorSpec("h", np.float16, (64,)),
        TensorSpec("b", np.bool_, (64,)),
        TensorSpec("text", np.dtype(object), (None,), ("batch",)),
    ]
    x, info = make_feeds(specs, seed=1, metadata={"vocab_size": "30522"})
    assert x["input_ids"].shape == x["attention_mask"].shape == (1, 64)
    assert x["input_ids"].min() >= 0 and x["input_ids"].max() < 30522 and x["input_ids"].max() >= 100
    assert (x["attention_mask"] == 1).all() and (x["token_type_ids"] == 0).all()
    assert x["position_ids"].tolist() == [list(range(64))]
    assert x["sr"].shape == () and x["sr"].dtype == np.int64
    assert x["state"].shape == (2, 1, 128) and x["state"].min() >= -1 and x["state"].max() < 1
    assert x["image"].dtype == np.uint8 and x["image"].max() > 100  # 8-bit: the whole range
    assert x["h"].dtype == np.float16 and x["b"].dtype == np.bool_
    assert x["text"].dtype == object and all(isinstance(w, str) and w.isalpha() for w in x["text"])
    assert info["attention_mask"].source.startswith("generated: ones")
    assert "token ids [0, 30522) (model metadata)" in info["input_ids"].source
    again, _ = make_feeds(specs, seed=1, metadata={"vocab_size": "30522"})
    assert all(np.array_equal(x[k], again[k]) for k in x)  # the seed decides everything
    plain, info = make_feeds([IDS])
    assert plain["input_ids"].max() < 100 and "integers [0, 100)" in info["input_ids"].source


def test_ranges_override_and_are_checked() -> None:
    feeds, info = make_feeds([IDS], ranges={"input_ids": (5, 7)})
    assert set(np.unique(feeds["input_ids"])) <= {5, 6} and "given range" in info["input_ids"].source
    feeds, info = make_feeds([IMAGE], ranges={"x": (0, 255)})
    assert feeds["x"].min() >= 0 and feeds["x"].max() < 255 and feeds["x"].max() > 1
    feeds, info = make_feeds([IMAGE], metadata={"infercore.input_range.x": "2:3"})
    assert feeds["x"].min() >= 2 and "model metadata" in info["x"].source
    with pytest.raises(ic.InputSpecError, match="no input 'nope'"):
        make_feeds([IMAGE], ranges={"nope": (0, 1)})
    with pytest.raises(ic.ArgumentError, match=r"ranges: input 'input_ids': empty integer range"):
        make_feeds([IDS], ranges={"input_ids": (7, 5)})
    with pytest.raises(ic.ArgumentError, match=r"distribution: expected one of 'uniform', 'normal'"):
        make_feeds([IDS], distribution="gamma")


# -- given values -------------------------------------------------------------------------------
def test_given_arrays_fix_their_shape_and_the_batch_repeats_rows() -> None:
    spec = TensorSpec("x", np.float32, (None, 4), ("batch", None))
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    feeds, info = make_feeds([spec], values={"x": data}, batch=5)
    np.testing.assert_array_equal(feeds["x"], data[[0, 1, 0, 1, 0]])
    feeds, info = make_feeds([spec], values={"x": data})
    assert feeds["x"].shape == (2, 4) and info["x"].source.startswith("given")
    specs = [
        TensorSpec("input", np.float32, (None, None), ("batch", "sequence")),
        TensorSpec("sr", np.int64, ()),
        TensorSpec("state", np.float32, (2, None, 128), (None, "batch", None)),
    ]
    x, _ = make_feeds(specs, values={"sr": 16000}, shapes={"input": (2, 512)})
    assert x["sr"].shape == () and int(x["sr"]) == 16000
    assert x["input"].shape == (2, 512) and x["state"].shape == (2, 2, 128)  # "batch" follows the override
    filled, info = make_feeds(specs, values={"state": 0.5})  # a number fills the resolved shape
    assert filled["state"].shape == (2, 1, 128) and (filled["state"] == 0.5).all()
    with pytest.raises(ic.InputSpecError, match="no input 'nope'"):
        make_feeds(specs, values={"nope": 1})
    with pytest.raises(ic.InputSpecError, match="'sr'"):
        make_feeds(specs, values={"sr": np.float32(1.5)})  # float into int64 would change kind


def test_a_number_fills_an_integer_input_only_when_it_fits_exactly() -> None:
    """No silent truncation or wrap-around: NaN into int64 used to become INT64_MIN, 16000.5 16000."""
    sr = TensorSpec("sr", np.int64, ())
    i32 = TensorSpec("n", np.int32, (2,))
    flag = TensorSpec("flag", np.bool_, ())
    f16 = TensorSpec("h", np.float16, (3,))
    for spec, value, says in (
        (sr, math.nan, "expected a whole number, got nan"),
        (sr, 16000.5, "expected a whole number, got 16000.5"),
        (sr, math.inf, "expected a whole number, got inf"),
        (sr, -1e30, "-1e+30 is outside the range of int64 [-9223372036854775808, 9223372036854775807]"),
        (sr, 99999999999999999999999, "99999999999999999999999 is outside the range of int64"),
        (sr, 2**63, "is outside the range of int64"),
        (i32, 2**31, "2147483648 is outside the range of int32 [-2147483648, 2147483647]"),
        (flag, 2, "expected true, false, 0 or 1, got 2"),
        (f16, 1e5, "100000.0 is outside the range of float16"),
        (f16, 10**400, "is outside the range of float16"),
    ):
        with pytest.raises(ic.InputSpecError, match=re.escape(says)) as e:
            make_feeds([spec], values={spec.name: value})
        assert f"input {spec.name!r}" in str(e.value) and e.value.tensor == spec.name
    # what fits is kept exactly, checked against numpy
    got, _ = make_feeds([sr, i32, flag, f16], values={"sr": 16000.0, "n": 2**31 - 1, "flag": 1, "h": 0.1})
    assert got["sr"].dtype == np.int64 and int(got["sr"]) == 16000
    assert np.array_equal(got["n"], np.full(2, 2**31 - 1, np.int32))
    assert got["flag"].dtype == np.bool_ and bool(got["flag"]) is True
    assert np.array_equal(got["h"], np.full(3, 0.1, np.float16))
    nan = make_feeds([f16], values={"h": math.nan})[0]["h"]  # a float input takes NaN when asked for it
    assert np.isnan(nan).all() and nan.dtype == np.float16


def test_a_given_array_keeps_its_kind_and_every_value() -> None:
    """Docs: an array of another dtype of the same kind is cast, a change of kind is refused."""
    x = TensorSpec("x", np.float32, (None,))
    ids = TensorSpec("ids", np.int32, (None,))
    big = np.array([2**40 + 1], np.int64)
    assert float(big.astype(np.float32)[0]) != 2**40 + 1  # what a silent int -> float cast would lose
    for spec, value, says in (
        (
            x,
            big,
            "given dtype int64 cannot become the model's float32 without changing kind (integer to float)",
        ),
        (x, np.arange(3, dtype=np.int32), "given dtype int32 cannot become the model's float32"),
        (x, np.ones(3, np.bool_), "given dtype bool cannot become the model's float32"),
        (ids, np.ones(3, np.float32), "given dtype float32 cannot become the model's int32"),
        (ids, big, "given int64 values span [1099511627777, 1099511627777], outside the model's int32 range"),
        (ids, np.array([-1], np.int64).astype(np.uint64), "outside the model's int32 range"),
        (x, np.array([1.0, 1e39]), "given float64 values up to 1e+39 overflow the model's float32"),
    ):
        with pytest.raises(ic.InputSpecError, match=re.escape(says)):
            make_feeds([spec], values={spec.name: value})
    wide = np.array([-(2**31), 0, 2**31 - 1], np.int64)
    got, info = make_feeds([x, ids], values={"x": np.array([0.1, 1e38, np.inf]), "ids": wide})
    assert np.array_equal(got["ids"], wide.astype(np.int32)) and got["ids"].tolist() == wide.tolist()
    assert np.array_equal(got["x"], np.array([0.1, 1e38, np.inf]).astype(np.float32))
    assert info["ids"].source == "given (int64 cast to int32)"

# -- data files and batches ---------------------------------------------------------------------
def test_load_arrays_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "cut.npy", np.arange(100))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:150])
    (tmp_path / "text.npz").write_text("a,b\n1,2\n")
    for path, says in (
        (tmp_path / "empty.npz", "empty.npz is empty (0 bytes); expected a .npy or .npz file"),
        (tmp_path / "nope.npz", "nope.npz: file not found"),
        (tmp_path, "is not a file"),
        (tmp_path / "cut.npy", "cannot read " + str(tmp_path / "cut.npy")),
        (tmp_path / "text.npz", str(tmp_path / "text.npz") + " is not a .npy or .npz file (it starts with b'a,b\\n1,')"),
    ):
        with pytest.raises(ic.InputSpecError, match=re.escape(says)):
            load_arrays(path)


def test_one_loader_for_npz_npy_and_directories(tmp_path: Path) -> None:
    spec = TensorSpec("x", np.float32, (None, 3), ("batch", None))
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "named.npz", x=x, labels=np.arange(4))
    np.savez(tmp_path / "lone.npz", x)  # np.savez(path, x) names it arr_0
    d = tmp_path / "dir"
    d.mkdir()
    np.save(d / "b10.npy", x[2:])  # natural order: b2 before b10
    np.save(d / "b2.npy", x[:2])
    np.save(d / "labels.npy", np.arange(4))
    for source in ("x.npy", "named.npz", "lone.npz", "dir"):
        np.testing.assert_array_equal(load_feeds(tmp_path / source, [spec])["x"], x, err_msg=source)
        assert [b["x"].shape[0] for b in iter_batches(tmp_path / source, [spec], batch_size=2)] == [2, 2]
    assert read_data(tmp_path / "named.npz").labels.tolist() == [0, 1, 2, 3]
    lb = labelled_batches(d, [spec])
    assert lb.has_labels and lb.all_labels().tolist() == [0, 1, 2, 3] and lb.samples == 4
    lb = labelled_batches((x, np.arange(4)), [spec], batch_size=3)
    assert [len(lab) for lab in lb.labels] == [3, 1]
    with pytest.raises(ic.InputSpecError, match=r"unknown key\(s\) \['y'\], which the model does not take"):
        list(iter_batches([{"y": x}], [spec]))
    with pytest.raises(ic.InputSpecError, match=r"y\.npz: unknown key\(s\) \['y'\]"):
        load_feeds(_savez(tmp_path / "y.npz", y=x), [spec])
    with pytest.raises(ic.InputSpecError, match=r"data must be a \.npz or \.npy file or a directory"):
        read_data(_write(tmp_path / "x.csv", "1,2"))
    with pytest.raises(ic.InputSpecError, match="data not found"):
        read_data(tmp_path / "missing.npz")


def _savez(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- backend specs ------------------------------------------------------------------------------
def test_backend_specs_parse_one_way() -> None:
    got = parse_backends("ort, openvino:bfloat16")
    assert [c.label for c in got] == ["ort", "openvino:bf16"]
    assert [c.label for c in parse_backends(["ort", "openvino"], precisions=["fp32", "bf16"])] == [
        "ort:fp32", "ort:bf16", "openvino:fp32", "openvino:bf16",
    ]  # fmt: skip
    with pytest.raises(ic.UnknownBackendError, match="no backend named 'onnxx'"):
        parse_backends("onnxx")
    with pytest.raises(ic.ArgumentError, match=r"backends: expected one of fp32, fp16, bf16, int8.*'fp64'"):
        parse_backends("ort:fp64")
    with pytest.raises(ic.ArgumentError, match=r"backends: ort named twice"):
        parse_backends("ort,ort")
    with pytest.raises(ic.ArgumentError, match="at least one backend"):
        parse_backends(" , ")


def test_default_backends_are_every_installed_reader_best_first(tmp_path: Path) -> None:
    names = default_backends(tmp_path / "m.onnx")
    assert "reference" not in names  # the numpy oracle is used only when named
    want = [n for n, i in ic.available_backends().items() if i.available and ".onnx" in i.suffixes and i.priority >= 0]
    assert names == want
    with pytest.raises(ic.UnknownBackendError, match=r"no backend reads 'm\.xyz'"):
        default_backends(tmp_path / "m.xyz")


def test_model_inputs_reads_onnx_without_a_session(tmp_path: Path) -> None:
    from tests.onnx_models import mlp

    path, _ = mlp(tmp_path / "mlp.onnx")
    with ic.load(path) as eng:
        assert inputs.model_inputs(path) == eng.inputs
    (tmp_path / "junk.onnx").write_bytes(b"junk" * 10)
    with pytest.raises(ic.ModelLoadError, match="not a readable ONNX model"):
        inputs.model_inputs(tmp_path / "junk.onnx")


def test_signals_get_enough_samples_and_sample_rates_a_real_rate() -> None:
    """Speech models refused the 64 samples every tool fed them (Silero VAD's STFT pads 64 each
    side and wants 256 or 512 samples; openWakeWord's melspectrogram >= 512), and Silero branches
    on its 0-d ``sr``, which took a random integer below 100."""
    audio = TensorSpec("input", np.float32, (None, None), ("batch", "sequence"))
    state = TensorSpec("state", np.float32, (2, None, 128), (None, "batch", None))
    sr = TensorSpec("sr", np.int64, ())
    feeds, info = make_feeds([audio, sr, state])
    assert feeds["input"].shape == (1, 512) and "samples of a signal" in info["input"].source
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000 and "a sample rate" in info["sr"].source
    assert feeds["state"].shape == (2, 1, 128)
    unnamed = TensorSpec("x", np.float32, (None, None))  # melspectrogram: [?, ?]
    assert resolve_shapes([unnamed])[0]["x"] == (1, 512)
    assert resolve_shapes([unnamed], dynamic_size=1024)[0]["x"] == (1, 1024)  # never below the size asked
    assert resolve_shapes([audio], shapes={"sequence": 100})[0]["input"] == (1, 100)  # sized: as given
    assert resolve_shapes([IDS])[0]["input_ids"] == (1, 64)  # token ids are no signal
    assert resolve_shapes([TensorSpec("x", np.float32, (None, None, None))])[0]["x"] == (1, 64, 64)
    assert resolve_shapes([IMAGE])[0]["x"] == (1, 3, 64, 64)
    rate, info = make_feeds([TensorSpec("sample_rate", np.int32, (1,))])
    assert rate["sample_rate"].tolist() == [16000]
    _, info = make_feeds([TensorSpec("sr", np.int8, ())])  # 16000 does not fit: the 8-bit rule
    assert "a sample rate" not in info["sr"].source
    assert make_feeds([TensorSpec("srcs", np.int64, (3,))])[1]["srcs"].source == "generated: integers [0, 100)"


def test_a_dataset_is_cut_along_each_input_s_batch_axis() -> None:
    """Silero VAD's state is [2, batch, 128]: calibrate({"input": [8, 512], "state": [2, 8, 128]})
    failed with 'dataset arrays disagree on the number of samples: [2, 8]'."""
    audio = TensorSpec("input", np.float32, (None, None), ("batch", "sequence"))
    state = TensorSpec("state", np.float32, (2, None, 128), (None, "batch", None))
    sr = TensorSpec("sr", np.int64, ())
    x = np.arange(8 * 4, dtype=np.float32).reshape(8, 4)
    h = np.arange(2 * 8 * 128, dtype=np.float32).reshape(2, 8, 128)
    batches = list(iter_batches({"input": x, "state": h, "sr": 16000}, [audio, sr, state], batch_size=3))
    assert [b["input"].shape for b in batches] == [(3, 4), (3, 4), (2, 4)]
    assert [b["state"].shape for b in batches] == [(2, 3, 128), (2, 3, 128), (2, 2, 128)]
    np.testing.assert_array_equal(np.concatenate([b["state"] for b in batches], axis=1), h)
    assert all(b["state"].flags.c_contiguous and int(b["sr"]) == 16000 for b in batches)
    with pytest.raises(ic.InputSpecError, match=r"disagree on the number of samples: input 8 \(axis 0\), state 5"):
        list(iter_batches({"input": x, "state": h[:, :5], "sr": 16000}, [audio, sr, state]))
