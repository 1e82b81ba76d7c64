"""Sliding windows of LRCN predictions over a video, at the time scale the model was trained on,
with each frame's CNN features computed once: what timeline.py (files) and stream.py (live
sources) share.

Time scale. A training clip's 20 frames are the centres of 20 equal segments of the whole clip
(sampling.py), so they are `span / 20` seconds apart, where `span` is the clip's duration; the
checkpoint records the median span of its training clips (`clip_seconds`). A window covers
`span` seconds of the video and takes the frames shown at the same 20 instants, so the model
sees motion at the speed it learned. (Feeding it 20 consecutive frames, as the tutorial's live
loop does, shows it motion ~10x slower than anything it trained on.)

Feature reuse. Window instants lie on one grid, `(j + 0.5) * span / 20` seconds for j = 0, 1,
...; window k uses grid points `k*m .. k*m + 19`, where the stride is m grid steps. Each grid
point's frame goes through the CNN once, and the LSTM runs per window over the 20 cached
feature vectors: per window the work is m new frames of CNN plus one LSTM pass, instead of 20
CNN frames. Only the features of the open windows are held, so memory does not grow with the
video's length.

Frame choice. The frame for an instant is the one on screen then (`sampling.frames_at`, the
rule read_clip uses), by the frame times of video.FrameSource: a window over the same stretch
of a video as a clip sees the same frames, variable frame rate included.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import av
import numpy as np

from ..media.sampling import frames_at, on_screen_at, segment_instants
from ..media.video import to_model_frame
from .calibrate import softmax

DEFAULT_SPAN = 6.0   # seconds; for checkpoints that do not record their training clips' span


@dataclass(frozen=True)
class WindowConfig:
    span: float = 0.0        # seconds one window covers; 0: the checkpoint's clip_seconds
    stride: float = 0.0      # seconds between window starts; 0: a quarter of the span
    smooth: int = 3          # windows averaged (centred for files, trailing for streams)
    batch: int = 32          # frames per CNN call, windows per LSTM call (at most: a long
                             # file's CNN runs in threads take what suits one, timeline.py)
    reject_below: float = 0.0   # a label less probable than this is shown as "unknown"

    def __post_init__(self) -> None:
        # `not 0 <= x < inf` refuses NaN too
        if not (0 <= self.span < math.inf and 0 <= self.stride < math.inf) \
                or self.smooth < 1 or self.batch < 1:
            raise ValueError("span, stride, smoothing and batch must be positive and finite")
        if not 0 <= self.reject_below < 1:
            raise ValueError("reject_below must be in [0, 1)")

    def resolve(self, clip_seconds: float, num_frames: int) -> tuple[float, int]:
        """(grid step in seconds, stride in grid steps)."""
        span = self.span or clip_seconds or DEFAULT_SPAN
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

    Frames that are no grid point's frame are not converted and never reach the CNN. Until the
    first window is complete, every frame is kept small, so that a video shorter than one
    window gets the window `read_clip` would give it: 20 frames spread over its whole length.
    `keep_early=False` does without them (a file known to be longer, which can be read again).
    With `executor`, batches run in its threads through `features` (the engine's by default),
    at most `in_flight` at a time; windows come out once their features are back.
    """

    def __init__(self, engine, step: float, stride_steps: int, batch: int = 32,
                 keep_early: bool = True, executor: Executor | None = None,
                 features=None, in_flight: int = 4):
        self.engine, self.step, self.stride, self.batch = engine, step, stride_steps, batch
        self.executor, self.in_flight = executor, in_flight
        self.run_features = features or engine.features
        # batches sent to the executor, oldest first: (pending, frame keys, their features)
        self.running: deque[tuple[list, list, Future]] = deque()
        self.frames = engine.frame_config
        self.steps = self.frames.num_frames
        self.next_grid = 0                     # next grid point waiting for its frame
        self.pending: list[tuple[int, np.ndarray]] = []   # (grid j, small frame)
        self.features: dict[int, np.ndarray] = {}
        self.next_window = 0                   # index of the next window to score
        self.previous: tuple[float, av.VideoFrame] | None = None
        self.previous_small: np.ndarray | None = None
        self.last_small: np.ndarray | None = None
        # (time, small) of every frame before window 0 is complete
        self.early: list[tuple[float, np.ndarray]] | None = [] if keep_early else None
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
        if self.early is not None:
            if self.next_window:
                self.early = None              # a window is complete: no longer needed
            else:
                self.previous_small = to_model_frame(frame, self.frames)
                self.early.append((t, self.previous_small))
        return out

    def _assign_until(self, t: float, skip: bool) -> list[Window]:
        """Every grid instant at which the frame shown from t is not yet on screen shows the
        previous frame."""
        out: list[Window] = []
        _, frame = self.previous
        while not on_screen_at(t, self._grid_time(self.next_grid)):
            if self.previous_small is None:
                if skip and self.last_small is not None:
                    self.skipped += 1
                    self.previous_small = self.last_small
                else:
                    self.previous_small = to_model_frame(frame, self.frames)
            self.last_small = self.previous_small
            self.pending.append((self.next_grid, self.previous_small))
            self.next_grid += 1
            if len(self.pending) >= self.batch:
                out += self._run_pending()
        return out

    def _run_pending(self, wait: bool = False) -> list[Window]:
        if self.pending:
            # A frame that serves several grid points (video slower than the grid) is computed
            # once.
            unique: dict[int, np.ndarray] = {}
            for _, image in self.pending:
                unique.setdefault(id(image), image)
            keys = list(unique)
            batch = np.stack([unique[k] for k in keys])
            if self.executor is None:
                self._store(self.pending, keys, self.run_features(batch))
            else:
                self.running.append((self.pending, keys,
                                     self.executor.submit(self.run_features, batch)))
            self.pending = []
        while self.running and (wait or len(self.running) > self.in_flight
                                or self.running[0][2].done()):
            pending, keys, future = self.running.popleft()
            self._store(pending, keys, future.result())
        return self._ready_windows()

    def _store(self, pending: list, keys: list, feats: np.ndarray) -> None:
        by_id = dict(zip(keys, feats))
        for j, image in pending:
            self.features[j] = by_id[id(image)]

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
            probs = window_probabilities(self.engine, seqs)
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
        out = self._assign_until(end_time, skip=False) + self._run_pending(wait=True)
        if self.next_window == 0 and not out and self.early:
            return [self._whole_video(end_time)]
        return out

    def _whole_video(self, end_time: float) -> Window:
        # Too short for one window at the trained time scale: the window is the whole video,
        # its frames taken at the same instants as read_clip takes a clip's.
        times = [t for t, _ in self.early]
        picks = frames_at(times, segment_instants(times[0], end_time, self.steps))
        clip = np.stack([self.early[i][1] for i in picks])
        return Window(0.0, end_time, self.engine.probabilities(clip))


def window_probabilities(engine, sequences: np.ndarray) -> np.ndarray:
    """(B, num_frames, F) windows of frame features -> (B, classes) calibrated probabilities:
    the engine's sequence logits through the temperature and the one softmax, as a clip's."""
    return softmax(engine.check_logits(engine.sequence_logits(sequences)), engine.temperature)


class TrailingAverage:
    """The label of a live source (`lrcn stream`, the server's webcam): the mean of the last
    `size` windows' probabilities, the window just scored included (a stream has no future)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError("the trailing average needs at least one window")
        self.size = size
        self.recent: list[np.ndarray] = []

    def add(self, probabilities: np.ndarray) -> np.ndarray:
        """A window's probabilities -> the average shown after it."""
        self.recent = (self.recent + [probabilities])[-self.size:]
        return np.stack(self.recent).mean(0)


def smooth(probs: np.ndarray, size: int) -> np.ndarray:
    """A file's centred moving average over windows (edges average what exists). A stream has
    no future: it takes a trailing average (TrailingAverage)."""
    if size <= 1 or len(probs) == 0:
        return probs
    out = np.empty_like(probs)
    for i in range(len(probs)):
        lo = i - size // 2
        out[i] = probs[max(0, lo):max(0, lo + size)].mean(0)
    return out


UNKNOWN = "unknown"


def name_of(names, probs: np.ndarray, reject_below: float = 0.0) -> str:
    """The class a probability vector names, or "unknown" when even its most probable class
    is below `reject_below` ("none of these": a model knows only its classes)."""
    top = int(probs.argmax())
    return names[top] if probs[top] >= reject_below else UNKNOWN


def clock(seconds: float) -> str:
    """Seconds as hh:mm:ss.mmm."""
    minutes, s = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{s:06.3f}"


__all__ = ["DEFAULT_SPAN", "UNKNOWN", "WindowConfig", "Window", "WindowScorer",
           "window_probabilities", "TrailingAverage", "smooth", "name_of", "clock"]
