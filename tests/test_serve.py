"""`lrcn serve` for real: a uvicorn server in its own process on 127.0.0.1, real generated
videos, real HTTP (httpx and raw sockets), and SIGTERM at the end."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import torch

from conftest import (indexed_frame, start_lrcn_server, stop_lrcn_server,
                      write_video)
from lrcn.models.checkpoint import save_checkpoint
from lrcn.config import FrameConfig, ModelConfig
from lrcn.models.lrcn import LRCN
from lrcn.media.plots import PALETTE, UNKNOWN_COLOUR

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Served:
    def __init__(self, process, url: str, tmp: Path, log: Path):
        self.process, self.url, self.tmp, self.log = process, url, tmp, log

    def work_files(self) -> list[Path]:
        """Files the server holds outside finished timeline jobs: uploads in flight. (Its work
        folder is lrcn-serve-*; onnxruntime leaves a .ses file of its own in TMPDIR.)"""
        return [p for p in self.tmp.glob("lrcn-serve-*/**/*")
                if p.is_file() and "jobs" not in p.parts]


def start_server(checkpoint: Path, tmp: Path, *options: str) -> Served:
    process, url, log = start_lrcn_server(["serve", checkpoint, *options], tmp, tmp.parent)
    return Served(process, url, tmp, log)


def stop_server(served: Served) -> int:
    return stop_lrcn_server(served.process)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("model")
    return save_checkpoint(folder / "model.safetensors", LRCN(ModelConfig(num_classes=3)),
                           FrameConfig(), ["wave", "jump", "spin"], clip_seconds=2.0)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve") / "tmp"
    served = start_server(checkpoint, tmp, "--jobs", "2", "--queue", "2", "--max-upload-mb",
                          "1", "--decode-timeout", "20", "--token", TOKEN)
    yield served
    code = stop_server(served)
    assert code == 0, served.log.read_text()
    assert not list(tmp.glob("lrcn-serve-*")), "the server left files behind at shutdown"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.avi",
                       [indexed_frame(i, 96, 72) for i in range(45)], fps=15)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    frames = []
    for i in range(200):          # 8 s at 25 fps
        image = indexed_frame(i, 96, 72)
        image[:, (i * 3) % 96] = (255, 0, 0)
        frames.append(image)
    return write_video(tmp_path_factory.mktemp("long") / "long.mp4", frames, fps=25,
                       codec="h264_mp4")


def lrcn_predict(checkpoint, video) -> dict:
    result = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(checkpoint),
                             str(video), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_predict_equals_lrcn_predict(server, checkpoint, clip):
    expected = lrcn_predict(checkpoint, clip)
    with clip.open("rb") as handle:
        multipart = httpx.post(f"{server.url}/v1/predict", headers=AUTH,
                               files={"file": ("my clip.avi", handle, "video/x-msvideo")})
    raw = httpx.post(f"{server.url}/v1/predict", headers=AUTH, content=clip.read_bytes())
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["label"] == expected["label"]
        assert body["probability"] == expected["probability"]
        assert body["probabilities"] == expected["probabilities"]     # exactly
        assert body["frames"] == [int(((2 * i + 1) * 45) // 40) for i in range(20)]
        assert body["decoded_frames"] == 45 and body["seconds"] > 0
    assert server.work_files() == []


def test_a_timeline_job_runs_to_its_result(server, checkpoint, long_video):
    response = httpx.post(f"{server.url}/v1/timeline", headers=AUTH,
                          content=long_video.read_bytes())
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH).json()
        seen.append(job["progress"])
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert job["state"] == "done", job
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0 <= seen[0] < 1
    result = job["result"]
    # what `lrcn predict --timeline` writes: 8 s, windows of 2 s every 0.5 s -> 13 windows
    cli = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(checkpoint),
                          str(long_video), "--timeline", "--json", "--out",
                          str(server.tmp.parent / "cli-timeline")],
                         capture_output=True, text=True)
    expected = json.loads(cli.stdout)
    assert len(result["windows"]) == len(expected["windows"]) == 13
    assert [s["label"] for s in result["segments"]] == [s["label"] for s in expected["segments"]]
    np.testing.assert_allclose([w["smoothed"] for w in result["windows"]],
                               [w["smoothed"] for w in expected["windows"]], atol=1e-6)
    png = httpx.get(server.url + result["links"]["png"], headers=AUTH)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # the page's downloads: the timeline as `lrcn predict --timeline --out` writes it
    data = httpx.get(server.url + result["links"]["json"], headers=AUTH)
    assert data.headers["content-type"] == "application/json"
    assert data.json() == {k: v for k, v in result.items() if k != "links"}
    for key, rows, header in (("segments_csv", len(result["segments"]), "start,end,label,"),
                              ("windows_csv", 13, "start,end,label,wave,jump,spin")):
        table = httpx.get(server.url + result["links"][key], headers=AUTH)
        assert table.headers["content-type"].startswith("text/csv")
        lines = table.text.splitlines()
        assert lines[0].startswith(header) and len(lines) == 1 + rows
    video_url = server.url + result["links"]["video"]
    part = httpx.get(video_url, headers={**AUTH, "Range": "bytes=100-199"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.headers["content-range"].startswith("bytes 100-199/")
    whole = httpx.get(video_url + f"?token={TOKEN}")   # as a <video> element asks for it
    assert whole.status_code == 200 and whole.content[100:200] == part.content
    target = server.tmp.parent / "annotated.mp4"
    target.write_bytes(whole.content)
    with av.open(str(target)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 200
    deleted = httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json()["cancelled"] is False
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=AUTH).status_code == 404


def test_a_running_job_can_be_cancelled(server, long_video):
    job_id = httpx.post(f"{server.url}/v1/timeline", headers=AUTH,
                        content=long_video.read_bytes()).json()["id"]
    response = httpx.delete(f"{server.url}/v1/jobs/{job_id}", headers=AUTH)
    assert response.status_code == 200 and response.json()["cancelled"] is True
    assert not (next(server.tmp.glob("lrcn-serve-*")) / "jobs" / job_id).exists()
    for bad in ("../../etc/passwd", "x" * 22, "%2e%2e"):
        assert httpx.get(f"{server.url}/v1/jobs/{bad}", headers=AUTH).status_code == 404


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_bad_input_gets_its_status_and_cause_and_the_server_lives_on(server, clip, tmp_path):
    text = b"this is not a video\n" * 20
    header_only = clip.read_bytes()[:300]
    garbage = b"RIFF" + (1 << 20).to_bytes(4, "little") + b"AVI LIST" + os.urandom(60_000)
    cases = [
        (b"", 422, "empty upload (0 bytes)"),
        (text, 415, "not a readable video"),
        (header_only, 422, "truncated or damaged video"),   # the README's 422 (issue 21)
        (garbage, None, ""),                 # corrupt
        (_audio_only(tmp_path / "sound.m4a").read_bytes(), 415, "no video stream"),
        (os.urandom(1_200_000), 413, "upload larger than 1 MB"),
    ]
    for body, status, cause in cases:
        for endpoint in ("predict", "timeline"):
            response = httpx.post(f"{server.url}/v1/{endpoint}", headers=AUTH, content=body)
            assert response.status_code == status if status else \
                response.status_code in (415, 422), (endpoint, body[:20], response.text)
            error = response.json()["error"]
            assert cause in error and "\n" not in error and error, error
            assert httpx.get(f"{server.url}/healthz").status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    failures = [line for line in metrics.splitlines()
                if line.startswith("lrcn_decode_failures_total ")]
    assert failures and float(failures[0].split()[1]) >= 8
    assert 'lrcn_requests_total{endpoint="/v1/predict",status="413"}' in metrics
    assert "lrcn_request_seconds_bucket" in metrics and "lrcn_queue_depth " in metrics
    assert server.work_files() == []


def _slow_upload(url: str, length: int = 900_000) -> socket.socket:
    """A client that sends a request's headers and a little of its body, then waits."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)))
    conn.sendall((f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                  f"{TOKEN}\r\nContent-Type: video/x-msvideo\r\nContent-Length: {length}"
                  "\r\n\r\n").encode() + b"\0" * 50_000)
    return conn


def test_a_client_that_leaves_mid_upload_leaves_no_file(server):
    conn = _slow_upload(server.url)
    deadline = time.monotonic() + 10
    while not server.work_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.work_files(), "the upload was being written"
    conn.close()
    deadline = time.monotonic() + 10
    while server.work_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.work_files() == []
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_slow_uploads_do_not_lock_out_predict(server, clip):
    """Issue 22: 18 connections that send headers and a little body used to take every decoder
    slot (--jobs 2 + --queue 2) for as long as they stayed open. An upload now holds only an
    upload slot (--max-uploads, 32), for --upload-timeout at most (tests/test_serve_limits.py
    has the bounds themselves)."""
    slow = [_slow_upload(server.url) for _ in range(18)]
    try:
        time.sleep(0.5)
        response = httpx.post(f"{server.url}/v1/predict", headers=AUTH,
                              content=clip.read_bytes())
        assert response.status_code == 200, response.text
    finally:
        for conn in slow:
            conn.close()


def test_the_token_is_enforced(server, clip):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(f"{server.url}/v1/predict", headers=headers,
                              content=clip.read_bytes())
        assert response.status_code == 401 and "token" in response.json()["error"]
        assert httpx.get(f"{server.url}/v1/model", headers=headers).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=headers).status_code == 401
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/").status_code == 200       # the page asks for it
    model = httpx.get(f"{server.url}/v1/model", headers=AUTH).json()
    assert model["classes"] == ["wave", "jump", "spin"] and model["token_required"]
    assert model["frame_spacing_s"] == pytest.approx(0.1)
    assert model["model"] == "lrcn" and model["trainable_parameters"] > 0
    assert httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/predict"]
    # each class's colour, the timeline PNG's (the page draws with these)
    assert model["colours"] == {"unknown": UNKNOWN_COLOUR, "wave": PALETTE[0],
                                "jump": PALETTE[1], "spin": PALETTE[2]}


def test_every_error_has_one_shape_and_the_icon_is_served(server):
    job = "A" * 22
    cases = [("GET", "/no/such/page", 404, "not found: /no/such/page"),
             ("POST", "/healthz", 405, "POST is not allowed on /healthz (allowed: GET)"),
             ("GET", f"/v1/jobs/{job}", 404, f"no job '{job}'"),
             ("GET", f"/v1/jobs/{job}/secrets.txt", 422, "bad request: name: Input should be")]
    for method, path, status, message in cases:
        response = httpx.request(method, server.url + path, headers=AUTH)
        assert response.status_code == status, (path, response.text)
        body = response.json()
        assert list(body) == ["error"] and body["error"].startswith(message), body
    assert httpx.post(f"{server.url}/healthz").headers["allow"] == "GET"
    icon = httpx.get(f"{server.url}/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"        # an ICO file
    # the docs load their scripts from this server (tests/test_page.py renders them offline)
    for page, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = httpx.get(server.url + page).text
        assert f'src="/static-offline-docs/{script}"' in html and "cdn." not in html
        assert httpx.get(f"{server.url}/static-offline-docs/{script}").status_code == 200


def webcam_expected(checkpoint, jpegs: list[bytes], smooth: int = 3) -> list[dict]:
    """What the webcam socket should answer for these JPEGs, by the classify path in this
    process: each JPEG decoded as the server decodes it (cv2.imdecode, then the checkpoint's
    frame settings), each window of num_frames frames through Predictor (the clip path:
    logits, temperature, one softmax), the trailing average of `smooth` windows."""
    import cv2
    from lrcn.inference.engine import load_engine
    from lrcn.inference.predict import Predictor, prediction_of
    from lrcn.inference.windows import TrailingAverage
    from lrcn.media.video import image_to_model_frame
    predictor = Predictor(load_engine(checkpoint))       # the server's engine: auto
    config = predictor.frame_config
    frames = [image_to_model_frame(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR),
                                   config, channels="bgr") for j in jpegs]
    average = TrailingAverage(smooth)
    out = []
    for k in range(len(frames) - config.num_frames + 1):
        window = predictor.probabilities(np.stack(frames[k:k + config.num_frames]))
        out.append(prediction_of(predictor.names, average.add(window)).as_dict())
    return out


def test_the_webcam_socket_answers_what_predictor_gives_for_the_same_frames(server,
                                                                             checkpoint):
    import asyncio
    import struct

    import cv2
    import websockets
    rng = np.random.default_rng(7)
    jpegs = [cv2.imencode(".jpg", np.clip(indexed_frame(i, 160, 120).astype(int)
                                          + rng.integers(-40, 40, (120, 160, 3)), 0, 255)
                          .astype(np.uint8))[1].tobytes() for i in range(25)]

    async def session():
        url = server.url.replace("http", "ws") + f"/v1/stream?token={TOKEN}"
        replies = []
        async with websockets.connect(url) as ws:
            for i, jpeg in enumerate(jpegs):
                await ws.send(struct.pack(">d", 1000.0 + i) + jpeg)
                replies.append(json.loads(await ws.recv()))
            await ws.send(struct.pack(">d", 5.0) + b"not a jpeg")
            replies.append(json.loads(await ws.recv()))
        return replies

    replies = asyncio.run(session())
    assert [r.get("warming") for r in replies[:19]] == list(range(1, 20))
    labelled = replies[19:25]
    assert [r["t"] for r in labelled] == [1019.0 + k for k in range(6)]
    expected = webcam_expected(checkpoint, jpegs)
    assert len(expected) == len(labelled) == 6
    for got, want in zip(labelled, expected):
        assert got["label"] == want["label"]
        assert list(got["probabilities"]) == ["wave", "jump", "spin"]
        np.testing.assert_allclose(list(got["probabilities"].values()),
                                   list(want["probabilities"].values()), atol=1e-6, rtol=0)
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
    # The trailing average is at work: the shown answers are not the windows' own.
    assert np.abs(np.diff([list(r["probabilities"].values()) for r in labelled], axis=0)
                  ).max() > 1e-6
    assert replies[25]["error"] == "not a JPEG image"


def test_views_on_the_rest_route_are_those_of_lrcn_predict(checkpoint, clip, tmp_path):
    """`lrcn serve --views 2` answers what `lrcn predict --views 2` prints (the route used to
    classify without views)."""
    served = start_server(checkpoint, tmp_path / "tmp", "--views", "2")
    try:
        response = httpx.post(f"{served.url}/v1/predict", content=clip.read_bytes())
        assert response.status_code == 200, response.text
        body = response.json()
        assert httpx.get(f"{served.url}/v1/model").json()["views"] == 2
    finally:
        assert stop_server(served) == 0
    result = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(checkpoint),
                             str(clip), "--json", "--views", "2"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout)[0]
    assert body["label"] == expected["label"]
    assert body["probabilities"] == expected["probabilities"]     # exactly
    assert body["probabilities"] != lrcn_predict(checkpoint, clip)["probabilities"]
    assert len(body["frames"]) == 40                  # two views of 20 frames


def test_sigterm_lets_a_running_job_finish_then_stops(checkpoint, long_video, tmp_path):
    served = start_server(checkpoint, tmp_path / "tmp", "--jobs", "1")
    response = httpx.post(f"{served.url}/v1/timeline", content=long_video.read_bytes())
    job_id = response.json()["id"]
    while httpx.get(f"{served.url}/v1/jobs/{job_id}").json()["state"] != "running":
        time.sleep(0.1)
    started = time.monotonic()
    assert stop_server(served) == 0
    assert time.monotonic() - started < 60
    assert not list((tmp_path / "tmp").glob("lrcn-serve-*"))


def test_predict_warns_about_a_file_cut_short(server, tmp_path):
    """A faststart MP4 cut to its first 30% still decodes (about 30 of its 100 frames): it is
    answered, as `lrcn predict` answers it, with a warning that it looks cut short."""
    from test_data_check import cut, faststart_mp4
    short = cut(faststart_mp4(tmp_path / "whole.mp4"), tmp_path / "cut.mp4")
    response = httpx.post(f"{server.url}/v1/predict", headers=AUTH, content=short.read_bytes())
    assert response.status_code == 200, response.text
    assert response.json()["warning"].startswith("header claims 100 frames")
    whole = httpx.post(f"{server.url}/v1/predict", headers=AUTH,
                       content=(tmp_path / "whole.mp4").read_bytes())
    assert whole.status_code == 200 and "warning" not in whole.json()
