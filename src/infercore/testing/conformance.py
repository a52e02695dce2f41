"""The backend conformance kit: one set of checks every backend must pass.

The kit is a pytest class. Subclass it in your own test module and give it a ``target`` fixture
that says which backend to test and how to make models in that backend's format::

    import pytest
    from infercore.testing.conformance import BackendConformance, BackendUnderTest

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def target(self) -> BackendUnderTest:
            return BackendUnderTest("mybackend", model_format="onnx", unsupported_dtypes=("bool",))

The checks build tiny models (``ModelCase``: a two-input MLP with two outputs, a 0-d scale input,
a transpose per dtype) as ONNX with ``onnx.helper`` or as ``.tflite`` written straight from the
TFLite flatbuffer schema, or through the target's own ``model_factory`` for any other format.
Every result is checked against numpy (an oracle that shares no code with any runtime) and,
where the target names one, against the raw runtime running the same file.

What is checked: specs (names, dtypes, shapes as declared), dtypes (float32, float16, int32,
int64, int8, uint8, bool; a dtype the target declares unsupported must fail loudly or work, never
return wrong data), dynamic shapes (several batch sizes on one engine), what ``run()`` returns
(arrays the caller owns, never views of buffers the next run overwrites; exactly the ``outputs``
asked for, in that order), error paths (missing and extra inputs, wrong dtype, rank and fixed
dimension, a garbage file with the target's suffix, closed engine, non-contiguous and read-only
arrays on ``bind``), bound and unbound results identical, caller-given bound arrays read and
written in place at every run, thread safety of ``run()`` (4 threads x 50 runs, each checking its
own result against numpy), and close semantics (idempotent, context manager, bound I/O stops
working).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import infercore as ic
from infercore.errors import EngineClosedError, InfercoreError, InputSpecError, ModelLoadError
from infercore.specs import TensorSpec

from .cases import (
    BUILDERS,
    CASES,
    DTYPES,
    ModelCase,
    build_onnx,
    build_tflite,
    mlp_case,
    scale_case,
    transpose_case,
)

__all__ = [
    "CASES",
    "DTYPES",
    "BackendConformance",
    "BackendUnderTest",
    "ModelCase",
    "RawRunner",
    "build_onnx",
    "build_tflite",
    "builtin_target",
    "mlp_case",
    "raw_runner",
    "scale_case",
    "transpose_case",
]

Feeds = Mapping[str, np.ndarray]
RawRunner = Callable[[Feeds], dict[str, np.ndarray]]
"""The raw runtime running a model file: feeds -> outputs in the model's output order."""

# -- raw runtimes, for "same answer as the runtime itself" -------------------------------------
def _raw(backend: str) -> Callable[[Path], RawRunner]:
    """The backend module's own ``raw_session`` (the runtime's API, nothing of infercore between)."""

    def open_raw(path: Path) -> RawRunner:
        module = importlib.import_module(f"infercore.backends.{_MODULES[backend]}")
        session = module.raw_session(path)
        lock = threading.Lock()  # a raw session is not promised to be thread-safe

        def run(feeds: Feeds) -> dict[str, np.ndarray]:
            with lock:
                return dict(session.run(feeds))

        return run

    return open_raw


_MODULES = {"ort": "ort", "openvino": "ov", "litert": "litert"}
_RAW: dict[str, Callable[[Path], RawRunner]] = {name: _raw(name) for name in _MODULES}


def raw_runner(backend: str) -> Callable[[Path], RawRunner] | None:
    """The raw-runtime runner the kit uses for a built-in backend (None for ``reference``)."""
    return _RAW.get(backend)


# -- what is under test -------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendUnderTest:
    """A backend and how the kit gets models for it.

    ``model_format``: ``"onnx"`` or ``"tflite"`` (built by the kit), or give ``model_factory``
    ``(case, directory) -> path`` for any other format (it may raise ``NotImplementedError`` for
    a case its format cannot express: that check is skipped). ``unsupported_dtypes``: dtypes the
    backend does not run; for these the kit only requires a clear ``InfercoreError`` or a correct
    result, never wrong data. ``raw``: opens a file on the raw runtime for the "same answer as the
    runtime itself" checks. ``real_models``: callables returning real model paths to compare with
    the raw runtime. ``load_kwargs`` go to ``ic.load`` (device, precision, threads, options).
    """

    backend: str
    model_format: str = "onnx"
    model_factory: Callable[[ModelCase, Path], Path] | None = None
    unsupported_dtypes: Iterable[str | np.dtype] = ()
    dynamic_shapes: bool = True
    raw: Callable[[Path], RawRunner] | None = None
    real_models: tuple[Callable[[], Path], ...] = ()
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    def build(self, case: ModelCase, directory: Path) -> Path:
        factory = self.model_factory or BUILDERS.get(self.model_format)
        if factory is None:
            raise ValueError(f"model_format must be one of {sorted(BUILDERS)} or give a model_factory")
        try:
            return factory(case, directory)
        except NotImplementedError as e:
            pytest.skip(f"{self.label}: the model factory cannot express {case.key}: {e}")

    def load(self, path: Path, **kwargs: Any) -> ic.Engine:
        return ic.load(path, self.backend, **{**self.load_kwargs, **kwargs})

    def supports(self, dtype: np.dtype) -> bool:
        return np.dtype(dtype) not in {np.dtype(d) for d in self.unsupported_dtypes}

    @property
    def label(self) -> str:
        return self.id or self.backend


_BUILTIN_RUNTIMES = {
    "ort": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
    "reference": "onnx",
}


def builtin_target(name: str) -> BackendUnderTest:
    """The kit's settings for a built-in backend: ``ort``, ``openvino``, ``openvino-tflite``
    (OpenVINO reading ``.tflite`` files), ``litert`` or ``reference``.

    Skips (with the reason) only when the backend's runtime package is not installed; a runtime
    that is installed but that infercore cannot use is a failure, not a skip.
    """
    from infercore.testing import models

    backend = name.split("-")[0]
    module = _BUILTIN_RUNTIMES[backend]
    if backend == "litert":
        try:
            __import__("ai_edge_litert")
        except ImportError:
            pytest.importorskip(
                "tflite_runtime", reason="neither ai-edge-litert nor tflite-runtime is installed"
            )
    else:
        pytest.importorskip(module, reason=f"{module} is not installed")
    info = ic.available_backends()[backend]
    assert info.available, (
        f"{backend}: the runtime is installed but the backend is unavailable: {info.reason}"
    )
    # real models: an image classifier or landmark model, and a speech model (a [batch, samples]
    # signal: Silero VAD with its 0-d sample rate, openWakeWord's melspectrogram)
    silero = lambda: models.silero_vad("ifless")  # noqa: E731
    melspectrogram = lambda: models.open_wakeword("melspectrogram")  # noqa: E731
    if name == "ort":
        return BackendUnderTest("ort", raw=_RAW["ort"], real_models=(models.ppocr_cls, silero))
    if name == "openvino":
        return BackendUnderTest("openvino", raw=_RAW["openvino"], real_models=(models.ppocr_cls, silero))
    if name == "openvino-tflite":
        return BackendUnderTest(
            "openvino",
            model_format="tflite",
            raw=_RAW["openvino"],
            id=name,
            real_models=(lambda: models.mediapipe("hand_landmark_lite"), melspectrogram),
        )
    if name == "litert":
        return BackendUnderTest(
            "litert",
            model_format="tflite",
            raw=_RAW["litert"],
            real_models=(lambda: models.mediapipe("hand_landmark_lite"), melspectrogram),
        )
    if name == "reference":
        return BackendUnderTest("reference")
    raise ValueError(f"no built-in target {name!r}")


# -- the checks ---------------------------------------------------------------------------------
def _assert_close(
    got: Mapping[str, np.ndarray],
    want: Mapping[str, np.ndarray],
    what: str,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    assert list(got) == list(want), f"{what}: outputs {list(got)}, expected {list(want)}"
    for name, w in want.items():
        g = got[name]
        assert isinstance(g, np.ndarray), f"{what}: output {name!r} is a {type(g).__name__}, not an ndarray"
        assert g.dtype == w.dtype, f"{what}: output {name!r} dtype {g.dtype}, expected {w.dtype}"
        assert g.shape == w.shape, f"{what}: output {name!r} shape {g.shape}, expected {w.shape}"
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what}: output {name!r}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what}: output {name!r}")


def _error_names(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    for needle in needles:
        assert needle in text, f"error message should name {needle!r}: {text}"


class BackendConformance:
    """The conformance checks. Subclass as ``TestSomething`` and override the ``target`` fixture."""

    @pytest.fixture
    def target(self) -> BackendUnderTest:
        raise NotImplementedError("override the `target` fixture to return a BackendUnderTest")

    @pytest.fixture
    def mlp(self, target: BackendUnderTest, tmp_path: Path) -> tuple[ModelCase, Path]:
        case = mlp_case()
        return case, target.build(case, tmp_path)

    @pytest.fixture
    def engine(self, target: BackendUnderTest, mlp: tuple[ModelCase, Path]) -> Iterable[ic.Engine]:
        eng = target.load(mlp[1])
        yield eng
        eng.close()

    # -- specs ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("kind", ["mlp", "scale", "transpose"])
    def test_specs_match_the_model(self, target: BackendUnderTest, tmp_path: Path, kind: str) -> None:
        case = transpose_case("float32") if kind == "transpose" else CASES[kind]()
        with target.load(target.build(case, tmp_path)) as eng:
            for role, got, want in (
                ("input", eng.inputs, case.inputs),
                ("output", eng.outputs, case.outputs),
            ):
                assert [s.name for s in got] == [s.name for s in want], f"{role} names"
                for g, w in zip(got, want, strict=True):
                    assert isinstance(g, TensorSpec)
                    assert g.dtype == w.dtype, f"{role} {w.name!r}: dtype {g.dtype}, model declares {w.dtype}"
                    assert g.rank == w.rank, f"{role} {w.name!r}: shape {g.shape}, model declares {w.shape}"
                    for i, (gd, wd) in enumerate(zip(g.shape, w.shape, strict=True)):
                        if wd is not None:
                            assert gd == wd, f"{role} {w.name!r} dim {i}: {gd}, model declares {wd}"
                        elif role == "input" and target.dynamic_shapes:
                            assert gd is None, f"input {w.name!r} dim {i} is dynamic in the model, got {gd}"
            assert eng.backend_name == target.backend
            assert not eng.closed

    # -- numerics -------------------------------------------------------------------------------
    @pytest.mark.parametrize("kind", ["mlp", "scale"])
    def test_outputs_match_numpy(self, target: BackendUnderTest, tmp_path: Path, kind: str) -> None:
        case = CASES[kind]()
        with target.load(target.build(case, tmp_path)) as eng:
            feeds = case.feeds(2)
            _assert_close(eng.run(feeds), case.reference(feeds), f"{target.label} {kind} run()")
            if kind == "scale":
                assert eng.input("k").shape == (), "a 0-d input must stay 0-d in the spec"
                out = eng.run({"x": feeds["x"], "k": np.float32(3.0)})  # a numpy scalar is a 0-d input
                np.testing.assert_allclose(out["y"], feeds["x"] * 3, rtol=1e-6)

    def test_outputs_match_raw_runtime(self, target: BackendUnderTest, mlp: tuple[ModelCase, Path]) -> None:
        if target.raw is None:
            pytest.skip(f"{target.label}: no raw runtime to compare with (numpy is the oracle)")
        case, path = mlp
        feeds = case.feeds(3, seed=7)
        with target.load(path) as eng:
            got = eng.run(feeds)
        want = target.raw(path)(feeds)
        assert len(got) == len(want)
        for (name, g), w in zip(got.items(), want.values(), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=f"{target.label}: {name} vs raw")

    def test_real_models_match_raw_runtime(self, target: BackendUnderTest) -> None:
        if target.raw is None or not target.real_models:
            pytest.skip(f"{target.label}: no real model or raw runtime given")
        from infercore.inputs import make_feeds
        from infercore.testing.models import ModelUnavailable

        for get_path in target.real_models:
            try:
                path = get_path()
            except ModelUnavailable as e:
                pytest.skip(f"real model not available here: {e}")
            with target.load(path) as eng:
                feeds, _ = make_feeds(eng.inputs, seed=3, metadata=eng.metadata)
                got = eng.run(feeds)
            want = target.raw(path)(feeds)
            assert len(got) == len(want), f"{path.name}: {list(got)} vs raw {list(want)}"
            for (name, g), w in zip(got.items(), want.values(), strict=True):
                assert g.shape == w.shape and g.dtype == w.dtype, (
                    f"{path.name} {name}: {g.shape} vs {w.shape}"
                )
                np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{path.name}: {name} vs raw")

    @pytest.mark.parametrize("dtype", [d.name for d in DTYPES])
    def test_dtypes(self, target: BackendUnderTest, tmp_path: Path, dtype: str) -> None:
        case = transpose_case(dtype)
        feeds = case.feeds(2, seed=5)
        want = case.reference(feeds)
        if not target.supports(case.inputs[0].dtype):
            # declared unsupported: a clear InfercoreError, or a right answer; never wrong data
            try:
                with target.load(target.build(case, tmp_path)) as eng:
                    got = eng.run(feeds)
            except InfercoreError:
                return
            _assert_close(got, want, f"{target.label} {dtype} (declared unsupported) run()")
            return
        with target.load(target.build(case, tmp_path)) as eng:
            assert eng.inputs[0].dtype == case.inputs[0].dtype
            _assert_close(eng.run(feeds), want, f"{target.label} {dtype} run()")
            with eng.bind({"x": feeds["x"].shape}) as io:
                io.inputs["x"][...] = feeds["x"]
                io.run()
                _assert_close(dict(io.outputs), want, f"{target.label} {dtype} bound")

    def test_dynamic_batch(self, target: BackendUnderTest, engine: ic.Engine) -> None:
        if not target.dynamic_shapes:
            pytest.skip(f"{target.label} declares no dynamic shapes")
        case = mlp_case()
        for batch in (1, 3, 1, 5):
            feeds = case.feeds(batch, seed=batch)
            _assert_close(engine.run(feeds), case.reference(feeds), f"run() batch {batch}")
        for batch in (2, 4):
            feeds = case.feeds(batch, seed=10 + batch)
            with engine.bind({k: v.shape for k, v in feeds.items()}) as io:
                for k, v in feeds.items():
                    io.inputs[k][...] = v
                io.run()
                _assert_close(dict(io.outputs), case.reference(feeds), f"bound batch {batch}")

    # -- what run() returns ----------------------------------------------------------------------
    def test_run_returns_arrays_the_caller_owns(self, engine: ic.Engine) -> None:
        case = mlp_case()
        first_feeds, second_feeds = case.feeds(2, seed=21), case.feeds(2, seed=22)
        first = engine.run(first_feeds)
        kept = {name: value.copy() for name, value in first.items()}
        second = engine.run(second_feeds)  # same shapes: where a reused buffer would be reused
        for name in first:
            assert not np.shares_memory(first[name], second[name]), (
                f"output {name!r}: two run() results share memory; run() must return arrays the "
                "caller owns, not views of buffers the next run overwrites"
            )
        _assert_close(first, kept, "the first run()'s result after a second run()", rtol=0, atol=0)
        _assert_close(first, case.reference(first_feeds), "the first run()'s result")
        _assert_close(second, case.reference(second_feeds), "the second run()'s result")

    def test_run_returns_the_outputs_asked_for(self, engine: ic.Engine) -> None:
        case = mlp_case()
        feeds = case.feeds(3, seed=23)
        want = case.reference(feeds)
        for names in (["p"], ["y"], ["p", "y"], ["y", "p"]):
            got = engine.run(feeds, outputs=names)
            _assert_close(got, {n: want[n] for n in names}, f"run(outputs={names})")

    # -- bound path -----------------------------------------------------------------------------
    def test_bound_equals_unbound(self, engine: ic.Engine) -> None:
        case = mlp_case()
        with engine.bind({"x": (2, 8), "s": (2, 4)}) as io:
            for seed in range(3):  # rewriting the same buffers: every run sees the new data
                feeds = case.feeds(2, seed=seed)
                for k, v in feeds.items():
                    io.inputs[k][...] = v
                io.run()
                unbound = engine.run(feeds)
                assert list(io.outputs) == list(unbound)
                for name, value in unbound.items():
                    np.testing.assert_array_equal(io.outputs[name], value, err_msg=f"bound {name} != run()")
                _assert_close(dict(io.outputs), case.reference(feeds), "bound vs numpy")

    def test_bind_uses_caller_arrays(self, engine: ic.Engine) -> None:
        case = mlp_case()
        feeds = case.feeds(2, seed=4)
        x, s = feeds["x"].copy(), feeds["s"].copy()
        # NaN, not zeros: a relu output is mostly zeros, so a stale zero-filled array could pass
        outs = {spec.name: np.full((2, 4), np.nan, np.float32) for spec in case.outputs}
        with engine.bind({"x": x, "s": s}, outputs=outs) as io:
            for run in range(3):
                if run:  # the bound inputs are read in place at each run: new data every time
                    feeds = case.feeds(2, seed=40 + run)
                    x[...], s[...] = feeds["x"], feeds["s"]
                io.run()
                want = case.reference(feeds)
                for name, mine in outs.items():
                    assert io.outputs[name] is mine, (
                        f"run {run + 1}: io.outputs[{name!r}] is not the caller's array any more; "
                        "a caller-given output must be written in place at every run"
                    )
                    np.testing.assert_allclose(
                        mine,
                        want[name],
                        rtol=1e-5,
                        atol=1e-6,
                        err_msg=f"run {run + 1}: the caller's array for output {name!r} (written in place)",
                    )
            with pytest.raises(TypeError):
                io.inputs["x"] = x  # replacing a bound buffer rebinds nothing

    # -- errors ---------------------------------------------------------------------------------
    def test_missing_and_extra_inputs(self, engine: ic.Engine) -> None:
        feeds = mlp_case().feeds(1)
        with pytest.raises(InputSpecError) as e:
            engine.run({"x": feeds["x"]})
        _error_names(e.value, "'s'")
        with pytest.raises(InputSpecError) as e:
            engine.run({**feeds, "zzz": feeds["s"]})
        _error_names(e.value, "'zzz'")
        with pytest.raises(InputSpecError):
            engine.run(feeds["x"])  # one array for a two-input model
        with pytest.raises(InputSpecError):
            engine.run(feeds, outputs=["nope"])
        with pytest.raises(InputSpecError):
            engine.bind({"x": (1, 8)})
        assert engine.stats.runs == 0

    def test_garbage_file_raises_model_load_error(
        self, target: BackendUnderTest, mlp: tuple[ModelCase, Path], tmp_path: Path
    ) -> None:
        _, path = mlp
        # the target's own suffix, so the target is asked; a garbage file where a target expects a
        # directory (a model folder) must be refused just the same
        bad = tmp_path / "garbage" / path.name
        bad.parent.mkdir()
        bad.write_bytes(b"this is not a model\n" * 16 + bytes(range(256)))
        with pytest.raises(ModelLoadError) as e:
            target.load(bad).close()
        assert bad.name in str(e.value) or e.value.path == str(bad), (
            f"the error should name the file {bad.name!r}: {e.value}"
        )

    def test_wrong_dtype_rank_and_dim(self, engine: ic.Engine) -> None:
        feeds = mlp_case().feeds(2)
        cases = {
            "dtype": {**feeds, "x": feeds["x"].astype(np.float64)},
            "rank": {**feeds, "x": feeds["x"][None]},
            "fixed dim": {**feeds, "x": np.zeros((2, 7), np.float32)},
        }
        for what, bad in cases.items():
            with pytest.raises(InputSpecError) as e:
                engine.run(bad)
            _error_names(e.value, "'x'")
            assert e.value.tensor == "x", what
        with pytest.raises(InputSpecError):
            engine.bind({"x": (2, 7), "s": (2, 4)})
        with pytest.raises(InputSpecError):
            engine.bind({"x": (2, 8, 1), "s": (2, 4)})
        with pytest.raises(InputSpecError):
            engine.bind({"x": np.zeros((2, 8), np.float64), "s": (2, 4)})
        # the engine still works after refusing bad input
        _assert_close(engine.run(feeds), mlp_case().reference(feeds), "run() after errors")

    def test_bind_refuses_non_contiguous_and_read_only(self, engine: ic.Engine) -> None:
        strided = np.zeros((2, 16), np.float32)[:, ::2]
        with pytest.raises(InputSpecError) as e:
            engine.bind({"x": strided, "s": (2, 4)})
        _error_names(e.value, "'x'", "contiguous")
        frozen = np.zeros((2, 8), np.float32)
        frozen.flags.writeable = False
        with pytest.raises(InputSpecError) as e:
            engine.bind({"x": frozen, "s": (2, 4)})
        _error_names(e.value, "'x'", "read-only")
        # run() may copy: non-contiguous and read-only inputs are fine there
        feeds = mlp_case().feeds(2, seed=9)
        x_strided = np.repeat(feeds["x"], 2, axis=1)[:, ::2]
        x_frozen = feeds["s"].copy()
        x_frozen.flags.writeable = False
        _assert_close(
            engine.run({"x": x_strided, "s": x_frozen}), mlp_case().reference(feeds), "strided run()"
        )

    # -- threads --------------------------------------------------------------------------------
    def test_concurrent_run(self, engine: ic.Engine) -> None:
        case = mlp_case()
        threads, runs = 4, 50
        per_thread = [case.feeds(1 + i % 2, seed=100 + i) for i in range(threads)]
        # numpy's answer, not a first engine.run(): that could be a buffer the next run overwrites
        expected = [case.reference(f) for f in per_thread]
        failures: list[str] = []
        barrier = threading.Barrier(threads)

        def work(i: int) -> None:
            barrier.wait()
            try:
                for r in range(runs):
                    got = engine.run(per_thread[i])
                    for name, want in expected[i].items():
                        if got[name].shape != want.shape or not np.allclose(
                            got[name], want, rtol=1e-5, atol=1e-6
                        ):
                            failures.append(f"thread {i} run {r}: {name} differs from numpy")
                            return
            except Exception as e:  # reported below with the thread that saw it
                failures.append(f"thread {i}: {type(e).__name__}: {e}")

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=120)
        assert not failures, failures[:5]
        assert engine.stats.runs >= threads  # counters are lock-free: a few increments may be lost

    def test_one_binding_per_thread(self, engine: ic.Engine) -> None:
        case = mlp_case()
        failures: list[str] = []

        def work(i: int) -> None:
            feeds = case.feeds(2, seed=200 + i)
            want = case.reference(feeds)
            try:
                with engine.bind({k: v.shape for k, v in feeds.items()}) as io:
                    for k, v in feeds.items():
                        io.inputs[k][...] = v
                    for _ in range(20):
                        io.run()
                        if not np.allclose(io.outputs["p"], want["p"], rtol=1e-5, atol=1e-6):
                            failures.append(f"thread {i}: bound output differs")
                            return
            except Exception as e:
                failures.append(f"thread {i}: {type(e).__name__}: {e}")

        pool = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=120)
        assert not failures, failures

    # -- close ----------------------------------------------------------------------------------
    def test_close_semantics(self, target: BackendUnderTest, mlp: tuple[ModelCase, Path]) -> None:
        case, path = mlp
        feeds = case.feeds(1)
        with target.load(path) as eng:
            io = eng.bind({"x": (1, 8), "s": (1, 4)})
            io.run()
            eng.run(feeds)
        assert eng.closed
        eng.close()  # idempotent
        with pytest.raises(EngineClosedError):
            eng.run(feeds)
        with pytest.raises(EngineClosedError):
            eng.bind({"x": (1, 8), "s": (1, 4)})
        assert io.closed
        with pytest.raises(EngineClosedError):
            io.run()
        # a bound I/O closed on its own leaves the engine working
        with target.load(path) as eng2:
            with eng2.bind({"x": (1, 8), "s": (1, 4)}) as io2:
                io2.run()
            assert io2.closed
            with pytest.raises(EngineClosedError):
                io2.run()
            _assert_close(eng2.run(feeds), case.reference(feeds), "run() after a binding closed")
