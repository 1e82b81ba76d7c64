"""`lrcn serve` under load, beside `lrcn predict` on the same clips in the same run.

    python bench/serve.py [--clients 16] [--requests 320] [--jobs 2] [--queue 16]

Makes a synthetic set of clips (lrcn synth: XviD AVI and H.264 MP4, 2-4 s, 320x240) and a
checkpoint, measures `lrcn predict`'s own throughput on those clips (its Predictor, files
decoded and classified one after another, after a warm-up), then starts the server on
127.0.0.1 and sends `--requests` POST /v1/predict from `--clients` concurrent async httpx
clients, each a real clip as a raw body. The server's memory is the sum of the resident set of
its process and its decoder processes, sampled every 50 ms. Last line:
`lrcn_serve clients=C requests=N ok=K rejected_503=R errors=E p50_ms=.. p95_ms=.. clips_per_s=..
peak_rss_mb=.. rss_after_mb=..` (one line), where errors are all answers but 200 and
503-with-Retry-After; the ratio to `lrcn predict` and the temporary files left follow it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def make_data(work: Path) -> tuple[Path, list[Path]]:
    import torch
    from lrcn.models.checkpoint import save_checkpoint
    from lrcn.config import FrameConfig, ModelConfig
    from lrcn.models.lrcn import LRCN
    from lrcn.data.synth import SynthConfig, make_dataset
    data = work / "data"
    if not (data / "manifest.csv").exists():
        make_dataset(data, SynthConfig(groups=4, clips_per_group=1, min_seconds=2,
                                       max_seconds=4, seed=3), workers=2, progress=False)
    clips = sorted(p for p in data.rglob("v_*") if p.suffix in (".avi", ".mp4"))
    names = sorted(p.name for p in data.iterdir() if p.is_dir())
    torch.manual_seed(0)
    checkpoint = save_checkpoint(work / "model.safetensors",
                                 LRCN(ModelConfig(num_classes=len(names))), FrameConfig(),
                                 names, clip_seconds=3.0)
    return checkpoint, clips


def predict_throughput(checkpoint: Path, clips: list[Path], seconds: float) -> float:
    from lrcn.inference.predict import Predictor
    predictor = Predictor.load(checkpoint)
    predictor.predict_files(clips[:2])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for result in predictor.predict_files(clips):
            assert result.error is None, result.error
        done += len(clips)
    return done / (time.perf_counter() - start)


async def load(url: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    results: list[tuple[int, float, bool]] = []
    issued = 0

    async def client(session: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < requests:
            body = bodies[issued % len(bodies)]
            issued += 1
            start = time.perf_counter()
            try:
                response = await session.post(f"{url}/v1/predict", content=body)
                status, retry = response.status_code, "retry-after" in response.headers
            except httpx.HTTPError:
                status, retry = -1, False
            results.append((status, time.perf_counter() - start, retry))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - start
    ok = [latency for status, latency, _ in results if status == 200]
    rejected = sum(status == 503 and retry for status, _, retry in results)
    return {"ok": len(ok), "rejected": rejected, "errors": len(results) - len(ok) - rejected,
            "p50_ms": 1000 * statistics.median(ok) if ok else float("nan"),
            "p95_ms": 1000 * statistics.quantiles(ok, n=20)[-1] if len(ok) > 1 else float("nan"),
            "clips_per_s": len(ok) / wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0, help="lrcn predict's timing")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-serve")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, clips = make_data(args.work)
    print(f"{len(clips)} clips, {sum(p.stat().st_size for p in clips) / 1e6:.1f} MB")
    predict_rate = predict_throughput(checkpoint, clips, args.seconds)
    print(f"lrcn predict: {predict_rate:.1f} clips/s")

    tmp = args.work / "tmp"
    tmp.mkdir(exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lrcn", "serve", str(checkpoint), "--port", str(port),
         "--jobs", str(args.jobs), "--queue", str(args.queue)],
        env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            assert server.poll() is None, server.stderr.read()
            time.sleep(0.2)
    bodies = [p.read_bytes() for p in clips]
    asyncio.run(load(url, bodies, 2, 8))             # warm-up: every decoder has started
    time.sleep(1)
    before = tree_rss_mb(server.pid)
    peak = [before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak.append(tree_rss_mb(server.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = asyncio.run(load(url, bodies, args.clients, args.requests))
    sampling.set()
    sampler.join()
    time.sleep(2)
    after = tree_rss_mb(server.pid)
    left = [p for p in tmp.glob("lrcn-serve-*/**/*") if p.is_file() and "jobs" not in p.parts]
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)
    print(f"server: RSS {before:.0f} MB before the load, peak {max(peak):.0f}, after "
          f"{after:.0f}; exit code {code} on SIGTERM")
    print(f"lrcn_serve clients={args.clients} requests={args.requests} ok={result['ok']} "
          f"rejected_503={result['rejected']} errors={result['errors']} "
          f"p50_ms={result['p50_ms']:.0f} p95_ms={result['p95_ms']:.0f} "
          f"clips_per_s={result['clips_per_s']:.1f} peak_rss_mb={max(peak):.0f} "
          f"rss_after_mb={after:.0f}")
    print(f"serve/predict throughput: {result['clips_per_s'] / predict_rate:.2f} "
          f"({result['clips_per_s']:.1f} vs {predict_rate:.1f} clips/s); rss_before_mb="
          f"{before:.0f}; temporary files left: {len(left)}")


if __name__ == "__main__":
    main()
