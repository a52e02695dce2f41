"""The drift tests, the quality detector and screening against independent references (scipy,
scikit-learn, direct formulas, simulation), and the Monitor end to end on real threads."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

import infercore as ic
from infercore.monitor import Monitor, Profile, Screen
from infercore.monitor.drift import (
    class_test,
    cusum_threshold,
    decide,
    ks_statistic,
    ks_test,
    psi,
    siegmund_arl,
)
from infercore.monitor.profile import QUANTILE_LEVELS
from infercore.monitor.quality import (
    PredictionStore,
    QualityTracker,
    bernoulli_cusum_threshold,
    cusum_run_length,
)
from infercore.monitor.worker import supported as worker_unsupported

stats = pytest.importorskip("scipy.stats")


def test_ks_statistic_matches_scipy_against_the_reference_cdf():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(200_000)
    q = np.quantile(ref, QUANTILE_LEVELS)
    for shift in (0.0, 0.1, 0.3):
        w = np.sort(rng.standard_normal(1000) + shift)
        want = stats.ks_2samp(w, ref).statistic
        assert ks_statistic(w, q) == pytest.approx(want, abs=0.006)  # 201 quantiles: <= 0.005 apart
    # ties: a discrete feature equal to the reference has no gap
    disc = rng.integers(0, 3, 50_000).astype(float)
    w = np.sort(rng.integers(0, 3, 1000).astype(float))
    assert ks_statistic(w, np.quantile(disc, QUANTILE_LEVELS)) == pytest.approx(
        stats.ks_2samp(w, disc).statistic, abs=0.006)
    # the p-value is the two-sample one: a small reference makes the same gap less significant
    w = np.sort(rng.standard_normal(1000) + 0.1)
    assert ks_test(w, q, 1000)[1] > ks_test(w, q, 200_000)[1]


def test_psi_is_the_formula_on_the_reference_bins():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(50_000)
    edges = np.quantile(ref, np.linspace(0, 1, 11)[1:-1])
    props = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=10) / ref.size
    w = rng.standard_normal(5000) + 0.3
    counts = np.bincount(np.searchsorted(edges, w, side="right"), minlength=10)
    pw = (counts + 0.5) / (w.size + 5.0)
    assert psi(w, edges, props) == pytest.approx(float(np.sum((pw - props) * np.log(pw / props))), rel=1e-3)
    assert 0.06 < psi(w, edges, props) < 0.12  # a 0.3 sd shift
    assert psi(rng.standard_normal(5000), edges, props) < 0.01


def test_class_test_is_scipy_chi_square_with_rare_classes_pooled():
    ref = np.array([500, 300, 190, 8, 2])
    w = np.array([50, 30, 19, 1, 0])
    chi2, p, _ = class_test(w, ref)
    want = stats.chi2_contingency(np.array([[50, 30, 19, 1], [500, 300, 190, 10]]), correction=False)
    assert chi2 == pytest.approx(want[0]) and p == pytest.approx(want[1])
    chi2, p, effect = class_test(np.array([10, 30, 60, 0, 0]), ref)
    assert p < 1e-6 and effect > 0.2


def test_decision_needs_significance_after_correction_and_the_effect_floor():
    from infercore.monitor.drift import FeatureTest

    tests = [FeatureTest("a", "ks", 0.2, 1e-3, 0.2), FeatureTest("b", "ks", 0.2, 1e-9, 0.01),
             FeatureTest("c", "ks", 0.2, 1e-9, 0.2)]
    assert decide(tests, total=10, alpha=0.005, psi_floor=0.05)
    assert [t.drift for t in tests] == [False, False, True]  # a: 1e-3 > 0.005/10; b: PSI under the floor


def test_cusum_thresholds_give_their_run_lengths():
    h = cusum_threshold(10, 1000, 0.005)
    assert siegmund_arl(0.2, h) == pytest.approx(2 * 10 * 1000 / 0.005, rel=1e-3)
    # the Bernoulli CUSUM's run length, against a simulation of it
    rng = np.random.default_rng(3)
    p0, p1 = 0.9, 0.85
    h = bernoulli_cusum_threshold(p0, p1, 1000.0)
    assert cusum_run_length(p0, p1, h) == pytest.approx(1000.0, rel=1e-3)
    up, down = math.log((1 - p1) / (1 - p0)), math.log(p1 / p0)
    s, alive, runs = np.zeros(2000), np.ones(2000, bool), np.zeros(2000)
    for t in range(1, 20_000):
        s = np.maximum(0.0, s + np.where(rng.uniform(size=s.size) >= p0, up, down))
        hit = alive & (s >= h)
        runs[hit], alive = t, alive & ~hit
        if not alive.any():
            break
    assert 800 < runs.mean() < 1250


def test_prediction_store_is_bounded_in_time_and_count():
    now = [0.0]
    store = PredictionStore(ttl=10.0, max_items=3, clock=lambda: now[0])
    for i in range(5):
        store.put(f"r{i}", i)
    assert len(store) == 3 and store.evicted == 2 and store.pop("r0") is None and store.pop("r4") == 4
    now[0] = 11.0
    assert "r3" not in store and store.pop("r3") is None
    store.put("new", 1)
    assert len(store) == 1 and store.expired >= 1


def _predictions(rng, n, accuracy, classes=4):
    labels = rng.integers(0, classes, n)
    right = rng.uniform(size=n) < accuracy
    top = np.where(right, labels, (labels + rng.integers(1, classes, n)) % classes)
    probs = rng.dirichlet(np.ones(classes), n) * 0.5
    probs[np.arange(n), top] += 0.5
    return probs, labels


def test_quality_metrics_agree_with_scikit_learn_and_the_drop_is_detected():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    q = QualityTracker(4, 500, baseline=0.9)
    probs, labels = _predictions(rng, 700, 0.9)
    q.add(probs, labels)
    got = q.metrics()
    p, y = probs[-500:], labels[-500:]
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, p.argmax(1)))
    assert got["f1"] == pytest.approx(metrics.f1_score(y, p.argmax(1), average="macro"))
    assert got["precision"] == pytest.approx(metrics.precision_score(y, p.argmax(1), average="macro"))
    assert got["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, p, multi_class="ovr"), rel=1e-5)
    assert not q.degraded
    probs, labels = _predictions(rng, 3000, 0.75)
    q.add(probs, labels)
    assert q.degraded and q.degraded_at is not None and q.degraded_at < 700 + 1000
    # the alarm holds while the accuracy stays down, though the window still holds older labels
    for _ in range(20):
        probs, labels = _predictions(rng, 10, 0.75)
        q.add(probs, labels)
        assert q.degraded
    # and clears once the accuracy is back at the baseline
    probs, labels = _predictions(rng, 3000, 0.9)
    q.add(probs, labels)
    assert not q.degraded


def test_screening_flags_at_about_its_documented_rate():
    rng = np.random.default_rng(5)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 1.0]])
    ref = rng.multivariate_normal(np.zeros(3), cov, 20_000).astype(np.float32)
    screen = Screen(Profile.from_arrays({"x": ref}), threshold=2.0)
    held_out = rng.multivariate_normal(np.zeros(3), cov, 20_000).astype(np.float32)
    rate = float((screen.scores({"x": held_out}) >= 2.0).mean())
    assert 0.005 < rate < 0.02  # threshold 2: about 1 in 100 of data like the reference
    # a sample that breaks the correlation, though each feature alone is ordinary
    odd = np.array([[1.5, -1.5, 0.0]], np.float32)
    assert screen.scores({"x": odd})[0] > 3
    verdict = screen.check({"x": np.array([[np.nan, 0, 0]], np.float32)})
    assert verdict.flagged and math.isinf(verdict.score) and "tensor 'x'" in verdict.reason
    with pytest.raises(ic.ArgumentError, match="action"):
        Screen(screen.profile, action="drop")
    with pytest.raises(ic.ArgumentError, match="no tensor 'y'"):
        Screen(screen.profile, tensors=["y"])


def _classifier_profile(rng, n=5000):
    x = rng.standard_normal((n, 5)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    logits = x @ w
    return Profile.from_arrays({"x": x}, {"logits": logits}, labels=logits.argmax(1)), w


def test_monitor_end_to_end_stationary_shift_and_feedback():
    rng = np.random.default_rng(6)
    profile, w = _classifier_profile(rng)
    with Monitor(profile, window=400) as mon:
        for i in range(40):
            x = rng.standard_normal((40, 5)).astype(np.float32)
            mon.observe({"x": x}, {"logits": x @ w}, request_id=f"a{i}")
        mon.flush()
        s = mon.state()
        assert s["samples"]["sampled"] == 40 and s["tensors"]["x"]["windows"] > 0
        assert not s["drift"], s["tensors"]
        for _ in range(40):
            x = rng.standard_normal((40, 5)).astype(np.float32)
            x[:, 2] += 1.0
            mon.observe({"x": x}, {"logits": x @ w})
        mon.flush()
        s = mon.state()
        assert s["tensors"]["x"]["drift"] and s["tensors"]["x"]["top"][0]["feature"] == "x[2]"
        x = rng.standard_normal((1, 5)).astype(np.float32)
        mon.observe({"x": x}, {"logits": x @ w}, request_id="solo")
        assert mon.feedback("solo", int((x @ w).argmax()))
        assert not mon.feedback("solo", 0)  # used up
        assert not mon.feedback("never", 0)
        with pytest.raises(ic.ArgumentError, match="40 class indices"):
            mon.feedback("a0", 1)
        assert mon.feedback("a0", [0] * 40)  # the bad label above did not use the prediction up
        mon.flush()
        q = mon.state()["quality"]
        assert q["labels_total"] == 41 and q["feedback"]["matched"] == 2 and q["feedback"]["unknown"] == 2


def test_a_full_queue_drops_and_counts_and_never_blocks():
    rng = np.random.default_rng(7)
    profile, w = _classifier_profile(rng, 500)
    gate = threading.Event()
    mon = Monitor(profile, window=100, queue_size=5)
    real = mon._process

    def stuck(samples):
        gate.wait(30)
        real(samples)

    mon._process = stuck  # the worker is held on its first batch
    x = rng.standard_normal((1, 5)).astype(np.float32)
    for _ in range(200):
        mon.observe({"x": x}, {"logits": x @ w})
    s = mon.state()["samples"]
    assert s["observed"] == 200 and s["sampled"] + s["dropped"] == 200
    # the worker holds at most the 5 it took before it stopped: the rest were refused at once
    assert s["dropped"] >= 190 and s["queued"] <= 5
    gate.set()
    mon.flush()
    mon.close()
    assert mon.state()["samples"]["processed"] == mon.sampled


def test_sample_rate_takes_that_share():
    rng = np.random.default_rng(8)
    profile, _ = _classifier_profile(rng, 500)
    with Monitor(profile, sample_rate=0.25, window=100) as mon:
        x = np.zeros((1, 5), np.float32)
        for _ in range(400):
            mon.observe({"x": x})
        assert mon.sampled == 100


def test_monitor_arguments_are_checked():
    profile, _ = _classifier_profile(np.random.default_rng(9), 200)
    for kwargs, parameter in (({"sample_rate": 1.5}, "sample_rate"), ({"window": 5}, "window"),
                              ({"alpha": 0}, "alpha"), ({"tensors": ["nope"]}, "tensors"),
                              ({"window": 100, "step": 200}, "step")):
        with pytest.raises(ic.ArgumentError) as e:
            Monitor(profile, **kwargs)
        assert e.value.parameter == parameter


needs_process_worker = pytest.mark.skipif(bool(worker_unsupported()), reason=worker_unsupported() or "")


def _feed(mon, rng, w, requests, shift_from, every=50):
    """Requests of 1 and 2 rows, the third feature shifted from request ``shift_from`` on; flushed
    every ``every`` requests so nothing is dropped."""
    for i in range(requests):
        x = rng.standard_normal((1 + (i % 3 == 0), 5)).astype(np.float32)
        if i >= shift_from:
            x[:, 2] += 0.8
        mon.observe({"x": x}, {"logits": x @ w}, request_id=f"r{i}")
        if i % every == every - 1:
            mon.flush()


@needs_process_worker
def test_the_worker_process_computes_what_the_thread_does():
    profile, w = _classifier_profile(np.random.default_rng(10))
    states = {}
    for worker in ("thread", "process"):
        with Monitor(profile, window=200, worker=worker, queue_size=1000) as mon:
            if worker == "process":  # it takes only the CPU that is left over
                import os

                assert os.sched_getscheduler(mon.state()["worker"]["pid"]) == os.SCHED_IDLE
            rng = np.random.default_rng(11)
            _feed(mon, rng, w, 900, 500)
            for i in range(300):
                assert mon.feedback(f"r{i}", [int(i % 3 == 0)] * (1 + (i % 3 == 0)))
            mon.flush()
            states[worker] = mon.state()
    thread, process = states["thread"], states["process"]
    assert process["worker"]["kind"] == "process" and process["worker"]["alive"] and process["worker"]["pid"] > 0
    for st in (thread, process):
        for t in st["tensors"].values():
            t.pop("updated", None)
    assert process["samples"] == thread["samples"] == {"observed": 900, "sampled": 900, "dropped": 0, "queued": 0,
                                                      "processed": 900}
    assert process["tensors"] == thread["tensors"]  # the same windows, scores and verdicts, bit for bit
    assert thread["tensors"]["x"]["drift"]
    assert process["quality"] == thread["quality"] and process["quality"]["labels_total"] == 400


@needs_process_worker
def test_a_dead_worker_process_is_reported_and_requests_go_on():
    import os
    import signal

    profile, w = _classifier_profile(np.random.default_rng(12), 500)
    mon = Monitor(profile, window=100, worker="process", queue_size=10)
    try:
        big = np.zeros((4000, 5), np.float32)  # 80 KB a request: the ring holds about 75 of them
        for _ in range(400):
            mon.observe({"x": big})
        mon.flush()
        st = mon.state()["samples"]  # every sample counted once: analysed, or dropped at the ring
        assert st["sampled"] + st["dropped"] == st["observed"] == 400 and st["processed"] == st["sampled"]
        assert st["dropped"] > 0
        pid = mon.state()["worker"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while mon.state()["worker"]["alive"] and time.monotonic() < deadline:
            time.sleep(0.01)
        before = mon.state()["samples"]["dropped"]  # the state read saw the child gone
        x = np.zeros((1, 5), np.float32)
        for i in range(50):
            mon.observe({"x": x}, {"logits": x @ w}, request_id=f"r{i}")  # never raises, never blocks
        st = mon.state()
        assert st["worker"]["alive"] is False and "exited with code -9" in st["worker"]["problem"]
        assert st["samples"]["observed"] == 450 and st["samples"]["dropped"] == before + 50  # counted, not lost
        with pytest.raises(RuntimeError, match="exited"):
            mon.flush(timeout=5)
    finally:
        mon.close()


def test_the_worker_process_is_refused_where_its_ring_is_not_safe(monkeypatch):
    import platform

    profile, _ = _classifier_profile(np.random.default_rng(13), 200)
    with pytest.raises(ic.ArgumentError) as e:
        Monitor(profile, worker="fork")
    assert e.value.parameter == "worker"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(ic.MonitorWorkerError, match="x86-64's store order; this machine is aarch64"):
        Monitor(profile, worker="process")


def test_ks_p_value_is_close_to_scipys_exact_two_sample_one():
    from infercore.monitor.drift import ks_p

    for d, n, m in ((0.05, 1000, 20_000), (0.08, 500, 2000), (0.12, 1000, 1000), (0.2, 200, 5000)):
        en = round(n * m / (n + m))
        exact = stats.kstwo.sf(d, en)
        assert ks_p(d, n, m) == pytest.approx(exact, rel=0.15, abs=1e-6)
