"""The backend conformance kit over the TensorRT backend on the strict fake (10.x and 11.x)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from infercore.testing.conformance import BackendConformance, BackendUnderTest

pytest.importorskip("onnxruntime")


class TestTensorRTOnFake(BackendConformance):
    @pytest.fixture(autouse=True)
    def _fake(self, fake_trt: ModuleType, cache_dir: Path) -> ModuleType:
        return fake_trt

    @pytest.fixture
    def target(self) -> BackendUnderTest:
        # float64 has no TensorRT type: the kit requires a clear error for it, never wrong data
        return BackendUnderTest(
            "tensorrt", load_kwargs={"device": "cuda"}, unsupported_dtypes=("float64",), id="tensorrt-fake"
        )
