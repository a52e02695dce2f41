"""config.yaml batching keys reach the Batcher; bad values are refused naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infercore.serve.repository import ModelConfig, ModelRepository
from tests.serve.conftest import affine_model

pytest.importorskip("onnxruntime")


def test_batching_settings_reach_the_batcher(tmp_path: Path) -> None:
    affine_model(tmp_path / "affine" / "1" / "model.onnx", 2.0)
    (tmp_path / "affine" / "config.yaml").write_text(
        "threads: 1\ninstances: 2\nbatching: {max_batch_size: 4, max_queue_delay_ms: 50, quiet_ms: 4}\n"
    )
    repo = ModelRepository(tmp_path)
    try:
        mv = repo.load("affine").versions[1]
        b = mv.runner
        assert (b.max_batch_size, b.max_queue_delay, b.quiet) == (4, 0.05, 0.004)
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        out = b.run({"x": x})
        np.testing.assert_allclose(out["y"], x * 2 + 1)
        np.testing.assert_array_equal(out["idx"], [3, 3])
    finally:
        repo.close()


@pytest.mark.parametrize("value", [-1, "soon", True])
def test_bad_quiet_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ValueError, match=r"batching\.quiet_ms must be a number >= 0"):
        ModelConfig.from_dict({"batching": {"quiet_ms": value}})
