"""Drift and quality detectors on synthetic streams: false-alarm rates and detection delays.

    python benchmarks/drift.py [--trials 100] [--json results/drift.json]

Everything runs through the real :class:`infercore.monitor.Monitor` (queue, worker, windows,
tests) and :class:`~infercore.monitor.quality.QualityTracker`; the reference profiles are built
from 20,000 samples (and 2,000, to show the two-sample correction at work). Window 1,000 samples,
tests every 500 (the defaults), alpha 0.01, PSI floor 0.05.

1. False alarms: stationary streams, 200 test windows each; the share of windows that raised drift
   (window tests or the sequential CUSUM) for 1, 10 and 100 normal features and a mix of ten
   non-normal ones (exponential, Poisson counts, uniform, bimodal, a constant...).
2. Detection delay of a 0.3 sd mean shift in ONE of 10 (and of 100) features, starting at a
   random point of a window: samples from the shift to the first drift raised (a trial with a false
   alarm before the shift counts as missed).
3. Fast shifts (1 and 2 sd): the same delay, where the sequential detector answers first.
4. Accuracy: a 5-point drop of a classifier's accuracy, from 0.95, 0.90 and 0.80, baseline known
   from the profile or taken from the first 1,000 labels: labels from the drop to the alarm; and
   false alarms per window of 1,000 labels over 200 windows of stationary labels.

Targets (issue 20): 0.3 sd in one feature detected within 1,000 samples; stationary data raises
drift in <= 1% of windows over 200 windows; a 5-point accuracy drop detected within 500 labels.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_json
from infercore.monitor import Monitor, Profile
from infercore.monitor.quality import QualityTracker

WINDOW, STEP = 1000, 500


def mixed(rng: np.random.Generator, n: int) -> np.ndarray:
    cols = [
        rng.standard_normal(n),
        rng.exponential(1.0, n),
        rng.poisson(3.0, n).astype(float),
        rng.uniform(0, 1, n),
        np.where(rng.uniform(size=n) < 0.5, rng.normal(-2, 0.5, n), rng.normal(2, 0.5, n)),
        rng.lognormal(0, 1, n),
        rng.integers(0, 2, n).astype(float),
        np.full(n, 7.0),
        rng.standard_t(3, n),
        rng.gamma(0.5, 1.0, n),
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def normal(features: int) -> Any:
    return lambda rng, n: rng.standard_normal((n, features)).astype(np.float32)


def stream(mon: Monitor, rng: np.random.Generator, draw: Any, n: int, batch: int, shift: Any = None) -> None:
    done = 0
    while done < n:
        k = min(batch, n - done)
        x = draw(rng, k)
        if shift is not None:
            x = shift(x)
        mon.observe({"x": x})
        done += k


def false_alarms(name: str, draw: Any, reference: int, windows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    profile = Profile.from_arrays({"x": draw(rng, reference)})
    with Monitor(profile, window=WINDOW, queue_size=1_000_000) as mon:
        stream(mon, rng, draw, WINDOW + (windows - 1) * STEP, 50)
        mon.flush(600)
        t = mon.state()["tensors"]["x"]
    tw = mon._analysis.windows["x"]
    rate = t["drift_windows"] / max(t["windows"], 1)
    return {
        "case": name,
        "reference_samples": reference,
        "features": profile.tensors["x"].featurizer.size,
        "windows": t["windows"],
        "drift_windows": t["drift_windows"],
        "rate": rate,
        "sequential_alarms": tw.sequential_alarms,
    }


def delay(features: int, sd: float, trials: int, seed: int, reference: int = 20_000) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    draw = normal(features)
    profile = Profile.from_arrays({"x": draw(rng, reference)})
    delays, missed = [], 0
    limit = 4 * WINDOW
    for _trial in range(trials):
        with Monitor(profile, window=WINDOW, queue_size=1_000_000) as mon:
            start = WINDOW + int(rng.integers(0, STEP))  # the shift starts anywhere in a step
            stream(mon, rng, draw, start, 10)
            mon.flush(600)
            before = mon._analysis.windows["x"].first_drift
            col = int(rng.integers(0, features))

            def shift(x: np.ndarray, col: int = col) -> np.ndarray:
                x[:, col] += sd
                return x

            stream(mon, rng, draw, limit, 10, shift)
            mon.flush(600)
            since = mon._analysis.windows["x"].first_drift
        if before is not None or since is None:  # a false alarm before the shift: count the trial as missed
            missed += 1
        else:
            delays.append(since - start)
    d = np.array(delays or [math.nan])
    return {
        "features": features,
        "shift_sd": sd,
        "trials": trials,
        "detected": len(delays),
        "missed_within_4000": missed,
        "median": float(np.median(d)),
        "p90": float(np.percentile(d, 90)),
        "max": float(np.max(d)),
        "within_1000": float(np.mean(np.array(delays) <= 1000)) * len(delays) / trials if delays else 0.0,
    }


def predictions(rng: np.random.Generator, n: int, accuracy: float, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, classes, n)
    right = rng.uniform(size=n) < accuracy
    wrong = (labels + rng.integers(1, classes, n)) % classes
    top = np.where(right, labels, wrong)
    probs = rng.dirichlet(np.ones(classes), n) * 0.5
    probs[np.arange(n), top] += 0.5
    return probs.astype(np.float32), labels


def quality(base: float, baseline_known: bool, trials: int, seed: int, alpha: float = 0.01) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    delays, missed, early = [], 0, 0
    for _ in range(trials):
        q = QualityTracker(10, WINDOW, baseline=base if baseline_known else None, alpha=alpha)
        start = WINDOW + int(rng.integers(0, 100))
        p, y = predictions(rng, start, base)
        q.add(p, y)
        if q.degraded:
            early += 1
            continue
        found = None
        for i in range(0, 4000, 10):
            p, y = predictions(rng, 10, base - 0.05)
            q.add(p, y)
            if q.degraded:
                found = q.degraded_at - start if q.degraded_at is not None else i
                break
        if found is None:
            missed += 1
        else:
            delays.append(found)
    # false alarms: 200 windows of 1,000 stationary labels after the baseline window
    q = QualityTracker(10, WINDOW, baseline=base if baseline_known else None, alpha=alpha)
    p, y = predictions(rng, WINDOW, base)
    q.add(p, y)
    alarm_windows = 0
    for _ in range(200):
        before = q.alarms
        p, y = predictions(rng, WINDOW, base)
        q.add(p, y)
        alarm_windows += int(q.alarms > before)
    d = np.array(delays or [math.nan])
    return {
        "base_accuracy": base,
        "baseline": "profile" if baseline_known else "first 1000 labels",
        "alpha": alpha,
        "threshold": q.h,
        "trials": trials,
        "detected": len(delays),
        "missed_within_4000": missed,
        "false_alarm_before_drop": early,
        "median": float(np.median(d)),
        "p90": float(np.percentile(d, 90)),
        "within_500": float(np.mean(np.array(delays) <= 500)) * len(delays) / trials if delays else 0.0,
        "false_alarm_windows_of_200": alarm_windows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100, help="trials per delay figure (default 100)")
    ap.add_argument("--windows", type=int, default=200, help="stationary windows per false-alarm figure")
    ap.add_argument("--json", default="results/drift.json")
    ap.add_argument("--quick", action="store_true", help="20 trials per delay figure: indicative only")
    args = ap.parse_args()
    if args.quick:
        args.trials = min(args.trials, 20)
    t0 = time.time()
    report: dict[str, Any] = {"machine": machine(), "window": WINDOW, "step": STEP, "alpha": 0.01, "psi_floor": 0.05}

    print(f"1. false alarms: stationary data, {args.windows} windows of {WINDOW} (tests every {STEP})")
    fa = []
    cases = [("1 normal", normal(1), 20_000), ("10 normal", normal(10), 20_000), ("100 normal", normal(100), 20_000),
             ("10 mixed", mixed, 20_000), ("10 normal, 2k reference", normal(10), 2_000),
             ("10 mixed, 2k reference", mixed, 2_000)]
    for i, (name, draw, ref) in enumerate(cases):
        r = false_alarms(name, draw, ref, args.windows, 100 + i)
        fa.append(r)
        print(f"  {name:26s} {r['drift_windows']:3d} of {r['windows']} windows raised drift ({r['rate']:.1%}); "
              f"sequential alarms {r['sequential_alarms']}")
    report["false_alarms"] = fa

    print(f"2./3. detection delay (samples from the shift to drift raised), {args.trials} trials each")
    dl = []
    for features, sd in ((10, 0.3), (100, 0.3), (10, 1.0), (10, 2.0)):
        r = delay(features, sd, args.trials, 200 + features + int(sd * 10))
        dl.append(r)
        print(f"  {sd} sd in 1 of {features:3d} features: median {r['median']:.0f}, p90 {r['p90']:.0f}, max "
              f"{r['max']:.0f}; within 1000: {r['within_1000']:.0%}; missed {r['missed_within_4000']}")
    report["delays"] = dl

    print(f"4. accuracy drop of 5 points (labels from the drop to the alarm), {args.trials} trials each")
    qa = []
    for base, known, alpha in ((0.97, True, 0.01), (0.95, True, 0.01), (0.95, False, 0.01), (0.90, True, 0.01),
                               (0.90, False, 0.01), (0.80, True, 0.01), (0.95, True, 0.05), (0.90, True, 0.05)):
        if True:
            r = quality(base, known, args.trials, 300 + int(base * 100) + known, alpha)
            qa.append(r)
            print(f"  from {base:.2f}, alpha {alpha}, baseline {r['baseline']:18s} median {r['median']:.0f}, p90 {r['p90']:.0f}; "
                  f"within 500: {r['within_500']:.0%}; missed {r['missed_within_4000']}; "
                  f"false alarms: {r['false_alarm_windows_of_200']} of 200 windows")
    report["quality"] = qa
    report["seconds"] = round(time.time() - t0, 1)
    out = write_json(args.json, report)
    print(f"wrote {out} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
