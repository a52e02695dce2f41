"""Backend discovery through pluggy.

One hookspec, ``register_backends(register)``. The built-in backends are registered through the
very same hook third-party plugins implement; external plugins are found through the
``infercore.backends`` entry-point group. ``INFERCORE_PLUGINS`` chooses which external plugins
load: unset loads all, empty loads none, ``"a,b"`` loads the entry points named ``a`` and ``b``.

Hooks run at discovery only (the first ``ic.load()`` or ``ic.available_backends()``), never per
inference. A third-party package declares::

    [project.entry-points."infercore.backends"]
    mybackend = "mypackage.infercore_plugin"

and implements, in that module::

    import infercore

    @infercore.hookimpl
    def register_backends(register):
        register("mybackend", MyFactory(), suffixes=(".my",), priority=10)
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pluggy

from .errors import BackendUnavailableError, InfercoreError, ModelLoadError, UnknownBackendError
from .protocol import BackendFactory, Spec, hookimpl, hookspec
from .specs import BackendInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendRegistration",
    "Registry",
    "hookimpl",
    "hookspec",
    "registry",
]

ENTRY_POINT_GROUP = "infercore.backends"
log = logging.getLogger(__name__)
_ALIASES = {"onnxruntime": "ort", "ov": "openvino", "tflite": "litert", "trt": "tensorrt"}


@dataclass(frozen=True)
class BackendRegistration:
    name: str
    factory: BackendFactory
    suffixes: tuple[str, ...]
    priority: int
    plugin: str


class Registry:
    """The backends known to this process. Discovery is lazy and happens once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pm: pluggy.PluginManager | None = None
        self._backends: dict[str, BackendRegistration] | None = None
        self._probes: dict[str, BackendInfo] = {}
        self._extra_plugins: list[tuple[object, str]] = []
        self._problems: dict[str, str] = {}
        self._filtered: list[str] = []  # installed entry points INFERCORE_PLUGINS leaves out

    # -- discovery ---------------------------------------------------------------------------
    def plugin_manager(self) -> pluggy.PluginManager:
        self._discover()
        assert self._pm is not None
        return self._pm

    def _discover(self) -> dict[str, BackendRegistration]:
        if self._backends is not None:
            return self._backends
        with self._lock:
            if self._backends is not None:
                return self._backends
            pm = pluggy.PluginManager("infercore")
            pm.add_hookspecs(Spec)
            from .backends import builtin

            problems: dict[str, str] = {}
            filtered: list[str] = []
            pm.register(builtin, name="builtin")
            self._load_entry_points(pm, problems, filtered)
            for plugin, plugin_name in self._extra_plugins:
                pm.register(plugin, name=plugin_name)
            backends: dict[str, BackendRegistration] = {}
            # registration order: built-ins first, so a plugin cannot take their names
            for impl in pm.hook.register_backends.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
                mine: dict[str, BackendRegistration] = {}

                def register(
                    name: str,
                    factory: BackendFactory,
                    *,
                    suffixes: Sequence[str] = (),
                    priority: int = 0,
                    _plugin: str = plugin_name,
                    _mine: dict[str, BackendRegistration] = mine,
                ) -> None:
                    if not isinstance(name, str) or not name or name != name.lower():
                        raise ValueError(
                            f"backend name {name!r} must be a non-empty lower-case string (names are "
                            "matched case-insensitively)"
                        )
                    if name in _ALIASES:
                        raise ValueError(f"backend name {name!r} is an alias of the built-in {_ALIASES[name]!r}")
                    taken = backends.get(name) or _mine.get(name)
                    if taken is not None:
                        raise ValueError(f"backend {name!r} is already registered by plugin {taken.plugin!r}")
                    _mine[name] = BackendRegistration(
                        name, factory, tuple(s.lower() for s in suffixes), int(priority), _plugin
                    )

                try:
                    impl.function(register=register)
                except Exception as e:  # one broken plugin must not take the others down
                    if plugin_name == "builtin":
                        raise
                    problems[plugin_name] = f"register_backends failed: {type(e).__name__}: {e}"
                    continue
                backends.update(mine)
            for plugin_name, reason in problems.items():
                log.warning("infercore plugin %r was not loaded: %s", plugin_name, reason)
            self._pm = pm
            self._problems = problems
            self._filtered = filtered
            self._backends = backends
            return backends

    @staticmethod
    def _load_entry_points(pm: pluggy.PluginManager, problems: dict[str, str], filtered: list[str]) -> None:
        from importlib.metadata import entry_points

        wanted = os.environ.get("INFERCORE_PLUGINS")
        if wanted is not None and not wanted.strip():
            filtered.extend(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            return

        names = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if names is not None and ep.name not in names:
                filtered.append(ep.name)
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as e:  # an uninstallable plugin is reported, the rest keep working
                problems[ep.name] = f"could not load entry point {ep.value!r}: {type(e).__name__}: {e}"

    def _left_out(self) -> str:
        """For "no backend" errors: plugins that failed, and installed ones INFERCORE_PLUGINS skips."""
        text = "".join(f"; plugin {n!r} was not loaded ({why})" for n, why in self._problems.items())
        if self._filtered:
            text += (
                f"; INFERCORE_PLUGINS={os.environ.get('INFERCORE_PLUGINS', '')!r} leaves out the installed "
                f"plugin(s) {', '.join(sorted(self._filtered))}"
            )
        return text

    def problems(self) -> dict[str, str]:
        """Plugins that were found but not loaded, with why (an import error, a failing hook,
        a backend name another plugin already has). The other backends work regardless."""
        self._discover()
        return dict(self._problems)

    def add_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register an in-process plugin object (a module or instance with hookimpls).

        Used by tests and by applications that ship a backend without packaging it; discovery
        reruns on next use so the new backends appear.
        """
        with self._lock:
            self._extra_plugins.append((plugin, str(name or getattr(plugin, "__name__", None) or repr(plugin))))
            self._backends = None
            self._probes.clear()

    def remove_plugin(self, plugin: object) -> None:
        with self._lock:
            self._extra_plugins = [(p, n) for p, n in self._extra_plugins if p is not plugin]
            self._backends = None
            self._probes.clear()

    def reset(self) -> None:
        """Forget discovery results (for example after changing ``INFERCORE_PLUGINS``)."""
        with self._lock:
            self._backends = None
            self._pm = None
            self._probes.clear()

    # -- queries -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._discover())

    def get(self, name: str) -> BackendRegistration:
        backends = self._discover()
        key = _ALIASES.get(name.lower(), name.lower())
        if key not in backends:
            close = difflib.get_close_matches(name, list(backends), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise UnknownBackendError(
                f"no backend named {name!r}{hint} Registered: {', '.join(sorted(backends))}{self._left_out()}"
            )
        return backends[key]

    def probe(self, name: str) -> BackendInfo:
        reg = self.get(name)
        info = self._probes.get(reg.name)
        if info is None:
            try:
                info = reg.factory.probe()
            except Exception as e:  # a plugin's probe must not take discovery down
                info = BackendInfo(reg.name, False, reason=f"probe failed: {type(e).__name__}: {e}")
            info = replace(info, name=reg.name, suffixes=reg.suffixes, priority=reg.priority, plugin=reg.plugin)
            self._probes[reg.name] = info
        return info

    def available(self) -> dict[str, BackendInfo]:
        regs = sorted(self._discover().values(), key=lambda r: (-r.priority, r.name))
        return {r.name: self.probe(r.name) for r in regs}

    def candidates(self, path: Path) -> list[BackendRegistration]:
        """Backends that read this file's suffix, best first."""
        name = path.name.lower()
        regs = [r for r in self._discover().values() if any(name.endswith(s) for s in r.suffixes)]
        return sorted(regs, key=lambda r: (-r.priority, r.name))

    def pick(self, path: Path) -> BackendRegistration:
        """The highest-priority available backend for ``path``'s suffix."""
        regs = self.candidates(path)
        if not regs:
            known = sorted({s for r in self._discover().values() for s in r.suffixes})
            raise UnknownBackendError(
                f"no backend reads {path.name!r}: known suffixes are {', '.join(known)}; "
                f"pass backend= to choose one explicitly{self._left_out()}"
            )
        reasons = []
        for reg in regs:
            info = self.probe(reg.name)
            if info.available:
                return reg
            reasons.append(f"{reg.name}: {info.reason}")
        raise BackendUnavailableError(
            f"no installed backend can read {path.name!r}. " + "; ".join(reasons)
        )


registry = Registry()


def open_backend(reg: BackendRegistration, path: Path, **kwargs: Any) -> Any:
    info = registry.probe(reg.name)
    if not info.available:
        raise BackendUnavailableError(f"backend {reg.name!r} is unavailable: {info.reason}")
    try:
        return reg.factory.open(path, **kwargs)
    except InfercoreError:
        raise
    except Exception as e:  # a plugin that let a raw exception through: one error tree for callers
        raise ModelLoadError(f"{reg.name} could not open {path}: {e!r}", path=str(path)) from e
