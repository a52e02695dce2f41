"""Progress of long tool runs (benchmarks, calibration, conversion) on stderr.

On a terminal: one line redrawn in place, once a second, with the count, the elapsed time and an
ETA. Anywhere else (a log file, CI): a plain line every ``interval`` seconds (default 15, or
``$INFERCORE_PROGRESS_INTERVAL``), so that a long run shows it is alive without flooding the log.
A background thread does the drawing, so timed loops never pay for it.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

__all__ = ["Progress", "default_interval", "track"]

T = TypeVar("T")


def default_interval() -> float:
    """Seconds between progress lines when stderr is not a terminal: ``$INFERCORE_PROGRESS_INTERVAL``
    (a positive number), else 15."""
    try:
        value = float(os.environ.get("INFERCORE_PROGRESS_INTERVAL", ""))
    except ValueError:
        return 15.0
    return value if math.isfinite(value) and value > 0 else 15.0


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """``with Progress(total, "benchmark") as p: ... p.advance()``.

    ``enabled``: None shows a live bar on a terminal and periodic lines elsewhere; False shows
    nothing; True forces it on. ``interval``: seconds between lines when stderr is not a terminal
    (default: ``default_interval()``). ``expected``: seconds one item is expected to take, for an
    ETA before the first item is done (afterwards the ETA follows the measured rate).
    """

    def __init__(
        self,
        total: int,
        description: str = "",
        *,
        enabled: bool | None = None,
        interval: float | None = None,
        file: TextIO | None = None,
        expected: float | None = None,
    ) -> None:
        self.total = max(int(total), 0)
        self.expected = expected
        self.description = description
        self.done = 0
        self._file = file or sys.stderr
        self._live = bool(getattr(self._file, "isatty", lambda: False)())
        self._enabled = enabled is not False and self.total > 0
        self._interval = 1.0 if self._live else (interval if interval is not None else default_interval())
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._width = 0

    def __enter__(self) -> Progress:
        if self._enabled:
            self._thread = threading.Thread(target=self._loop, name="infercore-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self, text: str) -> None:
        self.description = text
        if self._live:
            self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self._live:
            self._draw()

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        if self.done:
            eta: float | None = elapsed / self.done * (self.total - self.done)
        elif self.expected is not None:
            eta = max(self.expected * self.total - elapsed, 0.0)
        else:
            eta = None
        parts = [self.description, f"{self.done}/{self.total}", f"elapsed {_clock(elapsed)}"]
        parts.append(f"ETA {_clock(eta)}" if eta is not None else "ETA --:--")
        return "  ".join(p for p in parts if p)

    def _draw(self) -> None:
        if not self._enabled:
            return
        with self._lock:
            text = self.line()
            if self._live:
                pad = max(self._width - len(text), 0)
                self._width = len(text)
                self._file.write("\r" + text + " " * pad)
            else:
                self._file.write(text + "\n")
            self._file.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._draw()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            if self._live:
                with self._lock:  # leave the terminal line clean
                    self._file.write("\r" + " " * self._width + "\r")
                    self._file.flush()


def track(items: Iterable[T], total: int, description: str, enabled: bool | None = None) -> Iterator[T]:
    """``items``, advancing a ``Progress`` as each is consumed."""
    with Progress(total, description, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
