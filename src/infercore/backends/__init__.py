"""One module per runtime. None of them imports its runtime at import time: ``infercore.optional.require``
does it on first use and turns a missing package into an error that names the extra to install.

Quiet runtimes: ``quiet_runtimes(True)`` (the CLI sets it unless ``--debug``) keeps what the
runtimes print on their own (ONNX Runtime's ``[E:onnxruntime:...]`` lines, LiteRT's ``INFO: Created
TensorFlow Lite XNNPACK delegate``, TensorRT's logger, NNCF's log and progress bars) off the
console, process-wide. Each backend (and each tool that drives a runtime directly) applies it when
it opens its runtime; what a runtime would have printed goes to the ``infercore`` loggers at DEBUG
level instead. Errors are not lost: they reach the caller as exceptions carrying the runtime's message.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import BackendError

__all__ = ["captured_native_stderr", "check_options", "quiet_runtimes", "redirected_stdout", "runtimes_quiet"]

_quiet = False
_fd_lock = threading.Lock()


def quiet_runtimes(quiet: bool = True) -> None:
    """Keep the runtimes' own log lines off the console (``True``) or let them print (``False``,
    the library's default). Applies to runtimes opened from now on."""
    global _quiet
    _quiet = bool(quiet)


def runtimes_quiet() -> bool:
    """Whether ``quiet_runtimes(True)`` is in effect."""
    return _quiet


@contextlib.contextmanager
def captured_native_stderr(logger: logging.Logger, source: str) -> Iterator[None]:
    """While runtimes are quiet: what native code writes to file descriptor 2 inside the block
    (a runtime's C++ logger, which no Python API silences) goes to ``logger.debug``.

    Use it around the few calls that print (opening a runtime, allocating), never on a hot path:
    it redirects the process's stderr for the duration of the block, so another thread writing to
    stderr at that moment is logged at DEBUG too. Not quiet: a no-op.
    """
    if not _quiet:
        yield
        return
    with _fd_lock, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
    for line in text.splitlines():
        if line.strip():
            logger.debug("%s: %s", source, line.rstrip())


class _LogWriter(io.TextIOBase):
    """A text stream whose lines go to ``logger.debug``."""

    def __init__(self, logger: logging.Logger, source: str) -> None:
        self._logger, self._source, self._pending = logger, source, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.replace("\r", "\n").split("\n")
        for line in lines:
            if line.strip():
                self._logger.debug("%s: %s", self._source, line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._pending.strip():
            self._logger.debug("%s: %s", self._source, self._pending.rstrip())
        self._pending = ""


@contextlib.contextmanager
def redirected_stdout(logger: logging.Logger, source: str) -> Iterator[None]:
    """For a library that prints to ``sys.stdout`` on its own (ONNX Runtime's calibrators, NNCF's
    progress bars): inside the block, its output goes to stderr, or to ``logger.debug`` while
    runtimes are quiet. A command's stdout then holds only what the command prints (its JSON)."""
    target: Any = _LogWriter(logger, source) if _quiet else sys.stderr
    with contextlib.redirect_stdout(target):
        try:
            yield
        finally:
            target.flush()


def check_options(backend: str, options: Mapping[str, Any], valid: Mapping[str, str]) -> None:
    """Refuse unknown option keys, suggesting the closest valid one and listing them all.

    ``valid`` maps each option name to a short description of what it takes.
    """
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), list(valid), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    listed = "; ".join(f"{k}: {v}" for k, v in valid.items())
    raise BackendError(f"{backend}: unknown option(s) {', '.join(hints)}. Valid options: {listed}")
