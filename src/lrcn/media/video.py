"""The frame source: every path of lrcn that reads a video goes through here. Opening (with the
one-line errors that name the file), the frame rate, the decode loop (corrupt frames skipped, a
truncated file ending at its last good frame), each frame's display time, and the two frame
conversions: `to_model_frame` (the model's small input) and `upright_image` (full size, for
drawing). clip.py samples a clip from it, timeline.py and stream.py slide windows over it,
annotate.py draws on it; the fast decode paths (fastdecode.py) use its pieces too.

Decoding is sequential, in the decoder's output order. That order is the display order even on
UCF's XviD AVIs that pack B-frames, where timestamp-sorted access returns frames 1-2 early."""
from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import io
import os
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..config import FrameConfig
from ..errors import ErrorKind, LrcnError
from .pipe import PIPE_USE, checked_pipe

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ogv", ".ts", ".mts")

# A stream that states no frame rate (some raw streams and pipes) is taken to run at this.
DEFAULT_FPS = 25.0

# Containers whose timestamps order frames correctly. AVI is not one: UCF's XviD AVIs pack
# B-frames, and their timestamps put frames 1-2 early; raw elementary streams have none.
TIMED_FORMATS = ("mov", "mp4", "m4a", "3gp", "matroska", "webm", "mpegts", "flv", "ogg")

_INTERPOLATION = {"area": "AREA", "bilinear": "BILINEAR"}


@functools.cache
def one_thread() -> dict:
    """The reformat argument for one scaling thread, decided once, on first use. PyAV >= 17
    scales through sws_scale_frame, which by default starts a thread pool per call (threads=0:
    one per core). For a 64x64 output that is 3-4x slower than one thread (0.45 vs 0.11 ms per
    320x240 frame here) and fights the worker processes for the cores; the output is the same.
    Older PyAV has no `threads` argument and scales on one thread anyway. Found by trying the
    argument, not by reading version numbers."""
    frame = av.VideoFrame(16, 16, "yuv420p")
    try:
        VideoReformatter().reformat(frame, width=8, height=8, format="rgb24", threads=1)
    except TypeError:
        return {}
    return {"threads": 1}


@functools.cache
def _open_options() -> dict:
    """av.open's argument for tolerating bad metadata bytes, decided once, on first use. PyAV up
    to 18 decodes container metadata strictly unless told to ignore bad bytes (real files carry
    titles in odd encodings); PyAV 19 dropped the option (a TypeError) and always tolerates
    them. Tried on an in-memory output container, which reads and writes nothing."""
    try:
        av.open(io.BytesIO(), mode="w", format="mp4", metadata_errors="ignore").close()
    except TypeError:
        return {}
    return {"metadata_errors": "ignore"}


def _av_open(target, **kwargs):
    """av.open with the metadata option where this PyAV has it."""
    return av.open(target, **_open_options(), **kwargs)


def error_cause(exc: BaseException) -> str:
    """FFmpeg's own words for what went wrong, without the errno and the file name."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def check_file(path: Path) -> None:
    """One-line errors for what is not a video file at all."""
    if not path.exists():
        raise LrcnError("no such file", path, ErrorKind.NOT_FOUND)
    if path.is_dir():   # the command line's folders stand for their videos: this had none
        raise LrcnError("is a folder, not a video file" if any(
            p.suffix.lower() in VIDEO_EXTENSIONS for p in path.rglob("*")) else
            "is a folder with no video files in it", path, ErrorKind.NOT_VIDEO)
    if path.is_fifo():      # its size is 0, and it cannot be read twice (a header that lies)
        raise LrcnError(f"is a named pipe, not a file: {PIPE_USE}", path, ErrorKind.NOT_VIDEO)
    if path.stat().st_size == 0:
        raise LrcnError("empty file (0 bytes)", path)


class DecodeLimits(NamedTuple):
    """What opening and decoding one file may allocate: FFmpeg opens a decoder for every stream
    while it probes a file (about 0.8 MB each for 64x48 frames; a 1.7 MB file can hold 1000),
    and allocates each frame at the size its header states (16000x16000: 384 MB a frame)."""
    max_pixels: int           # width x height of a video stream's frames
    max_streams: int          # streams of any kind in the file


_LIMITS: contextvars.ContextVar[DecodeLimits | None] = contextvars.ContextVar(
    "lrcn_decode_limits", default=None)


@contextlib.contextmanager
def decode_limits(limits: DecodeLimits | None):
    """Within the block, `open_video` refuses (LrcnError, BAD_INPUT) a file past `limits`
    before a frame is decoded, and its decoders refuse larger frames met later. The server's
    workers read uploads under this; the CLI reads the user's own files without it. A context
    variable rather than a parameter: the opens happen deep in clip, timeline and annotate."""
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def _open_limited(path: Path, limits: DecodeLimits) -> av.container.InputContainer:
    """Open under `limits`: FFmpeg itself stops at one stream past max_streams (max_streams),
    and its probing decoders refuse frames past max_pixels, so the open cannot grow with the
    file; then the counts are checked, and every video decoder keeps the pixel limit."""
    too_many = f"more than {limits.max_streams} streams in the file (the server's limit, " \
               "--max-streams)"
    try:
        container = _av_open(str(path), options={"max_streams": str(limits.max_streams + 1),
                                                 "max_pixels": str(limits.max_pixels)})
    except av.error.FFmpegError as exc:
        if exc.errno == errno.ENOMEM:      # MP4 and AVI fail where the stream cap is met
            raise LrcnError(too_many, path, ErrorKind.BAD_INPUT) from None
        raise
    if len(container.streams) > limits.max_streams:       # Matroska stops at the cap
        container.close()
        raise LrcnError(too_many, path, ErrorKind.BAD_INPUT)
    for stream in container.streams.video:
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_pixels:
            container.close()
            raise LrcnError(f"frames of {width}x{height} pixels, more than the server's limit "
                            f"of {limits.max_pixels} (--max-pixels)", path, ErrorKind.BAD_INPUT)
        stream.codec_context.options = {**stream.codec_context.options,
                                        "max_pixels": str(limits.max_pixels)}
    return container


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """An opened video file with at least one video stream; LrcnError naming the file else.
    Under `decode_limits`, a file past them is refused here, before any frame is decoded."""
    path = Path(path)
    check_file(path)
    limits = _LIMITS.get()
    try:
        container = _open_limited(path, limits) if limits else _av_open(str(path))
    except av.error.FFmpegError as exc:
        raise LrcnError(f"not a readable video ({error_cause(exc)})", path,
                        ErrorKind.NOT_VIDEO) from None
    if not container.streams.video:
        container.close()
        raise LrcnError("no video stream in the file", path, ErrorKind.NOT_VIDEO)
    return container


def open_source(source: str) -> tuple[av.container.InputContainer, bool]:
    """A camera index, '-' (stdin), a URL, a named pipe or a file -> (opened container, live?).
    A camera and a URL are live (at their own pace); a pipe is read as fast as it comes."""
    try:
        if source == "-":
            container, live = _av_open(checked_pipe(sys.stdin.buffer), mode="r"), False
        elif source.isdigit():
            if sys.platform.startswith("linux"):
                container = _av_open(f"/dev/video{source}", format="v4l2")
            elif sys.platform == "darwin":
                container = _av_open(source, format="avfoundation")
            else:
                container = _av_open(f"video={source}", format="dshow")
            live = True
        elif "://" in source:
            options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
            container, live = _av_open(source, options=options, timeout=10.0), True
        elif Path(source).is_fifo():      # read as it comes, as stdin is
            container, live = _av_open(checked_pipe(open(source, "rb"), source), mode="r"), False
        else:
            path = Path(source)
            if not path.is_file():
                raise LrcnError("no such file, camera or URL", source, ErrorKind.NOT_FOUND)
            if path.stat().st_size == 0:
                raise LrcnError("empty file (0 bytes)", source)
            container, live = _av_open(str(path)), False
    except av.error.FFmpegError as exc:
        raise LrcnError(f"cannot open the source ({error_cause(exc)})", source,
                        ErrorKind.NOT_VIDEO) from None
    if not container.streams.video:
        container.close()
        raise LrcnError("no video stream in the source", source, ErrorKind.NOT_VIDEO)
    return container, live


def frame_rate(stream, default: float = DEFAULT_FPS) -> float:
    """The stream's frame rate, or `default` when it states none."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else default


def is_timed(container) -> bool:
    """Whether the container's timestamps can be trusted to place frames in time."""
    return any(name in TIMED_FORMATS for name in container.format.name.split(","))


def configure(stream, threads: int) -> None:
    """threads=1: one thread (worker processes, the MPEG-4 skipping path); 0: FFmpeg chooses."""
    stream.thread_type = "AUTO" if threads != 1 else "SLICE"
    if threads:
        stream.thread_count = threads


def decoded(frames: Iterator[av.VideoFrame], name: object) -> Iterator[av.VideoFrame]:
    """The good frames of a decode: corrupt ones (the half-frame at the end of a truncated file)
    are skipped, and an FFmpeg error ends the video at its last good frame. An error before the
    first frame is the caller's LrcnError, naming `name`."""
    count = 0
    try:
        for frame in frames:
            if frame.is_corrupt:
                continue
            count += 1
            yield frame
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if count == 0:
            raise LrcnError(f"cannot decode video ({error_cause(exc)})", name) from None


_local = threading.local()


def thread_reformatter() -> VideoReformatter:
    """This thread's swscale context, kept from clip to clip: setting one up costs about
    2.5 ms, as much as converting 20 frames; it is only rebuilt when the sizes change."""
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that make a frame upright (display-matrix rotation)."""
    return int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4


def to_model_frame(frame: av.VideoFrame, frames: FrameConfig,
                   reformatter: VideoReformatter | None = None) -> np.ndarray:
    """One decoded frame -> the model's (H, W, 3) uint8 input frame: colour conversion and
    resize in a single swscale call (much cheaper than converting at full size and resizing),
    then upright rotation."""
    quarter_turns = _quarter_turns(frame)
    height, width = frames.height, frames.width
    if quarter_turns % 2:  # the stored frame is sideways: resize to the swapped shape
        height, width = width, height
    image = (reformatter or thread_reformatter()).reformat(
        frame, width=width, height=height,
        format="rgb24" if frames.channel_order == "rgb" else "bgr24",
        interpolation=_INTERPOLATION[frames.interpolation], **one_thread()).to_ndarray()
    if quarter_turns:
        image = np.ascontiguousarray(np.rot90(image, k=quarter_turns))
    return image


def image_to_model_frame(image: np.ndarray, frames: FrameConfig, channels: str = "rgb",
                         reformatter: VideoReformatter | None = None) -> np.ndarray:
    """A full-size (H, W, 3) uint8 image (a webcam JPEG, a frame of a user's array or an
    OpenCV capture) -> the model's input frame, through the same swscale call that decoded
    video takes (`to_model_frame`): the checkpoint's size, interpolation and channel order.
    (A video frame is converted from YUV at the output size; an RGB image is already
    converted, so the two differ by the chroma rounding, a few levels.) `channels`: the
    image's order, "rgb" or "bgr" (OpenCV's)."""
    if channels not in ("rgb", "bgr"):
        raise LrcnError(f"channels must be 'rgb' or 'bgr', not {channels!r}",
                        kind=ErrorKind.SETTING)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise LrcnError(f"a frame must be a (H, W, 3) uint8 image with H, W >= 1, not "
                        f"{image.dtype} {tuple(image.shape)}", kind=ErrorKind.SETTING)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=f"{channels}24")
    return to_model_frame(frame, frames, reformatter)


def upright_image(frame: av.VideoFrame, fmt: str = "rgb24") -> np.ndarray:
    """A decoded frame at full size as (H, W, 3) uint8, turned upright (rotation metadata)."""
    image = frame.reformat(format=fmt, **one_thread()).to_ndarray()
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


class TimedFrame(NamedTuple):
    frame: av.VideoFrame
    index: int            # in output order, corrupt frames not counted
    time: float           # seconds from the first frame, when it is shown


class FrameSource:
    """A video's frames in output order, each with the time it is shown.

    Times come from the timestamps where the container's can be trusted (MP4, MKV, WebM, TS,
    ...): variable-frame-rate video is then placed where its frames really are, as `read_clip`
    samples it. Elsewhere (AVI, raw streams) frame i is shown at i / fps. `end_time` is the
    video's length once all frames are read: the last frame's time plus the typical frame
    duration, the same end that `read_clip` divides into segments."""

    def __init__(self, container, name: object, threads: int = 0):
        self.container, self.name = container, name
        self.stream = container.streams.video[0]
        configure(self.stream, threads)
        self.fps = frame_rate(self.stream)
        self.audio = container.streams.audio[0] if container.streams.audio else None
        self.timed = is_timed(container) and bool(self.stream.time_base)
        self.count = 0
        self._last = -1.0
        self._origin: tuple[int, float] | None = None   # (first pts, its time)
        # Frame durations by how often each occurs: bounded memory on an endless stream.
        self._durations: Counter[float] = Counter()

    @classmethod
    def open(cls, path: str | os.PathLike, threads: int = 0) -> "FrameSource":
        return cls(open_video(path), Path(path), threads)

    def _time_of(self, frame: av.VideoFrame) -> float:
        if not self.timed:
            return self.count / self.fps
        step = self._last + 1 / self.fps if self.count else 0.0   # one frame on
        if frame.pts is None:
            return step
        if self._origin is None:   # the first timestamp: the time it marks is `step`
            self._origin = (frame.pts, step)
        pts, at = self._origin
        t = at + float((frame.pts - pts) * self.stream.time_base)
        # Out of order or repeated: keep time moving forward, one frame on.
        return t if t > self._last else step

    def frames(self, on_audio: Callable[[av.Packet], None] | None = None
               ) -> Iterator[TimedFrame]:
        """Decode and yield every good frame with its index and time. With `on_audio`, the
        audio track's packets are handed to it as they are demuxed (annotated videos)."""
        if on_audio is not None and self.audio is not None:
            raw = self._demux_with_audio(on_audio)
        else:
            raw = self.container.decode(self.stream)
        for frame in decoded(raw, self.name):
            t = self._time_of(frame)
            if self.count:
                self._durations[t - self._last] += 1
            yield TimedFrame(frame, self.count, t)
            self._last = t
            self.count += 1

    def _demux_with_audio(self, on_audio) -> Iterator[av.VideoFrame]:
        for packet in self.container.demux(self.stream, self.audio):
            if packet.stream.index == self.audio.index:
                on_audio(packet)
            else:
                yield from packet.decode()

    @property
    def end_time(self) -> float:
        if not self.timed or not self._durations:
            return self.count / self.fps
        return self._last + _median(self._durations)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _median(counts: Counter[float]) -> float:
    """The median of the values counted (the mean of the middle two for an even count)."""
    total = sum(counts.values())
    middle, seen, below = (total - 1) // 2, 0, None
    for value in sorted(counts):
        seen += counts[value]
        if below is None and seen > middle:
            if total % 2 or seen > middle + 1:
                return value
            below = value
        elif below is not None:
            return (below + value) / 2
    return below if below is not None else 0.0


__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_FPS", "TIMED_FORMATS", "one_thread", "FrameSource",
           "TimedFrame", "DecodeLimits", "check_file", "configure", "decode_limits", "decoded",
           "error_cause", "frame_rate", "is_timed", "open_source", "open_video", "thread_reformatter",
           "to_model_frame", "image_to_model_frame", "upright_image"]
