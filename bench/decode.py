"""Frame extraction speed, side by side in one run on the same clips:

  (a) tutorial: cv2.VideoCapture, CAP_PROP_FRAME_COUNT, CAP_PROP_POS_FRAMES seek to each of 20
      evenly spaced indices, resize to 64x64 (the seed tutorial's frames_extraction);
  (b) ceiling: a plain sequential decode of every frame (PyAV, one decoder thread per process);
  (c) lrcn: `lrcn.media.clip.read_clip`, what the cache fills with.

Each runs with 1 and with N worker processes, in rounds that interleave the three methods; the
medians are compared, and the CPU time per clip is printed beside them. frames_exact counts
clips whose 20 lrcn frames equal, pixel for pixel, the frames at the same indices of a full
sequential decode.

    python bench/decode.py DIR_OR_FILES... [--workers 2] [--repeat 3]
    python bench/decode.py --make-h264 DIR [--count 48]      # generated H.264 MP4 clips
    python bench/decode.py --long [--minutes 1 60]          # 720p long videos: seeking

--long times `read_clip` on 720p H.264 videos of 1 and 60 minutes (one minute rendered, longer
ones by repeating its packets): the keyframe-seeking path beside a full sequential decode (the
full decode of the long one is extrapolated from the short one unless --full), with each
run's peak memory from a fresh process.

Ends with: lrcn_clips_per_s=X tutorial_clips_per_s=Y ceiling_clips_per_s=Z frames_exact=K/M
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from lrcn.config import FrameConfig
from lrcn.media.clip import read_clip
from lrcn.media.video import VIDEO_EXTENSIONS


def tutorial(path: str) -> int:
    import cv2
    cv2.setNumThreads(1)
    frames = []
    cap = cv2.VideoCapture(path)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    step = max(int(count / 20), 1)
    for i in range(20):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i * step)
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (64, 64)) / 255)
    cap.release()
    return len(frames)


def ceiling(path: str) -> int:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        return sum(1 for _ in container.decode(stream))


def lrcn(path: str) -> int:
    return len(read_clip(path, FrameConfig(), threads=1).frames)


def exact(path: str) -> bool:
    from av.video.reformatter import VideoReformatter
    clip = read_clip(path, FrameConfig(), threads=1)
    reformatter, reference = VideoReformatter(), []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            if not frame.is_corrupt:
                reference.append(reformatter.reformat(frame, width=64, height=64, format="rgb24",
                                                      interpolation="AREA").to_ndarray())
    return len(reference) == clip.num_frames and all(
        np.array_equal(got, reference[i]) for got, i in zip(clip.frames, clip.indices))


def clips_per_second(fn, files: list[str], workers: int) -> tuple[float, float]:
    """Clips per second of wall time, and CPU milliseconds (user + system) per clip: the CPU
    figure is steadier than wall time on a shared machine."""
    who = resource.RUSAGE_SELF if workers == 1 else resource.RUSAGE_CHILDREN
    before, start = resource.getrusage(who), time.perf_counter()
    if workers == 1:
        for f in files:
            fn(f)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(fn, files, chunksize=1))
    wall = time.perf_counter() - start
    after = resource.getrusage(who)   # the pool's processes have exited: theirs are counted
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return len(files) / wall, 1000 * cpu / len(files)


def make_h264(folder: Path, count: int) -> None:
    """Synthetic action clips as H.264 MP4 (3-8 s, 320x240, 25 fps, B-frames)."""
    from lrcn.data.synth import CLASSES, _group_setting, render_clip, write_frames
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    names = list(CLASSES)
    for i in range(count):
        setting = _group_setting(rng, 320, 240)
        setting["fps"] = 25.0
        cls = names[i % len(names)]
        frames = render_clip(cls, setting, rng, 320, 240, float(rng.uniform(3, 8)))
        write_frames(folder / f"v_{cls}_g{i // 4 + 1:02d}_c{i % 4 + 1:02d}.mp4", frames, 25.0,
                     320, 240)
    print(f"wrote {count} H.264 MP4 clips to {folder}")


LONG_CHILD = r"""
import json, resource, sys, time
from lrcn.media.clip import read_clip
start = time.perf_counter()
clip = read_clip(sys.argv[1], seek=sys.argv[2] == "seek")
print(json.dumps({"seconds": time.perf_counter() - start, "frames": clip.num_frames,
                  "seeked": clip.seeked,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def long_videos(minutes: list[int], full: bool, work: Path) -> None:
    import json
    import subprocess
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from timeline import _repeat
    from lrcn.data.synth import make_long_video
    work.mkdir(parents=True, exist_ok=True)
    base = work / "long720_1min.mp4"
    if not base.exists():
        plan = [(c, 2) for c in ("SlideRight", "Grow", "Spin", "SlideLeft", "Bounce", "Shrink")]
        make_long_video(base, plan, seed=3, width=1280, height=720, min_seconds=4.5,
                        max_seconds=5.5)
    runs = {}
    for m in sorted(set(minutes)):
        path = base if m == 1 else work / f"long720_{m}min.mp4"
        if not path.exists():
            _repeat(base, path, m)
        for mode in ("seek", "sequential"):
            if mode == "sequential" and m != min(minutes) and not full:
                continue
            out = subprocess.run([sys.executable, "-c", LONG_CHILD, str(path), mode],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            runs[m, mode] = r
            print(f"{m:3d} min 720p, {mode:>10}: {r['seconds']:7.2f} s for {r['frames']} frames "
                  f"(seeked={r['seeked']}), peak memory {r['peak_mb']:.0f} MB")
    shortest, longest = min(minutes), max(minutes)
    if (longest, "sequential") not in runs:
        estimate = runs[shortest, "sequential"]["seconds"] * longest / shortest
        print(f"{longest:3d} min 720p, sequential: about {estimate:.0f} s (extrapolated)")
    else:
        estimate = runs[longest, "sequential"]["seconds"]
    print(f"long_seek_s={runs[longest, 'seek']['seconds']:.2f} "
          f"long_sequential_s={estimate:.1f} "
          f"peak_mb_{shortest}min={runs[shortest, 'seek']['peak_mb']:.0f} "
          f"peak_mb_{longest}min={runs[longest, 'seek']['peak_mb']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", nargs="*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--make-h264", type=Path, default=None)
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--long", action="store_true")
    parser.add_argument("--minutes", type=int, nargs="+", default=[1, 60])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lrcn-bench"))
    args = parser.parse_args()
    if args.make_h264:
        make_h264(args.make_h264, args.count)
        return
    if args.long:
        long_videos(args.minutes, args.full, args.work)
        return
    if not args.inputs:
        parser.error("give clips or folders, or --make-h264 DIR, or --long")
    files = []
    for item in map(Path, args.inputs):
        files += sorted(str(p) for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS) \
            if item.is_dir() else [str(item)]
    print(f"{len(files)} clips")
    for f in files[:4]:  # warm the page cache so no method pays for the disk
        Path(f).read_bytes()
    results: dict[tuple[str, int], float] = {}
    cpu_ms: dict[tuple[str, int], float] = {}
    methods = (("tutorial", tutorial), ("ceiling", ceiling), ("lrcn", lrcn))
    for workers in sorted({1, args.workers}):
        # Rounds interleave the methods, so that a slow spell of a shared machine hits all of
        # them alike; the medians over rounds are compared.
        runs: dict[str, list[float]] = {name: [] for name, _ in methods}
        cpu: dict[str, list[float]] = {name: [] for name, _ in methods}
        for _ in range(args.repeat):
            for name, fn in methods:
                rate, ms = clips_per_second(fn, files, workers)
                runs[name].append(rate)
                cpu[name].append(ms)
        for name, _ in methods:
            results[name, workers] = statistics.median(runs[name])
            cpu_ms[name, workers] = statistics.median(cpu[name])
            print(f"{name:>9} workers={workers}: {results[name, workers]:7.1f} clips/s "
                  f"(median of {args.repeat}: {', '.join(f'{r:.1f}' for r in runs[name])}), "
                  f"CPU {cpu_ms[name, workers]:.1f} ms/clip")
        w = workers
        print(f"          workers={w}: lrcn/tutorial {results['lrcn', w] / results['tutorial', w]:.2f}x"
              f", lrcn/ceiling {results['lrcn', w] / results['ceiling', w]:.2f}"
              f" (by CPU time {cpu_ms['ceiling', w] / cpu_ms['lrcn', w]:.2f})")
    n_exact = sum(exact(f) for f in files)
    w = args.workers
    print(f"lrcn_clips_per_s={results['lrcn', w]:.1f} tutorial_clips_per_s="
          f"{results['tutorial', w]:.1f} ceiling_clips_per_s={results['ceiling', w]:.1f} "
          f"frames_exact={n_exact}/{len(files)}")


if __name__ == "__main__":
    main()
