"""What several commands share: the exit statuses, the checks made before any work (output
paths, optional modules, backends), writing outputs, the input flags and how their values are read."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import BackendUnavailableError, InputSpecError, UsageError
from ..inputs import load_arrays

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_VERDICT",
    "Need",
    "Preflight",
    "add_backends_flag",
    "add_input_flags",
    "add_output_flag",
    "check_output",
    "check_preflight",
    "open_output",
    "parse_shape",
    "read_values",
    "wrote",
]

# Every command: 0 ok; 1 the command ran and its verdict is negative; 2 any error.
EXIT_OK, EXIT_VERDICT, EXIT_ERROR = 0, 1, 2


# -- before any work: outputs, optional modules, backends -------------------------------------------
@dataclass(frozen=True)
class Need:
    """Optional modules that ``what`` (a command or a flag) needs, and the extra installing them."""

    extra: str
    modules: tuple[str, ...]
    what: str


@dataclass
class Preflight:
    """What a command will need, declared from its arguments and checked by ``main`` before the
    command runs: files it will write (flag, path), optional modules, backends named on the
    command line (flag, names)."""

    outputs: list[tuple[str, Any]] = field(default_factory=list)
    needs: list[Need] = field(default_factory=list)
    backends: list[tuple[str, Sequence[str]]] = field(default_factory=list)


def check_preflight(plan: Preflight) -> None:
    """Refuse at once what would fail later: an output that cannot be written, a missing extra
    (named with the ``pip install`` that fixes it), a backend that is not installed."""
    from ..optional import install_hint, missing

    for flag, path in plan.outputs:
        check_output(flag, path)
    for need in plan.needs:
        absent = missing(need.modules)
        if absent:
            verb = "is" if len(absent) == 1 else "are"
            raise BackendUnavailableError(
                f"{need.what} needs {', '.join(absent)}, which {verb} not installed: {install_hint(need.extra)}"
            )
    if plan.backends:
        from ..plugins import registry

        for flag, names in plan.backends:
            for name in dict.fromkeys(names):
                info = registry.probe(name)  # UnknownBackendError lists the registered names
                if not info.available:
                    raise BackendUnavailableError(f"{flag} {name}: {info.reason}")


def check_output(flag: str, path: Any) -> None:
    """Refuse an output path that cannot be written, before any work: a directory, a parent that
    cannot be created, a file or directory without write permission. ``-`` (stdout) passes.
    Missing directories are created (the command writes into them); a file is only tried."""
    if path is None or str(path) == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file path")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: cannot create directory {p.parent}: {parent} is not a directory")
    try:  # created now, kept: the command writes into them (and two commands may share them)
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot create directory {e.filename or p.parent}: {e.strerror or e}") from None
    try:
        if p.exists():
            with open(p, "ab"):  # opened for writing, nothing written: left unchanged
                pass
        else:  # a file of our own beside it, so that two commands writing the same path do not collide
            fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{flag} {path}: not writable: {e.strerror or e}") from None


@contextlib.contextmanager
def open_output(path: Any, *, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write (its missing directories created), or stdout for ``-``: the very path given
    is written, no suffix added."""
    if str(path) == "-":
        stream: IO[Any] = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb" if binary else "w") as f:
        yield f


def wrote(path: Any) -> None:
    """``wrote PATH`` on stderr (stdout keeps to the command's report)."""
    if str(path) != "-":
        print(f"wrote {path}", file=sys.stderr)


# -- flags every command spells the same way -----------------------------------------------------------
def add_output_flag(p: argparse.ArgumentParser, what: str, *, stdout: bool = True, aliases: Sequence[str] = ()) -> None:
    """``-o/--output FILE``: the main file the command writes (``-``: stdout, where it can).
    ``aliases``: old spellings, accepted and hidden from the help."""
    p.add_argument(
        "-o", "--output", default=None, metavar="FILE",
        help=f"write {what} to FILE (missing directories are created" + ("; -: stdout)" if stdout else ")"),
    )  # fmt: skip
    for alias in aliases:
        p.add_argument(alias, dest="output", default=None, help=argparse.SUPPRESS)


def add_backends_flag(p: argparse.ArgumentParser, help: str, *, one: bool = False) -> None:
    """``-b/--backends LIST`` (``-b/--backend NAME`` for a command that runs one backend)."""
    if one:
        p.add_argument("-b", "--backend", default=None, metavar="NAME", help=help)
    else:
        p.add_argument("-b", "--backends", default=None, metavar="LIST", help=help)


def parse_shape(text: str) -> tuple[str, tuple[int, ...] | int]:
    """``x=1x3x224x224`` (an input's shape), ``sequence=128`` (a dimension's size, or a rank-1
    input's shape: both fit), ``sr=`` (a 0-d input)."""
    name, sep, dims = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=1x3x224x224 or DIM=128, got {text!r}")
    try:
        parts = [int(d) for d in dims.lower().replace(",", "x").split("x") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 1x3x224x224 in {text!r}") from None
    if any(d < 0 for d in parts):
        raise argparse.ArgumentTypeError(f"expected sizes >= 0 in {text!r}")
    if len(parts) == 1 and "x" not in dims.lower():
        return name.strip(), parts[0]
    return name.strip(), tuple(parts)


def add_input_flags(p: argparse.ArgumentParser, *, values: bool = True) -> None:
    """``--inputs FILE``, ``-i/--input NAME=VALUE``, ``-s/--shape``, ``--seed``."""
    p.add_argument(
        "--inputs",
        type=Path,
        default=None,
        metavar="DATA",
        help="real inputs: a .npz (arrays named after the inputs), a .npy (a single-input model) or a "
        "directory of them; inputs not given are generated",
    )
    if values:
        p.add_argument(
            "--input",
            "-i",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="one input: a number that fills the tensor (sr=16000, attention_mask=1) or a .npy file",
        )
    p.add_argument(
        "--shape",
        "-s",
        type=parse_shape,
        action="append",
        default=[],
        metavar="NAME=AxBxC",
        help="an input's shape (x=1x3x224x224, a 0-d input: sr=) or a dynamic dimension's size "
        "(sequence=128); repeatable. Unsized dynamic dimensions: batch 1, a [batch, samples] float signal "
        "512, others 64",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")


def _value(name: str, text: str) -> Any:
    if text.endswith(".npy"):
        a = load_arrays(text, tensor=name)
        if not isinstance(a, np.ndarray):
            raise InputSpecError(f"--input {name}={text}: expected one array (.npy), the file holds {list(a)}")
        return a
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise UsageError(f"--input {name}={text}: expected a number, true/false or a .npy file, got {text!r}")


def read_values(items: list[str]) -> dict[str, Any]:
    """``-i NAME=VALUE`` flags as a dict name -> number or array."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--input takes NAME=VALUE, got {item!r}")
        out[name] = _value(name, value)
    return out
