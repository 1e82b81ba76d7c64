"""Live classification: a webcam, a file, an RTSP/HTTP URL or a pipe, read as it comes, with the
windows of windows.py (trained time scale, each frame's CNN features computed once) and a
trailing average (a stream has no future), printing each change of label with its time.

Keeping up: a live source produces frames at its own pace. When a frame's time falls behind the
wall clock by more than `max_lag` seconds, the frames it would feed to the CNN are replaced by
the last frame that was processed (decoding goes on, so the picture does not break), and the
skips are counted and reported. Only a camera and a URL are live; files and pipes are read as
fast as they decode unless `realtime` asks to pace them like a camera (a pipe from a live
producer: then frames are skipped when lrcn falls behind, as for a camera).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..console import plural
from ..media.annotate import AnnotatedVideo, Label
from ..media.writer import check_annotated_target
from ..media.clip import source_claimed_frames, truncation
from .engine import Engine
from ..errors import ErrorKind, LrcnError
from ..media.video import FrameSource, open_source
from .predict import Prediction, prediction_of
from .windows import (TrailingAverage, Window, WindowConfig, WindowScorer, clock,
                      window_probabilities)


@dataclass
class StreamResult:
    frames: int = 0
    windows: int = 0
    changes: int = 0
    skipped: int = 0
    seconds: float = 0.0       # stream time covered
    interrupted: bool = False
    warning: str | None = None  # a file that looks cut short (media.clip's truncation rule)


def run_stream(engine: Engine, source: str, config: WindowConfig,
               clip_seconds: float | None = None, annotate: str | os.PathLike | None = None,
               realtime: bool | None = None, max_lag: float = 1.0, out=None,
               on_window: Callable[[Window], None] | None = None) -> StreamResult:
    """Classify `source` as it comes, printing to `out` (default: sys.stdout as it is when
    called, not as it was at import, so that a notebook's or a test's capture sees it);
    `on_window` sees every window as it is scored."""
    out = sys.stdout if out is None else out
    if not engine.splits:
        raise LrcnError("an exported ONNX file cannot run a stream (it cannot be split into "
                        "per-frame features and the LSTM): pass the checkpoint",
                        engine.source or source,
                        ErrorKind.SETTING)
    if annotate:
        check_annotated_target(annotate, source)
    container, live = open_source(source)
    frames = FrameSource(container, source)
    # the frame count a file's header states (0 for pipes, cameras and URLs), held against
    # the frames decoded at its end by the rule `lrcn predict` uses
    claimed = 0
    pace = live if realtime is None else realtime
    if clip_seconds is None:
        clip_seconds = engine.clip_seconds
    step, stride = config.resolve(clip_seconds, engine.frame_config.num_frames)
    scorer = WindowScorer(engine, step, stride, batch=1)  # live: score each window at once
    print(f"streaming {source}: windows of {step * engine.frame_config.num_frames:.2f} s every "
          f"{stride * step:.2f} s at {frames.fps:.2f} fps (Ctrl-C stops)", file=out, flush=True)

    result = StreamResult()
    labeller = _Labeller(engine.names, config.smooth, result, out, config.reject_below)
    shown: Label | None = None
    writer = AnnotatedVideo(annotate, frames.fps, audio=frames.audio) if annotate else None

    def take(window: Window) -> Label:
        if on_window is not None:
            on_window(window)
        return labeller.add(window)

    started = time.perf_counter()
    try:
        for item in frames.frames(on_audio=writer.add_audio if writer else None):
            lag = (time.perf_counter() - started) - item.time
            if pace and lag < 0:
                time.sleep(-lag)       # a file paced like a camera
            behind = (pace or live) and lag > max_lag
            for window in scorer.push(item.frame, item.time, skip=behind):
                shown = take(window)
            if writer is not None:
                writer.add_frame(item.frame, shown)
        if frames.count:
            for window in scorer.finish(frames.end_time):
                take(window)
        claimed = 0 if live else source_claimed_frames(frames)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        frames.close()
        if writer is not None:
            writer.close()     # what was streamed so far is kept, also after Ctrl-C
    result.frames = frames.count
    result.skipped = scorer.skipped
    result.seconds = frames.end_time
    if not result.interrupted:
        result.warning = truncation(result.frames, claimed)
    how = "stopped by Ctrl-C" if result.interrupted else "end of stream"
    print(f"{how}: {plural(result.frames, 'frame')} ({result.seconds:.1f} s), "
          f"{plural(result.windows, 'window')}, {plural(result.changes, 'label change')}, "
          f"{plural(result.skipped, 'frame')} skipped to keep up",
          file=out, flush=True)
    if result.frames == 0 and not result.interrupted:
        raise LrcnError("no video frames could be decoded", source)
    return result


class _Labeller:
    """Windows -> the current label, by the trailing average of the last `smooth` windows (the
    webcam's too), printing each change of label with the stream time at which it was
    decided."""

    def __init__(self, names, smooth_windows: int, result: StreamResult, out,
                 reject_below: float = 0.0):
        self.names, self.result, self.out = names, result, out
        self.reject_below = reject_below
        self.average = TrailingAverage(smooth_windows)
        self.label: str | None = None

    def add(self, window: Window) -> Label:
        self.result.windows += 1
        shown = prediction_of(self.names, self.average.add(window.probabilities),
                              self.reject_below)
        if shown.label != self.label:
            self.label = shown.label
            self.result.changes += 1
            print(f"[{clock(window.end)}] {self.label} ({shown.probability:.0%})",
                  file=self.out, flush=True)
        return shown.as_label()


class CameraWindow:
    """Model frames that come one per grid step (the server's webcam: the browser sends them
    at the trained spacing) -> Predictions: each frame's CNN features computed once, the last
    `num_frames` of them one window (window_probabilities), shown as the trailing average of
    the last `smooth` windows, as `run_stream` shows a stream."""

    def __init__(self, engine: Engine, smooth: int, reject_below: float = 0.0):
        if not engine.splits:
            raise LrcnError("an exported ONNX file cannot label a camera (it cannot be split "
                            "into per-frame features and the LSTM): pass the checkpoint",
                            kind=ErrorKind.SETTING)
        self.engine, self.reject_below = engine, reject_below
        self.size = engine.frame_config.num_frames
        self.features: list[np.ndarray] = []
        self.average = TrailingAverage(smooth)

    @property
    def filled(self) -> int:
        return len(self.features)

    def add(self, frame: np.ndarray) -> Prediction | None:
        """One (H, W, 3) uint8 model frame -> the label shown after it (None until the first
        window is full)."""
        self.features = (self.features + [self.engine.features(frame[None])[0]])[-self.size:]
        if len(self.features) < self.size:
            return None
        probabilities = window_probabilities(self.engine, np.stack(self.features)[None])[0]
        return prediction_of(self.engine.names, self.average.add(probabilities),
                             self.reject_below)


__all__ = ["run_stream", "StreamResult", "CameraWindow"]
