from __future__ import annotations

import pytest

import infercore as ic


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Each test sees a registry without plugins another test added."""
    yield
    for plugin, _ in list(ic.registry._extra_plugins):
        ic.registry.remove_plugin(plugin)
