"""A model without threads/instances in its config gets a probed layout; the config still wins."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from infercore.serve.logs import JsonFormatter
from infercore.serve.repository import ModelConfig, ModelRepository

from .conftest import affine, affine_model, running

httpx = pytest.importorskip("httpx")


def _repo(tmp_path: Path, config: str | None) -> Path:
    affine_model(tmp_path / "affine" / "1" / "model.onnx", 2.0)
    if config is not None:
        (tmp_path / "affine" / "config.yaml").write_text(config)
    return tmp_path


def test_no_config_probes_the_layout_and_stats_and_log_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = _repo(tmp_path, None)
    caplog.set_level(logging.INFO, logger="infercore.serve")
    with running(repo, grpc_port=None, metrics_port=None) as server:
        base = f"http://127.0.0.1:{server.ports['http']}/v2/models/affine"
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
        r = httpx.post(f"{base}/infer", json=body)
        assert r.status_code == 200, r.text
        y = next(o for o in r.json()["outputs"] if o["name"] == "y")
        np.testing.assert_allclose(np.array(y["data"], np.float32).reshape(2, 4), affine(x, 2.0)["y"])
        stats = httpx.get(f"{base}/stats").json()["model_stats"][0]["batcher"]
    layout = stats["layout"]
    assert layout["source"] == "probe" and layout["cores"] >= 1
    assert layout["instances"] * layout["threads"] <= layout["cores"]
    assert layout["probe"]["shapes"] == {"x": [4]}
    assert [e["role"] for e in stats["engines"]].count("load") == layout["instances"]
    (loaded,) = [r for r in caplog.records if r.getMessage() == "model loaded"]
    assert loaded.layout == {"1": layout["summary"]}  # type: ignore[attr-defined]
    line = json.loads(JsonFormatter().format(loaded))  # the JSON line the server writes
    assert line["layout"] == {"1": layout["summary"]}


def test_the_server_logs_every_infercore_logger_as_json_lines_and_puts_them_back() -> None:
    """The Batcher's layout and second-look lines (``infercore.batching``) came out as plain text
    among the server's JSON lines; a message ending in a newline (a runtime's) split in two."""
    import io

    from infercore.serve.logs import configure_logging

    batching, root = logging.getLogger("infercore.batching"), logging.getLogger("infercore")
    before = (root.handlers[:], root.propagate, root.level)
    out = io.StringIO()
    restore = configure_logging(stream=out)
    try:
        batching.info("batcher %r: %s", "m/1", "lone request: 1 x 2 threads")
        batching.warning("batcher %r: measuring failed: %s", "m/1", "BackendRuntimeError: ort said\n")
        logging.getLogger("infercore.serve").info("model loaded", extra={"model": "m"})
    finally:
        restore()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["logger"], r["level"]) for r in lines] == [
        ("infercore.batching", "info"),
        ("infercore.batching", "warning"),
        ("infercore.serve", "info"),
    ]
    assert lines[1]["msg"].endswith("ort said\n") and lines[2]["model"] == "m"
    after = (root.handlers[:], root.propagate, root.level)
    assert after == before  # an in-process ``infercore serve`` leaves logging as it found it


@pytest.mark.parametrize(
    ("config", "options"),
    [
        ("auto: false\n", {}),
        ("threads: 1\n", {}),
        ("instances: 2\n", {}),
        (None, {"autotune": False}),
    ],
)
def test_config_or_flag_turns_the_probe_off(tmp_path: Path, config: str | None, options: dict) -> None:
    repo = ModelRepository(_repo(tmp_path, config), **options)
    try:
        b = repo.load("affine").versions[1].runner
        assert b.layout is None
        assert len(b.metrics.engines) == (2 if config == "instances: 2\n" else 1)
        assert (b.max_batch_size, b.max_queue_delay) == (32, 0.002)  # the documented defaults
        np.testing.assert_allclose(b.run(np.ones((1, 4), np.float32))["y"], [[3, 3, 3, 3]])
    finally:
        repo.close()


def test_batching_keys_the_config_writes_win_over_the_probe(tmp_path: Path) -> None:
    repo = ModelRepository(_repo(tmp_path, "cores: 2\nbatching: {max_batch_size: 4, max_queue_delay_ms: 3}\n"))
    try:
        b = repo.load("affine").versions[1].runner
        assert b.layout is not None and b.layout.cores == 2
        assert (b.max_batch_size, b.max_queue_delay) == (4, 0.003)
        assert all(p <= 4 for p in b.preferred_batch_sizes)
    finally:
        repo.close()


@pytest.mark.parametrize(("raw", "match"), [({"auto": "yes"}, "auto must be a bool"), ({"cores": 0}, "cores must be")])
def test_bad_auto_keys_are_refused_naming_the_key(raw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict(raw)


def test_given_keys_are_tracked_through_a_load_override() -> None:
    cfg = ModelConfig.from_dict({"threads": 2})
    assert cfg.given == {"threads"}
    assert cfg.merged({"instances": 2}, "load").given == {"threads", "instances"}
    assert ModelConfig.from_dict({"batching": {"max_batch_size": 4}}).batching.given == {"max_batch_size"}  # type: ignore[union-attr]


def test_a_reload_of_the_same_file_reuses_the_probed_layout(tmp_path: Path) -> None:
    root = _repo(tmp_path, None)
    repo = ModelRepository(root)
    try:
        first = repo.load("affine").versions[1].runner.layout
        again = repo.load("affine").versions[1].runner.layout
        assert first.source == "probe" and again.source == "probe, reused"
        assert (again.instances, again.threads, again.lone_threads, again.batch_size) == (
            first.instances, first.threads, first.lone_threads, first.batch_size
        )
        affine_model(root / "affine" / "1" / "model.onnx", 5.0)  # a new file: probed again
        changed = repo.load("affine").versions[1]
        assert changed.runner.layout.source == "probe"
        np.testing.assert_allclose(changed.runner.run(np.ones((1, 4), np.float32))["y"], [[6, 6, 6, 6]])
    finally:
        repo.close()
