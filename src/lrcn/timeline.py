"""Long videos and streams: a sliding window of LRCN predictions, at the time scale the model was
trained on, with each frame's CNN features computed once.

Time scale. A training clip's 20 frames are the centres of 20 equal segments of the whole clip
(sampling.py), so they are `span / 20` seconds apart, where `span` is the clip's duration; the
checkpoint records the median span of its training clips (`clip_seconds`). A window here covers
`span` seconds of the long video and takes the frames shown at the same 20 instants, so the
model sees motion at the speed it learned. (Feeding it 20 consecutive frames, as the tutorial's
live loop does, shows it motion ~10x slower than anything it trained on.)

Feature reuse. Window instants lie on one grid, `(j + 0.5) * span / 20` seconds for j = 0, 1,
...; window k uses grid points `k*m .. k*m + 19`, where the stride is m grid steps. Each grid
point's frame goes through the CNN once, and the LSTM runs per window over the 20 cached
feature vectors: per window the work is m new frames of CNN plus one LSTM pass, instead of 20
CNN frames. Only the features of the open windows are held, so memory does not grow with the
video's length.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .config import FrameConfig
from .engine import Engine
from .errors import LrcnError
from .files import atomic_write_text
from .video import _frame_rate, _open, _to_array, upright_image

DEFAULT_SPAN = 6.0   # seconds; for checkpoints that do not record their training clips' span


@dataclass(frozen=True)
class TimelineConfig:
    span: float = 0.0        # seconds one window covers; 0: the checkpoint's clip_seconds
    stride: float = 0.0      # seconds between window starts; 0: a quarter of the span
    smooth: int = 3          # windows averaged (centred for files, trailing for streams)
    batch: int = 32          # frames per CNN call (windows per LSTM call likewise)

    def resolve(self, clip_seconds: float, num_frames: int) -> tuple[float, int]:
        """(grid step in seconds, stride in grid steps)."""
        span = self.span or clip_seconds or DEFAULT_SPAN
        if span <= 0 or self.stride < 0 or self.smooth < 1 or self.batch < 1:
            raise ValueError("span, stride, smoothing and batch must be positive")
        step = span / num_frames
        stride = self.stride or span / 4
        return step, max(1, round(stride / step))


@dataclass
class Window:
    start: float            # seconds: the span the window covers
    end: float
    probabilities: np.ndarray


class WindowScorer:
    """Feed decoded frames in order with their times; get windows as soon as they are complete.

    Frame for a grid instant g: the frame on screen at g, i.e. the last frame whose time is
    <= g. Frames that are no grid point's frame are not converted and never reach the CNN.
    """

    def __init__(self, engine: Engine, step: float, stride_steps: int, batch: int = 32):
        self.engine, self.step, self.stride, self.batch = engine, step, stride_steps, batch
        self.frames: FrameConfig = engine.frame_config
        self.steps = self.frames.num_frames
        self.reformatter = VideoReformatter()
        self.next_grid = 0                     # next grid point waiting for its frame
        self.pending: list[tuple[int, np.ndarray | None]] = []  # (grid j, small frame or None)
        self.features: dict[int, np.ndarray] = {}
        self.next_window = 0                   # index of the next window to score
        self.previous: tuple[float, av.VideoFrame] | None = None
        self.previous_small: np.ndarray | None = None
        self.last_small: np.ndarray | None = None
        self.skipped = 0                       # grid frames reused because we fell behind

    def _grid_time(self, j: int) -> float:
        return (j + 0.5) * self.step

    def push(self, frame: av.VideoFrame, t: float, skip: bool = False) -> list[Window]:
        """A decoded frame shown from time t. With skip=True (a live source falling behind),
        grid points it would serve reuse the last converted frame instead of a new one."""
        out: list[Window] = []
        if self.previous is not None:
            out += self._assign_until(t, skip)
        self.previous = (t, frame)
        self.previous_small = None
        return out

    def _assign_until(self, t: float, skip: bool) -> list[Window]:
        """Every grid instant before t shows the previous frame."""
        out: list[Window] = []
        _, frame = self.previous
        while self._grid_time(self.next_grid) < t:
            if self.previous_small is None:
                if skip and self.last_small is not None:
                    self.skipped += 1
                    self.previous_small = self.last_small
                else:
                    self.previous_small = _to_array(frame, self.frames, self.reformatter)
                    self.last_small = self.previous_small
            self.pending.append((self.next_grid, self.previous_small))
            self.next_grid += 1
            if len(self.pending) >= self.batch:
                out += self._run_pending()
        return out

    def _run_pending(self) -> list[Window]:
        if not self.pending:
            return []
        # A frame that serves several grid points (video slower than the grid) is computed once.
        unique: dict[int, np.ndarray] = {}
        for _, image in self.pending:
            unique.setdefault(id(image), image)
        keys = list(unique)
        feats = self.engine.features(np.stack([unique[k] for k in keys]))
        by_id = dict(zip(keys, feats))
        for j, image in self.pending:
            self.features[j] = by_id[id(image)]
        self.pending.clear()
        return self._ready_windows()

    def _ready_windows(self) -> list[Window]:
        starts = []
        k = self.next_window
        while k * self.stride + self.steps - 1 in self.features:
            starts.append(k * self.stride)
            k += 1
        windows: list[Window] = []
        for i in range(0, len(starts), self.batch):
            chunk = starts[i:i + self.batch]
            seqs = np.stack([np.stack([self.features[s + t] for t in range(self.steps)])
                             for s in chunk])
            probs = self.engine.sequence(seqs)
            windows += [Window(s * self.step, (s + self.steps) * self.step, p)
                        for s, p in zip(chunk, probs)]
        self.next_window = k
        first_needed = self.next_window * self.stride
        for j in [j for j in self.features if j < first_needed]:
            del self.features[j]
        return windows

    def finish(self, end_time: float) -> list[Window]:
        """End of the video at end_time: the last frame serves the grid points before it; a
        video shorter than one window gets one window over its whole length."""
        if self.previous is None:
            return []
        out = self._assign_until(end_time, skip=False) + self._run_pending()
        if self.next_window == 0 and not out:
            return self._whole_video(end_time)
        return out

    def _whole_video(self, end_time: float) -> list[Window]:
        # Too short for one window at the trained time scale: squeeze the window to fit, the
        # same 20 evenly spaced instants over what there is (what `lrcn predict` does).
        grid = sorted(self.features)
        if not grid:
            return []
        picks = [grid[min(len(grid) - 1, int((i + 0.5) * len(grid) / self.steps))]
                 for i in range(self.steps)]
        seq = np.stack([self.features[j] for j in picks])[None]
        return [Window(0.0, end_time, self.engine.sequence(seq)[0])]


def _frame_times(container, stream) -> Iterator[tuple[av.VideoFrame, float]]:
    """Decoded frames in output order with their display times (index / frame rate: UCF's
    AVIs carry timestamps that are off by B-frame reordering)."""
    rate = _frame_rate(stream) or 25.0
    index = 0
    try:
        for frame in container.decode(stream):
            if frame.is_corrupt:
                continue
            yield frame, index / rate
            index += 1
    except av.error.FFmpegError:
        return  # a truncated file ends at its last good frame


def score_video(engine: Engine, path: str | os.PathLike, config: TimelineConfig,
                clip_seconds: float) -> tuple[list[Window], dict]:
    """All windows of a video file, and facts about the run (duration, speed)."""
    path = Path(path)
    step, stride = config.resolve(clip_seconds, engine.frame_config.num_frames)
    scorer = WindowScorer(engine, step, stride, config.batch)
    windows: list[Window] = []
    started = time.perf_counter()
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = _frame_rate(stream) or 25.0
        count = 0
        for frame, t in _frame_times(container, stream):
            windows += scorer.push(frame, t)
            count += 1
        if count == 0:
            raise LrcnError("no video frames could be decoded", path)
        duration = count / rate
        windows += scorer.finish(duration)
    seconds = time.perf_counter() - started
    facts = {"video": str(path), "frames": count, "fps": rate, "duration": duration,
             "span": step * engine.frame_config.num_frames, "stride": stride * step,
             "grid_step": step, "processing_seconds": seconds,
             "speed_x_realtime": duration / seconds if seconds > 0 else math.inf}
    return windows, facts


def smooth(probs: np.ndarray, size: int, centred: bool = True) -> np.ndarray:
    """Moving average over windows (edges average what exists)."""
    if size <= 1 or len(probs) == 0:
        return probs
    out = np.empty_like(probs)
    for i in range(len(probs)):
        lo = i - size // 2 if centred else i - size + 1
        out[i] = probs[max(0, lo):max(0, lo + size)].mean(0)
    return out


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

    def label_at(self, t: float) -> tuple[str, np.ndarray]:
        """The label and smoothed probabilities shown at time t (the window whose slot it is)."""
        i = _slot(self.windows, t)
        probs = self.smoothed[i]
        return self.classes[int(probs.argmax())], probs


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
                   smoothing: int) -> Timeline:
    if not windows:
        raise LrcnError("no frames to classify", facts.get("video", "video"))
    probs = np.stack([w.probabilities for w in windows])
    smoothed = smooth(probs, smoothing, centred=True)
    labels = smoothed.argmax(1)
    bounds = _slot_bounds(windows, facts["duration"])
    segments: list[Segment] = []
    for i, label in enumerate(labels):
        name = classes[int(label)]
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
    return Timeline(classes, windows, smoothed, segments, facts)


def timeline_for_video(engine: Engine, path: str | os.PathLike, config: TimelineConfig,
                       clip_seconds: float) -> Timeline:
    windows, facts = score_video(engine, path, config, clip_seconds)
    facts["smoothing"] = config.smooth
    return build_timeline(list(engine.names), windows, facts, config.smooth)


def annotate_timeline(video: str | os.PathLike, timeline: Timeline,
                      out: str | os.PathLike) -> Path:
    """The video with, on every frame, the label of the window that speaks for its time, its
    confidence and the top classes' bars; H.264 MP4 (browser-playable), audio kept."""
    from .predict import Prediction, draw_label
    path = Path(video)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        audio = container.streams.audio[0] if container.streams.audio else None
        rate = _frame_rate(stream) or 25.0
        writer = None
        early_audio: list[av.Packet] = []  # audio demuxed before the first picture
        index = 0
        try:
            for packet in container.demux(*(s for s in (stream, audio) if s is not None)):
                if audio is not None and packet.stream.index == audio.index:
                    if writer is None:
                        early_audio.append(packet)
                    else:
                        writer.write_audio(packet)
                    continue
                for frame in packet.decode():
                    if frame.is_corrupt:
                        continue
                    image = upright_image(frame)
                    if writer is None:
                        from .video import VideoWriter
                        writer = VideoWriter(out, image.shape[1], image.shape[0], rate,
                                             audio=audio)
                        for early in early_audio:
                            writer.write_audio(early)
                    label, probs = timeline.label_at(index / rate)
                    prediction = Prediction(str(path), label, float(probs.max()),
                                            dict(zip(timeline.classes, map(float, probs))))
                    writer.write(draw_label(image, prediction))
                    index += 1
        except av.error.FFmpegError:
            pass  # a truncated file ends at its last good frame
        if writer is None:
            raise LrcnError("no video frames could be decoded", path)
        return writer.close()


def _clock(seconds: float) -> str:
    minutes, s = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{s:06.3f}"


def format_timeline(timeline: Timeline) -> str:
    f = timeline.facts
    lines = [f"{f['video']}: {f['duration']:.1f} s, {len(timeline.windows)} windows of "
             f"{f['span']:.2f} s every {f['stride']:.2f} s, {len(timeline.segments)} segments "
             f"({f['speed_x_realtime']:.0f}x real time)"]
    for seg in timeline.segments:
        lines.append(f"  {_clock(seg.start)} - {_clock(seg.end)}  {seg.label:<20} "
                     f"{seg.confidence:6.1%}")
    return "\n".join(lines)


def write_timeline(timeline: Timeline, out_dir: str | os.PathLike) -> dict[str, Path]:
    """timeline.json (settings, segments, windows), segments.csv, windows.csv, timeline.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    import io
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def plot_timeline(timeline: Timeline, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(w.start + w.end) / 2 for w in timeline.windows]
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(12, 4))
    for seg in timeline.segments:
        i = timeline.classes.index(seg.label)
        ax.axvspan(seg.start, seg.end, color=colours(i % 10), alpha=0.15, lw=0)
    for i, name in enumerate(timeline.classes):
        ax.plot(centres, timeline.smoothed[:, i], color=colours(i % 10), label=name, lw=1.6)
    ax.set_xlim(0, timeline.facts["duration"])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability (smoothed)")
    ax.set_title(f"{Path(timeline.facts['video']).name}: segments shaded by label")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


__all__ = ["TimelineConfig", "Timeline", "Segment", "Window", "WindowScorer", "score_video",
           "build_timeline", "timeline_for_video", "write_timeline", "format_timeline",
           "annotate_timeline",
           "smooth"]
