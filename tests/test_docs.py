"""Every code block in README.md and docs/**/*.md runs as pasted, against real models.

What runs: fenced blocks whose language is ``python``/``py`` (Python), ``bash``/``sh``/``shell``
(shell) or ``console`` (shell: only the ``$ `` lines run, continued by a trailing ``\\``; the other
lines are output and are not checked). Other languages (``yaml``, ``json``, ``text``, none) are
not run. Each block is one test, named by its page and the line of its opening fence
(``docs/serve.md:12``), so a failure names where.

How a page runs (the way a reader would paste it):

* every page gets a fresh working directory holding the FIXTURES below that its runnable blocks
  name (a fixture is made when its file name appears in a block's text);
* Python blocks run in order in one namespace per page, so a block may use what an earlier block
  of the page defined; top-level ``await`` works (as in ``python -m asyncio``); a traceback points
  at the page's own lines;
* shell blocks run with ``bash -euo pipefail`` in the same directory, with the bin directory of
  the Python running the tests (``.venv/bin``) first on PATH, so ``infercore ...`` and ``python``
  are the installed ones, and ``MPLBACKEND=Agg``;
* running one block runs the earlier blocks of its page first (``pytest -k "docs/serve.md:40"``
  works alone); when an earlier block failed, the later ones fail naming it.

Markers: an HTML comment on the line just before the opening fence (several markers: one comment
per line, directly above each other). A marker anywhere else is an error, so none is ignored.

``<!-- no-run: REASON -->``
    the block is not run; it is reported as skipped with its reason (``pytest -rs``). A no-run
    without a reason fails. Only for what cannot run here: a GPU, TensorRT, a cluster, docker,
    installing packages into the environment the tests run in.
``<!-- requires: MARK[, MARK] -->``
    the block's test gets these pytest marks (``tensorflow``, ``ray``, ``browser``,
    ``prometheus``: the heavy ones, which the quick loop leaves out and scripts/test.sh runs in
    its second pass). A mark pyproject.toml does not register is an error (--strict-markers).
``<!-- exit: N -->``
    a shell block must end with exit status N (default 0): ``infercore compare`` exits 1 on a
    mismatch. The last command is the one that sets it (``-e`` stops at the first failure).
``<!-- raises: NAME -->``
    a Python block must raise an exception of class NAME (or a subclass of it).
``<!-- background: URL -->``
    a shell block that does not end (``infercore serve``): it is started in the background, the
    page's later blocks run once URL answers 200 (60 s at most), and it is stopped (SIGTERM, then
    SIGKILL) after the page's last block. URL's port must be free before it starts; such blocks
    run one at a time across processes (a file lock), since their ports are fixed.

The same rules, for docs writers, are in docs/contributing-docs.md.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import inspect
import linecache
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

PYTHON = frozenset({"python", "py", "python3"})
SHELL = frozenset({"bash", "sh", "shell"})
CONSOLE = frozenset({"console", "shell-session"})
MARKERS = ("no-run", "requires", "exit", "raises", "background")

SHELL_TIMEOUT_S = 240    # one shell block; pytest-timeout (300 s) bounds a Python block
READY_TIMEOUT_S = 60     # a background block's URL must answer within this
BACKGROUND_LOCK = Path(tempfile.gettempdir()) / "infercore-docs-background.lock"

# ---------------------------------------------------------------------------------------------
# Fixtures: the files a block may name. Each is made in the page's directory when a runnable
# block of the page names it. All are real models from infercore.testing (package wheels cached
# in ~/.cache/infercore, see docs/contributing-docs.md) and real data, never a placeholder.
#
#   model.onnx          PP-OCR mobile v2.0 text direction classifier (models.ppocr_cls(), 0.6 MB):
#                       "x" float32 [N, 3, H, W] (PP-OCR feeds 48 x 192) -> "save_infer_model/scale_0.tmp_1"
#                       float32 [N, 2]: probabilities of upright, upside down
#   model.xml/.bin      the same model as OpenVINO IR (weights kept float32)
#   x.npy               one input for model.onnx: a rendered text line, float32 [1, 3, 48, 192]
#   data.npz            "x": 8 rendered text lines for model.onnx, float32 [8, 3, 48, 192], every
#                       second one upside down; "labels": int64 [8], 0 upright, 1 upside down
#   text.jpg            a rendered text line, 640 x 96 RGB JPEG
#   minilm.onnx         MiniLM-L6 sentence embedding (models.minilm()): int64 input_ids,
#                       attention_mask, token_type_ids [batch, sequence] -> "embedding" [batch, 384]
#   silero_vad_op18_ifless.onnx   Silero VAD (models.silero_vad("ifless")): input [batch, samples],
#                       0-d int64 sr, state [2, batch, 128]
#   hand_landmark_lite.tflite     MediaPipe hand landmarks (models.mediapipe(...)): "input_1" float32
#                       [1, 224, 224, 3] -> "Identity" [1, 63], ...
#   digits.onnx         a small CNN trained on scikit-learn's digits (digits.digits_cnn()):
#                       "image" float32 [N, 1, 8, 8] in [0, 1] -> "logits" [N, 10]
#   digits_train.npz    "image": 512 training images (calibration data)
#   digits_test.npz     "image": the 449 held-out images, "labels": their digits (int64)
#   models/             a model repository for `infercore serve`: cls/1/model.onnx and
#                       cls/2/model.onnx (model.onnx, two versions)
# ---------------------------------------------------------------------------------------------

TEXT_LINES = ("infercore", "runs models", "on every", "runtime", "text lines", "upside down",
              "PP-OCR cls", "48 x 192")


def _text_lines() -> tuple[np.ndarray, np.ndarray]:
    from infercore.testing import models

    xs, labels = [], []
    for i, text in enumerate(TEXT_LINES):
        img = models.text_image(text, height=48, width=192)
        if i % 2:
            img = img[::-1, ::-1]
        xs.append(((img / 255 - 0.5) / 0.5).astype(np.float32).transpose(2, 0, 1))
        labels.append(i % 2)
    return np.stack(xs), np.asarray(labels, np.int64)


def _link(src: Path, dst: Path) -> None:
    """A read-only model file, linked rather than copied (MiniLM is 90 MB)."""
    dst.symlink_to(src)


def _model_onnx(d: Path) -> None:
    from infercore.testing import models

    shutil.copyfile(models.ppocr_cls(), d / "model.onnx")


def _model_xml(d: Path) -> None:
    import openvino as ov

    from infercore.testing import models

    ov.save_model(ov.Core().read_model(str(models.ppocr_cls())), str(d / "model.xml"), compress_to_fp16=False)


def _x_npy(d: Path) -> None:
    np.save(d / "x.npy", _text_lines()[0][:1])


def _data_npz(d: Path) -> None:
    x, labels = _text_lines()
    np.savez(d / "data.npz", x=x, labels=labels)


def _text_jpg(d: Path) -> None:
    from PIL import Image

    from infercore.testing import models

    Image.fromarray(models.text_image()).save(d / "text.jpg", quality=95)


def _minilm(d: Path) -> None:
    from infercore.testing import models

    _link(models.minilm(), d / "minilm.onnx")


def _silero(d: Path) -> None:
    from infercore.testing import models

    _link(models.silero_vad("ifless"), d / "silero_vad_op18_ifless.onnx")


def _hand(d: Path) -> None:
    from infercore.testing import models

    _link(models.mediapipe("hand_landmark_lite"), d / "hand_landmark_lite.tflite")


def _digits(d: Path) -> None:
    from infercore.testing import digits

    _link(digits.digits_cnn().path, d / "digits.onnx")


def _digits_train(d: Path) -> None:
    from infercore.testing import digits

    np.savez(d / "digits_train.npz", image=digits.digits_cnn().x_train[:512])


def _digits_test(d: Path) -> None:
    from infercore.testing import digits

    case = digits.digits_cnn()
    np.savez(d / "digits_test.npz", image=case.x_test, labels=case.y_test)


def _repository(d: Path) -> None:
    from infercore.testing import models

    for version in ("1", "2"):
        (d / "models" / "cls" / version).mkdir(parents=True)
        shutil.copyfile(models.ppocr_cls(), d / "models" / "cls" / version / "model.onnx")


FIXTURES: dict[str, Callable[[Path], None]] = {
    "model.onnx": _model_onnx,
    "model.xml": _model_xml,
    "x.npy": _x_npy,
    "data.npz": _data_npz,
    "text.jpg": _text_jpg,
    "minilm.onnx": _minilm,
    "silero_vad_op18_ifless.onnx": _silero,
    "hand_landmark_lite.tflite": _hand,
    "digits.onnx": _digits,
    "digits_train.npz": _digits_train,
    "digits_test.npz": _digits_test,
    "models/": _repository,
}


# ---------------------------------------------------------------------------------------------
# Reading pages
# ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
COMMENT = re.compile(r"^\s*<!--\s*(?P<key>[a-z][a-z-]*)\s*(?::(?P<value>.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: str           # path relative to the repository
    line: int           # 1-based line of the opening fence
    lang: str           # "python" or "shell"
    code: str           # what runs
    first_line: int     # 1-based page line of the code's first line
    markers: dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    def marks(self) -> list[str]:
        return [m.strip() for m in self.markers.get("requires", "").split(",") if m.strip()]


@dataclass
class Parsed:
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # markers attached to nothing, unknown keys


def _console_commands(lines: list[str]) -> str:
    commands: list[str] = []
    continued = False
    for line in lines:
        if continued:
            commands[-1] += "\n" + line
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continued = line.rstrip().endswith("\\")
    return "\n".join(commands)


def parse_page(path: Path, root: Path = ROOT) -> Parsed:
    rel = path.relative_to(root).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    parsed = Parsed()
    attached: set[int] = set()   # 0-based indices of marker lines directly above a fence
    fenced: set[int] = set()     # 0-based indices of lines inside a fence (markers there are examples)
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        lang = (m["info"].split() or [""])[0].lower()
        j = i + 1
        while j < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            j += 1
        fenced.update(range(i, j + 1))
        body = [line[min(indent, len(line) - len(line.lstrip(" "))) :] for line in lines[i + 1 : j]]
        markers: dict[str, str] = {}
        k = i - 1
        while k >= 0 and (c := COMMENT.match(lines[k])):
            attached.add(k)
            key, value = c["key"], (c["value"] or "").strip()
            if key not in MARKERS:
                parsed.problems.append(f"{rel}:{k + 1}: unknown marker {key!r} (known: {', '.join(MARKERS)})")
            else:
                markers[key] = value
            k -= 1
        kind = "python" if lang in PYTHON else "shell" if lang in SHELL | CONSOLE else None
        if kind is None:
            if markers:
                parsed.problems.append(f"{rel}:{i + 1}: markers on a ```{lang} block, which is not run")
        else:
            code = _console_commands(body) if lang in CONSOLE else "\n".join(body)
            if code.strip():
                parsed.blocks.append(Block(rel, i + 1, kind, code, i + 2, markers))
        i = j + 1
    for n, line in enumerate(lines):
        if n not in attached and n not in fenced and (c := COMMENT.match(line)) and c["key"] in MARKERS:
            parsed.problems.append(f"{rel}:{n + 1}: marker not on the line just before a code fence: {line.strip()}")
    return parsed


PARSED = {page.relative_to(ROOT).as_posix(): parse_page(page) for page in PAGES}
BLOCKS = [block for parsed in PARSED.values() for block in parsed.blocks]


# ---------------------------------------------------------------------------------------------
# Running pages
# ---------------------------------------------------------------------------------------------


@dataclass
class Background:
    block: Block
    proc: subprocess.Popen[bytes]
    log: Path
    lock: Any


class PageRun:
    """One page's directory, Python namespace, background processes and block outcomes."""

    def __init__(self, page: str, directory: Path) -> None:
        self.page = page
        self.dir = directory
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.outcome: dict[int, str | None] = {}    # block line -> None (passed) or the failure
        self.background: list[Background] = []
        blocks = PARSED[page].blocks
        text = "\n".join(b.code for b in blocks if "no-run" not in b.markers)
        for name, make in FIXTURES.items():
            if name in text:
                make(directory)

    # -- shell ---------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        bindir = Path(sys.executable).parent
        if not (bindir / "infercore").exists():
            pytest.fail(f"{bindir} has no `infercore` command: install the package (pip install -e .) "
                        "into the environment running the tests")
        return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
                "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}

    def run_shell(self, block: Block) -> None:
        if "background" in block.markers:
            self.start_background(block)
            return
        expected = int(block.markers.get("exit") or 0)
        try:
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=self.dir, env=self.env(),
                                  capture_output=True, text=True, timeout=SHELL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"{block.where}: still running after {SHELL_TIMEOUT_S} s: shorten it, "
                                 f"or mark a server `<!-- background: URL -->`\n{_tail(e.stdout)}\n{_tail(e.stderr)}", pytrace=False)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        if proc.returncode != expected:
            pytest.fail(f"{block.where}: exit status {proc.returncode}, expected {expected}\n"
                        f"--- stdout\n{_tail(proc.stdout)}\n--- stderr\n{_tail(proc.stderr)}", pytrace=False)

    def start_background(self, block: Block) -> None:
        url = block.markers["background"]
        if not url.startswith("http"):
            _fail(f"{block.where}: `<!-- background: URL -->` needs the URL that answers 200 when ready")
        lock = open(BACKGROUND_LOCK, "w")  # noqa: SIM115 (held until the page ends)
        deadline = time.monotonic() + 180
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    _fail(f"{block.where}: another docs test held {BACKGROUND_LOCK} for 180 s")
                time.sleep(0.5)
        host, port = _host_port(url)
        while _listening(host, port):
            if time.monotonic() > deadline:
                lock.close()
                _fail(f"{block.where}: port {port} is in use by another program; it must be free")
            time.sleep(0.5)
        log = self.dir / f".background-{block.line}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.code], cwd=self.dir, env=self.env(),
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append(Background(block, proc, log, lock))
        end = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < end:
            if proc.poll() is not None:
                _fail(f"{block.where}: exited with status {proc.returncode} before {url} answered\n"
                                     f"{_tail(log.read_text(errors='replace'))}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.25)
        _fail(f"{block.where}: {url} did not answer 200 within {READY_TIMEOUT_S} s\n"
                             f"{_tail(log.read_text(errors='replace'))}")

    def close(self) -> list[str]:
        """Stop the background blocks; what went wrong with them."""
        problems = []
        for bg in self.background:
            if bg.proc.poll() is not None:
                problems.append(f"{bg.block.where}: exited with status {bg.proc.returncode} while the page ran\n"
                                f"{_tail(bg.log.read_text(errors='replace'))}")
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(bg.proc.pid, signal.SIGTERM)
                try:
                    bg.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(bg.proc.pid, signal.SIGKILL)
                    bg.proc.wait()
                    problems.append(f"{bg.block.where}: did not stop within 30 s of SIGTERM")
            bg.lock.close()
        self.background.clear()
        return problems

    # -- python --------------------------------------------------------------------------------
    def run_python(self, block: Block) -> None:
        __tracebackhide__ = True
        filename = str(ROOT / block.page)
        source = "\n" * (block.first_line - 1) + block.code + "\n"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        code = compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        expected = block.markers.get("raises")
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            result = eval(code, self.namespace)
            if code.co_flags & inspect.CO_COROUTINE:
                asyncio.run(result)
        except Exception as e:
            if expected and expected in {c.__name__ for c in type(e).__mro__}:
                return
            raise
        finally:
            os.chdir(cwd)
        if expected:
            _fail(f"{block.where}: expected {expected}, nothing was raised")


def _fail(message: str) -> NoReturn:
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


def _tail(text: str | bytes | None, n: int = 4000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class Runner:
    def __init__(self, tmp: Callable[[str], Path]) -> None:
        self.tmp = tmp
        self.pages: dict[str, PageRun] = {}

    def page(self, name: str) -> PageRun:
        if name not in self.pages:
            self.pages[name] = PageRun(name, self.tmp(re.sub(r"\W+", "-", name)))
        return self.pages[name]

    def run(self, block: Block) -> None:
        __tracebackhide__ = True
        page = self.page(block.page)
        blocks = PARSED[block.page].blocks
        runnable = [b for b in blocks if "no-run" not in b.markers and set(b.marks()) <= set(block.marks())]
        try:
            for earlier in runnable:
                if earlier.line >= block.line:
                    break
                if earlier.line not in page.outcome:
                    self._run_one(page, earlier)
                if page.outcome[earlier.line] is not None:
                    pytest.fail(f"{block.where}: not run, the page's block at {earlier.where} failed", pytrace=False)
            self._run_one(page, block)
        finally:
            if runnable and block.line >= runnable[-1].line:
                problems = page.close()
                if problems:
                    pytest.fail("\n".join(problems), pytrace=False)

    def _run_one(self, page: PageRun, block: Block) -> None:
        __tracebackhide__ = True
        page.outcome[block.line] = f"{block.where} failed"
        try:
            if block.lang == "python":
                page.run_python(block)
            else:
                page.run_shell(block)
        except BaseException as e:
            page.outcome[block.line] = f"{block.where}: {type(e).__name__}: {e}"
            raise
        page.outcome[block.line] = None

    def close(self) -> list[str]:
        problems = [p for page in self.pages.values() for p in page.close()]
        for page in self.pages.values():
            page.namespace.clear()   # engines and reports the pages made
        return problems


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    r = Runner(lambda name: tmp_path_factory.mktemp(name, numbered=True))
    yield r
    problems = r.close()
    assert not problems, "\n".join(problems)


def _param(block: Block) -> Any:
    return pytest.param(block, id=block.where, marks=[getattr(pytest.mark, m) for m in block.marks()])


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_block_runs(block: Block, runner: Runner) -> None:
    if "no-run" in block.markers:
        reason = block.markers["no-run"]
        if not reason:
            pytest.fail(f"{block.where}: `<!-- no-run: REASON -->` needs a reason", pytrace=False)
        pytest.skip(f"{block.where}: no-run: {reason}")
    runner.run(block)


@pytest.mark.parametrize("page", list(PARSED))
def test_markers_are_attached(page: str) -> None:
    """A marker that is not directly above a block it applies to would be ignored: refuse it."""
    assert not PARSED[page].problems, "\n".join(PARSED[page].problems)


def test_readme_demo_runs() -> None:
    """README's `bash scripts/demo.sh` creates .venv and runs examples/demo.py: run the demo itself."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True,
                          timeout=SHELL_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = [int(n) for n in re.findall(r"text lines found: (\d+)", proc.stdout)]
    assert found and all(n >= 1 for n in found), proc.stdout   # the rendered line is found on every backend
    assert "bound == run: True" in proc.stdout, proc.stdout


PAGE = """\
<!-- no-run: needs a GPU -->
```bash
nvidia-smi
```
<!-- requires: tensorflow -->
<!-- exit: 1 -->
```sh
false
```
```console
$ infercore backends \\
    --json
output line
$ echo hi
hi
```
```console
only output
```
```yaml
a: 1
```
<!-- no-run: orphan -->

```python
x = 1
```
<!-- no-rum: typo -->
```python
y = 2
```
````markdown
<!-- no-run: an example of a marker, inside a fence -->
```python
not run
```
````
| `<!-- no-run: REASON -->` | a table row |
1. a list item:
   <!-- no-run -->
   ```python
   if True:
       z = 3
   ```
"""


def test_harness_reads_markers_and_console_blocks(tmp_path: Path) -> None:
    """The parser itself, on a page written here: markers, console prompts, orphans, other languages."""
    page = tmp_path / "page.md"
    page.write_text(PAGE, encoding="utf-8")
    parsed = parse_page(page, root=tmp_path)
    got = [(b.line, b.lang, b.code, b.markers) for b in parsed.blocks]
    assert got == [
        (2, "shell", "nvidia-smi", {"no-run": "needs a GPU"}),
        (7, "shell", "false", {"exit": "1", "requires": "tensorflow"}),
        (10, "shell", "infercore backends \\\n    --json\necho hi", {}),
        (25, "python", "x = 1", {}),
        (29, "python", "y = 2", {}),
        (41, "python", "if True:\n    z = 3", {"no-run": ""}),
    ]
    assert parsed.blocks[1].marks() == ["tensorflow"]
    assert parsed.problems == ["page.md:28: unknown marker 'no-rum' (known: no-run, requires, exit, raises, background)",
                               "page.md:23: marker not on the line just before a code fence: <!-- no-run: orphan -->"]


RUN_PAGE = """\
```python
import asyncio
a = 1
```
```python
await asyncio.sleep(0)
b = a + 1                      # the page's namespace: a from the block above
```
<!-- raises: LookupError -->
```python
{}["missing"]                  # KeyError is a LookupError
```
<!-- exit: 3 -->
```bash
echo "$PWD" > where.txt
exit 3
```
```python
from pathlib import Path
assert Path("where.txt").read_text().strip() == str(Path.cwd())   # same directory for both kinds
```
```python
raise RuntimeError("this block fails")
```
```python
c = 3
```
"""


def test_runner_runs_a_page_in_order_and_fails_what_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner on a page written here: one namespace, top-level await, raises and exit markers,
    one directory, and a failing block that fails the blocks after it, naming it."""
    (tmp_path / "run.md").write_text(RUN_PAGE, encoding="utf-8")
    parsed = parse_page(tmp_path / "run.md", root=tmp_path)
    monkeypatch.setitem(PARSED, "run.md", parsed)
    runner = Runner(lambda name: Path(tempfile.mkdtemp(dir=tmp_path)))
    blocks = parsed.blocks
    for block in blocks[:5]:
        runner.run(block)
    assert runner.pages["run.md"].namespace["b"] == 2
    with pytest.raises(pytest.fail.Exception, match=r"run\.md:10: expected LookupError"):
        runner.page("run.md").run_python(replace(blocks[2], code="pass"))
    with pytest.raises(pytest.fail.Exception, match="exit status 0, expected 3"):
        runner.page("run.md").run_shell(replace(blocks[3], code="true"))
    with pytest.raises(RuntimeError, match="this block fails"):
        runner.run(blocks[5])
    with pytest.raises(pytest.fail.Exception, match=r"run\.md:25: not run, the page's block at run\.md:22 failed"):
        runner.run(blocks[6])
    assert "c" not in runner.pages["run.md"].namespace
