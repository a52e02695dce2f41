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
    assert facts["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": [None, 8], "dim_names": ["batch", None]}
    ]
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


def test_a_lone_unnamed_npz_array_feeds_a_single_input_model_everywhere(tmp_path, capsys):
    """``np.savez(path, x)`` stores ``arr_0``: run, compare and bench take it as the one input."""
    path, w = m.mlp(tmp_path / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    np.savez(tmp_path / "arr0.npz", x)
    out_file = tmp_path / "out.npz"
    assert main(["run", str(path), "--input", str(tmp_path / "arr0.npz"), "--output", str(out_file)]) == 0
    with np.load(out_file) as z:
        np.testing.assert_allclose(z["probs"], m.mlp_numpy(x, w)[1], rtol=1e-5, atol=1e-6)
    assert main(["compare", str(path), "-b", "ort,reference", "--inputs", str(tmp_path / "arr0.npz")]) == 0
    assert main(["bench", str(path), "--backends", "ort", "--inputs", str(tmp_path / "arr0.npz"),
                 "--iterations", "3", "--warmup", "1"]) == 0  # fmt: skip
    capsys.readouterr()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infercore.cli", *args], capture_output=True, text=True)


def test_errors_are_one_line_without_traceback(tmp_path):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "x64.npy", np.ones((1, 8)))
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "x.npy", np.ones((1, 8), np.float32))
    np.save(tmp_path / "cut.npy", np.ones((64, 8), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:200])  # truncated
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "feeds.npz", x=np.ones((1, 8), np.float32))
    for args, code, expect in (
        (["inspect", str(tmp_path / "missing.onnx")], 2, "model file not found"),
        (
            ["run", str(path), "--input", f"x={tmp_path / 'x64.npy'}"],
            2,
            "expected dtype float32, got float64",
        ),
        (["run", str(path), "--input", "x=nope.npy"], 2, "nope.npy: file not found"),
        (
            ["run", str(path), "--input", f"x={tmp_path / 'empty.npy'}"],
            2,
            "input 'x': " + str(tmp_path / "empty.npy") + " is empty (0 bytes)",
        ),
        (
            ["run", str(path), "--input", f"x={tmp_path / 'cut.npy'}"],
            2,
            "cannot read " + str(tmp_path / "cut.npy"),
        ),
        (
            ["run", str(path), "--input", str(tmp_path / "empty.npz")],
            2,
            str(tmp_path / "empty.npz") + " is empty",
        ),
        (
            ["run", str(path), "--input", str(tmp_path / "junk.npz")],
            2,
            "cannot read " + str(tmp_path / "junk.npz"),
        ),
        (
            ["run", str(path), "--input", f"x={tmp_path / 'feeds.npz'}"],
            2,
            "expected one array (.npy), the file holds x",
        ),
        (["run", str(path), "--input", str(tmp_path / "x.npy")], 2, "expected NAME=FILE.npy or a FILE.npz"),
        (["inspect", str(path), "--backend", "nope"], 2, "no backend named 'nope'"),
        (
            ["run", str(path), "--backend", "nope", "--input", f"x={tmp_path / 'x.npy'}"],
            2,
            "no backend named 'nope'",
        ),
        (["run", str(path), "--threads", "two"], 2, "argument --threads: invalid int value: 'two'"),
    ):
        proc = _cli(*args)
        assert proc.returncode == code, (args, proc)
        assert expect in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        if "invalid int value" not in expect:  # argparse's own usage errors print the usage line too
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_output_into_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    """`infercore inspect m.onnx | head -1`: the reader leaving is not a failure of the command."""
    import infercore.cli.inspect as inspect_cmd

    def write_to_closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(inspect_cmd, "run", write_to_closed_pipe)
    monkeypatch.setattr("os.dup2", lambda *a: None)  # keep pytest's own stdout
    assert main(["inspect", "model.onnx"]) == 0
    assert capsys.readouterr().err == ""


def test_debug_shows_traceback(tmp_path):
    for args in (
        ["--debug", "inspect", str(tmp_path / "x.onnx")],
        ["inspect", str(tmp_path / "x.onnx"), "--debug"],
    ):
        proc = _cli(*args)
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr, args


def test_an_unexpected_exception_is_one_line_and_exits_2(
    tmp_path, monkeypatch, capsys
):
    """A bug or an untranslated error still gives one line, and --debug its traceback."""
    import infercore.cli.compare as compare_cmd
    import infercore.cli.inspect as inspect_cmd

    def boom(*args, **kwargs):
        raise TypeError("'numpy.ndarray' object does\nnot support it")

    monkeypatch.setattr(inspect_cmd, "run", boom)
    assert main(["inspect", "model.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "infercore inspect: unexpected error: TypeError: 'numpy.ndarray' object does not support it "
        "(run with --debug for the traceback)"
    ]
    assert main(["--debug", "inspect", "model.onnx"]) == 2  # --debug adds the traceback, not another status
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError" in err
    monkeypatch.setattr(compare_cmd, "_compare", boom)
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    assert main(["compare", str(path), "-b", "reference,ort"]) == 2  # compare: 1 only ever means a mismatch
    assert "unexpected error: TypeError" in capsys.readouterr().err


def test_run_prints_the_measured_latency(tmp_path, capsys):
    """One ``run`` is one call: the engine samples every 8th, so the command times it itself."""
    import re
    import time

    path, _ = m.mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 8), np.float32))
    t0 = time.perf_counter()
    assert main(["run", str(path), "--input", f"x={tmp_path / 'x.npy'}"]) == 0
    wall_ms = (time.perf_counter() - t0) * 1e3
    line = capsys.readouterr().out.strip().splitlines()[-1]
    got = re.fullmatch(r"latency: (\d+\.\d{3}) ms \(ort, one call, the first after loading\)", line)
    assert got, line
    assert 0 < float(got.group(1)) < wall_ms


def test_engine_stats_have_no_percentiles_until_a_call_is_timed(tmp_path):
    import infercore as ic

    path, _ = m.mlp(tmp_path / "mlp.onnx")
    x = np.ones((1, 8), np.float32)
    with ic.load(path, backend="ort") as eng:
        for _ in range(7):  # calls 1..7: none sampled
            eng.run(x)
        s = eng.stats
        assert s.runs == 7 and s.window == 0
        assert (s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms) == (None,) * 5  # not 0.0 ms
        eng.run(x)  # the 8th is timed
        s = eng.stats
        assert s.window == 1 and s.p50_ms is not None and s.p50_ms > 0 and s.p50_ms == s.max_ms


def test_unknown_input_or_dimension_names_are_usage_errors(tmp_path, capsys):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    np.save(tmp_path / "x.npy", np.ones((2, 8), np.float32))
    assert main(["run", str(path), "--input", f"z={tmp_path / 'x.npy'}"]) == 2
    assert "--input names 'z', which the model does not take; its inputs are x" in capsys.readouterr().err
    assert main(["bench", str(path), "--backends", "ort", "--shape", "nope=1x3", "--iterations", "3"]) == 2
    assert "neither an input nor a dimension" in capsys.readouterr().err
    assert main(["bench", str(path), "--backends", "ort", "--shape", "batch=2", "--iterations", "3",
                 "--warmup", "1"]) == 0  # fmt: skip


def test_quantize_without_data_is_a_usage_error(tmp_path, capsys):
    path, _ = m.mlp(tmp_path / "mlp.onnx")
    assert main(["quantize", str(path)]) == 2
    assert "--data is required" in capsys.readouterr().err


def _scale(path):
    """y = x * k: x float32 [batch, 4], k a 0-d float32."""
    from onnx import TensorProto, helper

    return m.save(path, [helper.make_node("Mul", ["x", "k"], ["y"])],
                  [m.vi("x", TensorProto.FLOAT, ["batch", 4]), m.vi("k", TensorProto.FLOAT, [])],
                  [m.vi("y", TensorProto.FLOAT, ["batch", 4])])  # fmt: skip


def test_run_takes_numbers_and_names_the_flag_for_missing_inputs(tmp_path, capsys):
    """compare took -i sr=16000 but run read it as a file name ('16000: file not found'), and a
    missing input was refused without the flag that gives it."""
    path = _scale(tmp_path / "scale.onnx")
    np.save(tmp_path / "x.npy", np.arange(8, dtype=np.float32).reshape(2, 4))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "missing input(s) 'x', 'k': give each with -i NAME=FILE.npy" in err and "-i FILE.npz" in err
    out = tmp_path / "out.npz"
    assert main(["run", str(path), "-i", f"x={tmp_path / 'x.npy'}", "-i", "k=3", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["y"], np.arange(8, dtype=np.float32).reshape(2, 4) * 3)
    assert main(["run", str(path), "-i", "x=2", "-i", "k=0.5", "-o", str(out)]) == 0  # x: batch 1, filled
    np.testing.assert_array_equal(np.load(out)["y"], np.ones((1, 4), np.float32))
    capsys.readouterr()
    assert main(["run", str(path), "-i", "x=2", "-i", "k=1e39"]) == 2  # overflows float32: refused, named
    assert "input 'k'" in capsys.readouterr().err


def test_bench_takes_input_values_like_compare(tmp_path, capsys):
    """bench had no -i: a 0-d sample rate could only be set with --input-range sr=16000:16001."""
    path = _scale(tmp_path / "scale.onnx")
    args = ["bench", str(path), "-b", "ort", "--iterations", "3", "--warmup", "0", "--json"]
    assert main([*args, "-i", "k=2.5"]) == 0
    inputs = json.loads(capsys.readouterr().out)["results"][0]["inputs"]
    assert inputs["k"]["source"].startswith("given") and inputs["x"]["source"].startswith("generated")
    assert main([*args, "-i", "nope=1"]) == 2
    assert "--input names 'nope', which the model does not take" in capsys.readouterr().err
