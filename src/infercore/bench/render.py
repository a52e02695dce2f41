"""A benchmark report as text: plain and rich tables, Markdown, and a plot (matplotlib)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ..errors import InfercoreError
from .machine import simd_summary

if TYPE_CHECKING:
    from .report import BenchmarkReport, BenchmarkResult

__all__ = ["header", "markdown", "plot", "print_table", "table", "table_rows"]


def table_rows(report: BenchmarkReport) -> tuple[list[str], list[list[str]], list[str], list[list[str]], str]:
    base: dict[tuple[int, int], BenchmarkResult] = {}
    for r in report.results:
        if r.ok:
            base.setdefault((r.batch, r.concurrency), r)
    lat_head = [
        "backend",
        "precision",
        "batch",
        "conc",
        "min",
        "mean",
        "p50",
        "p90",
        "p95",
        "p99",
        "max",
        "CV",
        "n",
    ]
    thr_head = [
        "backend",
        "precision",
        "batch",
        "conc",
        "inf/s",
        "items/s",
        "relative",
        "p50 net",
        "overhead µs",
        "peak RSS MB",
    ]
    lat_rows: list[list[str]] = []
    thr_rows: list[list[str]] = []
    for r in report.results:
        key = [r.backend, r.precision or "default", str(r.batch), str(r.concurrency)]
        if not r.ok or r.latency is None:
            msg = f"failed: {r.error}"
            if len(msg) > 140:
                msg = msg[:137] + "..."  # the whole message is in the JSON
            lat_rows.append([*key, msg] + [""] * (len(lat_head) - 5))
            thr_rows.append([*key, msg] + [""] * (len(thr_head) - 5))
            continue
        s = r.latency
        lat_rows.append(
            [
                *key,
                *(
                    _ms(v)
                    for v in (s.min_ms, s.mean_ms, s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms, s.max_ms)
                ),
                f"{s.cv:.1%}",
                str(s.count),
            ]
        )
        ref = base[(r.batch, r.concurrency)]
        rel = (r.items_per_s or 0.0) / (ref.items_per_s or 1.0)
        thr_rows.append(
            [
                *key,
                f"{r.throughput:,.1f}",
                f"{r.items_per_s:,.1f}",
                f"{rel:.2f}x",
                _ms(r.p50_net_ms or 0.0),
                f"{r.overhead.latency_us:.1f}" if r.overhead else "",
                f"{r.peak_rss_mb:,.0f}" if r.peak_rss_mb is not None else "",
            ]
        )
    refs = sorted({f"{b.backend} {b.precision or 'default'}" for b in base.values()}) or ["none ran"]
    note = (
        "relative: items/s over the first backend of the same batch and concurrency "
        f"({', '.join(refs)}); p50 net: p50 minus the harness overhead"
    )
    return lat_head, lat_rows, thr_head, thr_rows, note


def header(report: BenchmarkReport) -> str:
    s = report.settings
    run = f"{s.duration_s:g} s" if s.iterations is None and s.duration_s else f"{s.iterations} calls"
    versions = sorted({f"{r.backend} {r.backend_version}" for r in report.results if r.backend_version})
    return "\n".join(
        [
            f"model    {report.model.name} ({_size(report.model.size_bytes)})",
            f"machine  {report.machine.describe()}",
            f"load     {' '.join(map(str, report.machine.loadavg)) if report.machine.loadavg else 'n/a'} (1/5/15 min "
            "load average at start)",
            f"run      warmup {s.warmup_s:g} s, measured {run} per configuration, "
            f"{'bound I/O (zero-copy)' if s.bound else 'run() with copies'}, threads "
            f"{s.threads or 'backend default'}, inputs {s.input_source}",
            f"backends {', '.join(versions) or 'n/a'}",
        ]
    )


def table(report: BenchmarkReport) -> str:
    """The tables as plain text (what ``print_table`` prints without rich)."""
    lat_head, lat_rows, thr_head, thr_rows, note = table_rows(report)
    parts = [
        header(report),
        "",
        "latency (ms)",
        _plain_table(lat_head, lat_rows),
        "",
        "throughput",
        _plain_table(thr_head, thr_rows),
        note,
    ]
    if report.warnings:
        parts += ["", "warnings:"] + [f"  ! {w}" for w in report.warnings]
    return "\n".join(parts)


def markdown(report: BenchmarkReport) -> str:
    """A Markdown table (README-ready): one row per configuration, with the machine and date."""
    head = [
        "backend",
        "precision",
        "batch",
        "conc",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "CV",
        "items/s",
        "relative",
        "peak RSS MB",
    ]
    _, _, _, thr_rows, note = table_rows(report)
    rows = []
    for r, t in zip(report.results, thr_rows, strict=True):
        if r.latency is None:
            rows.append(t[:4] + [t[4]] + [""] * (len(head) - 5))
            continue
        s = r.latency
        rows.append(
            [*t[:4], _ms(s.p50_ms), _ms(s.p90_ms), _ms(s.p99_ms), f"{s.cv:.1%}", t[5], t[6], t[9]]
        )
    lines = [
        f"**{report.model.name}** on {report.machine.describe()} — {report.created[:10]}, "
        f"infercore {report.infercore_version}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    lines += ["", f"_{note}._"]
    if report.warnings:
        lines += ["", "Warnings: " + "; ".join(report.warnings)]
    return "\n".join(lines)


def print_table(report: BenchmarkReport, file: TextIO | None = None, *, color: bool | None = None) -> None:
    """Print the header, the latency and throughput tables and the warnings (rich if installed)."""
    file = file or sys.stdout
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(table(report), file=file)
        return
    console = Console(
        file=file,
        highlight=False,
        force_terminal=color,
        no_color=color is False,
        width=max(120, Console(file=file).width),
    )
    console.print(header(report))
    lat_head, lat_rows, thr_head, thr_rows, note = table_rows(report)
    for title, head, rows in (("latency (ms)", lat_head, lat_rows), ("throughput", thr_head, thr_rows)):
        t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for i, h in enumerate(head):
            t.add_column(h, justify="left" if i < 2 else "right", no_wrap=i >= 2)
        for row, r in zip(rows, report.results, strict=True):
            if r.ok:
                t.add_row(*row)
            else:  # the message goes below the table, where it cannot squash the columns
                t.add_row(*row[:4], "failed", *[""] * (len(head) - 5), style="red")
        console.print(t)
    console.print(note, style="dim")
    for skip in report.skipped:
        console.print(f"- skipped {skip}", style="dim")
    for e in report.errors:
        console.print(f"x {e}", style="red")
    for w in report.warnings:
        console.print(f"! {w}", style="yellow")


def plot(report: BenchmarkReport, path: str | os.PathLike[str]) -> Path:
    """Latency distributions (left) and throughput bars (right), as PNG/SVG/PDF by suffix."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise InfercoreError('plotting needs matplotlib: pip install "infercore[bench]"') from e
    ok = [r for r in report.results if r.ok and r.latency is not None]
    if not ok:
        raise InfercoreError("nothing to plot: every configuration failed")
    labels = [r.label for r in ok]
    fig = Figure(figsize=(12, 1.6 + 0.55 * len(ok)), layout="constrained")
    FigureCanvasAgg(fig)
    ax_lat, ax_thr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ys = np.arange(len(ok))
    rng = np.random.default_rng(0)
    for y, r in zip(ys, ok, strict=True):
        s = r.latency
        assert s is not None
        if r.samples_ns is not None and r.samples_ns.size > 1:
            ms = r.samples_ns / 1e6
            if ms.size > 4000:
                ms = rng.choice(ms, 4000, replace=False)
            lo, hi = np.percentile(ms, [0.5, 99.5])
            ms = ms[(ms >= lo) & (ms <= hi)]
            if ms.size > 1 and ms.max() > ms.min():
                parts = ax_lat.violinplot(
                    [ms], positions=[y], widths=0.8, showextrema=False, **_horizontal(ax_lat)
                )
                for body in parts["bodies"]:
                    body.set_alpha(0.45)
        ax_lat.hlines(y, s.p50_ms, s.p99_ms, color="0.3", lw=1)
        ax_lat.plot([s.p50_ms], [y], "o", color="C3", ms=5)
        ax_lat.plot([s.p99_ms], [y], "|", color="0.2", ms=10)
    ax_lat.set_yticks(ys, labels)
    ax_lat.invert_yaxis()
    ax_lat.set_xlabel("latency per call (ms) — dot: p50, bar: p99; 0.5-99.5% shown")
    ax_lat.grid(axis="x", alpha=0.3)
    thr = [r.items_per_s or 0.0 for r in ok]
    bars = ax_thr.barh(ys, thr, color=[f"C{i % 10}" for i in range(len(ok))], alpha=0.8)
    ax_thr.bar_label(bars, [f"{v:,.0f}" for v in thr], padding=3, fontsize=8)
    ax_thr.set_yticks(ys, [""] * len(ok))
    ax_thr.invert_yaxis()
    ax_thr.set_xlabel("throughput (items/s)")
    ax_thr.set_xlim(0, max(thr) * 1.2 if max(thr) > 0 else 1)
    ax_thr.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"{report.model.name} — {report.machine.cpu_model}, {report.machine.cores_usable} cores "
        f"({simd_summary(report.machine.flags)}) — {report.created[:10]}",
        fontsize=10,
    )
    out = Path(path)
    # the format from the suffix where matplotlib knows it, else PNG: the file is ``path`` itself,
    # never ``path`` with a suffix added
    fmt = out.suffix[1:].lower()
    fig.savefig(out, dpi=120, format=fmt if fmt in fig.canvas.get_supported_filetypes() else "png")
    return out


def _horizontal(ax: Any) -> dict[str, Any]:
    import inspect

    params = inspect.signature(ax.violinplot).parameters
    return {"orientation": "horizontal"} if "orientation" in params else {"vert": False}


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _plain_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in head]
    for row in rows:
        for i, cell in enumerate(row):
            if cell.startswith("failed:"):
                break  # a failure message spans the figure columns: it does not widen one
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            if c.startswith("failed:"):
                out.append(c)
                break
            out.append(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
