"""Which model repository to serve for a path: a repository as it is, or one model laid out some
other way (a model file; one model's directory, as KServe's storage initializer leaves it in
``/mnt/models``) presented as a repository of that one model.

``repository_for(path, model_name)`` reads:

- a **model file** (``PATH`` is ``minilm.onnx``): version 1 of model ``model_name``, or of its stem
  (``minilm``), with the files beside it (external data, an OpenVINO ``.bin``);
- a directory **without** ``model_name``: a **repository**, ``PATH/<model>/<version>/model.<suffix>``
  (+ ``PATH/<model>/config.yaml``), served as it is, even empty (models can be loaded through the
  API; the server warns about what is not where a repository has it);
- a directory **with** ``model_name``, the one model it names:

  - **one model's files**: ``PATH/encoder.onnx`` (+ its external data), ``PATH/model.xml`` +
    ``model.bin``, ``PATH/x.tflite``..., with an optional ``PATH/config.yaml``: version 1. This is
    what the storage initializer leaves for a ``storageUri`` naming a file or a directory of files;
  - **one model's versions**: ``PATH/<version>/model.<suffix>`` (+ ``PATH/config.yaml``);
  - a **repository** that holds that model (served as it is, that model loaded at start), or
    exactly one model, served under ``model_name``.

All but a repository is presented through a temporary directory of symbolic links (the model's own
files are never copied, moved or written: ``/mnt/models`` is read-only in a KServe pod).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServedRepository", "repository_for"]

log = logging.getLogger("infercore.serve")

_CONFIGS = ("config.yaml", "config.yml")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# when one model's directory holds several files a backend reads, the first of these wins
_PREFERRED = ("model.onnx", "model.xml", "model.tflite", "model.engine", "model.plan")


@dataclass
class ServedRepository:
    """The repository root to serve, how ``path`` was read, and the temporary links to remove."""

    root: Path
    layout: str  # "repository", "versions", "files" or "file"
    models: tuple[str, ...]  # the models to load at start; () for every model in the repository
    _temporary: Path | None = None

    def cleanup(self) -> None:
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None

    def __enter__(self) -> ServedRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def repository_for(path: str | os.PathLike[str], model_name: str | None = None) -> ServedRepository:
    """The repository that serves ``path`` (see the module docstring for the layouts).

    Raises ``FileNotFoundError`` for a path that does not exist and ``ValueError`` naming the
    layouts for one that fits none of them."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if model_name is not None and not _NAME.fullmatch(model_name):
        raise ValueError(
            f"model name {model_name!r}: use letters, digits, '_', '-' and '.' (not first), "
            "as a URL path segment and a directory name need"
        )
    if not p.exists():
        raise FileNotFoundError(f"model path {p} does not exist")
    if p.is_file():
        if not _readable(p):
            raise ValueError(f"{p}: no registered backend reads this file ({_suffixes()})")
        name = model_name or _stem(p)
        return _view(name, "file", version_files=_siblings(p), model=p, config=_config(p.parent))
    if not p.is_dir():
        raise ValueError(f"model path {p} is neither a file nor a directory")
    if model_name is None:  # a directory without a model name is a repository, as it always was
        return ServedRepository(p, "repository", ())

    versions = _version_dirs(p)
    models = {d.name: d for d in _subdirs(p) if _version_dirs(d)}
    files = [f for f in sorted(p.iterdir()) if f.is_file() and _readable(f)]
    if files:
        model = _pick(files, p)
        return _view(model_name, "files", version_files=sorted(p.iterdir()), model=model, config=_config(p))
    if versions and not models:
        return _view(model_name, "versions", model_dir=p)
    if models:
        if model_name in models:
            return ServedRepository(p, "repository", (model_name,))
        if len(models) == 1:
            (only,) = models.values()
            return _view(model_name, "repository", model_dir=only)
        raise ValueError(
            f"{p} is a repository of {len(models)} models ({', '.join(sorted(models))}) and none "
            f"is named {model_name!r}: name one of them, or leave the model name out to serve them all"
        )
    raise ValueError(
        f"{p} holds no model this server can read ({_suffixes()}). Lay it out as one of: "
        "a model file (minilm.onnx); one model's files (DIR/model.onnx, DIR/model.xml + model.bin, "
        "+ DIR/config.yaml); one model's versions (DIR/1/model.onnx); a repository "
        "(DIR/<model>/<version>/model.onnx)"
    )


# -- reading the layout ---------------------------------------------------------------------------
def _readable(f: Path) -> bool:
    from ..plugins import registry

    return bool(registry.candidates(f))


def _suffixes() -> str:
    from ..plugins import registry

    known = sorted({s for n in registry.names() for s in registry.get(n).suffixes})
    return f"readable suffixes: {', '.join(known)}"


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def _version_dirs(p: Path) -> list[Path]:
    """``p``'s version directories that hold a file (``p/1/model.onnx``)."""
    return [d for d in _subdirs(p) if d.name.isdigit() and any(f.is_file() for f in d.iterdir())]


def _pick(files: list[Path], where: Path) -> Path:
    """The model file among the readable files of one model's directory."""
    if len(files) == 1:
        return files[0]
    by_name = {f.name: f for f in files}
    for name in _PREFERRED:
        if name in by_name:
            return by_name[name]
    raise ValueError(
        f"{where} holds several model files ({', '.join(f.name for f in files)}): keep one, name "
        "the one to serve model.<suffix>, or lay them out as versions (1/model.onnx, 2/model.onnx)"
    )


def _config(directory: Path) -> Path | None:
    for name in _CONFIGS:
        if (directory / name).is_file():
            return directory / name
    return None


def _siblings(model: Path) -> list[Path]:
    """What a model file needs beside it: every file of its directory (external data, weights)."""
    return sorted(f for f in model.parent.iterdir() if f.is_file())


def _stem(p: Path) -> str:
    """``minilm.onnx`` -> ``minilm``, ``my.model.onnx`` -> ``my.model``."""
    return _safe(p.name[: -len(_suffix_of(p))] or p.name)


def _safe(name: str) -> str:
    """A name usable in a URL path and as a directory: other characters become '_'."""
    out = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-") or "model"
    return out


# -- presenting it as a repository ----------------------------------------------------------------
def _view(
    name: str,
    layout: str,
    *,
    model_dir: Path | None = None,
    version_files: list[Path] | None = None,
    model: Path | None = None,
    config: Path | None = None,
) -> ServedRepository:
    """A temporary repository holding model ``name`` as links: the whole model directory
    (``model_dir``), or version 1 made of ``version_files`` with ``model`` also linked as
    ``model.<suffix>`` (its companions that share its stem too, so an OpenVINO ``x.xml`` finds
    ``model.bin``)."""
    _remove_stale_views()
    tmp = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    try:
        if model_dir is not None:
            (tmp / name).symlink_to(model_dir.resolve(), target_is_directory=True)
        else:
            assert model is not None and version_files is not None
            version = tmp / name / "1"
            version.mkdir(parents=True)
            links = {f.name: f for f in version_files if f.name not in _CONFIGS}
            if not model.name.startswith("model."):
                # the model and the files that share its stem, also as model.*: these names win
                # over a file of the directory that has one (a model.onnx that is not the model)
                stem = model.name[: -len(_suffix_of(model))]
                for f in version_files:
                    if f.is_file() and f.name.startswith(stem + "."):
                        links["model." + f.name[len(stem) + 1 :]] = f
            for link, f in links.items():
                (version / link).symlink_to(f.resolve(), target_is_directory=f.is_dir())
            if config is not None:
                (tmp / name / "config.yaml").symlink_to(config.resolve())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("serving %s as model %r (%s layout) through %s", model_dir or model, name, layout, tmp)
    return ServedRepository(tmp, layout, (name,), tmp)


_PREFIX = "infercore-repository-"


def _remove_stale_views() -> None:
    """Remove the views of processes that died without cleaning up (a SIGKILLed Ray replica):
    ``infercore-repository-<pid>-*`` in the temporary directory whose process is gone."""
    for d in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = d.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:  # alive, someone else's
            pass


def _suffix_of(model: Path) -> str:
    """The suffix a backend reads this file by (``.onnx``; a plugin's may have two dots)."""
    from ..plugins import registry

    name = model.name.lower()
    suffixes = [s for r in registry.candidates(model) for s in r.suffixes if name.endswith(s)]
    return max(suffixes, key=len) if suffixes else model.suffix
