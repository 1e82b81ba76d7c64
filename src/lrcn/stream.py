"""Live classification: a webcam, a file, an RTSP/HTTP URL or a pipe, read as it comes, with the
same windows as timeline.py (trained time scale, each frame's CNN features computed once).

Keeping up: a live source produces frames at its own pace. When a frame's time falls behind the
wall clock by more than `max_lag` seconds, the frames it would feed to the CNN are replaced by
the last frame that was processed (decoding goes on, so the picture does not break), and the
skips are counted and reported. Files are read as fast as they decode unless `realtime` asks
to pace them like a camera.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .engine import Engine
from .errors import LrcnError
from .timeline import TimelineConfig, WindowScorer, _clock
from .video import _frame_rate, upright_image


@dataclass
class StreamResult:
    frames: int = 0
    windows: int = 0
    changes: int = 0
    skipped: int = 0
    seconds: float = 0.0       # stream time covered
    interrupted: bool = False


def open_source(source: str):
    """A webcam index, '-' (stdin), a URL or a file -> (container, live?)."""
    try:
        if source == "-":
            return av.open(sys.stdin.buffer, mode="r"), True
        if source.isdigit():
            if sys.platform.startswith("linux"):
                return av.open(f"/dev/video{source}", format="v4l2"), True
            if sys.platform == "darwin":
                return av.open(source, format="avfoundation"), True
            return av.open(f"video={source}", format="dshow"), True
        if "://" in source:
            options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
            return av.open(source, options=options, timeout=10.0), True
        path = Path(source)
        if not path.is_file():
            raise LrcnError("no such file, camera or URL", source)
        if path.stat().st_size == 0:
            raise LrcnError("empty file (0 bytes)", source)
        return av.open(str(path)), False
    except av.error.FFmpegError as exc:
        cause = getattr(exc, "strerror", None) or str(exc)
        raise LrcnError(f"cannot open the source ({cause})", source) from None


def run_stream(engine: Engine, source: str, config: TimelineConfig, clip_seconds: float,
               annotate: str | os.PathLike | None = None, realtime: bool | None = None,
               max_lag: float = 1.0, out=sys.stdout) -> StreamResult:
    container, live = open_source(source)
    if not container.streams.video:
        container.close()
        raise LrcnError("no video stream in the source", source)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = _frame_rate(stream) or 25.0
    pace = live if realtime is None else realtime
    step, stride = config.resolve(clip_seconds, engine.frame_config.num_frames)
    scorer = WindowScorer(engine, step, stride, batch=1)  # live: score each window at once
    print(f"streaming {source}: windows of {step * engine.frame_config.num_frames:.2f} s every "
          f"{stride * step:.2f} s at {rate:.2f} fps (Ctrl-C stops)", file=out, flush=True)

    result = StreamResult()
    labeller = _Labeller(engine.names, config.smooth, result, out)
    shown = (None, 0.0, None)          # what the annotation draws: label, confidence, probs
    writer = None
    started = time.perf_counter()
    t = 0.0
    try:
        for frame in _frames(container, stream):
            t = result.frames / rate
            lag = (time.perf_counter() - started) - t
            if pace and lag < 0:
                time.sleep(-lag)       # a file paced like a camera
            behind = (pace or live) and lag > max_lag
            for window in scorer.push(frame, t, skip=behind):
                shown = labeller.add(window)
            if annotate:
                writer = _annotate(writer, annotate, frame, rate, shown, engine.names)
            result.frames += 1
        if result.frames:
            end = result.frames / rate
            for window in scorer.finish(end):
                labeller.add(window)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        container.close()
        if writer is not None:
            writer.close()
    result.skipped = scorer.skipped
    result.seconds = result.frames / rate
    how = "stopped by Ctrl-C" if result.interrupted else "end of stream"
    print(f"{how}: {result.frames} frames ({result.seconds:.1f} s), {result.windows} windows, "
          f"{result.changes} label changes, {result.skipped} frames skipped to keep up",
          file=out, flush=True)
    if result.frames == 0 and not result.interrupted:
        raise LrcnError("no video frames could be decoded", source)
    return result


class _Labeller:
    """Windows -> the current label (trailing average: a stream has no future), printing each
    change of label with the stream time at which it was decided."""

    def __init__(self, names, smooth: int, result: StreamResult, out):
        self.names, self.smooth, self.result, self.out = names, smooth, result, out
        self.recent: list[np.ndarray] = []
        self.label: str | None = None

    def add(self, window) -> tuple[str, float, np.ndarray]:
        self.result.windows += 1
        self.recent = (self.recent + [window.probabilities])[-self.smooth:]
        probs = np.mean(self.recent, axis=0)
        top = int(probs.argmax())
        if self.names[top] != self.label:
            self.label = self.names[top]
            self.result.changes += 1
            print(f"[{_clock(window.end)}] {self.label} ({probs[top]:.0%})", file=self.out,
                  flush=True)
        return self.names[top], float(probs[top]), probs


def _frames(container, stream):
    try:
        for frame in container.decode(stream):
            if not frame.is_corrupt:
                yield frame
    except av.error.FFmpegError:
        return  # a broken or ended stream stops at its last good frame


def _annotate(writer, target, frame, rate, shown, names):
    from .predict import Prediction, draw_label
    from .video import VideoWriter
    image = upright_image(frame)
    if writer is None:
        writer = VideoWriter(target, image.shape[1], image.shape[0], rate)
    label, confidence, probs = shown
    if label is not None:
        prediction = Prediction("", label, confidence, dict(zip(names, map(float, probs))))
        image = draw_label(image, prediction)
    writer.write(image)
    return writer


__all__ = ["run_stream", "open_source", "StreamResult"]
