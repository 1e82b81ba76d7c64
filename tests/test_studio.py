"""The studio over REST, against a real `lrcn studio WORKSPACE` server: a data set made from
recorded frames and cut segments of long videos, a training job in its own process (the
server answering meanwhile), the evaluation, the new run served, and the CLI on the same
workspace. Names from the client are checked; nothing is written outside the workspace; uploads
past the server's limits are refused before they are decoded; a served run that no longer loads
leaves the studio starting with no model."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from conftest import start_lrcn_server, stop_lrcn_server, write_video

TOKEN = "studio-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Studio:
    def __init__(self, process, url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def get(self, path: str, **kw):
        return httpx.get(self.url + path, headers=AUTH, timeout=60, **kw)

    def post(self, path: str, **kw):
        return httpx.post(self.url + path, headers=AUTH, timeout=120, **kw)


def start_studio(workspace: Path, tmp: Path, *options: str) -> Studio:
    process, url, log = start_lrcn_server(["studio", workspace, "--token", TOKEN, *options],
                                          tmp, tmp)
    return Studio(process, url, log)


def stop_studio(studio: Studio) -> int:
    return stop_lrcn_server(studio.process)


def scene(kind: int, t: int, width: int = 96, height: int = 72) -> np.ndarray:
    """Frame t of action `kind`: a bar moving right (0), left (1), down (2) or up (3)."""
    image = np.full((height, width, 3), 40 + 30 * kind, np.uint8)
    step = (t * 5) % width
    if kind == 0:
        image[:, step:step + 8] = 255
    elif kind == 1:
        image[:, width - 8 - step:width - step] = 255
    elif kind == 2:
        image[step % height:step % height + 8] = 255
    else:
        image[height - 8 - step % height:height - step % height] = 255
    return image


def jpeg_body(frames) -> bytes:
    body = b""
    for image in frames:
        ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1])
        body += struct.pack(">I", len(jpeg)) + jpeg.tobytes()
    return body


def long_video(path: Path, kinds: list[int], seconds: float = 2.0, fps: int = 10) -> Path:
    """Actions one after another, `seconds` each."""
    frames = [scene(kind, t) for kind in kinds for t in range(int(seconds * fps))]
    return write_video(path, frames, fps=fps, codec="h264_mp4")


def lrcn_predict(target, video) -> dict:
    result = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(target), str(video),
                             "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def make_data_set(studio: Studio, tmp: Path) -> None:
    """Two classes recorded in two sessions each; two more cut from two long videos."""
    for session in range(2):
        group = studio.post("/v1/studio/sessions").json()["group"]
        for kind, name in ((0, "Wave"), (1, "Clap")):
            for take in range(2):
                frames = [scene(kind, t + 7 * take + 3 * session) for t in range(20)]
                r = studio.post(f"/v1/studio/record?cls={name}&group={group}&fps=10",
                                content=jpeg_body(frames))
                assert r.status_code == 200, r.text
                assert r.json()["frames"] == 20
    for i in range(2):
        video = long_video(tmp / f"long {i}.mp4", [2, 3, 2, 3])
        with video.open("rb") as handle:
            r = studio.post(f"/v1/studio/sources?name={video.name}",
                            files={"file": (video.name, handle, "video/mp4")})
        assert r.status_code == 201, r.text
        source = r.json()
        assert abs(source["duration"] - 8.0) < 0.2
        segments = [{"start": 0.0, "end": 2.0, "class": "Jump"},
                    {"start": 2.0, "end": 4.0, "class": "Spin"},
                    {"start": 4.0, "end": 6.0, "class": "Jump"},
                    {"start": 6.0, "end": 8.0, "class": "Spin"}]
        r = studio.post(f"/v1/studio/sources/{source['id']}/segments",
                        json={"segments": segments})
        assert r.status_code == 200, r.text
        g = source["group"]
        assert [c["name"] for c in r.json()["clips"]] == [
            f"v_Jump_{g}_c01.mp4", f"v_Spin_{g}_c01.mp4", f"v_Jump_{g}_c02.mp4",
            f"v_Spin_{g}_c02.mp4"]


@pytest.fixture(scope="module")
def studio_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studio")
    workspace = tmp / "ws"
    # 160x120 frames at most: the test's videos and JPEGs are 96x72
    studio = start_studio(workspace, tmp / "tmp", "--jobs", "1", "--max-pixels", "19200")
    try:
        yield studio, workspace, tmp
    finally:
        assert stop_studio(studio) == 0, studio.log.read_text()


def test_the_studio_makes_a_data_set_trains_and_serves(studio_run):
    studio, workspace, tmp = studio_run
    assert studio.get("/v1/model").json()["classes"] == []
    assert httpx.post(studio.url + "/v1/predict", headers=AUTH,
                      content=b"x").status_code == 409          # no model yet
    make_data_set(studio, tmp)
    overview = studio.get("/v1/studio").json()
    assert {c: row["clips"] for c, row in overview["classes"].items()} == \
        {"Clap": 4, "Jump": 4, "Spin": 4, "Wave": 4}
    assert all(len(row["groups"]) == 2 for row in overview["classes"].values())
    # The layout on disk is the standard one: every file a clip of its class's folder.
    on_disk = sorted(str(p.relative_to(workspace / "data"))
                     for p in (workspace / "data").rglob("*") if p.is_file())
    assert len(on_disk) == 16 and all(p.split("/")[1].startswith(f"v_{p.split('/')[0]}_g")
                                      for p in on_disk)
    check = studio.get("/v1/studio/check").json()
    assert check["readable"] == 16 and isinstance(check["problems"], list)

    # Delete and relabel: a wrong take moved and moved back; one deleted.
    r = studio.post("/v1/studio/clips/Wave/v_Wave_g01_c02.mp4/relabel", json={"class": "Clap"})
    assert r.status_code == 200 and r.json() == {"class": "Clap", "name": "v_Clap_g01_c03.mp4"}
    r = studio.post("/v1/studio/clips/Clap/v_Clap_g01_c03.mp4/relabel", json={"class": "Wave"})
    assert r.json()["name"] == "v_Wave_g01_c02.mp4"

    # A file that does not decode: training leaves it out, and the job's log says so.
    unreadable = workspace / "data" / "Wave" / "v_Wave_g01_c09.mp4"
    unreadable.write_bytes(b"not a video")
    # Two sources per class: trained with no validation part (the split's rule needs three).
    r = studio.post("/v1/studio/train", json={"model": "lrcn", "epochs": 1})
    assert r.status_code == 202, r.text
    run = r.json()["run"]
    assert studio.post("/v1/studio/train", json={"model": "lrcn"}).status_code == 409
    waits, states, logged = [], set(), set()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        started = time.perf_counter()
        assert httpx.get(studio.url + "/healthz", timeout=5).status_code == 200
        waits.append(time.perf_counter() - started)
        job = studio.get("/v1/studio/train").json()
        assert "phase" in job, job
        states.add(job["phase"])
        logged.update(job["log"])
        if job["state"] != "running":
            break
        time.sleep(0.2)
    assert job["state"] == "done", job
    unreadable.unlink()
    # (The phases polled here are not asserted: on a quiet machine one epoch of these clips ends
    # between two polls, and the fresh CI clone failed on that race. console.live_bars, which
    # the phases come from, is tested directly.)
    assert states, states
    assert job["validation"] is False and any("no validation part" in line for line in logged)
    assert "skipped 1 unreadable video:" in logged, logged
    assert any("v_Wave_g01_c09.mp4" in line for line in logged), logged
    # Bars for a 2-core machine shared with other work (load 12 when this was written: the
    # slowest answer was 1.1 s there, most under 0.1 s): the server is not waiting on training.
    assert np.median(waits) < 0.5 and max(waits) < 3.0, waits
    assert len(job["history"]) == 1
    # A session recorded Wave and Clap, a long video Jump and Spin: each source is on one side
    # of the split in every class (split by class, g01 could test Wave and train Clap).
    split = json.loads((workspace / "runs" / run / "split.json").read_text())
    sides: dict[str, set] = {}
    for part in ("train", "val", "test"):
        for clip in split[part]:
            sides.setdefault(clip["group"].split("/")[-1], set()).add(part)
    assert sorted(sides) == ["g01", "g02", "g03", "g04"] and \
        all(len(parts) == 1 for parts in sides.values()), sides
    report = studio.get(f"/v1/studio/runs/{run}").json()
    assert report["num_clips"] == 8 and len(report["confusion_matrix"]) == 4
    assert sum(map(sum, report["confusion_matrix"])) == 8
    assert set(report["per_class"]) == {"Clap", "Jump", "Spin", "Wave"}
    for mistake in report["mistakes"]:
        assert studio.get(mistake["link"]).status_code == 200
    assert studio.get(f"/v1/studio/runs/{run}/confusion_matrix.png").content[:4] == b"\x89PNG"

    # The new run is served: /v1/predict gives exactly `lrcn predict` on the saved run.
    deadline = time.monotonic() + 30
    while studio.get("/v1/model").json().get("run") != run and time.monotonic() < deadline:
        time.sleep(0.2)
    assert studio.get("/v1/model").json()["classes"] == ["Clap", "Jump", "Spin", "Wave"]
    clip = next((workspace / "data" / "Jump").iterdir())
    expected = lrcn_predict(workspace / "runs" / run, clip)
    got = studio.post("/v1/predict", content=clip.read_bytes()).json()
    assert (got["label"], got["probabilities"]) == (expected["label"],
                                                    expected["probabilities"])
    checkpoint = studio.get(f"/v1/studio/runs/{run}/model.safetensors")
    assert checkpoint.status_code == 200 and len(checkpoint.content) > 10_000
    onnx = studio.get(f"/v1/studio/runs/{run}/model.onnx")
    assert onnx.status_code == 200 and (workspace / "runs" / run / "model.onnx").exists()

    # The CLI on the same workspace.
    result = subprocess.run([sys.executable, "-m", "lrcn", "evaluate",
                             str(workspace / "runs" / run), "--workers", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_names_are_checked_and_nothing_is_written_outside(studio_run):
    studio, workspace, tmp = studio_run
    before = sorted(p for p in tmp.rglob("*") if "ws" not in p.relative_to(tmp).parts[:1]
                    and "tmp" not in p.relative_to(tmp).parts[:1])
    for path in ("/v1/studio/clips/Wave/..%2F..%2Fstudio.json", "/v1/studio/clips/..%2Fx/y",
                 "/v1/studio/runs/..%2F..", "/v1/studio/sources/..%2Fdata/video"):
        assert studio.get(path).status_code in (404, 422), path
    group = studio.post("/v1/studio/sessions").json()["group"]
    body = jpeg_body([scene(0, t) for t in range(4)])
    for cls in ("../evil", "a_b", "", "x" * 41):
        r = studio.post(f"/v1/studio/record?cls={cls}&group={group}", content=body)
        assert r.status_code == 422 and "error" in r.json(), (cls, r.text)
    r = studio.post("/v1/studio/record?cls=Wave&group=g99", content=body)
    assert r.status_code == 404
    r = studio.post(f"/v1/studio/record?cls=Wave&group={group}", content=b"\0\0\0\5abc")
    assert r.status_code == 422 and "truncated" in r.json()["error"]
    assert httpx.get(studio.url + "/v1/studio").status_code == 401      # the server's token
    # A run without its files (a running or failed run), a folder where a clip would be: 404.
    (workspace / "runs" / "run-empty").mkdir()
    for name in ("curves.png", "model.safetensors", "model.onnx"):
        r = studio.get(f"/v1/studio/runs/run-empty/{name}")
        missing = "model.safetensors" if name == "model.onnx" else name   # nothing to export
        assert r.status_code == 404 and r.json()["error"] == \
            f"run run-empty has no {missing}", (name, r.text)
    (workspace / "data" / "Wave" / "v_Wave_g01_c99.mp4").mkdir()
    assert studio.get("/v1/studio/clips/Wave/v_Wave_g01_c99.mp4").status_code == 404
    assert httpx.delete(studio.url + "/v1/studio/clips/Wave/v_Wave_g01_c99.mp4",
                        headers=AUTH).status_code == 404
    (workspace / "data" / "Wave" / "v_Wave_g01_c99.mp4").rmdir()
    (workspace / "runs" / "run-empty").rmdir()
    after = sorted(p for p in tmp.rglob("*") if "ws" not in p.relative_to(tmp).parts[:1]
                   and "tmp" not in p.relative_to(tmp).parts[:1])
    assert after == before


def test_uploads_past_the_limits_are_refused_before_decoding(studio_run):
    studio, workspace, tmp = studio_run
    sources = sorted((workspace / "sources").iterdir())
    big = write_video(tmp / "big.mp4", [scene(0, t, 200, 150) for t in range(3)], fps=10,
                      codec="h264_mp4")
    r = studio.post("/v1/studio/sources?name=big.mp4", content=big.read_bytes())
    assert r.status_code == 422 and "--max-pixels" in r.json()["error"], r.text
    r = studio.post("/v1/studio/sources?name=notes.txt", content=b"hello " * 100)
    assert r.status_code == 415, r.text
    assert sorted((workspace / "sources").iterdir()) == sources      # nothing entered
    group = studio.post("/v1/studio/sessions").json()["group"]
    r = studio.post(f"/v1/studio/record?cls=Wave&group={group}",
                    content=jpeg_body([scene(0, t, 200, 150) for t in range(3)]))
    assert r.status_code == 422 and "frame 1 of the recording: a JPEG of 200x150" in \
        r.json()["error"], r.text
    r = studio.post(f"/v1/studio/record?cls=Wave&group={group}",
                    content=struct.pack(">I", 1) + b"x" + jpeg_body([scene(0, 1)]))
    assert r.status_code == 422 and "not a JPEG" in r.json()["error"], r.text
    many = (struct.pack(">I", 1) + b"x") * 301        # counted before any is decoded
    r = studio.post(f"/v1/studio/record?cls=Wave&group={group}", content=many)
    assert r.status_code == 422 and "more than 300 frames" in r.json()["error"], r.text
    assert not list((workspace / "data" / "Wave").glob(f"*_{group}_*"))


def test_a_class_from_one_source_is_refused_with_what_it_needs(studio_run):
    studio, workspace, tmp = studio_run
    group = studio.post("/v1/studio/sessions").json()["group"]
    r = studio.post(f"/v1/studio/record?cls=Solo&group={group}",
                    content=jpeg_body([scene(0, t) for t in range(4)]))
    assert r.status_code == 200, r.text
    try:
        r = studio.post("/v1/studio/train", json={"model": "lrcn", "epochs": 1})
        assert r.status_code == 422, r.text
        assert "class 'Solo'" in r.json()["error"] and "clips from 2 sources" in \
            r.json()["error"], r.text
    finally:
        assert httpx.delete(f"{studio.url}/v1/studio/clips/Solo/v_Solo_{group}_c01.mp4",
                            headers=AUTH).status_code == 200


def test_a_served_run_that_does_not_load_starts_the_studio_without_a_model(tmp_path):
    workspace = tmp_path / "ws"
    run = workspace / "runs" / "run-broken"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"\0" * 64)
    (workspace / "studio.json").write_text(json.dumps({"groups": {}, "served": run.name}))
    studio = start_studio(workspace, tmp_path / "tmp")
    try:
        assert studio.get("/v1/model").json()["classes"] == []
        assert studio.get("/v1/studio").json()["served"] is None
    finally:
        assert stop_studio(studio) == 0
    log = studio.log.read_text()
    assert "warning: the served run run-broken does not load (" in log, log
    assert "Traceback" not in log, log


def test_the_trainers_thread_outlives_a_failure_that_is_not_an_lrcn_error(tmp_path):
    """Serving a finished run raises a bug's exception, then a run leaves a damaged
    error.json: each job fails with one line, and the trainer goes on polling."""
    import multiprocessing as mp
    from lrcn.server.trainjobs import Trainer, TrainJob
    from lrcn.server.workspace import Workspace

    def serve(run):
        raise ValueError(f"cannot serve {run.name}\nsecond line")

    trainer = Trainer(Workspace(tmp_path / "ws"), serve, workers=0, device="cpu")
    try:
        for name, file, text, error in (
                ("run-a", "result.json", "{}", "trained, but cannot be served: ValueError: "
                                               "cannot serve run-a"),
                ("run-b", "error.json", "{not json", "JSONDecodeError: ")):
            run = tmp_path / name
            run.mkdir()
            (run / file).write_text(text)
            process = mp.get_context("spawn").Process(target=os.getpid)
            process.start()
            process.join()
            trainer.job = TrainJob(run, {}, process)
            deadline = time.monotonic() + 10
            while trainer.job.state == "running" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert trainer.job.state == "failed" and trainer.job.error.startswith(error) \
                and "\n" not in trainer.job.error, trainer.job.error
            assert trainer._thread.is_alive()
    finally:
        trainer.close()


def test_live_bars_lists_the_open_bars_of_either_kind():
    from lrcn.console import live_bars, progress
    out = io.StringIO()              # not a terminal: the plain-line bar
    with progress(total=3, desc="decoding", unit="clip", file=out) as bar:
        bar.update(2)
        assert ("decoding", 2, 3) in live_bars()
    assert ("decoding", 2, 3) not in live_bars()
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    with progress(total=4, desc="epoch 1/2", file=Terminal()) as bar:     # tqdm's
        bar.update(1)
        assert live_bars()[-1] == ("epoch 1/2", 1, 4)
    assert ("epoch 1/2", 1, 4) not in live_bars()
    quiet = progress(total=3, desc="hidden", enabled=False)
    assert all(desc != "hidden" for desc, _, _ in live_bars())
    quiet.close()
