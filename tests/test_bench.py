"""``ic.benchmark`` and ``infercore bench``: statistics, inputs, JSON schema, warnings, exit codes.

No timing assertions: the figures themselves are checked by ``benchmarks/bench_selfcheck.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import infercore as ic  # noqa: E402
from infercore.bench import (  # noqa: E402
    JSON_SCHEMA,
    SCHEMA_VERSION,
    BenchmarkReport,
    BenchmarkWarning,
    LatencyStats,
    MachineInfo,
    benchmark,
    parse_duration,
    validate_report,
)
from infercore.cli import main  # noqa: E402

FAST = {"warmup": 0.0, "iterations": 40, "progress": False}


@pytest.fixture(scope="module")
def add_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = x + 1 over float32 [batch, 4]: tiny, dynamic batch, runs on ort and the reference backend."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    one = helper.make_tensor("one", TensorProto.FLOAT, [4], [1.0] * 4)
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("bench") / "add.onnx"
    onnx.save(model, str(path))
    return path


def _backend() -> str:
    return (
        "ort"
        if ic.available_backends().get("ort", None) and ic.available_backends()["ort"].available
        else "reference"
    )


# -- statistics ---------------------------------------------------------------------------------
def test_latency_stats_match_numpy() -> None:
    rng = np.random.default_rng(1)
    ns = rng.integers(1_000_000, 9_000_000, size=997)
    s = LatencyStats.from_ns(ns)
    ms = ns / 1e6
    assert s.count == 997
    assert s.min_ms == pytest.approx(ms.min()) and s.max_ms == pytest.approx(ms.max())
    assert s.mean_ms == pytest.approx(ms.mean())
    for q, got in ((50, s.p50_ms), (90, s.p90_ms), (95, s.p95_ms), (99, s.p99_ms)):
        assert got == pytest.approx(np.percentile(ms, q))
    assert s.std_ms == pytest.approx(ms.std(ddof=1))
    assert s.cv == pytest.approx(ms.std(ddof=1) / ms.mean())


def test_latency_stats_single_sample_and_empty() -> None:
    s = LatencyStats.from_ns([2_500_000])
    assert (s.p50_ms, s.std_ms, s.cv) == (2.5, 0.0, 0.0)
    with pytest.raises(ValueError):
        LatencyStats.from_ns([])


def test_parse_duration() -> None:
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration("1.5") == 1.5
    with pytest.raises(ValueError):
        parse_duration("ten")


# -- the benchmark ------------------------------------------------------------------------------
def test_benchmark_report_json_schema_and_round_trip(add_model: Path, tmp_path: Path) -> None:
    with pytest.warns(BenchmarkWarning):
        report = benchmark(add_model, [_backend()], batch=[1, 3], **FAST)
    assert report.ok and len(report.results) == 2
    d = json.loads(report.to_json(tmp_path / "r.json"))
    assert d["schema_version"] == SCHEMA_VERSION
    assert validate_report(d) == []
    r = d["results"][1]
    assert r["batch"] == 3 and r["inputs"]["x"]["shape"] == [3, 4]
    assert r["latency_ms"]["count"] == 40 and r["iterations"] == 40
    assert r["throughput"]["items_per_s"] == pytest.approx(3 * r["throughput"]["inferences_per_s"])
    lat = r["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert d["machine"]["cores_logical"] >= 1 and d["machine"]["description"]
    back = BenchmarkReport.from_json(tmp_path / "r.json")
    assert back.to_dict() == report.to_dict()
    # the validator does catch a broken report
    broken = dict(d, results=[{**r, "latency_ms": {"p50": "fast"}}])
    problems = validate_report(broken)
    assert any("latency_ms" in p for p in problems)
    assert validate_report({"schema_version": 99}, JSON_SCHEMA)


def test_samples_in_json_only_when_asked(add_model: Path) -> None:
    with pytest.warns(BenchmarkWarning):
        report = benchmark(add_model, [_backend()], **FAST)
    assert "samples_ms" not in report.to_dict()["results"][0]
    samples = report.to_dict(samples=True)["results"][0]["samples_ms"]
    assert len(samples) == 40
    assert np.percentile(samples, 50) == pytest.approx(report.results[0].latency.p50_ms, abs=1e-5)


def test_overhead_is_measured_and_subtracted(add_model: Path) -> None:
    with pytest.warns(BenchmarkWarning):
        report = benchmark(add_model, [_backend()], **FAST)
    r = report.results[0]
    assert r.overhead is not None and r.overhead.iterations > 0
    assert 0 < r.overhead.latency_us < 50_000 and math.isfinite(r.overhead.iteration_us)
    assert r.latency is not None
    assert r.p50_net_ms == pytest.approx(max(r.latency.p50_ms - r.overhead.latency_us / 1e3, 0.0))
    assert r.peak_rss_mb is not None and r.peak_rss_mb > 0


def test_too_short_and_unwarmed_runs_warn(add_model: Path) -> None:
    with pytest.warns(BenchmarkWarning, match="too short") as caught:
        report = benchmark(add_model, [_backend()], warmup=0, iterations=5, progress=False)
    r = report.results[0]
    assert any("too short: 5 timed calls" in w for w in r.warnings)
    assert any("no warmup" in w for w in r.warnings)
    assert len(caught) >= 2


def test_noisy_run_warns(add_model: Path) -> None:
    with pytest.warns(BenchmarkWarning, match="noisy"):
        benchmark(add_model, [_backend()], warmup=0.01, iterations=40, cv_threshold=1e-9, progress=False)


def test_concurrency_splits_iterations_across_workers(add_model: Path) -> None:
    with pytest.warns(BenchmarkWarning):
        report = benchmark(
            add_model, [_backend()], concurrency=[1, 3], warmup=0.01, iterations=31, progress=False
        )
    one, three = report.results
    assert (one.concurrency, three.concurrency) == (1, 3)
    assert one.iterations == three.iterations == 31
    assert three.throughput is not None and three.throughput > 0


def test_run_path_and_engine_argument(add_model: Path) -> None:
    with ic.load(add_model, _backend()) as eng, pytest.warns(BenchmarkWarning):
        report = benchmark(eng, bound=False, **FAST)
        assert not eng.closed  # a given engine stays the caller's
    assert report.ok and report.results[0].bound is False


def test_a_failing_configuration_is_reported_not_raised(add_model: Path) -> None:
    with pytest.warns(BenchmarkWarning):
        report = benchmark(add_model, [_backend(), "litert"], **FAST)  # litert reads no .onnx: it fails
    good, bad = report.results
    assert good.ok and not bad.ok and bad.error
    with pytest.raises(ic.UnknownBackendError, match="no backend named 'no-such-backend'"):
        benchmark(add_model, [_backend(), "no-such-backend"], **FAST)  # a name that cannot be: refused at once
    assert not report.ok and report.errors
    assert validate_report(report.to_dict()) == []
    assert "failed" in report.table() and "| failed" in report.to_markdown()


def test_argument_errors(add_model: Path) -> None:
    with pytest.raises(ValueError, match="iterations"):
        benchmark(add_model, [_backend()], iterations=0)
    with pytest.raises(ValueError, match="batch"):
        benchmark(add_model, [_backend()], batch=0)
    with pytest.raises(ic.ModelLoadError):
        benchmark(add_model.with_name("missing.onnx"))


def test_plot_writes_a_png(add_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with pytest.warns(BenchmarkWarning):
        report = benchmark(add_model, [_backend()], batch=[1, 2], **FAST)
    out = report.plot(tmp_path / "bench.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_machine_info() -> None:
    m = MachineInfo.collect()
    assert m.cores_logical >= 1 and 1 <= m.cores_usable <= m.cores_logical
    assert m.cpu_model and m.python
    assert m.describe().startswith(m.cpu_model)


# -- the CLI --------------------------------------------------------------------------------------
def _cli(*args: str) -> int:
    return main(["bench", *args])


def test_cli_writes_json_and_exits_zero(
    add_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.json"
    code = _cli(
        str(add_model),
        "--backends",
        _backend(),
        "--batch",
        "1,2",
        "--iterations",
        "40",
        "--warmup",
        "10ms",
        "--no-progress",
        "-o",
        str(out),
    )
    assert code == 0
    d = json.loads(out.read_text())
    assert validate_report(d) == [] and [r["batch"] for r in d["results"]] == [1, 2]
    assert "p50" in capsys.readouterr().out


def test_cli_json_to_stdout(add_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _cli(
        str(add_model),
        "--backends",
        _backend(),
        "--iterations",
        "40",
        "--warmup",
        "10ms",
        "--no-progress",
        "--json",
    )
    captured = capsys.readouterr()
    assert code == 0
    assert validate_report(json.loads(captured.out)) == []  # the table went to stderr
    assert "p50" in captured.err
    assert _cli(str(add_model), "--backends", _backend(), "--iterations", "40", "--no-progress", "-o", "-") == 0
    assert validate_report(json.loads(capsys.readouterr().out)) == []  # -o -: the same JSON, to stdout


def test_cli_exit_codes(add_model: Path, tmp_path: Path) -> None:
    base = [str(add_model), "--iterations", "40", "--no-progress"]
    # the verdict: --strict and a warning (no warmup)
    assert _cli(*base, "--backends", _backend(), "--warmup", "0", "--strict") == 1
    # a configuration failed (litert reads no .onnx, or is not installed): an error
    assert _cli(*base, "--backends", f"{_backend()},litert") == 2
    assert _cli(*base, "--backends", f"{_backend()},no-such-backend") == 2  # a usage error, as documented
    assert _cli(*base, "--backends", f"{_backend()}:bf16,no-such:fp16") == 2
    assert _cli(*base, "--backends", _backend(), "--threads", "0") == 2
    assert _cli(str(tmp_path / "missing.onnx"), "--iterations", "5") == 2
    with pytest.raises(SystemExit) as e:
        _cli(*base, "--shape", "x")
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        _cli(*base, "--duration", "1s")  # --duration and --iterations exclude each other
    assert e.value.code == 2


def test_cli_real_inputs(add_model: Path, tmp_path: Path) -> None:
    x = np.ones((2, 4), np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "bad.npz", x=x.astype(np.int64))  # integers for a float input: a change of kind
    base = [
        str(add_model),
        "--backends",
        _backend(),
        "--iterations",
        "40",
        "--warmup",
        "10ms",
        "--no-progress",
    ]
    out = tmp_path / "o.json"
    assert _cli(*base, "--inputs", str(tmp_path / "x.npy"), "--batch", "3", "-o", str(out)) == 0
    r = json.loads(out.read_text())["results"][0]
    assert r["inputs"]["x"] == {"shape": [3, 4], "dtype": "float32", "source": "data file"}
    assert _cli(*base, "--inputs", str(tmp_path / "x.npz")) == 0
    assert _cli(*base, "--inputs", str(tmp_path / "bad.npz")) == 2


def test_cli_refuses_unknown_input_range_names_and_unreadable_inputs(
    add_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [str(add_model), "--backends", _backend(), "--iterations", "5", "--warmup", "0", "--no-progress"]
    assert _cli(*base, "--input-range", "foo=0:1") == 2  # was silently ignored
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "infercore bench: error: --input-range: 'foo' is not an input of the model; its inputs are: x"
    ]
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    for name in ("empty.npy", "empty.npz"):
        assert _cli(*base, "--inputs", str(tmp_path / name)) == 2  # was an EOFError traceback
        err = capsys.readouterr().err
        assert err.splitlines() == [
            f"infercore bench: error: {tmp_path / name} is empty (0 bytes); expected a .npy or .npz file"
        ]


def test_input_range_names_and_data_files_are_checked_up_front(add_model: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ic.ArgumentError, match="input_range: 'foo' is not an input of the model; its inputs are: x"
    ):
        benchmark(add_model, [_backend()], input_range={"x": (0.0, 1.0), "foo": (0.0, 1.0)}, **FAST)
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-4])
    with pytest.raises(ic.InputSpecError, match=r"cannot read .*cut\.npy"):
        benchmark(add_model, [_backend()], inputs=tmp_path / "cut.npy", **FAST)
    with pytest.warns(BenchmarkWarning):
        report = benchmark(add_model, [_backend()], input_range={"x": (5.0, 6.0)}, **FAST)
    assert report.ok and "[5, 6)" in report.results[0].inputs["x"]["source"]




@pytest.mark.slow
def test_default_backends_that_cannot_read_the_model_are_skipped(tmp_path: Path) -> None:
    """microWakeWord (stateful, resource variables) loads on LiteRT only: `infercore bench alexa.tflite`
    measured LiteRT and still exited 2 because OpenVINO, which nobody named, cannot read it."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("openvino")
    from infercore.testing import models

    try:
        path = models.micro_wakeword("alexa")
    except models.ModelUnavailable as e:
        pytest.skip(f"model not available offline: {e}")
    report = benchmark(path, **FAST)
    assert [r.backend for r in report.results] == ["litert"] and report.results[0].ok and not report.errors
    (skip,) = report.skipped
    assert skip.startswith("openvino: openvino could not read") and "RESOURCE" in skip
    assert BenchmarkReport.from_dict(json.loads(report.to_json())).skipped == (skip,)
    named = benchmark(path, ["litert", "openvino"], **FAST)  # named: its failure is an error
    assert named.skipped == () and [e.split(":")[0] for e in named.errors] == ["openvino b1 c1"]
    assert main(["bench", str(path), "--iterations", "5", "--warmup", "0", "--no-progress"]) == 0
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 8)
    with pytest.raises(ic.ModelLoadError, match=r"no installed backend can read garbage.tflite: litert: .*; openvino"):
        benchmark(garbage, **FAST)
