"""The page of `lrcn serve`, driven in a real browser: Playwright with Debian's Chromium
(`apt-get install chromium`), headless, against a real server (one for the module). Skipped,
with the reason, where either is missing. Screenshots go to the test's folder, or to
$LRCN_SCREENSHOTS."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import indexed_frame, write_video
from lrcn.media.plots import PALETTE
from test_serve import TOKEN, lrcn_predict, start_server, stop_server, webcam_expected
from test_serve import checkpoint, long_video  # noqa: F401 (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Chromium (apt-get install -y chromium)")


# No network chatter from a sandboxed machine; camera requests granted without a prompt.
ARGS = ["--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync"]
COLOUR = {"wave": PALETTE[0], "jump": PALETTE[1], "spin": PALETTE[2]}


def rgb(hex_colour: str) -> str:
    """A colour as the browser's computed style writes it."""
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.fixture(scope="module")
def playwright():
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    # A fake camera for the webcam mode.
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=ARGS + ["--use-fake-device-for-media-stream"])
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def served(checkpoint, tmp_path_factory):  # noqa: F811
    served = start_server(checkpoint, tmp_path_factory.mktemp("page") / "tmp", "--token", TOKEN)
    yield served
    assert stop_server(served) == 0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A clip the browser plays (H.264 in MP4), as the page shows it beside its label."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4",
                       [indexed_frame(i, 96, 72) for i in range(45)], fps=15, codec="h264_mp4")


def open_page(browser, served):
    page = browser.new_page(viewport={"width": 1100, "height": 1300})
    prompts = []
    page.on("dialog", lambda dialog: (prompts.append(dialog.message), dialog.accept(TOKEN)))
    page.goto(served.url + "/")
    page.wait_for_function("document.getElementById('model').textContent"
                           ".includes('3 classes')", timeout=30_000)
    assert len(prompts) == 1 and "token" in prompts[0]     # asked once
    return page


def label_clip(page, clip) -> None:
    page.check("input[value=clip]")
    page.set_input_files("#file", str(clip))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LRCN_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_page_labels_a_clip_and_draws_a_long_videos_timeline(
        browser, served, checkpoint, clip, long_video, tmp_path):  # noqa: F811
    page = open_page(browser, served)

    # A clip: its label and probability bars, as `lrcn predict` gives them, in the colours
    # of the timeline PNG, and the clip itself (the local file) playing beside them.
    label_clip(page, clip)
    expected = lrcn_predict(checkpoint, clip)
    assert page.inner_text("#label") == expected["label"]
    assert page.inner_text("#probability") == f"{100 * expected['probability']:.1f}%"
    assert page.locator("#bars .prob").count() == 3
    fills = page.eval_on_selector_all("#bars .prob", "rows => rows.map(r => [r.querySelector("
                                      "'.name').textContent, r.querySelector('.fill')"
                                      ".style.background])")
    assert fills and all(fill == rgb(COLOUR[name]) for name, fill in fills)
    assert page.eval_on_selector("#upload-bar", "e => e.value") == 1
    page.wait_for_function("document.getElementById('clip-video').readyState >= 1",
                           timeout=30_000)
    assert page.eval_on_selector("#clip-video", "v => !v.hidden && v.src.startsWith("
                                 "'blob:') && Math.abs(v.duration - 3) < 0.2")
    page.screenshot(path=str(shots(tmp_path) / "page-clip.png"), full_page=True)

    # A long video: the timeline drawn over time, hover for times, the annotated video.
    page.check("input[value=timeline]")
    page.set_input_files("#file", str(long_video))
    page.wait_for_selector("#timeline-section:not([hidden])", timeout=120_000)
    assert page.eval_on_selector("#process-bar", "e => e.value") == 1
    assert page.eval_on_selector("#clip-video", "v => v.hidden")    # the clip is gone
    # The downloads, each served (the token in the link, as a click sends it).
    links = page.eval_on_selector_all("#downloads a", "as => as.map(a => [a.textContent, "
                                      "a.href, a.download])")
    assert [(text, name) for text, _, name in links] == [
        ("JSON", "long.timeline.json"), ("CSV (segments)", "long.segments.csv"),
        ("CSV (windows)", "long.windows.csv"), ("PNG", "long.timeline.png"),
        ("annotated video (MP4)", "long.annotated.mp4")]
    files = {name: page.request.get(href) for _, href, name in links}
    assert all(response.status == 200 for response in files.values())
    assert files["long.segments.csv"].text().startswith("start,end,label,confidence")
    assert files["long.annotated.mp4"].body()[4:8] == b"ftyp"
    result = files["long.timeline.json"].json()
    # The headline: the label that holds most of the video's time, said as such.
    time_of = {}
    for s in result["segments"]:
        time_of[s["label"]] = time_of.get(s["label"], 0) + s["end"] - s["start"]
    top = max(time_of, key=time_of.get)
    assert page.inner_text("#label-kind") == "most frequent:"
    assert page.inner_text("#label") == top
    share = time_of[top] / result["facts"]["duration"]
    assert page.inner_text("#probability") == f"{100 * share:.0f}% of the time"
    assert "share of the video's 8.0 s" in page.inner_text("#bars-caption")
    # The segments: one block each, the colour of its class (the PNG's), its label where
    # it fits and in full on hover.
    segments = page.eval_on_selector_all("#segments .seg", "ss => ss.map(s => [s.dataset"
                                         ".label, s.textContent, s.title, "
                                         "s.style.background, s.offsetWidth])")
    assert [s[0] for s in segments] == [s["label"] for s in result["segments"]]
    for label, text, title, background, width in segments:
        assert title.startswith(f"{label}: ") and "confidence" in title
        assert background == rgb(COLOUR[label])
        assert text == label if width > 80 else text in ("", label)
    assert any(text for _, text, _, _, _ in segments)
    # The time axis: ticks at round times from 0 s.
    ticks = page.eval_on_selector_all("#axis .tick", "ts => ts.map(t => t.textContent)")
    assert ticks[0] == "0 s" and 3 <= len(ticks) <= 17, ticks
    times = [float(t.removesuffix(" s")) for t in ticks]
    assert times == sorted(times) and times[-1] <= 8
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

    # A file that is not a video: its name and the cause, and the last answer cleared.
    page.set_input_files("#file", files=[{"name": "notes.avi", "mimeType": "video/avi",
                                          "buffer": b"not a video at all\n" * 20}])
    page.wait_for_selector("#status.error", timeout=30_000)
    assert page.inner_text("#status").startswith("notes.avi: not a readable video")
    assert page.eval_on_selector("#result", "e => e.hidden")
    assert page.eval_on_selector("#timeline-section", "e => e.hidden")

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


def test_without_a_network_the_docs_render_and_without_a_camera_the_page_says_so(
        playwright, served, clip):
    """A second Chromium, with no fake camera: on a machine without one (CI), the webcam
    button says so in words. The docs pages, with every request that leaves this machine
    refused, render all the same: their scripts come from this server."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
    try:
        page = open_page(browser, served)
        cameras = page.evaluate("async () => (await navigator.mediaDevices.enumerateDevices())"
                                ".filter(d => d.kind === 'videoinput').length")
        if cameras == 0:
            label_clip(page, clip)
            page.click("#camera-button")
            page.wait_for_selector("#status.error", timeout=10_000)
            assert page.inner_text("#status").startswith("no camera found: connect a camera")
            assert page.eval_on_selector("#result", "e => e.hidden")   # the clip's is gone
        page.close()

        context = browser.new_context()
        refused, served_here = [], []

        def only_this_machine(route):
            url = route.request.url
            if url.startswith(served.url + "/"):
                served_here.append(url.removeprefix(served.url))
                route.continue_()
            else:
                refused.append(url)
                route.abort()
        context.route("**/*", only_this_machine)
        docs = context.new_page()
        docs.goto(served.url + "/docs")
        docs.wait_for_selector('.opblock-summary-path[data-path="/v1/predict"]',
                               timeout=30_000)
        docs.goto(served.url + "/redoc")
        docs.wait_for_selector("text=Classify a clip", timeout=30_000)
        assert {"/static-offline-docs/swagger-ui-bundle.js", "/static-offline-docs/swagger-ui.css",
                "/static-offline-docs/redoc.standalone.js", "/openapi.json"} <= set(served_here)
        # ReDoc's bundle asks for its maker's logo from a CDN (hard-coded; the image hides
        # itself when it fails): nothing else may leave.
        assert [url for url in refused if not url.endswith("/redoc/logo-mini.svg")] == []
        context.close()
    finally:
        browser.close()
