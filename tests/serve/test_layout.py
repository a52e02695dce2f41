"""``repository_for``: a repository served as it is, and a model laid out another way (a model file,
one model's files as KServe's storage initializer leaves /mnt/models, one model's versions)
served as a repository of one model, answering as ONNX Runtime / OpenVINO and numpy do."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from infercore.serve.layout import repository_for

from .conftest import affine, affine_model, running

httpclient = pytest.importorskip("tritonclient.http")


def _infer(server, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = c.infer(model, [inp])
    return {"y": res.as_numpy("y"), "idx": res.as_numpy("idx")}


def _check(root: Path, models: tuple[str, ...], model: str, scale: float) -> None:
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    with running(root, models=list(models) or None, grpc_port=None, metrics_port=None) as server:
        got = _infer(server, model, x)
    want = affine(x, scale)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
    np.testing.assert_array_equal(got["idx"], want["idx"])


def _external(path: Path, scale: float) -> Path:
    """The affine model with its weights in an external-data file beside it."""
    import onnx

    affine_model(path, scale)
    model = onnx.load(str(path))
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    assert (path.parent / (path.name + ".data")).stat().st_size > 0
    return path


def test_a_repository_is_served_as_it_is(tmp_path):
    affine_model(tmp_path / "affine" / "1" / "model.onnx", 2.0)
    with repository_for(tmp_path) as served:
        assert (served.root, served.layout, served.models) == (tmp_path, "repository", ())
    _check(tmp_path, (), "affine", 2.0)


def test_a_directory_without_a_model_name_is_a_repository(tmp_path):
    with repository_for(tmp_path) as served:  # empty: models can be loaded through the API
        assert (served.root, served.layout, served.models) == (tmp_path, "repository", ())
    affine_model(tmp_path / "model.onnx", 2.0)  # one model's files, but no name says so
    with repository_for(tmp_path) as served:
        assert (served.root, served.layout, served.models) == (tmp_path, "repository", ())


def test_storage_initializer_layout_one_file_with_external_data_and_config(tmp_path):
    # gs://bucket/minilm-dir/ -> /mnt/models/{encoder.onnx, encoder.onnx.data, config.yaml}
    mnt = tmp_path / "mnt" / "models"
    _external(mnt / "encoder.onnx", 4.0)
    (mnt / "config.yaml").write_text("batching: false\n")
    before = sorted(p.name for p in mnt.iterdir())
    os.chmod(mnt, 0o555)  # read-only, as in a KServe pod: nothing may be written there
    try:
        served = repository_for(mnt, "my-model")
        try:
            assert served.layout == "files" and served.models == ("my-model",)
            version = served.root / "my-model" / "1"
            assert (version / "model.onnx").resolve() == (mnt / "encoder.onnx").resolve()
            assert (served.root / "my-model" / "config.yaml").is_symlink()
            _check(served.root, served.models, "my-model", 4.0)
            from infercore.serve.repository import read_config

            assert read_config(served.root / "my-model").batching is None  # its config.yaml is read
        finally:
            served.cleanup()
        assert not served.root.exists()
    finally:
        os.chmod(mnt, 0o755)
    assert sorted(p.name for p in mnt.iterdir()) == before


def test_a_model_file_is_named_after_its_stem(tmp_path):
    path = _external(tmp_path / "my.encoder.onnx", 5.0)
    affine_model(tmp_path / "model.onnx", 9.0)  # a different model beside it must not be served
    with repository_for(path) as served:
        assert served.layout == "file" and served.models == ("my.encoder",)
        _check(served.root, served.models, "my.encoder", 5.0)


def test_openvino_ir_with_another_stem_finds_its_weights(tmp_path):
    ov = pytest.importorskip("openvino")
    src = affine_model(tmp_path / "src.onnx", 6.0)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ov.save_model(ov.convert_model(str(src)), str(mnt / "net.xml"))
    assert (mnt / "net.bin").exists()
    with repository_for(mnt, "net") as served:
        assert (served.root / "net" / "1" / "model.bin").resolve() == (mnt / "net.bin").resolve()
        _check(served.root, served.models, "net", 6.0)


def test_one_models_versions(tmp_path):
    affine_model(tmp_path / "m" / "1" / "model.onnx", 2.0)
    affine_model(tmp_path / "m" / "2" / "model.onnx", 3.0)
    with repository_for(tmp_path / "m", "served") as served:
        assert served.layout == "versions"
        _check(served.root, served.models, "served", 3.0)  # the latest version


def test_a_repository_with_one_model_is_renamed_and_one_of_several_is_picked(tmp_path):
    affine_model(tmp_path / "one" / "a" / "1" / "model.onnx", 2.0)
    with repository_for(tmp_path / "one", "isvc") as served:
        _check(served.root, served.models, "isvc", 2.0)
    affine_model(tmp_path / "two" / "a" / "1" / "model.onnx", 2.0)
    affine_model(tmp_path / "two" / "b" / "1" / "model.onnx", 7.0)
    with repository_for(tmp_path / "two", "b") as served:
        assert served.root == tmp_path / "two" and served.models == ("b",)
        _check(served.root, served.models, "b", 7.0)
    with pytest.raises(ValueError, match=r"2 models \(a, b\) and none is named 'c'"):
        repository_for(tmp_path / "two", "c")


def test_layout_errors_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        repository_for(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no registered backend reads"):
        repository_for(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match=r"holds no model .*minilm.onnx"):
        repository_for(tmp_path, "m")
    affine_model(tmp_path / "a.onnx", 1.0)
    affine_model(tmp_path / "b.onnx", 1.0)
    with pytest.raises(ValueError, match=r"several model files \(a.onnx, b.onnx\)"):
        repository_for(tmp_path, "m")
    with pytest.raises(ValueError, match="model name 'a/b'"):
        repository_for(tmp_path / "a.onnx", "a/b")


def test_cli_serves_a_model_file_with_model_name_and_threads(tmp_path):
    """``infercore serve FILE --model-name NAME --threads 1`` end to end, as KServe's runtime runs it."""
    import subprocess
    import sys
    import time

    path = affine_model(tmp_path / "mnt" / "weird name.onnx", 2.0)
    cmd = [sys.executable, "-m", "infercore.cli", "serve", str(path), "--model-name", "aff", "--threads", "1"]
    cmd += ["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "off", "--metrics-port", "off"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        import json

        deadline = time.monotonic() + 60
        port = None
        assert proc.stderr is not None
        while time.monotonic() < deadline and port is None:
            line = proc.stderr.readline()
            if not line:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "server started":
                port = rec["ports"]["http"]
                assert rec["models"] == ["aff"]
        assert port is not None, "the server did not start"
        c = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.ones((2, 4), np.float32)
        inp = httpclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_allclose(c.infer("aff", [inp]).as_numpy("y"), affine(x, 2.0)["y"])
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_cli_threads_auto_reads_the_cgroup_quota(tmp_path):
    from infercore.layout import available_cores as cpu_limit

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_limit(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_limit(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(tmp_path) == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path) == 1


def test_cli_refuses_model_with_model_name(tmp_path, capsys):
    from infercore.cli import main

    affine_model(tmp_path / "a" / "1" / "model.onnx", 1.0)
    from infercore.cli.common import EXIT_ERROR

    assert main(["serve", str(tmp_path), "--model", "a", "--model-name", "a"]) == EXIT_ERROR
    assert "--model and --model-name" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err


def test_cli_refuses_required_signatures_on_a_files_view(tmp_path, capsys):
    """Signatures are checked on version directories; a model file (or a directory of one model's
    files) is served through links, which the check refuses: say so before any work."""
    pytest.importorskip("model_signing")
    from infercore.cli import main
    from infercore.cli.common import EXIT_ERROR

    affine_model(tmp_path / "m.onnx", 1.0)
    (tmp_path / "pub.pem").write_text("not read: the layout is refused first\n")
    assert main(["serve", str(tmp_path / "m.onnx"), "--require-signatures", str(tmp_path / "pub.pem")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "--require-signatures" in err and "DIR/1/model.sig" in err
    from infercore.serve.layout import _PREFIX

    assert not list(Path(tempfile.gettempdir()).glob(f"{_PREFIX}{os.getpid()}-*"))  # the view is gone


def test_threads_default_leaves_a_config_that_sets_instances_alone(tmp_path):
    """--threads (and a Ray replica's threads/instances) fill a config that sets neither; threads
    and instances are one layout, so a config that sets one keeps its own."""
    from infercore.serve.config import read_config

    (tmp_path / "config.yaml").write_text("instances: 4\n")
    cfg = read_config(tmp_path, {"threads": 2})
    assert (cfg.instances, cfg.threads) == (4, None)
    (tmp_path / "config.yaml").write_text("threads: 3\n")
    cfg = read_config(tmp_path, {"threads": 1, "instances": 2})
    assert (cfg.instances, cfg.threads) == (1, 3)
    (tmp_path / "config.yaml").write_text("backend: ort\n")
    cfg = read_config(tmp_path, {"threads": 1, "instances": 2})
    assert (cfg.instances, cfg.threads) == (2, 1)


def test_views_of_dead_processes_are_removed(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"infercore-repository-{int(dead.stdout)}-abc"
    (stale / "m" / "1").mkdir(parents=True)
    alive = tmp_path / f"infercore-repository-{os.getpid()}-def"
    alive.mkdir()
    with repository_for(affine_model(tmp_path / "a.onnx", 1.0)) as served:
        assert served.root.parent == tmp_path and served.root.name.startswith(f"infercore-repository-{os.getpid()}-")
    assert not stale.exists() and alive.exists()
