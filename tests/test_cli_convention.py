"""The CLI convention of docs/cli.md, checked on the installed ``infercore`` command in subprocesses.

One test per point of the convention: ``--json``; ``-o FILE`` (``-`` stdout) and output paths
checked before any work; ``-b/--backends``; help text and exit statuses (0 ok, 1 negative verdict,
2 error); missing extras refused up front; runtime log lines only with ``--debug``; errors that
name flags; progress lines off a terminal; bench and compare sizing dynamic dimensions alike;
serve warning about a repository with no servable model. Models are tiny ONNX graphs built here.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from infercore.cli.main import COMMANDS, build_parser
from tests import onnx_models as m

pytest.importorskip("onnxruntime")

INFERCORE = Path(sys.executable).with_name("infercore")  # the installed console script
ERROR_LINE = re.compile(r"^infercore \w+: error: .+$")


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    assert INFERCORE.exists(), f"{INFERCORE} is not installed: pip install -e ."
    return subprocess.run(
        [str(INFERCORE), *args], capture_output=True, timeout=timeout, cwd=cwd,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def cli_many(*commands: Sequence[str], env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess[bytes]]:
    """Several independent commands at once (each is a process start and an import)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda c: cli(*c, env=env), commands))


def err(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stderr.decode()


def out(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    mlp, w = m.mlp(d / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.save(d / "x.npy", x)
    np.savez(d / "weights.npz", **w)
    np.savez(d / "calib.npz", x=np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32))
    # y = x + 1 with a dynamic non-batch dimension "seq"
    m.save(d / "seq.onnx", [helper.make_node("Add", ["x", "one"], ["y"])],
           [m.vi("x", TensorProto.FLOAT, ["batch", "seq", 4])], [m.vi("y", TensorProto.FLOAT, ["batch", "seq", 4])],
           [numpy_helper.from_array(np.ones((1, 1, 4), np.float32), "one")])  # fmt: skip
    # a Reshape that fails at run time: ONNX Runtime logs an [E:onnxruntime:...] line of its own
    m.save(d / "reshape.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"])],
           [m.vi("x", TensorProto.FLOAT, ["batch", 6])], [m.vi("y", TensorProto.FLOAT, [4, 4])],
           [numpy_helper.from_array(np.array([4, 4], np.int64), "shape")])  # fmt: skip
    np.save(d / "x6.npy", np.ones((1, 6), np.float32))
    return {"dir": d, "mlp": mlp, "x": d / "x.npy", "calib": d / "calib.npz", "seq": d / "seq.onnx",
            "reshape": d / "reshape.onnx", "x6": d / "x6.npy", "weights": d / "weights.npz"}  # fmt: skip


def _mlp_reference(models: dict[str, Path]) -> dict[str, np.ndarray]:
    with np.load(models["weights"]) as z:
        w = dict(z)
    logits, probs = m.mlp_numpy(np.load(models["x"]), w)
    return {"logits": logits, "probs": probs}


# -- help text and exit statuses ----------------------------------------------------------------
def test_every_help_lists_the_exit_statuses_and_every_argument_has_help() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    top, compare = cli_many(["--help"], ["compare", "--help"])
    assert top.returncode == compare.returncode == 0
    helps = {name: sub[name].format_help() for name in COMMANDS}  # in-process: the same text
    assert "-b LIST, --backends LIST" in out(compare) and "-o FILE, --output FILE" in out(compare)
    for text in (out(top), out(compare), *helps.values()):
        assert "exit status:" in text and "\n  0  ok" in text and "\n  1  " in text, text
        assert "\n  2  error: a bad option" in text, text
    for name, verdict in (("compare", "a mismatch"), ("bench", "--strict"), ("quantize", "--max-drop")):
        assert re.search(rf"1  the command ran and its verdict is negative: .*{re.escape(verdict)}", helps[name])
    for name in ("backends", "inspect", "run", "serve"):
        assert "1  not used (no verdict)" in helps[name]
    # -b/--backends where several run, -b/--backend where one does: the same letter everywhere
    for name in ("compare", "bench"):
        assert "-b LIST, --backends LIST" in helps[name]
    for name in ("run", "inspect"):
        assert "-b NAME, --backend NAME" in helps[name]
    for name in ("run", "compare", "bench", "quantize"):
        assert "-o FILE, --output FILE" in helps[name]
    # every argument of every command has help text, and the help shows every flag
    for name, parser in sub.items():
        for action in parser._actions:
            if action.help == "==SUPPRESS==":  # hidden: an old spelling kept as an alias
                continue
            assert action.help, f"infercore {name}: {action.option_strings or action.dest} has no help"
            for flag in action.option_strings:
                assert flag in helps[name], (name, flag)


def test_exit_status_1_is_only_a_negative_verdict(models: dict[str, Path], tmp_path: Path) -> None:
    mlp = str(models["mlp"])
    mismatch, strict, drop = cli_many(
        # bf16 against fp32 tolerances: a real mismatch
        ["compare", mlp, "-b", "ort,openvino:bf16", "--tolerance", "fp32", "--plain"],
        ["bench", mlp, "-b", "ort", "--iterations", "20", "--warmup", "0", "--strict", "--no-progress"],
        ["quantize", mlp, "--data", str(models["calib"]), "--max-drop", "0", "--timing", "0", "--no-cache",
         "--json", "-o", str(tmp_path / "q.onnx")],
    )
    assert mismatch.returncode == 1 and "MISMATCH" in out(mismatch), err(mismatch)
    assert err(mismatch) == ""  # ONNX Runtime and OpenVINO (ONNX read, bf16 compiled) print nothing of their own
    assert strict.returncode == 1 and "--strict" in err(strict)
    report = json.loads(out(drop))  # --json: the report, on stdout, verdict or not
    assert drop.returncode == 1 and report["passed"] is False and report["drop"] > 0
    assert not (tmp_path / "q.onnx").exists()


def test_every_error_exits_2_in_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.onnx")
    procs = cli_many(
        ["inspect", missing],
        ["run", missing],
        ["compare", missing, "-b", "ort,reference"],
        ["bench", missing, "--iterations", "3"],
        ["quantize", missing, "--data", str(models["calib"])],
        ["serve", str(tmp_path / "no-repo"), "--http-port", "0", "--grpc-port", "off", "--metrics-port", "off"],
        ["run", str(models["reshape"]), "-i", f"x={models['x6']}"],  # the backend fails
        ["bench", str(models["mlp"]), "-b", "ort,litert", "--iterations", "3", "--warmup", "0", "--no-progress"],  # a config fails
        ["compare", str(models["mlp"]), "-b", "nosuch,ort"],  # usage: an unknown backend
        ["backends", "--nope"],  # argparse's own usage error
    )
    for proc in procs:
        assert proc.returncode == 2, (proc.args, err(proc))
        assert "Traceback" not in err(proc)
    for proc in procs[:-1]:  # argparse's own usage error prints the usage line too
        assert ERROR_LINE.match(err(proc).strip()), (proc.args, err(proc))
    assert "configuration(s) failed" in err(procs[7])


# -- --json ---------------------------------------------------------------------------------------
def test_json_on_every_command_that_reports(models: dict[str, Path]) -> None:
    """(quantize --json: in test_exit_status_1_is_only_a_negative_verdict.)"""
    mlp = str(models["mlp"])
    backends, inspect, run, compare, bench = cli_many(
        ["backends", "--json"],
        ["inspect", mlp, "--json"],
        ["run", mlp, "-i", f"x={models['x']}", "--json"],
        ["compare", mlp, "-b", "ort,reference", "--json"],
        ["bench", mlp, "-b", "ort", "--iterations", "20", "--warmup", "10ms", "--json", "--no-progress"],
    )
    for proc in (backends, inspect, run, compare, bench):
        assert proc.returncode == 0, (proc.args, err(proc))
    assert any(r["name"] == "ort" and r["available"] for r in json.loads(out(backends)))
    assert json.loads(out(inspect))["inputs"][0]["shape"] == [None, 8]
    assert json.loads(out(compare))["passed"] is True
    assert json.loads(out(bench))["results"][0]["backend"] == "ort" and "p50" in err(bench)  # table on stderr
    # run: names, dtypes, shapes and summary statistics of the outputs, against numpy
    doc = json.loads(out(run))
    assert doc["backend"] == "ort" and doc["latency_ms"] > 0
    want = _mlp_reference(models)
    assert [o["name"] for o in doc["outputs"]] == list(want)
    for o in doc["outputs"]:
        ref = want[o["name"]]
        assert o["dtype"] == "float32" and o["shape"] == list(ref.shape)
        for stat, value in (("min", ref.min()), ("max", ref.max()), ("mean", ref.mean())):
            assert o[stat] == pytest.approx(float(value), rel=1e-5, abs=1e-6), (o["name"], stat)


# -- -o FILE, -o -, and the path printed is the path written ------------------------------------------
def test_output_writes_the_path_given_and_dash_is_stdout(models: dict[str, Path], tmp_path: Path) -> None:
    mlp = str(models["mlp"])
    o = tmp_path / "new" / "dir"
    run_file, run_stdout, cmp_file, cmp_stdout, bench_file, quantize = cli_many(
        ["run", mlp, "-i", f"x={models['x']}", "-o", str(o / "outputs")],  # no suffix: none added
        ["run", mlp, "-i", f"x={models['x']}", "-o", "-"],
        ["compare", mlp, "-b", "ort,reference", "-o", str(o / "compare"), "--save-inputs", str(o / "inputs")],
        ["compare", mlp, "-b", "ort,reference", "-o", "-"],
        ["bench", mlp, "-b", "ort", "--iterations", "20", "--warmup", "0", "--no-progress", "-o", str(o / "bench"),
         "--plot", str(o / "plot")],
        ["quantize", mlp, "--data", str(models["calib"]), "--timing", "0", "--out", str(o / "q" / "m.int8.onnx")],
    )
    for proc in (run_file, run_stdout, cmp_file, cmp_stdout, bench_file, quantize):
        assert proc.returncode == 0, (proc.args, err(proc))
    want = _mlp_reference(models)
    with np.load(o / "outputs") as z:
        np.testing.assert_allclose(z["probs"], want["probs"], rtol=1e-5, atol=1e-6)
    assert f"wrote {o / 'outputs'}" in err(run_file).splitlines()
    with np.load(io.BytesIO(run_stdout.stdout)) as z:  # -o -: the .npz itself on stdout
        np.testing.assert_allclose(z["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    assert "latency:" in err(run_stdout)  # the text summary moved to stderr
    assert json.loads((o / "compare").read_text())["passed"] is True
    with np.load(o / "inputs") as z:
        assert z["x"].shape == (1, 8) and z["x"].dtype == np.float32
    assert json.loads(out(cmp_stdout))["schema"] == "infercore.compare/1"
    assert json.loads((o / "bench").read_text())["results"][0]["error"] is None
    assert (o / "plot").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {f"wrote {o / 'bench'}", f"wrote {o / 'plot'}"} <= set(err(bench_file).splitlines())
    # --out: the old spelling, kept as a hidden alias of -o/--output
    assert (o / "q" / "m.int8.onnx").stat().st_size > 0 and f"wrote {o / 'q' / 'm.int8.onnx'}" in err(quantize)


def test_output_paths_are_checked_before_any_work(models: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = str(blocker / "sub" / "out.json")  # a directory that cannot be created
    missing = str(tmp_path / "missing.onnx")  # had any work started, this would be the error
    procs = cli_many(
        ["run", missing, "-o", bad],
        ["compare", missing, "-o", bad],
        ["compare", missing, "--save-inputs", bad],
        ["bench", str(models["mlp"]), "-b", "ort", "--duration", "60s", "-o", bad],
        ["bench", str(models["mlp"]), "-b", "ort", "--duration", "60s", "--plot", bad],
        ["quantize", missing, "--data", str(models["calib"]), "-o", bad],
        ["run", missing, "-o", str(tmp_path)],  # a directory
        ["run", missing, "-o", "/proc/version"],  # a file nobody may write, root included
    )
    flags = ["--output", "--output", "--save-inputs", "--output", "--plot", "--output", "--output", "--output"]
    for proc, flag in zip(procs, flags, strict=True):
        assert proc.returncode == 2, (proc.args, err(proc))
        line = err(proc).strip()
        assert ERROR_LINE.match(line) and f"error: {flag} " in line, (proc.args, line)
        assert "missing.onnx" not in line.split(flag, 1)[0] and out(proc) == "", (proc.args, out(proc))
    assert "cannot create directory" in err(procs[0]) and "is a directory" in err(procs[6])
    assert "not writable" in err(procs[7])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # the checks left nothing behind


# -- missing extras ---------------------------------------------------------------------------------
@pytest.fixture
def hide(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import the modules named in $HIDE_MODULES."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import os, sys\nfor _n in filter(None, os.environ.get('HIDE_MODULES', '').split(',')):\n"
        "    sys.modules[_n] = None  # import _n: ImportError\n"
    )
    return {"PYTHONPATH": str(shim)}


def test_missing_extras_are_refused_before_any_work(models: dict[str, Path], tmp_path: Path, hide: dict[str, str]) -> None:
    repo = tmp_path / "repo"
    (repo / "mlp" / "1").mkdir(parents=True)
    (repo / "mlp" / "1" / "model.onnx").write_bytes(models["mlp"].read_bytes())
    mlp = str(models["mlp"])
    serve, plot, nncf, openvino, shown = (
        cli("serve", str(repo), "--http-port", "0", "--grpc-port", "off", "--metrics-port", "off",
            env={**hide, "HIDE_MODULES": "orjson"}, timeout=30),
        cli("bench", mlp, "-b", "ort", "--duration", "60s", "--plot", str(tmp_path / "p.png"),
            env={**hide, "HIDE_MODULES": "matplotlib"}),
        cli("quantize", mlp, "--data", str(models["calib"]), "--target", "openvino",
            env={**hide, "HIDE_MODULES": "nncf"}),
        cli("compare", mlp, "-b", "ort,openvino", env={**hide, "HIDE_MODULES": "openvino"}),
        cli("backends", "--json", env={**hide, "HIDE_MODULES": "openvino"}),
    )  # fmt: skip
    # the shim hides a module the way an absent package is absent
    ov = next(r for r in json.loads(out(shown)) if r["name"] == "openvino")
    assert not ov["available"] and 'pip install "infercore[openvino]"' in ov["reason"]
    for proc, extra in ((serve, "serve"), (plot, "bench"), (nncf, "quantize"), (openvino, "openvino")):
        line = err(proc).strip()
        assert proc.returncode == 2 and ERROR_LINE.match(line), (proc.args, line)
        assert f'pip install "infercore[{extra}]"' in line, line
        assert out(proc) == "", out(proc)  # nothing ran: no table, no report
    assert "orjson" in err(serve) and "--plot needs matplotlib" in err(plot) and "nncf" in err(nncf)
    assert "--backends openvino" in err(openvino)


# -- runtime log lines ---------------------------------------------------------------------------------
def test_onnxruntime_log_lines_only_with_debug(models: dict[str, Path]) -> None:
    failing = [str(models["reshape"]), "-i", f"x={models['x6']}"]
    run, compare, run_debug = cli_many(
        ["run", *failing], ["compare", *failing, "-b", "ort,reference"], ["run", *failing, "--debug"]
    )
    for proc in (run, compare):
        assert proc.returncode == 2 and "cannot be reshaped" in err(proc)  # ORT's message, in our error
        assert ERROR_LINE.match(err(proc).strip()) and "[E:onnxruntime" not in err(proc), err(proc)
    assert run_debug.returncode == 2 and "[E:onnxruntime" in err(run_debug)  # the line the test hides


def test_litert_and_openvino_print_nothing_of_their_own() -> None:
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("openvino")
    from infercore.testing import models

    hand = str(models.mediapipe("hand_landmark_lite"))  # a real .tflite: LiteRT applies XNNPACK
    quiet, debug = cli_many(["compare", hand, "-b", "litert,openvino", "--json"],
                            ["compare", hand, "-b", "litert,openvino", "--json", "--debug"])  # fmt: skip
    assert quiet.returncode == 0 and json.loads(out(quiet))["passed"] is True
    assert err(quiet) == ""  # nothing at all from either runtime
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" in err(debug)


def test_nncf_chatter_stays_off_stdout_and_the_console(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    proc = cli(
        "quantize", str(models["mlp"]), "--data", str(models["calib"]), "--target", "openvino", "--timing", "0",
        "--no-cache", "--json", "-o", str(tmp_path / "q.xml"), env={"INFERCORE_PROGRESS_INTERVAL": "0.2"},
    )  # fmt: skip
    assert proc.returncode == 0, err(proc)
    assert json.loads(out(proc))["target"] == "openvino"  # stdout is the JSON alone
    assert "Statistics collection" not in err(proc) and "INFO:nncf" not in err(proc)
    lines = err(proc).splitlines()
    assert lines[-1] == f"wrote {tmp_path / 'q.xml'}"
    # what is left on stderr is infercore's own progress (a line every 0.2 s off a terminal)
    assert all(re.match(r"calibrating \(nncf\)  \d+/\d+  elapsed \d\d:\d\d  ETA ", x) for x in lines[:-1]), lines


# -- errors name flags ----------------------------------------------------------------------------
ARGUMENT_ERRORS = [
    (["run", "{mlp}", "-i", "{x}", "--threads", "0"], "--threads: expected a positive integer"),
    (["run", "{mlp}", "-i", "{x}", "--precision", "fp7"], "--precision: expected one of"),
    (["run", "{mlp}", "-i", "z={xfile}"], "--input names 'z'"),
    (["inspect", "{mlp}", "-b", "nope"], "no backend named 'nope'"),
    (["compare", "{mlp}", "-b", "ort,reference", "--threads", "0"], "--threads: expected a positive integer"),
    (["compare", "{mlp}", "-b", "ort,reference", "-s", "nope=3"], "--shape: 'nope' is neither an input"),
    (["compare", "{mlp}", "-b", "ort,reference", "-i", "nope=3"], "--input names 'nope'"),
    (["compare", "{mlp}", "-b", "ort,ort"], "--backends: ort named twice"),
    (["bench", "{mlp}", "-b", "ort", "--iterations", "3", "--threads", "0"], "--threads: expected a positive"),
    (["bench", "{mlp}", "-b", "ort", "--iterations", "3", "--cv-threshold", "0"], "--cv-threshold: expected"),
    (["bench", "{mlp}", "-b", "ort", "--iterations", "3", "--input-range", "nope=0:1"], "--input-range: 'nope'"),
    (["bench", "{mlp}", "-b", "ort", "--iterations", "3", "-s", "nope=3"], "--shape: 'nope' is neither"),
    (["quantize", "{mlp}", "--data", "{calib}", "--max-drop", "-1"], "--max-drop: expected a finite number"),
    (["quantize", "{mlp}", "--data", "{calib}", "--batch-size", "0"], "--batch-size: expected a positive integer"),
    (["quantize", "{mlp}", "--data", "{calib}", "--timing", "-1"], "--timing: expected a finite number"),
    (["quantize", "{mlp}", "--data", "{calib}", "-o", "m.xml"], "--output: for target 'ort' it must end in .onnx"),
    (["quantize", "{mlp}", "--data", "{calib}", "--include-ops", "Nope"], "--include-ops: ['Nope'] not in mlp.onnx"),
    (["quantize", "{mlp}", "--data", "{calib}", "--timing", "0", "--output-name", "nope"], "--output-name: 'nope'"),
    (["quantize", "{mlp}"], "--data is required"),
    (["serve", ".", "--http-port", "99999"], "argument --http-port: not a port"),
]
PARAMETER_FIRST = re.compile(r"error: [a-z][a-z0-9_]*: ")  # "threads: ...": a Python name where a flag belongs


def _argument_error_cases(models: dict[str, Path]) -> list[tuple[list[str], str]]:
    names = {"mlp": str(models["mlp"]), "x": f"x={models['x']}", "xfile": str(models["x"]), "calib": str(models["calib"])}
    return [([a.format(**names) for a in args], expect) for args, expect in ARGUMENT_ERRORS]


def test_argument_errors_name_flags_not_parameters(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Every case in-process; one per command through the installed command."""
    from infercore.cli import main

    cases = _argument_error_cases(models)
    for args, expect in cases:
        try:
            code = main(args)
        except SystemExit as e:  # argparse's own errors
            code = int(e.code or 0)
        text = capsys.readouterr().err
        assert code == 2 and expect in text, (args, text)
        assert not PARAMETER_FIRST.search(text), (args, text)
    firsts = [next(c for c in cases if c[0][0] == name) for name in ("run", "inspect", "compare", "bench", "quantize", "serve")]
    for (args, expect), proc in zip(firsts, cli_many(*(a for a, _ in firsts)), strict=True):
        text = err(proc)
        assert proc.returncode == 2 and expect in text and not PARAMETER_FIRST.search(text), (args, text)


# -- progress ------------------------------------------------------------------------------------------
def test_a_long_bench_off_a_terminal_prints_periodic_progress_lines(models: dict[str, Path]) -> None:
    proc = cli("bench", str(models["mlp"]), "-b", "ort", "--duration", "1.5s", "--warmup", "0.1s",
               env={"INFERCORE_PROGRESS_INTERVAL": "0.25"})  # fmt: skip
    assert proc.returncode == 0, err(proc)
    lines = [x for x in err(proc).splitlines() if "elapsed" in x]
    assert len(lines) >= 2, err(proc)  # stderr is a pipe here: plain lines, no \r redraws
    for line in lines:  # an ETA from the first line: --duration says how long a configuration takes
        assert re.search(r"\d+/1  elapsed \d\d:\d\d  ETA \d\d:\d\d$", line), line
    assert "\r" not in err(proc)


# -- dynamic dimensions: bench and compare agree ------------------------------------------------------
def test_bench_and_compare_size_dynamic_dimensions_alike(
    models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    seq = str(models["seq"])
    bench = ["bench", seq, "-b", "ort", "--iterations", "5", "--warmup", "0", "--json", "--no-progress"]
    compare = ["compare", seq, "-b", "ort,reference", "--json"]
    benched, compared = cli_many(bench, compare)  # unsized: batch 1, another dimension 64
    assert benched.returncode == compared.returncode == 0, (err(benched), err(compared))
    assert json.loads(out(benched))["results"][0]["inputs"]["x"]["shape"] == [1, 64, 4]
    assert json.loads(out(compared))["inputs"][0]["shape"] == [1, 64, 4]
    from infercore.cli import main

    for flags, want in ((["-s", "seq=7"], [1, 7, 4]), (["--shape", "x=2x5x4"], [2, 5, 4]), (["-s", "batch=3"], [3, 64, 4])):
        assert main([*bench, *flags]) == 0
        got_bench = json.loads(capsys.readouterr().out)["results"][0]["inputs"]["x"]["shape"]
        assert main([*compare, *flags]) == 0
        got_compare = json.loads(capsys.readouterr().out)["inputs"][0]["shape"]
        assert got_bench == got_compare == want, (flags, got_bench, got_compare)


# -- serve: a repository with no servable model ------------------------------------------------------
def _serve_warning(repo: Path) -> tuple[str, int]:
    """Start ``infercore serve REPO``, read its log until the warning, stop it with SIGTERM."""
    proc = subprocess.Popen(
        [str(INFERCORE), "serve", str(repo), "--http-port", "0", "--grpc-port", "off", "--metrics-port", "off"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    try:
        for line in proc.stderr:
            lines.append(line)
            if '"server started"' in line or time.monotonic() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    warnings = [json.loads(x)["msg"] for x in lines if x.startswith("{") and json.loads(x)["level"] == "warning"]
    return " | ".join(warnings), code


def test_serve_warns_when_the_repository_holds_no_servable_model(tmp_path: Path, models: dict[str, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = tmp_path / "wrong"
    (wrong / "a").mkdir(parents=True)
    (wrong / "model.onnx").write_bytes(models["mlp"].read_bytes())  # at the top
    (wrong / "a" / "model.onnx").write_bytes(models["mlp"].read_bytes())  # no version directory
    (wrong / "b" / "v1").mkdir(parents=True)  # a version that is not a number
    (wrong / "c" / "1").mkdir(parents=True)
    (wrong / "c" / "1" / "model.pt").write_bytes(b"x")  # a suffix no backend reads
    with ThreadPoolExecutor(2) as pool:
        (w_empty, c_empty), (w_wrong, c_wrong) = pool.map(_serve_warning, (empty, wrong))
    layout = "<model>/<version>/model.<suffix>"
    assert c_empty == 0 and c_wrong == 0  # the server still starts, and drains on SIGTERM
    assert f"no servable model in {empty}: it is empty; expected {empty}/{layout}" in w_empty, w_empty
    assert f"expected {wrong}/{layout}" in w_wrong, w_wrong
    for found in ("model.onnx: a file at the top", "a/model.onnx: a file outside a version directory",
                  "b/v1/: not a version directory", "c/1: no registered backend reads model.pt"):  # fmt: skip
        assert found in w_wrong, (found, w_wrong)
