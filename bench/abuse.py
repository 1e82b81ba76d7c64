"""`lrcn serve` attacked: issue 22's attacks against a fresh server with the default limits
(and a token, and --upload-timeout 10 so that the slow uploads' end is seen within the run).

    nice python bench/abuse.py [--work DIR]

Each attack is one way for a request to take memory, time or the answer away from everyone
else; it holds when every answer is the bounded one (the status and the bound it names) and the
server lives on. While the attacks run, a monitor samples the memory of the server and all its
processes (decoders, timeline jobs) every 50 ms and times GET /healthz every 100 ms, two real
timeline jobs run, and a legitimate client's POST /v1/predict is sent in the middle of every
attack but the two whose point is a full queue (33 uploads, 60 predicts). Last line:

    lrcn_abuse attacks=N held=N peak_rss_mb=M healthz_max_ms=L predict_ok_during=1

The two timeline jobs are 1080p, the largest frames the defaults take, so that the peak is that
of the worst legitimate work as well. Hostile files are made small by tests/hostile.py: an MKV with 1000 video streams (1.7 MB), a
1 KB H.264 stating 16000x16000, a JPEG header stating 16000x16000.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import free_port, indexed_frame, write_video      # noqa: E402
from hostile import huge_h264, huge_jpeg, many_streams_mkv      # noqa: E402
from serve import tree_rss_mb                                   # noqa: E402

TOKEN = "abuse-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _watch(pid: int, url: str, peak_mb, healthz_max_ms, phase_max_ms, failures, stop) -> None:
    last_health = 0.0
    with httpx.Client(timeout=30) as client:
        while not stop.wait(0.05):
            peak_mb.value = max(peak_mb.value, tree_rss_mb(pid))
            if time.monotonic() - last_health >= 0.1:
                last_health = time.monotonic()
                started = time.perf_counter()
                try:
                    ok = client.get(f"{url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = 1000 * (time.perf_counter() - started)
                healthz_max_ms.value = max(healthz_max_ms.value, took)
                phase_max_ms.value = max(phase_max_ms.value, took)
                failures.value += not ok


class Monitor:
    """Peak memory of the server's process tree, and the slowest /healthz, watched from a
    process of its own (the attackers' threads in this one would slow its own clock)."""

    def __init__(self, pid: int, url: str):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.values = [ctx.Value("d", 0.0) for _ in range(4)]
        self.stop = ctx.Event()
        self.process = ctx.Process(target=_watch, args=(pid, url, *self.values, self.stop),
                                   daemon=True)

    def start(self) -> None:
        self.process.start()

    def join(self) -> None:
        self.stop.set()
        self.process.join()

    peak_mb = property(lambda self: self.values[0].value)
    healthz_max_ms = property(lambda self: self.values[1].value)
    healthz_failures = property(lambda self: int(self.values[3].value))

    @property
    def phase_max_ms(self) -> float:
        return self.values[2].value

    @phase_max_ms.setter
    def phase_max_ms(self, value: float) -> None:
        self.values[2].value = value


class Bench:
    def __init__(self, url: str, clip: bytes):
        self.url, self.clip = url, clip
        self.legit: list[int] = []           # statuses of the legitimate predicts

    def post(self, endpoint: str, body: bytes, headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/{endpoint}", content=body, timeout=120,
                          headers={**AUTH, **(headers or {})})

    def legit_predict(self) -> None:
        self.legit.append(self.post("predict", self.clip).status_code)

    def raw(self, head: str, body: bytes = b"") -> socket.socket:
        host, port = self.url.removeprefix("http://").split(":")
        conn = socket.create_connection((host, int(port)))
        conn.sendall(head.format(host=host).encode() + body)
        return conn


def refused(response: httpx.Response, status: int, bound: str) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError):
        return False
    return response.status_code == status and bound in error


def attack_many_streams(bench: Bench, files: dict) -> bool:
    """Four 1000-stream MKVs at once to /v1/timeline (each took the server from 340 MB to
    1.1 GB; four to 3.6 GB), and one to /v1/predict."""
    body = files["streams"].read_bytes()
    with ThreadPoolExecutor(5) as pool:
        answers = [pool.submit(bench.post, "timeline", body) for _ in range(4)]
        answers.append(pool.submit(bench.post, "predict", body))
        bench.legit_predict()
        return all(refused(a.result(), 422, "--max-streams") for a in answers)


def attack_huge_frames(bench: Bench, files: dict) -> bool:
    """A 2-frame H.264 stating 16000x16000 to both routes (a timeline job peaked at 5.2 GB)."""
    body = files["huge"].read_bytes()
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(bench.post, e, body) for e in ("timeline", "predict") * 2]
        bench.legit_predict()
        return all(refused(a.result(), 422, "--max-pixels") for a in answers)


def attack_slow_uploads(bench: Bench, files: dict) -> bool:
    """18 uploads that send their headers and 3 bytes, then wait (they made every predict 503
    for as long as they stayed open): predicts go on, and each gets 408 at --upload-timeout."""
    head = ("POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer " + TOKEN +
            "\r\nContent-Length: 900000\r\n\r\n")
    slow = [bench.raw(head, b"\0\0\0") for _ in range(18)]
    time.sleep(0.5)
    bench.legit_predict()
    answers = []
    for conn in slow:
        conn.settimeout(60)
        answer = b""
        try:
            while b"upload-timeout" not in answer and (chunk := conn.recv(4096)):
                answer += chunk
        except OSError:
            pass
        conn.close()
        answers.append(answer.startswith(b"HTTP/1.1 408") and b"--upload-timeout" in answer)
    return all(answers)


def attack_too_many_uploads(bench: Bench, files: dict) -> bool:
    """33 slow uploads: the 33rd and a predict past --max-uploads get 503 naming it."""
    head = ("POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer " + TOKEN +
            "\r\nContent-Length: 900000\r\n\r\n")
    slow = [bench.raw(head, b"\0\0\0") for _ in range(32)]
    time.sleep(1.0)
    try:
        return refused(bench.post("predict", bench.clip), 503, "--max-uploads 32")
    finally:
        for conn in slow:
            conn.close()
        time.sleep(0.5)


def attack_webcam(bench: Bench, files: dict) -> bool:
    """16000x16000 JPEGs from four sockets (one took the server to 2.6 GB and stalled /healthz
    2.5 s a message), a 1.5 MB message, a fifth socket, and a page of another origin."""
    import websockets
    url = bench.url.replace("http", "ws") + f"/v1/stream?token={TOKEN}"
    jpeg = huge_jpeg()

    async def one_socket() -> bool:
        async with websockets.connect(url, max_size=None) as ws:
            replies = []
            for i in range(5):
                await ws.send(struct.pack(">d", float(i)) + jpeg)
                replies.append(json.loads(await ws.recv()))
            return all("--max-pixels" in r.get("error", "") for r in replies)

    async def refused_status(**kwargs) -> int | None:
        try:
            async with websockets.connect(url, **kwargs):
                return None
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code

    async def too_big() -> bool:
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send(struct.pack(">d", 0.0) + b"\xff\xd8" + os.urandom(1_500_000))
            try:
                await ws.recv()
            except websockets.exceptions.ConnectionClosed as exc:
                return exc.rcvd is not None and exc.rcvd.code == 1009
        return False

    async def run() -> bool:
        held = all(await asyncio.gather(*(one_socket() for _ in range(4))))
        await asyncio.sleep(0.3)                      # the server sees the four close
        sockets = [await websockets.connect(url) for _ in range(4)]
        fifth = await refused_status()
        for ws in sockets:
            await ws.close()
        await asyncio.sleep(0.2)
        evil = await refused_status(origin="http://evil.example")
        return held and fifth == 503 and evil == 403 and await too_big()

    thread = threading.Thread(target=bench.legit_predict)
    thread.start()
    held = asyncio.run(run())
    thread.join()
    return held


def attack_malformed(bench: Bench, files: dict) -> bool:
    """Multipart without a boundary, with garbage after it, without a file part (500 and a
    traceback before); a truncated upload (422); text (415); an upload past the size limit
    (413); ?token= on the API (401)."""
    cases = [
        (b"--x\r\n\r\nvideo", {"Content-Type": "multipart/form-data"}, 400, "malformed"),
        (b"--abc\r\nbad\r\n\r\nxx", {"Content-Type": "multipart/form-data; boundary=abc"},
         400, "malformed"),
        (b"garbage", {"Content-Type": "multipart/form-data; boundary=abc"}, 400, "malformed"),
        (bench.clip[:300], {}, 422, "truncated or damaged"),
        (b"not a video\n" * 30, {}, 415, "not a readable video"),
    ]
    held = [refused(bench.post(e, body, headers), status, cause)
            for body, headers, status, cause in cases for e in ("predict", "timeline")]
    bench.legit_predict()
    big = bench.raw("POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer " +
                    TOKEN + "\r\nContent-Length: 900000000\r\n\r\n")
    big.settimeout(30)
    held.append(big.recv(4096).startswith(b"HTTP/1.1 413"))
    big.close()
    held.append(httpx.get(f"{bench.url}/v1/model?token={TOKEN}").status_code == 401)
    return all(held)


def attack_queue_flood(bench: Bench, files: dict) -> bool:
    """60 predicts at once: each is answered 200, or 503 naming the bound it met (--jobs +
    --queue for the decoders, --max-uploads for 60 uploads at once), nothing else."""
    with ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(lambda _: bench.post("predict", bench.clip), range(60)))
    counts = {}
    for a in answers:
        kind = "200" if a.status_code == 200 else "503 --queue" if refused(a, 503, "--queue") \
            else "503 --max-uploads" if refused(a, 503, "--max-uploads") else \
            f"{a.status_code} {a.text[:80]}"
        counts[kind] = counts.get(kind, 0) + 1
    print(f"  queue flood: {counts}")
    return all(k in ("200", "503 --queue", "503 --max-uploads") for k in counts)


ATTACKS = [attack_many_streams, attack_huge_frames, attack_slow_uploads,
           attack_too_many_uploads, attack_webcam, attack_malformed, attack_queue_flood]


def make_files(work: Path) -> tuple[Path, dict]:
    import torch
    from lrcn.config import FrameConfig, ModelConfig
    from lrcn.models.checkpoint import save_checkpoint
    from lrcn.models.lrcn import LRCN
    torch.manual_seed(0)
    noise = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    checkpoint = save_checkpoint(work / "model.safetensors", LRCN(ModelConfig(num_classes=3)),
                                 FrameConfig(), ["a", "b", "c"], clip_seconds=2.0)
    files = {
        "clip": write_video(work / "clip.avi", [indexed_frame(i, 160, 120) for i in range(45)],
                            fps=15),
        # two timeline jobs at the largest frames the defaults take (1080p): 3 s of noise
        "long": write_video(work / "long.mp4", [np.roll(noise, 8 * i, axis=1) for i in range(75)],
                            fps=25, codec="h264_mp4", options={"bf": "0", "crf": "30"}),
        "streams": many_streams_mkv(work / "streams.mkv", 1000),
        "huge": huge_h264(work / "huge.h264"),
    }
    return checkpoint, files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-abuse")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, files = make_files(args.work)
    tmp = args.work / "tmp"
    tmp.mkdir(exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lrcn", "serve", str(checkpoint), "--port", str(port),
         "--token", TOKEN, "--upload-timeout", "10"],
        env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    print(f"server up: {tree_rss_mb(server.pid):.0f} MB", flush=True)
    monitor = Monitor(server.pid, url)
    monitor.start()
    while monitor.peak_mb == 0:                  # the watcher has started
        time.sleep(0.1)
    bench = Bench(url, files["clip"].read_bytes())
    jobs = [bench.post("timeline", files["long"].read_bytes()).json()["id"] for _ in range(2)]
    held = 0
    for attack in ATTACKS:
        started, monitor.phase_max_ms = time.monotonic(), 0.0
        ok = attack(bench, files) and server.poll() is None
        held += ok
        print(f"{attack.__name__}: {'held' if ok else 'FAILED'} ({time.monotonic() - started:.1f} s, "
              f"peak {monitor.peak_mb:.0f} MB so far, /healthz at most "
              f"{monitor.phase_max_ms:.0f} ms)", flush=True)
    states = [httpx.get(f"{url}/v1/jobs/{j}", headers=AUTH).json()["state"] for j in jobs]
    while any(s in ("queued", "running") for s in states):
        time.sleep(0.5)
        states = [httpx.get(f"{url}/v1/jobs/{j}", headers=AUTH).json()["state"] for j in jobs]
    monitor.join()
    server.send_signal(signal.SIGTERM)
    _, stderr = server.communicate(timeout=60)
    print(f"timeline jobs during the attacks: {states}; legitimate predicts: {bench.legit}; "
          f"healthz failures: {monitor.healthz_failures}; server exit {server.returncode}; "
          f"tracebacks in its log: {stderr.count('Traceback')}")
    ok_during = int(bool(bench.legit) and all(s == 200 for s in bench.legit)
                    and states == ["done", "done"])
    print(f"lrcn_abuse attacks={len(ATTACKS)} held={held} peak_rss_mb={monitor.peak_mb:.0f} "
          f"healthz_max_ms={monitor.healthz_max_ms:.0f} predict_ok_during={ok_during}")


if __name__ == "__main__":
    main()
