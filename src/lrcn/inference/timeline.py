"""Long videos: a timeline of actions. Windows at the trained time scale, with each frame's CNN
features computed once (windows.py), are smoothed (a centred moving average) and merged into
segments; each window speaks for the time around its centre. The timeline is printed, written
as JSON, CSV and a PNG, and drawn on the video (annotate.py)."""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..console import plural
from ..media.annotate import Label, annotate_video
from .engine import Engine
from ..errors import ErrorKind, LrcnError
from ..files import atomic_write_text, output_folder
from ..media.plots import plot_timeline
from ..media.writer import check_annotated_target
from ..media.clip import read_clip, source_claimed_frames, truncation
from ..media.fastdecode import header_seconds
from ..media.video import FrameSource, configure
from .predict import prediction_of
from .windows import Window, WindowConfig, WindowScorer, clock, name_of, smooth


def score_video(engine: Engine, path: str | os.PathLike, config: WindowConfig,
                clip_seconds: float | None = None,
                progress: Callable[[float], None] | None = None) -> tuple[list[Window], dict]:
    """All windows of a video file, and facts about the run (duration, speed). The span is
    `config.span`, else `clip_seconds`, else the engine's (the checkpoint's). `progress` is
    told the time reached, in seconds, as frames are read."""
    if not engine.splits:
        raise LrcnError("an exported ONNX file cannot run a timeline (it cannot be split into "
                        "per-frame features and the LSTM): pass the checkpoint",
                        engine.source or path,
                        ErrorKind.SETTING)
    if clip_seconds is None:
        clip_seconds = engine.clip_seconds
    step, stride = config.resolve(clip_seconds, engine.frame_config.num_frames)
    span = step * engine.frame_config.num_frames
    windows: list[Window] = []
    started = time.perf_counter()
    with FrameSource.open(path) as source, ExitStack() as stack:
        # Every frame before the first window is complete is converted and kept, for a video
        # shorter than one window (it gets read_clip's window). A file whose header says it is
        # over two windows long goes without: on a 12 s UCF clip those conversions were 3 in 4
        # of all. If it is shorter after all (a header that lies), it is read again below.
        long = header_seconds(source.container, source.stream) > 2 * span
        scorer = _scorer(engine, source, step, stride, config.batch, long, stack)
        for item in source.frames():
            windows += scorer.push(item.frame, item.time)
            if progress is not None:
                progress(item.time)
        if source.count == 0:
            raise LrcnError("no video frames could be decoded", path)
        duration = source.end_time
        windows += scorer.finish(duration)
        count, rate = source.count, source.fps
        claimed = source_claimed_frames(source)
    if not windows:     # shorter than one window, and its frames were not kept: read_clip's
        clip = read_clip(path, engine.frame_config)
        windows = [Window(0.0, duration, engine.probabilities(clip.frames))]
    seconds = time.perf_counter() - started
    facts = {"video": str(path), "frames": count, "fps": rate, "duration": duration,
             "span": span, "stride": stride * step,
             "grid_step": step, "processing_seconds": seconds,
             "speed_x_realtime": duration / seconds if seconds > 0 else math.inf}
    warning = truncation(count, claimed)      # as predict and stream say it
    if warning:
        facts["warning"] = warning
    return windows, facts


def _scorer(engine: Engine, source: FrameSource, step: float, stride: int, batch: int,
            long: bool, stack: ExitStack) -> WindowScorer:
    """The file's window scorer. A long file's CNN runs in threads of their own (the engine's
    parallel_features, in an executor that `stack` shuts down) while this thread decodes, on
    one thread where that keeps up (_one_decoding_thread). The runs are of the size that suits
    one thread (effnet: 9 frames), not `batch`: a 12 s clip has 44 frames for the CNN, which
    must still be spread over the threads. (The LSTM's calls then take as many windows.)"""
    features, workers, per_run = engine.parallel_features() if long else (engine.features, 1, 0)
    if workers < 2:
        return WindowScorer(engine, step, stride, batch, keep_early=not long)
    if _one_decoding_thread(engine, source, features, step, workers):
        configure(source.stream, threads=1)
    executor = ThreadPoolExecutor(workers, thread_name_prefix="lrcn-timeline")
    # On the way out (an error, Ctrl-C) only the runs already started are waited for.
    stack.callback(executor.shutdown, cancel_futures=True)
    return WindowScorer(engine, step, stride, min(batch, per_run), keep_early=False,
                        executor=executor, features=features, in_flight=2 * workers)


# An engine's CNN cost, CPU seconds a frame on one thread: measured once per engine.
_cnn_seconds: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


def _one_decoding_thread(engine: Engine, source: FrameSource, features, step: float,
                         workers: int) -> bool:
    """Whether one decoding thread keeps up with the CNN on the other cores. FFmpeg's frame
    threads cost a third more CPU than one thread (0.87 against 0.65 s for 2 minutes of
    320x240 H.264), which the CNN's threads lose where the CNN is the larger part of the
    work: an effnet-lstm timeline of that video ran at 88x real time on one decoding thread
    against 78x (2 cores). Where decoding is the larger part (the seed model; any model on HD
    video) FFmpeg's threads are kept: one thread made the seed model's timeline 18% slower.
    Both costs are measured here, in CPU time of this thread: the first 8 frames decoded by
    a second reader on one thread, and, once per engine, the CNN on 4 blank frames. That
    first CNN run pays ONNX Runtime's setup too (effnet: 20 against 12 ms of CPU a second of
    video), which leans the choice to one thread where the two are close, and rightly: one
    thread is still the faster while decoding is up to about 1.3 times the CNN's work."""
    try:
        with FrameSource.open(source.name, threads=1) as probe:
            start, count = time.thread_time(), 0
            for _ in itertools.islice(probe.frames(), 8):
                count += 1
            decode = (time.thread_time() - start) / max(count, 1) * source.fps
    except LrcnError:
        return False
    if count == 0:      # nothing decoded cleanly: nothing learnt, FFmpeg's choice
        return False
    if engine not in _cnn_seconds:
        frames = engine.frame_config
        start = time.thread_time()
        features(np.zeros((4, frames.height, frames.width, 3), np.uint8))
        _cnn_seconds[engine] = (time.thread_time() - start) / 4
    return decode * (workers - 1) <= _cnn_seconds[engine] / step   # per second of video


@dataclass
class Segment:
    start: float
    end: float
    label: str
    confidence: float       # mean smoothed probability of the label over the segment's windows
    windows: int = 0


@dataclass
class Timeline:
    classes: list[str]
    windows: list[Window]
    smoothed: np.ndarray
    segments: list[Segment]
    facts: dict = field(default_factory=dict)
    reject_below: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)   # what was written, by kind

    @property
    def warning(self) -> str | None:
        """Why the video looks cut short (the header's frame count against the frames
        decoded, media.clip's rule), or None."""
        return self.facts.get("warning")

    def label_at(self, t: float) -> tuple[str, np.ndarray]:
        """The label and smoothed probabilities shown at time t (the window whose slot it is)."""
        i = _slot(self.windows, t)
        probs = self.smoothed[i]
        return name_of(self.classes, probs, self.reject_below), probs

    def shown_at(self, t: float) -> Label:
        """What an annotated video shows at time t."""
        return prediction_of(self.classes, self.smoothed[_slot(self.windows, t)],
                             self.reject_below).as_label()


def _slot_bounds(windows: list[Window], duration: float) -> list[tuple[float, float]]:
    """Each window speaks for the time around its centre, up to halfway to its neighbours; the
    first and last reach the video's ends."""
    centres = [(w.start + w.end) / 2 for w in windows]
    bounds = []
    for i, c in enumerate(centres):
        lo = 0.0 if i == 0 else (centres[i - 1] + c) / 2
        hi = duration if i == len(centres) - 1 else (c + centres[i + 1]) / 2
        bounds.append((lo, max(lo, hi)))
    return bounds


def _slot(windows: list[Window], t: float) -> int:
    centres = np.array([(w.start + w.end) / 2 for w in windows])
    if len(centres) == 1:
        return 0
    mids = (centres[1:] + centres[:-1]) / 2
    return int(np.searchsorted(mids, t, side="right"))


def build_timeline(classes: list[str], windows: list[Window], facts: dict,
                   smoothing: int, reject_below: float = 0.0) -> Timeline:
    if not windows:
        raise LrcnError("no frames to classify", facts.get("video", "video"))
    probs = np.stack([w.probabilities for w in windows])
    smoothed = smooth(probs, smoothing)
    labels = smoothed.argmax(1)
    bounds = _slot_bounds(windows, facts["duration"])
    segments: list[Segment] = []
    for i, label in enumerate(labels):
        name = name_of(classes, smoothed[i], reject_below)
        if segments and segments[-1].label == name:
            seg = segments[-1]
            seg.end = bounds[i][1]
            seg.confidence += float(smoothed[i, label])
            seg.windows += 1
        else:
            segments.append(Segment(bounds[i][0], bounds[i][1], name,
                                    float(smoothed[i, label]), 1))
    for seg in segments:
        seg.confidence /= seg.windows
    return Timeline(classes, windows, smoothed, segments, facts, reject_below)


def timeline_for_video(engine: Engine, path: str | os.PathLike, config: WindowConfig,
                       clip_seconds: float | None = None,
                       progress: Callable[[float], None] | None = None) -> Timeline:
    windows, facts = score_video(engine, path, config, clip_seconds, progress)
    facts["smoothing"] = config.smooth
    facts["reject_below"] = config.reject_below
    return build_timeline(list(engine.names), windows, facts, config.smooth,
                          config.reject_below)


def annotate_timeline(video: str | os.PathLike, timeline: Timeline,
                      out: str | os.PathLike,
                      progress: Callable[[float], None] | None = None) -> Path:
    """The video with, on every frame, the label of the window that speaks for its time, its
    confidence and the top classes' bars; H.264 MP4 (browser-playable), audio kept."""
    if progress is None:
        return annotate_video(video, out, timeline.shown_at)

    def shown_at(t: float) -> Label:
        progress(t)
        return timeline.shown_at(t)
    return annotate_video(video, out, shown_at)


def format_timeline(timeline: Timeline) -> str:
    f = timeline.facts
    lines = [f"{f['video']}: {f['duration']:.1f} s, {plural(len(timeline.windows), 'window')} of "
             f"{f['span']:.2f} s every {f['stride']:.2f} s, "
             f"{plural(len(timeline.segments), 'segment')} "
             f"({f['speed_x_realtime']:.0f}x real time)"]
    for seg in timeline.segments:
        lines.append(f"  {clock(seg.start)} - {clock(seg.end)}  {seg.label:<20} "
                     f"{seg.confidence:6.1%}")
    return "\n".join(lines)


def write_timeline(timeline: Timeline, out_dir: str | os.PathLike) -> dict[str, Path]:
    """timeline.json (settings, segments, windows), segments.csv, windows.csv, timeline.png."""
    out = output_folder(out_dir, "a timeline's files are")
    data = {"facts": timeline.facts, "classes": timeline.classes,
            "segments": [asdict(s) for s in timeline.segments],
            "windows": [{"start": w.start, "end": w.end,
                         "probabilities": [float(p) for p in w.probabilities],
                         "smoothed": [float(p) for p in s]}
                        for w, s in zip(timeline.windows, timeline.smoothed)]}
    paths = {"json": out / "timeline.json", "segments": out / "segments.csv",
             "windows": out / "windows.csv", "plot": out / "timeline.png"}
    atomic_write_text(paths["json"], json.dumps(data, indent=1))
    atomic_write_text(paths["segments"], _csv(["start", "end", "label", "confidence", "windows"],
                                              [[f"{s.start:.3f}", f"{s.end:.3f}", s.label,
                                                f"{s.confidence:.4f}", s.windows]
                                               for s in timeline.segments]))
    atomic_write_text(paths["windows"], _csv(
        ["start", "end", "label", *timeline.classes],
        [[f"{w.start:.3f}", f"{w.end:.3f}", timeline.classes[int(s.argmax())],
          *(f"{p:.5f}" for p in s)] for w, s in zip(timeline.windows, timeline.smoothed)]))
    plot_timeline(timeline, paths["plot"])
    return paths


def _csv(header: list[str], rows: Iterable[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def timeline_outputs(engine: Engine, video: str | os.PathLike, config: WindowConfig,
                     folder: str | os.PathLike | None = None,
                     annotated: str | os.PathLike | None = None) -> Timeline:
    """`lrcn predict --timeline` for one video: the timeline, with its files (write_timeline's)
    in `folder` and, with `annotated`, the annotated video; what was written is in the
    timeline's `files` (keys json, segments, windows, plot, video). None writes nothing."""
    if annotated is not None:       # refused before the work, not after it
        check_annotated_target(annotated, video)
    if folder is not None:
        output_folder(folder, "a timeline's files are", make=False)
    timeline = timeline_for_video(engine, video, config)
    if folder is not None:
        timeline.files.update(write_timeline(timeline, folder))
    if annotated is not None:
        timeline.files["video"] = annotate_timeline(video, timeline, annotated)
    return timeline


__all__ = ["Timeline", "Segment", "score_video", "build_timeline", "timeline_for_video",
           "write_timeline", "format_timeline", "annotate_timeline", "timeline_outputs"]
