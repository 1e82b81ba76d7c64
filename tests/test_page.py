"""The page of `lrcn serve`, driven in a real browser: Playwright with Debian's Chromium
(`apt-get install chromium`), headless, against a real server. Skipped, with the reason, where
either is missing. Screenshots go to the test's folder, or to $LRCN_SCREENSHOTS."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from test_serve import TOKEN, lrcn_predict, start_server, stop_server, webcam_expected
from test_serve import checkpoint, clip, long_video  # noqa: F401 (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            # A fake camera for the webcam mode; no network chatter from a sandboxed machine.
            args=["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                  "--use-fake-device-for-media-stream", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield browser
        browser.close()


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LRCN_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_page_labels_a_clip_and_draws_a_long_videos_timeline(
        browser, checkpoint, clip, long_video, tmp_path):  # noqa: F811
    served = start_server(checkpoint, tmp_path / "tmp", "--token", TOKEN)
    prompts = []
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        page.on("dialog", lambda dialog: (prompts.append(dialog.message),
                                          dialog.accept(TOKEN)))
        page.goto(served.url + "/")
        page.wait_for_function("document.getElementById('model').textContent"
                               ".includes('3 classes')", timeout=30_000)
        assert len(prompts) == 1 and "token" in prompts[0]     # asked once

        # A clip: its label and probability bars, as `lrcn predict` gives them.
        page.check("input[value=clip]")
        page.set_input_files("#file", str(clip))
        page.wait_for_selector("#result:not([hidden])", timeout=60_000)
        expected = lrcn_predict(checkpoint, clip)
        assert page.inner_text("#label") == expected["label"]
        assert page.inner_text("#probability") == f"{100 * expected['probability']:.1f}%"
        assert page.locator("#bars .prob").count() == 3
        assert page.eval_on_selector("#upload-bar", "e => e.value") == 1
        page.screenshot(path=str(shots(tmp_path) / "page-clip.png"), full_page=True)

        # A long video: the timeline drawn over time, hover for times, the annotated video.
        page.check("input[value=timeline]")
        page.set_input_files("#file", str(long_video))
        page.wait_for_selector("#timeline-section:not([hidden])", timeout=120_000)
        assert page.eval_on_selector("#process-bar", "e => e.value") == 1
        painted = page.evaluate("""() => {
            const c = document.getElementById('timeline');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
        assert painted > 5000
        box = page.locator("#timeline").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 20)
        tip = page.inner_text("#tip")
        assert " s: " in tip and "%" in tip
        page.wait_for_function("document.getElementById('video').readyState >= 2",
                               timeout=30_000)
        page.evaluate("() => { const v = document.getElementById('video'); v.muted = true; "
                      "return v.play(); }")
        page.wait_for_function("document.getElementById('video').currentTime > 0.5",
                               timeout=30_000)
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + 20)
        page.screenshot(path=str(shots(tmp_path) / "page-timeline.png"), full_page=True)

        # The webcam (Chromium's fake camera): labels arrive over the socket, lag shown. The
        # JPEGs the page sends and the replies it gets are recorded: the replies are what the
        # classify path gives for those JPEGs, and the page shows the last one.
        sent, received = [], []

        def on_socket(ws):
            ws.on("framesent", lambda payload: sent.append(payload)
                  if isinstance(payload, bytes) else None)
            ws.on("framereceived", lambda payload: received.append(json.loads(payload)))
        page.on("websocket", on_socket)
        page.click("#camera-button")
        page.wait_for_function(
            "['wave', 'jump', 'spin'].includes("
            "document.getElementById('camera-label').textContent)", timeout=60_000)
        assert page.inner_text("#lag").startswith("lag ")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            last = received[-1]
            shown = (page.inner_text("#camera-label"), page.inner_text("#camera-probability"))
            if "label" in last and shown == (last["label"],
                                             f"{100 * last['probability']:.0f}%"):
                break
            page.wait_for_timeout(50)
        assert "label" in last and shown == (last["label"], f"{100 * last['probability']:.0f}%")
        page.screenshot(path=str(shots(tmp_path) / "page-webcam.png"), full_page=True)
        page.click("#camera-button")
        replies = list(received)
        labelled = [r for r in replies if "label" in r]
        assert [r.get("warming") for r in replies[:19]] == list(range(1, 20))
        expected = webcam_expected(checkpoint, [m[8:] for m in sent[:len(replies)]])
        assert len(labelled) == len(expected) > 0
        for got, want in zip(labelled, expected):
            assert got["label"] == want["label"]
            np.testing.assert_allclose(list(got["probabilities"].values()),
                                       list(want["probabilities"].values()), atol=1e-5)
        page.close()
    finally:
        assert stop_server(served) == 0
