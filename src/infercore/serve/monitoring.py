"""Monitoring in the server: a :class:`~infercore.monitor.Monitor` and an input
:class:`~infercore.monitor.Screen` per model version, their endpoints and their Prometheus metrics.

A model's ``config.yaml``::

    monitoring:
      profile: profile.json     # a file in the version directory, else in the model directory
      sample_rate: 0.1          # share of requests whose tensors are tested (taken off the request path)
      window: 1000              # samples per test window (optional: step, alpha, psi_floor,
                                # accuracy_drop, queue_size, feedback_ttl_s, max_feedback_ids, tensors)
    screen:
      action: flag              # flag: answer, with parameters screen_flagged/screen_score; reject: 400
      threshold: 3.0            # -log10 of the share of reference samples as far: 3 = 1 in 1,000
      tensors: [x]              # optional: the inputs (default) and/or outputs to screen
      profile: profile.json     # optional: default monitoring's

Endpoints (an extension of the V2 protocol, ``monitoring`` in the server's extensions):

    POST /v2/models/{m}[/versions/{v}]/feedback   {"id": "<the V2 request id>", "label": 3}
                                                  or {"feedback": [{"id": ..., "label": ...}, ...]}
    GET  /v2/models/{m}[/versions/{v}]/monitor     the monitors' state as JSON

Prometheus (read from the monitors at scrape time; nothing per request)::

    infercore_drift{model,version,tensor}                         1 while the tensor drifts
    infercore_drift_score{model,version,tensor,test}              psi, ks, chi2 (classifier outputs), cusum
    infercore_drift_windows_total{model,version,tensor}           windows that raised drift
    infercore_quality{model,version,metric}                       accuracy, precision, recall, f1, roc_auc
    infercore_quality_labels{model,version}                       labels in the rolling window
    infercore_quality_degraded{model,version}                     1 while the accuracy-drop detector alarms
    infercore_feedback_total{model,version,outcome}               matched, unknown
    infercore_screened_total{model,version,action}                passed, flagged, rejected
    infercore_monitor_samples_total{model,version}                samples taken for the drift tests
    infercore_monitor_dropped_samples_total{model,version}        samples dropped on a full queue
    infercore_monitor_queue_depth{model,version}
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadRequest, NotFound

if TYPE_CHECKING:
    from ..monitor import Monitor, Screen
    from ..specs import TensorSpec
    from .repository import ModelRepository, ModelVersion
    from .service import InferenceService

__all__ = ["MonitorCollector", "MonitoringConfig", "ScreenConfig", "Watch", "monitoring_routes", "open_watch"]

_MONITOR_KEYS = {
    "profile": str,
    "sample_rate": float,
    "window": int,
    "step": int,
    "alpha": float,
    "psi_floor": float,
    "accuracy_drop": float,
    "queue_size": int,
    "feedback_ttl_s": float,
    "max_feedback_ids": int,
    "tensors": list,
    "worker": str,
}
_SCREEN_KEYS = {"action": str, "threshold": float, "tensors": list, "profile": str}


# -- configuration ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitoringConfig:
    profile: str
    settings: tuple[tuple[str, Any], ...]  # the Monitor's keyword arguments

    @classmethod
    def parse(cls, value: Any) -> MonitoringConfig | None:
        if value is None or value is False:
            return None
        raw = _mapping(value, "monitoring", _MONITOR_KEYS)
        if "profile" not in raw:
            raise ValueError("monitoring: needs profile: PATH (a profile built with `infercore profile`)")
        settings = {k: v for k, v in raw.items() if k != "profile"}
        if "feedback_ttl_s" in settings:
            settings["feedback_ttl"] = settings.pop("feedback_ttl_s")
        # a worker process where it can run: a thread's Python holds the GIL while requests wait
        if "worker" not in settings:
            from ..monitor.worker import supported

            settings["worker"] = "thread" if supported() else "process"
        from ..monitor.monitor import WORKERS

        if settings["worker"] not in WORKERS:
            raise ValueError(f"monitoring.worker must be process or thread, got {settings['worker']!r}")
        return cls(raw["profile"], tuple(sorted(settings.items())))


@dataclass(frozen=True)
class ScreenConfig:
    action: str = "flag"
    threshold: float = 3.0
    tensors: tuple[str, ...] | None = None
    profile: str | None = None

    @classmethod
    def parse(cls, value: Any) -> ScreenConfig | None:
        if value is None or value is False:
            return None
        raw = _mapping(value, "screen", _SCREEN_KEYS)
        action = raw.get("action", "flag")
        if action not in ("flag", "reject"):
            raise ValueError(f"screen.action must be flag or reject, got {action!r}")
        threshold = raw.get("threshold", 3.0)
        if not threshold > 0:
            raise ValueError(f"screen.threshold must be a number > 0, got {threshold!r}")
        tensors = raw.get("tensors")
        return cls(action, float(threshold), None if tensors is None else tuple(tensors), raw.get("profile"))


def _mapping(value: Any, key: str, known: Mapping[str, type]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping, got {value!r}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{key}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        kind = known[k]
        if kind is float:
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        elif kind is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif kind is list:
            ok = isinstance(v, list) and all(isinstance(s, str) for s in v)
        else:
            ok = isinstance(v, kind)
        if not ok:
            what = {float: "a number", int: "an int", list: "a list of tensor names", str: "a string"}[kind]
            raise ValueError(f"{key}.{k} must be {what}, got {v!r}")
        out[k] = v
    return out


# -- one version's monitoring ----------------------------------------------------------------------
class Watch:
    """What watches one served version: its Monitor (drift, quality) and its Screen."""

    def __init__(self, monitor: Monitor | None, screen: Screen | None) -> None:
        self.monitor = monitor
        self.screen = screen
        self._screen_inputs = screen is not None and screen.inputs_only

    def before(self, feeds: Mapping[str, np.ndarray], response: dict[str, Any] | None) -> None:
        """Screen the inputs (when only inputs are screened): reject raises BadRequest."""
        if self._screen_inputs:
            self._screen(feeds, response)

    def after(
        self,
        feeds: Mapping[str, np.ndarray],
        result: Mapping[str, np.ndarray],
        request_id: str | None,
        response: dict[str, Any] | None,
    ) -> None:
        if self.screen is not None and not self._screen_inputs:
            self._screen({**feeds, **result}, response)
        if self.monitor is not None:
            self.monitor.observe(feeds, result, request_id)

    def _screen(self, tensors: Mapping[str, np.ndarray], response: dict[str, Any] | None) -> None:
        assert self.screen is not None
        verdict = self.screen.check(tensors)
        if not verdict.flagged:
            return
        if self.screen.action == "reject":
            raise BadRequest(verdict.reason)
        if response is not None:
            response.update(verdict.parameters())

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"monitor": None if self.monitor is None else self.monitor.state()}
        if self.screen is not None:
            out["screen"] = {
                "action": self.screen.action,
                "threshold": self.screen.threshold,
                "tensors": list(self.screen.tensors),
                **self.screen.counts(),
            }
        return out

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()


def _profile_path(name: str, model_dir: Path, version_dir: Path) -> Path:
    p = Path(name)
    if p.is_absolute():
        return p
    for base in (version_dir, model_dir):
        if (base / p).exists():
            return base / p
    raise ValueError(
        f"profile {name!r} not found in {version_dir} nor in {model_dir} (build one with "
        "`infercore profile MODEL --data DATA -o PATH`)"
    )


def open_watch(
    monitoring: MonitoringConfig | None,
    screen: ScreenConfig | None,
    model_dir: Path,
    version_dir: Path,
    name: str,
    version: int,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> Watch | None:
    """The Watch of one version, or None when its config asks for neither; ValueError naming the
    problem when the profile is missing, unreadable or not this model's."""
    if monitoring is None and screen is None:
        return None
    from ..errors import InfercoreError
    from ..monitor import Monitor, Profile, Screen

    profiles: dict[Path, Profile] = {}

    def profile(path_name: str) -> Profile:
        path = _profile_path(path_name, model_dir, version_dir)
        if path not in profiles:
            p = Profile.load(path)
            p.check(inputs, outputs)
            profiles[path] = p
        return profiles[path]

    monitor = None
    try:
        if monitoring is not None:
            monitor = Monitor(profile(monitoring.profile), name=f"{name}/{version}", **dict(monitoring.settings))
        scr = None
        if screen is not None:
            source = screen.profile or (monitoring.profile if monitoring is not None else None)
            if source is None:
                raise ValueError("screen: needs a profile (screen.profile, or monitoring.profile)")
            scr = Screen(profile(source), threshold=screen.threshold, action=screen.action,
                         tensors=None if screen.tensors is None else list(screen.tensors))
    except InfercoreError as e:
        if monitor is not None:
            monitor.close()
        raise ValueError(f"monitoring: {e}") from e
    except BaseException:
        if monitor is not None:
            monitor.close()
        raise
    return Watch(monitor, scr)


# -- endpoints -------------------------------------------------------------------------------------
def _versions(service: InferenceService, name: str, version: str | None) -> list[ModelVersion]:
    if version:
        return [service.model(name, version)]
    service.model(name, None)  # BadRequest naming the served models when unknown
    entry = next(e for e in service.repo.models() if e.name == name)
    return [entry.versions[v] for v in sorted(entry.versions, reverse=True)]


def monitoring_routes(service: InferenceService) -> list[Any]:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .rest import guarded, json_response, loads_json, read_body

    async def feedback(request: Request) -> Response:
        service.check_auth(request.headers.get("authorization"))
        p = request.path_params
        body = await read_body(request, 16 << 20)
        payload = loads_json(body, "request body")
        items = _feedback_items(payload)
        watched = [mv for mv in _versions(service, p["model"], p.get("version"))
                   if mv.watch is not None and mv.watch.monitor is not None]
        if not watched:
            raise BadRequest(
                f"model {p['model']!r} has no monitoring: add monitoring: {{profile: ...}} to its config.yaml"
            )
        matched, unknown = 0, []
        for rid, label in items:
            mv = next((m for m in watched if m.watch.monitor.knows(rid)), watched[0])
            try:
                ok = mv.watch.monitor.feedback(rid, label)
            except ValueError as e:  # ArgumentError: a label that does not fit the prediction
                raise BadRequest(f"feedback for request {rid!r}: {getattr(e, 'reason', e)}") from None
            if ok:
                matched += 1
            else:
                unknown.append(rid)
        if len(items) == 1 and unknown:
            raise NotFound(
                f"no prediction of model {p['model']!r} is kept for request id {unknown[0]!r}: predictions are "
                "kept by the V2 request 'id' (or X-Request-Id) for feedback_ttl_s, and a label uses one up"
            )
        return json_response({"matched": matched, "unknown": unknown[:100], "unknown_count": len(unknown)})

    async def monitor_state(request: Request) -> Response:
        p = request.path_params
        versions = _versions(service, p["model"], p.get("version"))
        states = {str(mv.version): mv.watch.state() for mv in versions if mv.watch is not None}
        if not states:
            raise BadRequest(
                f"model {p['model']!r} has no monitoring: add monitoring: {{profile: ...}} to its config.yaml"
            )
        return json_response({"name": p["model"], "versions": states})

    g = guarded
    return [
        Route("/v2/models/{model}/feedback", g(feedback), methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/feedback", g(feedback), methods=["POST"]),
        Route("/v2/models/{model}/monitor", g(monitor_state), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/monitor", g(monitor_state), methods=["GET"]),
    ]


def _feedback_items(payload: Any) -> list[tuple[str, Any]]:
    rows = payload.get("feedback") if isinstance(payload, Mapping) and "feedback" in payload else [payload]
    if not isinstance(rows, list) or not rows:
        raise BadRequest('feedback is {"id": "<request id>", "label": N} or {"feedback": [{"id": ..., "label": ...}]}')
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("id"), str) or not row["id"]:
            raise BadRequest(f"feedback[{i}] needs 'id': the V2 request id (a non-empty string), got {row!r}")
        if "label" not in row:
            raise BadRequest(f"feedback[{i}] ({row['id']!r}) needs 'label': the true class index (or one per row)")
        out.append((row["id"], row["label"]))
    return out


# -- Prometheus ------------------------------------------------------------------------------------
class MonitorCollector:
    """Reads every served version's Watch at scrape time."""

    def __init__(self, repo: ModelRepository) -> None:
        self.repo = repo

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        mv_labels = ["model", "version"]
        drift = GaugeMetricFamily("infercore_drift", "1 while the tensor's live data drifts from the profile.",
                                  labels=[*mv_labels, "tensor"])
        score = GaugeMetricFamily(
            "infercore_drift_score",
            "Drift statistics of the last window: psi (largest over features), ks (largest D), chi2 (classes), "
            "cusum (sequential statistic over its threshold).",
            labels=[*mv_labels, "tensor", "test"],
        )
        windows = CounterMetricFamily("infercore_drift_windows", "Test windows that raised drift.",
                                      labels=[*mv_labels, "tensor"])
        quality = GaugeMetricFamily("infercore_quality", "Rolling quality on labelled feedback.",
                                    labels=[*mv_labels, "metric"])
        labels_in = GaugeMetricFamily("infercore_quality_labels", "Labels in the rolling quality window.",
                                      labels=mv_labels)
        degraded = GaugeMetricFamily("infercore_quality_degraded",
                                     "1 while the accuracy-drop detector alarms.", labels=mv_labels)
        feedback = CounterMetricFamily("infercore_feedback", "Feedback labels, by outcome.",
                                       labels=[*mv_labels, "outcome"])
        screened = CounterMetricFamily("infercore_screened", "Requests screened, by outcome.",
                                       labels=[*mv_labels, "action"])
        samples = CounterMetricFamily("infercore_monitor_samples", "Samples taken for the drift tests.",
                                      labels=mv_labels)
        dropped = CounterMetricFamily("infercore_monitor_dropped_samples",
                                      "Samples dropped because the monitor's queue was full.", labels=mv_labels)
        depth = GaugeMetricFamily("infercore_monitor_queue_depth", "Samples waiting for the monitor.",
                                  labels=mv_labels)
        for entry in self.repo.models():
            for mv in list(entry.versions.values()):
                watch = getattr(mv, "watch", None)
                if watch is None:
                    continue
                lv = [mv.name, str(mv.version)]
                if watch.screen is not None:
                    for action, n in watch.screen.counts().items():
                        screened.add_metric([*lv, action], float(n))
                mon = watch.monitor
                if mon is None:
                    continue
                state = mon.state()
                s = state["samples"]
                samples.add_metric(lv, float(s["sampled"]))
                dropped.add_metric(lv, float(s["dropped"]))
                depth.add_metric(lv, float(s["queued"]))
                for tensor, t in state["tensors"].items():
                    drift.add_metric([*lv, tensor], 1.0 if t["drift"] else 0.0)
                    windows.add_metric([*lv, tensor], float(t.get("drift_windows", 0)))
                    for test, value in t.get("scores", {}).items():
                        if value is not None and math.isfinite(value):
                            score.add_metric([*lv, tensor, test], float(value))
                q = state.get("quality")
                if q is not None:
                    for metric, value in q["metrics"].items():
                        if value is not None:
                            quality.add_metric([*lv, metric], float(value))
                    labels_in.add_metric(lv, float(q["labels_in_window"]))
                    degraded.add_metric(lv, 1.0 if q["degraded"] else 0.0)
                    feedback.add_metric([*lv, "matched"], float(q["feedback"]["matched"]))
                    feedback.add_metric([*lv, "unknown"], float(q["feedback"]["unknown"]))
        yield from (drift, score, windows, quality, labels_in, degraded, feedback, screened, samples, dropped, depth)
