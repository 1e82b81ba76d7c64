"""A scripted studio session through the REST routes of a real `lrcn studio` server.

    python bench/studio.py [--classes 4] [--videos 6] [--model effnet-lstm] [--epochs 20]

Long videos are made by stitching real clips, one of each class per video (../shared/realdata's
UCF101 clips when present, else `lrcn synth` clips), so each video is one source, one group;
each is uploaded (POST /v1/studio/sources) and its segments labelled at the known boundaries
(POST .../segments). Then the model is trained as a job (POST /v1/studio/train), watched to
the end, and the served model checked (GET /v1/model names the new run; /v1/predict answers).
Last line: `lrcn_studio clips=N classes=C label_s=A train_s=B test_accuracy=X served=1`, where
label_s is the time of the uploads and cuts and train_s the training job's, evaluation
included.
"""
from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "ucf101-mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clips_by_class(root: Path, classes: int) -> dict[str, list[Path]]:
    found = {d.name: sorted(d.glob("*.*")) for d in sorted(root.iterdir()) if d.is_dir()}
    return dict(sorted(((k, v) for k, v in found.items() if len(v) >= 4),
                       key=lambda kv: -len(kv[1]))[:classes])


def stitch(parts: list[Path], out: Path, size=(320, 240)) -> list[tuple[float, float]]:
    """One video of `parts` one after another; returns each part's (start, end) in seconds."""
    import cv2
    from lrcn.media.video import FrameSource, upright_image
    from lrcn.media.writer import VideoWriter
    fps, spans, at = 25.0, [], 0
    with VideoWriter(out, size[0], size[1], fps) as writer:
        for part in parts:
            start = at
            with FrameSource.open(part) as source:
                for step, timed in enumerate(source.frames()):
                    if step >= 150:                 # 6 s at most of one clip
                        break
                    writer.write(cv2.resize(upright_image(timed.frame), size))
                    at += 1
            spans.append((start / fps, at / fps))
    return spans


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--model", default="effnet-lstm")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lrcn-bench-studio-"))
    if REALDATA.is_dir():
        source, where = REALDATA, "realdata"
    else:
        import lrcn
        source = lrcn.synth(tmp / "synth", groups=args.videos, clips_per_group=1,
                            classes=["SlideRight", "Grow", "Bounce", "Spin"][:args.classes],
                            progress=False)
        where = "synthetic"
    by_class = clips_by_class(source, args.classes)
    videos = min(args.videos, min(len(v) for v in by_class.values()))
    print(f"{where}: {len(by_class)} classes ({', '.join(by_class)}), {videos} stitched videos",
          flush=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "lrcn", "studio", str(tmp / "ws"),
                               "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        stitched = []
        for v in range(videos):
            parts = [clips[v] for clips in by_class.values()]
            path = tmp / f"long{v}.mp4"
            stitched.append((path, stitch(parts, path)))
        started = time.perf_counter()
        clips = 0
        for path, spans in stitched:
            meta = httpx.post(f"{url}/v1/studio/sources?name={path.name}",
                              content=path.read_bytes(), timeout=300).json()
            segments = [{"start": s, "end": e, "class": c}
                        for (s, e), c in zip(spans, by_class)]
            cut = httpx.post(f"{url}/v1/studio/sources/{meta['id']}/segments",
                             json={"segments": segments}, timeout=300)
            cut.raise_for_status()
            clips += len(cut.json()["clips"])
        label_s = time.perf_counter() - started
        started = time.perf_counter()
        job = httpx.post(f"{url}/v1/studio/train", json={"model": args.model,
                                                        "epochs": args.epochs}, timeout=60)
        job.raise_for_status()
        run = job.json()["run"]
        while True:
            view = httpx.get(f"{url}/v1/studio/train", timeout=60).json()
            if view["state"] != "running":
                break
            time.sleep(1)
        train_s = time.perf_counter() - started
        if view["state"] != "done":
            raise SystemExit(f"training {view['state']}: {view.get('error')}")
        report = httpx.get(f"{url}/v1/studio/runs/{run}", timeout=60).json()
        for _ in range(100):
            if httpx.get(f"{url}/v1/model", timeout=10).json().get("run") == run:
                break
            time.sleep(0.3)
        probe = stitched[0][0]
        answer = httpx.post(f"{url}/v1/predict", content=probe.read_bytes(), timeout=120)
        served = int(httpx.get(f"{url}/v1/model").json().get("run") == run
                     and answer.status_code == 200)
        print(f"lrcn_studio clips={clips} classes={len(by_class)} label_s={label_s:.1f} "
              f"train_s={train_s:.1f} test_accuracy={report['accuracy']:.3f} served={served}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
