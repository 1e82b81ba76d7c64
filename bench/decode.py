"""Frame extraction speed, side by side in one run on the same clips:

  (a) tutorial: cv2.VideoCapture, CAP_PROP_FRAME_COUNT, CAP_PROP_POS_FRAMES seek to each of 20
      evenly spaced indices, resize to 64x64 (the seed tutorial's frames_extraction);
  (b) ceiling: a plain sequential decode of every frame (PyAV, one decoder thread per process);
  (c) lrcn: `lrcn.video.read_clip`, what the cache fills with.

Each runs with 1 and with N worker processes. frames_exact counts clips whose 20 lrcn frames
equal, pixel for pixel, the frames at the same indices of a full sequential decode.

    python bench/decode.py DIR_OR_FILES... [--workers 2] [--repeat 3]

Ends with: lrcn_clips_per_s=X tutorial_clips_per_s=Y ceiling_clips_per_s=Z frames_exact=K/M
"""
from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from lrcn.config import FrameConfig
from lrcn.video import VIDEO_EXTENSIONS, read_clip


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


def clips_per_second(fn, files: list[str], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for f in files:
            fn(f)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(fn, files, chunksize=1))
    return len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = []
    for item in map(Path, args.inputs):
        files += sorted(str(p) for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS) \
            if item.is_dir() else [str(item)]
    print(f"{len(files)} clips")
    for f in files[:4]:  # warm the page cache so no method pays for the disk
        Path(f).read_bytes()
    results: dict[tuple[str, int], float] = {}
    for workers in sorted({1, args.workers}):
        for name, fn in (("tutorial", tutorial), ("ceiling", ceiling), ("lrcn", lrcn)):
            runs = [clips_per_second(fn, files, workers) for _ in range(args.repeat)]
            results[name, workers] = statistics.median(runs)
            print(f"{name:>9} workers={workers}: {results[name, workers]:7.1f} clips/s "
                  f"(median of {args.repeat})")
        w = workers
        print(f"          workers={w}: lrcn/tutorial {results['lrcn', w] / results['tutorial', w]:.2f}x"
              f", lrcn/ceiling {results['lrcn', w] / results['ceiling', w]:.2f}")
    n_exact = sum(exact(f) for f in files)
    w = args.workers
    print(f"lrcn_clips_per_s={results['lrcn', w]:.1f} tutorial_clips_per_s="
          f"{results['tutorial', w]:.1f} ceiling_clips_per_s={results['ceiling', w]:.1f} "
          f"frames_exact={n_exact}/{len(files)}")


if __name__ == "__main__":
    main()
