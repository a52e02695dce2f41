"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright for
Python; scripts/setup-heavy.sh installs both): the page renders its plots from ``/dashboard/data``
and they move while traffic runs; it takes a screenshot, which ``INFERCORE_UPDATE_SCREENSHOT=1``
copies to docs/img/dashboard.png (the one docs/monitoring.md shows)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from infercore.monitor import Profile
from tests import onnx_models as m

from .conftest import running

pytestmark = pytest.mark.browser
httpx = pytest.importorskip("httpx")
pytest.importorskip("scipy")
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-dev-shm-usage", "--disable-extensions", "--no-first-run", "--mute-audio"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup-heavy.sh installs it)")
@pytest.mark.timeout(240)
def test_dashboard_plots_render_and_update_while_traffic_runs(tmp_path):
    repo = tmp_path / "repo"
    (repo / "classifier" / "1").mkdir(parents=True)
    path, w = m.mlp(repo / "classifier" / "1" / "model.onnx", d_in=4, d_out=3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4)).astype(np.float32)
    Profile.build(path, (x, m.mlp_numpy(x, w)[0].argmax(1)), classifier="logits").save(
        repo / "classifier" / "profile.json")
    (repo / "classifier" / "config.yaml").write_text(
        "threads: 1\nbatching: {max_batch_size: 64, max_queue_delay_ms: 2}\n"
        "monitoring: {profile: profile.json, sample_rate: 1.0, window: 200}\n")
    with running(repo) as server:
        base = f"http://127.0.0.1:{server.ports['http']}"
        stop = threading.Event()
        sent = [0]

        def traffic() -> None:
            r = np.random.default_rng(1)
            with httpx.Client(timeout=10) as client:
                i = 0
                while not stop.is_set():
                    batch = r.standard_normal((int(r.integers(1, 9)), 4)).astype(np.float32)
                    if i > 150:
                        batch[:, 0] += 1.0  # later traffic drifts, so the drift plot moves too
                    body = {"id": f"t{i}", "inputs": [{"name": "x", "shape": list(batch.shape), "datatype": "FP32",
                                                       "data": batch.ravel().tolist()}]}
                    out = client.post(f"{base}/v2/models/classifier/infer", json=body)
                    assert out.status_code == 200
                    if i % 3 == 0:  # labels for a third of the requests
                        pred = np.array(out.json()["outputs"][0]["data"]).reshape(batch.shape[0], 3).argmax(1)
                        if i > 150 and i % 4 == 0:
                            pred = (pred + 1) % 3  # and some labels disagree, so quality moves
                        client.post(f"{base}/v2/models/classifier/feedback", json={"id": f"t{i}", "label": pred.tolist()})
                    sent[0] += 1
                    i += 1
                    time.sleep(0.01)

        worker = threading.Thread(target=traffic, daemon=True)
        worker.start()
        try:
            with playwright.sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    page.goto(f"{base}/dashboard?interval=500")
                    page.wait_for_function("Number(document.body.dataset.polls || 0) >= 4", timeout=60_000)
                    key = "classifier/1"
                    card = page.locator(f'.model[data-model="{key}"]')
                    card.wait_for(timeout=30_000)
                    for chart in ("rps", "latency", "errors", "queue", "batch", "drift", "quality"):
                        page.wait_for_function(
                            f"""() => {{ const s = document.querySelector('svg[data-chart="{key}/{chart}"]');
                                        return s && Number(s.dataset.points) >= 2; }}""", timeout=60_000)
                    points = lambda: page.eval_on_selector(  # noqa: E731
                        f'svg[data-chart="{key}/rps"] polyline', "p => p.getAttribute('points')")
                    first = points()
                    page.wait_for_function(f"Number(document.body.dataset.polls) >= "
                                           f"{page.evaluate('Number(document.body.dataset.polls)') + 4}", timeout=30_000)
                    assert points() != first  # the plot moved while traffic ran
                    rps = page.eval_on_selector(f'svg[data-chart="{key}/rps"] polyline', "p => p.getAttribute('points')")
                    assert len(rps.split()) >= 4
                    legend = page.inner_text(f'.panel[data-key="{key}/rps"] .legend')
                    assert legend.startswith("answered") and float(legend.split()[1].rstrip("k")) > 0
                    page.wait_for_function("""() => [...document.querySelectorAll('.badge')]
                                              .some(b => b.textContent.includes('x: drift'))""", timeout=60_000)
                    assert page.locator(f'svg[data-chart="{key}/quality"] polyline[data-series="accuracy"]').count() == 1
                    assert errors == []
                    SHOT.parent.mkdir(parents=True, exist_ok=True)
                    tmp = tmp_path / "dashboard.png"
                    page.screenshot(path=str(tmp), full_page=True)
                    assert tmp.stat().st_size > 10_000
                    if os.environ.get("INFERCORE_UPDATE_SCREENSHOT") == "1":  # refresh the one the docs show
                        shutil.copyfile(tmp, SHOT)
                finally:
                    browser.close()
        finally:
            stop.set()
            worker.join(10)
    assert sent[0] > 20
