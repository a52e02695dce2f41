"""``GET /dashboard``: a live page of the server's metrics, with no build step and nothing fetched
from outside (inline JavaScript drawing SVG); ``GET /dashboard/data``: the JSON it polls.

The JSON is the server's own Prometheus registry grouped by model and version (cumulative counters
and histograms, as Prometheus would scrape them) plus the monitors' drift and quality; the page
turns consecutive polls into rates and histogram quantiles, the way Prometheus' ``rate`` and
``histogram_quantile`` do. Read-only and unauthenticated, like ``/metrics``.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import InferenceService

__all__ = ["dashboard_data", "dashboard_routes"]


def dashboard_data(service: InferenceService) -> dict[str, Any]:
    """Cumulative counters, histograms and gauges per model version, and the process's resources."""
    models: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {
            "requests": {"success": 0.0, "failure": 0.0, "cancelled": 0.0},
            "latency": {"buckets": {}, "count": 0.0, "sum": 0.0},
            "queue_depth": 0.0,
            "batches": {"count": 0.0, "sum": 0.0},
            "rejected": 0.0,
        }
    )
    process: dict[str, float] = {}
    for family in service.metrics.registry.collect():
        for s in family.samples:
            labels = s.labels
            if s.name.startswith("process_"):
                process[s.name] = float(s.value)
                continue
            if "model" not in labels or "version" not in labels or not labels["version"]:
                continue
            m = models[(labels["model"], labels["version"])]
            v = float(s.value)
            if s.name == "infercore_request_success_total":
                m["requests"]["success"] += v
            elif s.name == "infercore_request_failure_total":
                m["requests"]["failure"] += v
            elif s.name == "infercore_request_cancelled_total":
                m["requests"]["cancelled"] += v
            elif s.name == "infercore_request_duration_seconds_bucket":
                le = labels["le"]
                m["latency"]["buckets"][le] = m["latency"]["buckets"].get(le, 0.0) + v
            elif s.name == "infercore_request_duration_seconds_count":
                m["latency"]["count"] += v
            elif s.name == "infercore_request_duration_seconds_sum":
                m["latency"]["sum"] += v
            elif s.name == "infercore_queue_depth":
                m["queue_depth"] = v
            elif s.name == "infercore_batch_size_count":
                m["batches"]["count"] = v
            elif s.name == "infercore_batch_size_sum":
                m["batches"]["sum"] = v
            elif s.name == "infercore_batcher_requests_total" and labels.get("outcome") == "rejected":
                m["rejected"] = v
    for entry in service.repo.models():
        for mv in list(entry.versions.values()):
            m = models[(mv.name, str(mv.version))]
            watch = getattr(mv, "watch", None)
            if watch is None:
                continue
            state = watch.state()
            mon = state.get("monitor")
            if mon is not None:
                m["drift"] = {
                    name: {"drift": bool(t["drift"]), **t.get("scores", {})} for name, t in mon["tensors"].items()
                }
                m["samples"] = mon["samples"]
                q = mon.get("quality")
                if q is not None:
                    m["quality"] = {k: v for k, v in q["metrics"].items() if v is not None}
                    m["quality_labels"] = q["labels_in_window"]
                    m["degraded"] = bool(q["degraded"])
            if "screen" in state:
                m["screen"] = {k: state["screen"][k] for k in ("passed", "flagged", "rejected")}
    out = []
    for (model, version), m in sorted(models.items()):
        buckets = sorted(
            ((math.inf if le == "+Inf" else float(le), c) for le, c in m["latency"]["buckets"].items()),
            key=lambda b: b[0],
        )
        m["latency"]["buckets"] = [["+Inf" if math.isinf(le) else le, c] for le, c in buckets]
        out.append({"model": model, "version": version, **m})
    return {"time": time.time(), "process": process, "models": out}


def dashboard_routes(service: InferenceService) -> list[Any]:
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    from .rest import guarded, json_response

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    async def data(request: Request) -> Response:
        return json_response(dashboard_data(service), headers={"cache-control": "no-store"})

    return [
        Route("/dashboard", guarded(page), methods=["GET"]),
        Route("/dashboard/data", guarded(data), methods=["GET"]),
    ]


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>infercore dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2430; --mute:#6b7585; --grid:#e4e7ec; --bad:#c62828; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--ink); }
header { display:flex; align-items:baseline; gap:16px; padding:10px 18px; background:#1d2430; color:#fff; }
header h1 { font-size:16px; margin:0; font-weight:600; }
header .meta { color:#b8c0cc; font-size:12px; }
main { padding:12px 18px; }
.process { display:grid; grid-template-columns:repeat(auto-fill, minmax(260px, 1fr)); gap:10px; margin-bottom:14px; }
.model { background:var(--card); border:1px solid var(--grid); border-radius:8px; padding:10px 12px; margin-bottom:14px; }
.model h2 { font-size:14px; margin:0 0 8px; display:flex; gap:10px; align-items:center; }
.badge { font-size:11px; padding:1px 7px; border-radius:9px; color:#fff; background:var(--ok); }
.badge.bad { background:var(--bad); }
.grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(260px, 1fr)); gap:10px; }
.panel { border:1px solid var(--grid); border-radius:6px; padding:6px 8px 4px; background:var(--card); }
.panel h3 { margin:0; font-size:12px; font-weight:600; display:flex; justify-content:space-between; }
.panel h3 span { color:var(--mute); font-weight:400; }
.legend { font-size:11px; color:var(--mute); min-height:15px; }
.legend i { display:inline-block; width:9px; height:3px; margin:0 3px 2px 8px; vertical-align:middle; }
svg.chart { width:100%; height:120px; display:block; }
svg.chart text { font-size:10px; fill:var(--mute); }
.empty { color:var(--mute); padding:30px; text-align:center; }
</style></head>
<body>
<header><h1>infercore</h1><span class="meta" id="status">connecting…</span></header>
<main>
  <section class="process" id="process"></section>
  <section id="models"><div class="empty">waiting for the first poll…</div></section>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const INTERVAL = Math.max(200, Number(params.get("interval") || 1000));
const KEEP = Math.max(10, Number(params.get("points") || 300));
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const series = {};   // chart key -> {name -> [[t, v], ...]}
let previous = null, polls = 0;

function push(key, name, t, v) {
  if (v === null || v === undefined || !isFinite(v)) return;
  const s = (series[key] = series[key] || {});
  const pts = (s[name] = s[name] || []);
  pts.push([t, v]);
  if (pts.length > KEEP) pts.shift();
}

function quantile(q, buckets) {   // Prometheus' histogram_quantile on bucket deltas
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevLe = 0, prevC = 0;
  for (const [le, c] of buckets) {
    if (c >= rank) {
      if (le === "+Inf") return prevLe;
      if (c === prevC) return le;
      return prevLe + (le - prevLe) * (rank - prevC) / (c - prevC);
    }
    prevLe = le === "+Inf" ? prevLe : le; prevC = c;
  }
  return prevLe;
}

function chart(el, key, unit) {
  const s = series[key] || {};
  const names = Object.keys(s);
  const W = 300, H = 120, L = 38, R = 6, T = 6, B = 16;
  let tmin = Infinity, tmax = -Infinity, vmax = 0;
  for (const n of names) for (const [t, v] of s[n]) { tmin = Math.min(tmin, t); tmax = Math.max(tmax, t); vmax = Math.max(vmax, v); }
  if (!isFinite(tmin)) { tmin = 0; tmax = 1; }
  if (tmax - tmin < 1) tmax = tmin + 1;
  vmax = vmax > 0 ? vmax * 1.15 : 1;
  const x = t => L + (W - L - R) * (t - tmin) / (tmax - tmin);
  const y = v => T + (H - T - B) * (1 - v / vmax);
  let svg = "";
  for (let i = 0; i <= 3; i++) {
    const v = vmax * i / 3, yy = y(v).toFixed(1);
    svg += `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#e4e7ec"/>`;
    svg += `<text x="${L - 4}" y="${(+yy + 3).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`;
  }
  svg += `<text x="${W - R}" y="${H - 3}" text-anchor="end">${Math.round(tmax - tmin)} s</text>`;
  names.forEach((n, i) => {
    const pts = s[n].map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg += `<polyline data-series="${esc(n)}" data-points="${s[n].length}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.6" points="${pts}"/>`;
  });
  el.querySelector("svg").innerHTML = svg;
  el.querySelector("svg").dataset.points = String(Math.max(0, ...names.map(n => s[n].length)));
  el.querySelector(".legend").innerHTML = names.map((n, i) => {
    const last = s[n][s[n].length - 1];
    return `<i style="background:${COLORS[i % COLORS.length]}"></i>${esc(n)} ${last ? fmt(last[1]) : ""}${unit || ""}`;
  }).join("");
}

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000) return (v / 1000).toFixed(1) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }

function panel(container, key, title, unit) {
  let el = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!el) {
    el = document.createElement("div");
    el.className = "panel"; el.dataset.key = key;
    el.innerHTML = `<h3>${esc(title)}<span>${esc(unit || "")}</span></h3><svg class="chart" viewBox="0 0 300 120" preserveAspectRatio="none" data-chart="${esc(key)}"></svg><div class="legend"></div>`;
    container.appendChild(el);
  }
  chart(el, key, "");
}

function card(m) {
  const id = `${m.model}/${m.version}`;
  let el = document.querySelector(`.model[data-model="${CSS.escape(id)}"]`);
  if (!el) {
    el = document.createElement("div");
    el.className = "model"; el.dataset.model = id;
    el.innerHTML = `<h2><span>${esc(m.model)} <small>version ${esc(m.version)}</small></span><span class="badges"></span></h2><div class="grid"></div>`;
    document.getElementById("models").appendChild(el);
  }
  return el;
}

function update(data) {
  const t = data.time;
  const models = document.getElementById("models");
  if (data.models.length && models.querySelector(".empty")) models.innerHTML = "";
  const prev = previous;
  const proc = data.process || {};
  if (prev && prev.process) {
    const dt = t - prev.time;
    if (proc.process_cpu_seconds_total !== undefined && dt > 0)
      push("process/cpu", "cpu", t, 100 * (proc.process_cpu_seconds_total - prev.process.process_cpu_seconds_total) / dt);
  }
  if (proc.process_resident_memory_bytes !== undefined) push("process/mem", "resident", t, proc.process_resident_memory_bytes / 1048576);
  const pc = document.getElementById("process");
  panel(pc, "process/cpu", "Server CPU", "% of one core");
  panel(pc, "process/mem", "Server memory", "MiB");
  for (const m of data.models) {
    const id = `${m.model}/${m.version}`;
    const old = prev && prev.models.find(p => p.model === m.model && p.version === m.version);
    if (old) {
      const dt = t - prev.time;
      if (dt > 0) {
        push(id + "/rps", "answered", t, (m.requests.success - old.requests.success) / dt);
        push(id + "/errors", "failed", t, (m.requests.failure - old.requests.failure) / dt);
        push(id + "/errors", "overload", t, (m.rejected - old.rejected) / dt);
        const oldB = new Map(old.latency.buckets.map(([le, c]) => [String(le), c]));
        const delta = m.latency.buckets.map(([le, c]) => [le, c - (oldB.get(String(le)) || 0)]);
        const p50 = quantile(0.5, delta), p99 = quantile(0.99, delta);
        if (p50 !== null) push(id + "/latency", "p50", t, p50 * 1000);
        if (p99 !== null) push(id + "/latency", "p99", t, p99 * 1000);
        const db = m.batches.count - old.batches.count;
        if (db > 0) push(id + "/batch", "mean batch", t, (m.batches.sum - old.batches.sum) / db);
      }
    }
    push(id + "/queue", "queue depth", t, m.queue_depth);
    for (const [tensor, d] of Object.entries(m.drift || {})) push(id + "/drift", tensor, t, d.psi || 0);
    for (const [k, v] of Object.entries(m.quality || {})) push(id + "/quality", k, t, v);
    const el = card(m), grid = el.querySelector(".grid");
    panel(grid, id + "/rps", "Requests", "per second");
    panel(grid, id + "/latency", "Latency", "ms (server)");
    panel(grid, id + "/errors", "Errors", "per second");
    panel(grid, id + "/queue", "Queue depth", "requests");
    panel(grid, id + "/batch", "Batch size", "mean per batch");
    if (m.drift) panel(grid, id + "/drift", "Drift per tensor", "PSI");
    if (m.quality) panel(grid, id + "/quality", "Quality", `${m.quality_labels || 0} labels`);
    const badges = [];
    for (const [tensor, d] of Object.entries(m.drift || {})) badges.push(`<span class="badge ${d.drift ? "bad" : ""}" data-tensor="${esc(tensor)}">${esc(tensor)}: ${d.drift ? "drift" : "stable"}</span>`);
    if (m.degraded !== undefined) badges.push(`<span class="badge ${m.degraded ? "bad" : ""}">accuracy: ${m.degraded ? "dropped" : "ok"}</span>`);
    if (m.screen) badges.push(`<span class="badge ${m.screen.flagged + m.screen.rejected ? "bad" : ""}">screened: ${m.screen.flagged} flagged, ${m.screen.rejected} rejected</span>`);
    el.querySelector(".badges").innerHTML = badges.join(" ");
  }
  previous = data;
  polls += 1;
  document.body.dataset.polls = String(polls);
  document.getElementById("status").textContent = `${data.models.length} model version(s) · updated ${new Date(t * 1000).toLocaleTimeString()} · every ${INTERVAL / 1000} s`;
}

async function poll() {
  try {
    const r = await fetch("dashboard/data".replace(/^/, location.pathname.replace(/dashboard\/?$/, "")), {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    update(await r.json());
  } catch (e) {
    document.getElementById("status").textContent = `poll failed: ${e.message}`;
  }
  setTimeout(poll, INTERVAL);
}
poll();
</script>
</body></html>
"""
