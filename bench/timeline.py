"""Long-video speed and memory: lrcn's timeline beside the tutorial's method, on the same video.

    python bench/timeline.py [--minutes 1 30]

Makes a 320x240 25 fps H.264 video of synthetic actions (one minute rendered, longer ones by
repeating its packets, so making them is cheap), then for each length runs, in a fresh
process, `lrcn predict --timeline`'s code path end to end (decode, CNN, LSTM, segments) and
reports its speed as a multiple of real time and its peak memory (ru_maxrss). On the one-minute
video it also runs the tutorial's live method: every frame resized, and the whole model run on
the last 20 consecutive frames for every new frame (the CNN recomputed 20 times per frame), on
the same engine. Last line: `timeline_x_realtime=... tutorial_x_realtime=... peak_mb=...`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

CHILD = r"""
import json, resource, sys, time
from lrcn.models.checkpoint import load_checkpoint
from lrcn.inference.engine import make_engine
from lrcn.inference.timeline import timeline_for_video
from lrcn.inference.windows import WindowConfig
ckpt, video, mode = sys.argv[1:4]
engine = make_engine(load_checkpoint(ckpt))
start = time.perf_counter()
if mode == "timeline":
    tl = timeline_for_video(engine, video, WindowConfig(), 5.5)
    frames, duration = tl.facts["frames"], tl.facts["duration"]
else:
    import av, numpy as np
    from collections import deque
    from av.video.reformatter import VideoReformatter
    from lrcn.media.video import to_model_frame
    ref, last, frames = VideoReformatter(), deque(maxlen=20), 0
    with av.open(video) as c:
        s = c.streams.video[0]; s.thread_type = "AUTO"; rate = float(s.average_rate)
        for f in c.decode(s):
            last.append(to_model_frame(f, engine.frame_config, ref)); frames += 1
            if len(last) == 20:
                engine.probabilities(np.stack(last))
    duration = frames / rate
seconds = time.perf_counter() - start
print(json.dumps({"frames": frames, "duration": duration, "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_videos(work: Path, minutes: list[int]) -> dict[int, Path]:
    from lrcn.data.synth import make_long_video
    work.mkdir(parents=True, exist_ok=True)
    base = work / "long_1min.mp4"
    if not base.exists():
        classes = ["SlideRight", "Grow", "Spin", "SlideLeft", "Bounce", "Shrink"]
        make_long_video(base, [(c, 2) for c in classes], seed=11, min_seconds=4.5,
                        max_seconds=5.5)
    paths = {}
    for m in minutes:
        path = work / f"long_{m}min.mp4"
        if not path.exists():
            _repeat(base, path, m)
        paths[m] = path
    return paths


def _repeat(src_path: Path, dst_path: Path, minutes: int) -> None:
    """Concatenate copies of a video's packets (no re-encoding) up to `minutes`."""
    tmp = dst_path.with_name(f".{dst_path.name}.partial.mp4")
    with av.open(str(src_path)) as src:
        stream = src.streams.video[0]
        packets = [p for p in src.demux(stream) if p.dts is not None]
        length = float(stream.duration * stream.time_base)
        copies = max(1, round(minutes * 60 / length))
        with av.open(str(tmp), "w", format="mp4") as dst:
            out = dst.add_stream_from_template(stream)
            span = round(length / stream.time_base)
            for k in range(copies):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts, q.dts = p.pts + k * span, p.dts + k * span
                    q.is_keyframe = p.is_keyframe
                    q.time_base = stream.time_base
                    q.stream = out
                    dst.mux(q)
    tmp.replace(dst_path)


def run_child(checkpoint: Path, video: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(checkpoint), str(video), mode],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 30])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a trained checkpoint (default: untrained weights; speed and "
                             "memory do not depend on them)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-bench")
    args = parser.parse_args()
    checkpoint = args.checkpoint
    if checkpoint is None:
        import torch
        from lrcn.models.checkpoint import save_checkpoint
        from lrcn.config import FrameConfig, ModelConfig
        from lrcn.models.lrcn import LRCN
        torch.manual_seed(0)
        checkpoint = save_checkpoint(args.work / "bench_model.safetensors",
                                     LRCN(ModelConfig(num_classes=6)), FrameConfig(),
                                     [f"class{i}" for i in range(6)])
    start = time.perf_counter()
    videos = make_videos(args.work, sorted(set(args.minutes)))
    print(f"videos ready in {time.perf_counter() - start:.0f} s: 320x240, 25 fps, H.264")
    results = {}
    for m, path in videos.items():
        r = run_child(checkpoint, path, "timeline")
        results[m] = r
        print(f"timeline {m:3d} min: {r['frames']} frames in {r['seconds']:.1f} s = "
              f"{r['duration'] / r['seconds']:.0f}x real time, peak memory {r['peak_mb']:.0f} MB")
    shortest = min(videos)
    tut = run_child(checkpoint, videos[shortest], "tutorial")
    tut_x = tut["duration"] / tut["seconds"]
    ours = results[shortest]
    ours_x = ours["duration"] / ours["seconds"]
    print(f"tutorial method {shortest} min: {tut['frames']} frames in {tut['seconds']:.1f} s = "
          f"{tut_x:.1f}x real time, peak memory {tut['peak_mb']:.0f} MB")
    print(f"timeline / tutorial speed: {ours_x / tut_x:.1f}x")
    peaks = " ".join(f"peak_mb_{m}min={r['peak_mb']:.0f}" for m, r in results.items())
    print(f"timeline_x_realtime={ours_x:.1f} tutorial_x_realtime={tut_x:.1f} {peaks}")


if __name__ == "__main__":
    main()
