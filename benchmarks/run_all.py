"""Regenerate every figure the README and docs quote, into one results folder.

    python benchmarks/run_all.py [--quick] [--out results] [--only bench,overhead] [--skip serve]

Steps, each run only where its script (or runtime) is present:
  bench_minilm, bench_hand   ``infercore bench`` itself: MiniLM seq 128 on ort / openvino f32 / openvino
                             bf16, and MediaPipe hand_landmark_lite on litert / openvino (table, JSON, PNG)
  bench_selfcheck            ``infercore bench`` p50 against a hand-written raw-runtime loop (±10%)
  overhead, backends, batching, quantize, digits, prune, serve, trt, and any other benchmarks/*.py
                             each run as ``python benchmarks/NAME.py [--quick] --json OUT/NAME.json``
                             (``--plot OUT/NAME.png`` where accepted; trt only where tensorrt is)

Every step's output goes to ``OUT/NAME.log``; ``OUT/RESULTS.md`` collects the tables with the date,
the machine (CPU, SIMD flags, cores, load average) and the runtime versions; ``OUT/summary.json``
lists each step's status, exit code and duration. A failing step is reported, and the others run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPTS = ("overhead", "backends", "batching", "quantize", "digits", "prune", "serve", "trt")
# scripts without --quick: the arguments that make them short
QUICK_ARGS = {
    "batching": ["--duration", "1", "--callers", "1,16,64"],
    "serve": ["--duration", "2", "--clients", "1,8", "--paired-rounds", "1"],
}


def _scripts() -> list[str]:
    """The known scripts first, then any other ``benchmarks/*.py`` (not ``_*``, not this one)."""
    others = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    others = [n for n in others if n not in (*SCRIPTS, "run_all", "bench_selfcheck")]
    return ["bench_selfcheck", *SCRIPTS, *others]


def _extra_args(name: str) -> list[str] | str:
    """Arguments a script needs besides --quick/--json, or why it cannot run here."""
    if name == "trt":
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed (needs an NVIDIA GPU)"
        from infercore.testing import models

        return [str(models.ppocr_det()), "--shape", "x=1,3,320,640"]
    return []


def _bench_steps(quick: bool) -> list[tuple[str, list[str]]]:
    """``infercore bench`` command lines (without -o/--plot), built only if the models are there."""
    from infercore.testing import models

    timing = ["--warmup", "0.5s", "--duration", "2s"] if quick else ["--warmup", "2s", "--duration", "10s"]
    steps: list[tuple[str, list[str]]] = []
    try:
        minilm = models.minilm()
        batch = ["--batch", "1"] if quick else ["--batch", "1,8"]
        steps.append(
            (
                "bench_minilm",
                [
                    str(minilm),
                    "--backends",
                    "ort,openvino:fp32,openvino:bf16",
                    "--shape",
                    "sequence=128",
                    *batch,
                    *timing,
                ],
            )
        )
    except models.ModelUnavailable as e:
        print(f"run_all: MiniLM unavailable, bench_minilm skipped: {e}", file=sys.stderr)
    try:
        hand = models.mediapipe("hand_landmark_lite")
        steps.append(("bench_hand", [str(hand), "--backends", "litert,openvino:fp32", *timing]))
    except models.ModelUnavailable as e:
        print(f"run_all: hand_landmark_lite unavailable, bench_hand skipped: {e}", file=sys.stderr)
    return steps


def _help(script: Path) -> str:
    """The script's --help text (flags it accepts), empty if it cannot say."""
    try:
        proc = subprocess.run(
            [sys.executable, str(script), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return proc.stdout


def _run(name: str, argv: list[str], out: Path, timeout: float) -> dict[str, Any]:
    log = out / f"{name}.log"
    t0 = time.monotonic()
    print(f"run_all: {name}: {' '.join(argv[1:])}", flush=True)
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(
                argv, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout, check=False
            )
        code: int | None = proc.returncode
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        code, status = None, f"timed out after {timeout:.0f} s"
    seconds = round(time.monotonic() - t0, 1)
    print(f"run_all: {name}: {status} ({seconds} s)", flush=True)
    return {"step": name, "status": status, "exit_code": code, "seconds": seconds, "log": log.name}


def _markdown_rows(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k not in keys and (v is None or isinstance(v, (str, int, float, bool))):
                keys.append(k)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for k in keys:
            v = row.get(k)
            cells.append(f"{v:.4g}" if isinstance(v, float) else "" if v is None else str(v))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _render(path: Path) -> str:
    """A step's JSON as Markdown: a bench report through its own renderer, rows as a table, else JSON."""
    from infercore.bench import BenchmarkReport, validate_report

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"_could not read {path.name}: {e}_"
    if isinstance(data, dict) and not validate_report(data):
        return BenchmarkReport.from_dict(data).to_markdown()
    for key in ("rows", "results", "cases"):
        rows = data.get(key) if isinstance(data, dict) else None
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            return _markdown_rows(rows)
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return _markdown_rows(data)
    text = json.dumps(data, indent=2)
    lines = text.splitlines()
    if len(lines) > 60:
        text = "\n".join([*lines[:60], f"... ({len(lines) - 60} more lines in {path.name})"])
    return f"```json\n{text}\n```"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs everywhere (a smoke run, minutes)")
    ap.add_argument("--out", default="results", help="results folder (default: results)")
    ap.add_argument("--only", help="comma-separated step names to run")
    ap.add_argument("--skip", default="", help="comma-separated step names to leave out")
    ap.add_argument("--timeout", type=float, help="seconds per step (default 3600, quick 900)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    only = {s.strip() for s in args.only.split(",")} if args.only else None
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    timeout = args.timeout or (900.0 if args.quick else 3600.0)

    def wanted(name: str) -> bool:
        return (only is None or name in only) and name not in skip

    steps: list[dict[str, Any]] = []
    bench_steps = _bench_steps(args.quick) if only is None or only & {"bench_minilm", "bench_hand"} else []
    for name, bench_args in bench_steps:
        if not wanted(name):
            continue
        argv = [
            sys.executable,
            "-m",
            "infercore.cli",
            "bench",
            *bench_args,
            "--no-progress",
            "-o",
            str(out / f"{name}.json"),
            "--plot",
            str(out / f"{name}.png"),
        ]
        steps.append(_run(name, argv, out, timeout) | {"json": f"{name}.json"})
    for name in _scripts():
        script = HERE / f"{name}.py"
        if not wanted(name):
            continue
        if not script.exists():
            steps.append({"step": name, "status": "absent", "exit_code": None, "seconds": 0.0})
            continue
        extra = _extra_args(name)
        if isinstance(extra, str):
            steps.append({"step": name, "status": f"skipped: {extra}", "exit_code": None, "seconds": 0.0})
            print(f"run_all: {name}: skipped: {extra}", flush=True)
            continue
        help_text = _help(script)
        argv = [sys.executable, str(script), *extra]
        if args.quick:
            argv += ["--quick"] if "--quick" in help_text else QUICK_ARGS.get(name, [])
        for flag in ("--json", "--out"):
            if flag in help_text:
                argv += [flag, str(out / f"{name}.json")]
                break
        if "--plot" in help_text:
            argv += ["--plot", str(out / f"{name}.png")]
        steps.append(_run(name, argv, out, timeout) | {"json": f"{name}.json"})

    _write_results(out, steps, args.quick)
    (out / "summary.json").write_text(json.dumps({"quick": args.quick, "steps": steps}, indent=2))
    print(f"run_all: wrote {out / 'RESULTS.md'}")
    return (
        0 if all(s["status"] == "ok" or s["status"].startswith(("absent", "skipped")) for s in steps) else 1
    )


def _write_results(out: Path, steps: list[dict[str, Any]], quick: bool) -> None:
    import infercore as ic
    from infercore.bench import MachineInfo

    machine = MachineInfo.collect()
    versions = ", ".join(f"{n} {i.version}" for n, i in ic.available_backends().items() if i.available)
    lines = [
        "# infercore benchmark results",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}{' (quick run: short, indicative only)' if quick else ''}",
        f"- machine: {machine.describe()}",
        f"- load average at the end (1/5/15 min): {machine.loadavg}",
        f"- infercore {ic.__version__}; runtimes: {versions}",
        "- regenerate: `python benchmarks/run_all.py` (see benchmarks/README.md)",
        "",
        "| step | status | seconds |",
        "|---|---|---:|",
    ]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} |" for s in steps]
    for s in steps:
        if s["status"].startswith(("absent", "skipped")):
            continue
        lines += ["", f"## {s['step']}", ""]
        produced = out / s.get("json", "")
        if s.get("json") and produced.is_file():
            lines.append(_render(produced))
        else:
            lines.append(f"_no JSON written; see {s.get('log')}_")
        png = f"{s['step']}.png"
        if (out / png).is_file():
            lines += ["", f"![{s['step']}]({png})"]
        if s["status"] != "ok" and s.get("log") and (out / s["log"]).is_file():
            tail = (out / s["log"]).read_text(errors="replace").splitlines()[-15:]
            lines += ["", "```", *tail, "```"]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
