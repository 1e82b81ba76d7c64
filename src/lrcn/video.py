"""Video files in and out, behind one decoding function (`read_clip`) that every path of lrcn
uses (training cache, evaluation, prediction), and one H.264 writer for annotated videos.

Decoding is sequential, in the decoder's output order. That order is the display order even on
UCF's XviD AVIs that pack B-frames, where timestamp-sorted access returns frames 1-2 early, and
it does not depend on the container's frame count, which is wrong on some real files. Seeking by
frame index (the tutorial's OpenCV way) is both slower on short clips and wrong on such files.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .config import FrameConfig
from .errors import LrcnError
from .sampling import sample_indices

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ogv", ".ts", ".mts")

_INTERPOLATION = {"area": "AREA", "bilinear": "BILINEAR"}

# PyAV >= 17 scales through sws_scale_frame, which by default starts a thread pool per call
# (threads=0: one per core). For a 64x64 output that is 3-4x slower than one thread (0.45 vs
# 0.11 ms per 320x240 frame here) and fights the worker processes for the cores; full-size
# conversions were no faster threaded either. The output is the same. Older PyAV has no
# `threads` argument and scales on one thread anyway.
_ONE_THREAD = {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}


@dataclass(frozen=True)
class Clip:
    """The sampled frames of one video and what was learned about it while decoding."""
    frames: np.ndarray          # (T, H, W, 3) uint8, in the FrameConfig's channel order
    indices: tuple[int, ...]    # which decoded frames were taken (repeats pad short clips)
    num_frames: int             # frames actually decoded (not the header's claim)
    fps: float
    width: int
    height: int
    header_frames: int = 0      # what the container claimed (0: nothing)
    timing: str = "index"       # "index": evenly spaced frames; "time": evenly spaced in time
    seeked: bool = False        # read by keyframe seeking (long videos), not a whole decode

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def _error_cause(exc: BaseException) -> str:
    """FFmpeg's own words for what went wrong, without the errno and the file name."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _check_file(path: Path) -> None:
    if not path.exists():
        raise LrcnError("no such file", path)
    if path.is_dir():
        raise LrcnError("is a folder, not a video file", path)
    if path.stat().st_size == 0:
        raise LrcnError("empty file (0 bytes)", path)


def _open(path: Path) -> av.container.InputContainer:
    _check_file(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise LrcnError(f"not a readable video ({_error_cause(exc)})", path) from None
    if not container.streams.video:
        container.close()
        raise LrcnError("no video stream in the file", path)
    return container


def _frame_rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _header_frame_count(container, stream) -> int:
    """The container's claim of the frame count: only a hint for which frames to keep on the
    first pass (it is checked against the frames actually decoded)."""
    if stream.frames:
        return int(stream.frames)
    rate = _frame_rate(stream)
    if stream.duration and stream.time_base and rate:
        return int(round(float(stream.duration * stream.time_base) * rate))
    if container.duration and rate:
        return int(round(container.duration / av.time_base * rate))
    return 0


def _decode(container, stream, keep: set[int], convert
            ) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the whole stream in output order; return the frame count and the kept frames.

    Frames the decoder flags as corrupt are not counted. A stream that breaks part way (a
    truncated file) ends at its last good frame; a stream that
    breaks before its first frame is an error for the caller.
    """
    kept: dict[int, np.ndarray] = {}
    count = 0
    try:
        for frame in container.decode(stream):
            if frame.is_corrupt:
                continue  # e.g. the half-frame at the end of a truncated file
            if count in keep:
                # Converted at once: holding decoded frames makes the decoder allocate anew.
                kept[count] = convert(frame)
            count += 1
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        if count == 0:
            raise LrcnError(f"cannot decode video ({_error_cause(exc)})",
                            container.name) from None
    return count, kept


try:  # PyAV's bitstream filters (recent versions); without them every frame is decoded
    from av.bitstream import BitStreamFilterContext
except ImportError:  # pragma: no cover
    BitStreamFilterContext = None

_VOP_START = b"\x00\x00\x01\xb6"
_VOP_TYPES = "IPBS"                     # MPEG-4 Part 2 vop_coding_type: 2 bits
_PICT_TYPES = {1: "I", 2: "P", 3: "B", 4: "S"}   # AVPictureType as PyAV reports it
_TINY_PICTURE = 16                      # bytes: never skipped unseen (see _decode_mpeg4)


class _Mismatch(Exception):
    """The decoder did not behave as the B-frame skipping model expects."""


def _decode_mpeg4(container, stream, keep: set[int], convert
                  ) -> tuple[int, dict[int, np.ndarray]] | None:
    """`_decode` for MPEG-4 Part 2 (XviD/DivX, UCF's codec) on one thread, without decoding
    the B-frames that are not kept. B-frames are never references in MPEG-4 Part 2, so every
    other frame is bit-identical; on UCF's files with B-frames over half the frames are B.

    DivX-style "packed" B-frames (a P and a B in one AVI chunk, then an empty placeholder) are
    first unpacked by FFmpeg's mpeg4_unpack_bframes filter, so that each packet holds one
    picture whose type is read from its header. A B-frame is shown as soon as it is decoded,
    so its output index is the count of frames output (or skipped) before it. The model is
    checked on every packet: one picture per packet; a decoded B gives one B frame; an anchor
    (I/P/S) gives one anchor frame, except the first, which the decoder holds back while
    B-frames are possible (when it does not, the stream has none, and the rest is decoded
    plainly). Anything else (N-VOPs, corrupt frames, errors) returns None and the caller
    decodes everything with `_decode`."""
    codec = stream.codec_context
    try:
        unpack = BitStreamFilterContext("mpeg4_unpack_bframes", in_stream=stream)
    except (av.error.FFmpegError, ValueError):   # an FFmpeg built without the filter
        return None
    kept: dict[int, np.ndarray] = {}
    count = 0
    low_delay: bool | None = None

    def take(frames, expected: str) -> int:
        nonlocal count
        got = 0
        for frame in frames:
            got += 1
            if got > 1 or frame.is_corrupt or _PICT_TYPES.get(int(frame.pict_type), "?") \
                    not in expected:
                raise _Mismatch
            if count in keep:
                kept[count] = convert(frame)
            count += 1
        return got

    try:
        for packet in container.demux(stream):
            if low_delay:
                for frame in codec.decode(packet) if packet.size else ():
                    take([frame], "IPBS")
                continue
            for picture in unpack.filter(packet if packet.size else None):
                data = bytes(picture)
                at = data.find(_VOP_START)
                if at < 0 or at + 4 >= len(data) or data.find(_VOP_START, at + 4) >= 0:
                    raise _Mismatch
                kind = _VOP_TYPES[data[at + 4] >> 6]
                if low_delay is None and kind == "B":
                    raise _Mismatch               # a stream must start with an anchor
                # A picture of a few bytes may be an N-VOP ("not coded"), which the decoder
                # drops without output: skipping it would count a frame that a full decode
                # does not have. Tiny ones are decoded, so the check below sees what they are.
                if kind == "B" and count not in keep and len(data) > _TINY_PICTURE:
                    codec.skip_frame = "NONREF"
                    if take(codec.decode(picture), ""):
                        raise _Mismatch
                    count += 1            # the frame it would have been
                    continue
                codec.skip_frame = "DEFAULT"
                got = take(codec.decode(picture), "B" if kind == "B" else "IPS")
                if low_delay is None:
                    # The first picture shown at once: a low-delay stream, no B-frames to
                    # skip; the rest is a plain decode, without unpacking or parsing.
                    low_delay = got == 1
                elif not got:
                    raise _Mismatch
        codec.skip_frame = "DEFAULT"
        for frame in codec.decode(None):   # the anchor held back, if any
            take([frame], "IPBS" if low_delay else "IPS")
    except (_Mismatch, av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return None
    return count, kept


def _decode_all(path: Path, container, stream, keep: set[int], convert, threads: int
                ) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the whole stream of a freshly opened container (configured for `threads`),
    skipping unkept B-frames where that is safe (`_decode_mpeg4`)."""
    if threads == 1 and BitStreamFilterContext is not None \
            and stream.codec_context.name == "mpeg4":
        # One thread only: frame threading delays output and breaks the one-in-one-out model.
        result = _decode_mpeg4(container, stream, keep, convert)
        if result is not None:
            return result
        with _open(path) as fresh:
            stream = fresh.streams.video[0]
            _configure(stream, threads)
            return _decode(fresh, stream, keep, convert)
    return _decode(container, stream, keep, convert)


_local = threading.local()


def _reformatter() -> VideoReformatter:
    """This thread's swscale context, kept from clip to clip: setting one up costs about
    2.5 ms, as much as converting 20 frames; it is only rebuilt when the sizes change."""
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that make a frame upright (display-matrix rotation)."""
    return int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4


def upright_image(frame: av.VideoFrame, fmt: str = "rgb24") -> np.ndarray:
    """A decoded frame at full size as (H, W, 3) uint8, turned upright (rotation metadata)."""
    image = frame.reformat(format=fmt, **_ONE_THREAD).to_ndarray()
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def _to_array(frame: av.VideoFrame, frames: FrameConfig, reformatter: VideoReformatter
              ) -> np.ndarray:
    """One decoded frame -> (H, W, 3) uint8: colour conversion and resize in a single swscale
    call (much cheaper than converting at full size and resizing), then upright rotation."""
    quarter_turns = _quarter_turns(frame)
    height, width = frames.height, frames.width
    if quarter_turns % 2:  # the stored frame is sideways: resize to the swapped shape
        height, width = width, height
    image = reformatter.reformat(frame, width=width, height=height,
                                 format="rgb24" if frames.channel_order == "rgb" else "bgr24",
                                 interpolation=_INTERPOLATION[frames.interpolation],
                                 **_ONE_THREAD).to_ndarray()
    if quarter_turns:
        image = np.ascontiguousarray(np.rot90(image, k=quarter_turns))
    return image


# Containers whose timestamps order frames correctly. AVI is not one: UCF's XviD AVIs pack
# B-frames, and their timestamps put frames 1-2 early; raw elementary streams have none.
_TIMED_FORMATS = ("mov", "mp4", "m4a", "3gp", "matroska", "webm", "mpegts", "flv", "ogg")
SEEK_MIN_FRAMES = 600       # shorter videos are always decoded whole (seeking does not pay)
KEEP_PACKET_BYTES = 32 << 20  # a clip's packets up to this size are kept from the demux pass


@dataclass(frozen=True)
class _Timing:
    """What one demux pass (no decoding) tells about a video with trustworthy timestamps."""
    pts: list[int]                 # every frame's presentation time, sorted (time_base units)
    keyframes: list[int]           # presentation times of the keyframes, sorted
    time_base: Fraction

    @property
    def variable(self) -> bool:
        """Frame durations that differ by more than 10% for more than 2% of the frames (phone
        cameras), beyond the rounding jitter of a constant rate."""
        if len(self.pts) < 3:
            return False
        deltas = np.diff(np.asarray(self.pts, dtype=np.int64))
        median = float(np.median(deltas))
        if median <= 0:
            return False
        odd = np.abs(deltas - median) > max(0.1 * median, 1.0)
        return float(odd.mean()) > 0.02

    def indices_by_time(self, count: int) -> list[int]:
        """The frames on screen at the centres of `count` equal slices of the video's time:
        the time analogue of sample_indices (identical to it for a constant frame rate)."""
        pts = np.asarray(self.pts, dtype=np.float64)
        deltas = np.diff(pts)
        end = pts[-1] + (float(np.median(deltas)) if len(deltas) else 1.0)
        instants = pts[0] + (np.arange(count) + 0.5) * (end - pts[0]) / count
        return [int(np.searchsorted(pts, t, side="right") - 1) for t in instants]

    def seek_cost(self, wanted: list[int]) -> int:
        """Frames decoded when each wanted frame is reached from the keyframe before it (or by
        decoding on from the previous wanted frame when that is nearer)."""
        cost, position = 0, -1
        key_index = [int(np.searchsorted(self.pts, k)) for k in self.keyframes]
        for index in sorted(set(wanted)):
            before = [k for k in key_index if k <= index]
            start = before[-1] if before else 0
            start = position + 1 if start <= position else start
            cost += index - start + 1
            position = index
        return cost


def _timing(container, stream, keep_bytes: int = 0
            ) -> tuple[_Timing | None, list[av.Packet] | None]:
    """Timestamps and keyframes from one demux pass, for containers that can be trusted; and
    the packets themselves while they total at most `keep_bytes`, so that a short clip is
    decoded without reading the file a second time (None when they were more)."""
    if not any(name in _TIMED_FORMATS for name in container.format.name.split(",")):
        return None, None
    pts: list[int] = []
    keyframes: list[int] = []
    packets: list[av.Packet] | None = []
    total = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            if packets is not None:
                total += packet.size
                if total <= keep_bytes:
                    packets.append(packet)
                else:
                    packets = None
            if packet.pts is None:
                continue
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    except av.error.FFmpegError:
        return None, None  # damaged: the plain sequential path copes with what decodes
    if not pts or not stream.time_base:
        return None, None
    return _Timing(sorted(pts), sorted(keyframes), stream.time_base), packets


# Decoders checked to honour `skip_frame` set packet by packet (tests compare against full
# decodes): the non-reference frames that are not wanted are then not decoded at all. No other
# frame depends on them, so every frame that is decoded is bit-identical to a full decode's.
# On H.264 with B-frames this skips about 40% of the decoding. Other decoders (VP9 has no
# such frames; libdav1d reads the setting once, at opening) decode everything.
_SKIP_DECODERS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})


def _frames(codec, packets: Iterable[av.Packet], wanted_pts: set[int]
            ) -> Iterator[av.VideoFrame]:
    """Decoded frames of `packets` (demux order), then the decoder's delayed ones; unwanted
    non-reference frames are skipped where the decoder allows it (_SKIP_DECODERS)."""
    skipping = codec.name in _SKIP_DECODERS
    for packet in packets:
        if packet.size == 0:
            continue
        if skipping:
            codec.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
        yield from codec.decode(packet)
    if skipping:
        codec.skip_frame = "DEFAULT"
    yield from codec.decode(None)


def _decode_by_time(stream, packets: Iterable[av.Packet], timing: _Timing, wanted: list[int],
                    convert) -> dict[int, np.ndarray] | None:
    """The wanted frames (indices into timing.pts) of a whole-stream decode, found by their
    timestamps. None unless the decoder agrees with the demux pass: every frame has a known
    timestamp, in increasing order, none corrupt, every wanted one present; and, where no
    frame was skipped, as many frames as packets. The caller then decodes and counts. (Where
    frames are skipped, the count cannot be checked: a decoder that silently drops an
    unwanted frame of a damaged file, without flagging anything, goes unnoticed.)"""
    order = {t: i for i, t in enumerate(timing.pts)}
    want = {timing.pts[i]: i for i in wanted}
    codec = stream.codec_context
    kept: dict[int, np.ndarray] = {}
    last, count = -1, 0
    try:
        for frame in _frames(codec, packets, set(want)):
            index = order.get(frame.pts) if frame.pts is not None else None
            if index is None or index <= last or frame.is_corrupt:
                return None
            last, count = index, count + 1
            if frame.pts in want:
                kept[index] = convert(frame)
    except (av.error.FFmpegError, UnicodeDecodeError):
        return None
    if len(kept) != len(want):
        return None
    if codec.name not in _SKIP_DECODERS and count != len(timing.pts):
        return None
    return kept


def read_clip(path: str | os.PathLike, frames: FrameConfig = FrameConfig(),
              threads: int = 0, seek: bool = True) -> Clip:
    """Decode a video file and return its `frames.num_frames` evenly spaced frames.

    The result is exactly the frames at `sample_indices(decoded count)` of a full sequential
    decode in decoder output order, chosen as follows.
    - Containers with trustworthy timestamps (MP4, MKV, WebM, ...) get a demux pass first (no
      decoding): it gives the true frame count and the frame times, and keeps a short clip's
      packets for decoding. Variable frame rate video is then sampled evenly in time, not in
      frame index (`Clip.timing` says which was done). Wanted frames are found by their
      timestamps, and unwanted non-reference frames are not decoded (`_SKIP_DECODERS`). A
      long video whose wanted frames lie far apart is read by seeking to the keyframe before
      each wanted frame and decoding forward to it (`Clip.seeked`). Both give the same frames
      as a full sequential decode (tested); when the decoder disagrees with the demuxer, the
      plain counting decode below is used instead.
    - Others (AVI, raw streams): frames to keep are chosen from the header's frame count on the
      first pass; when the count of frames actually decoded differs (a lying header), a second
      pass takes the right ones.
    `threads=1` decodes on one thread (worker processes); 0 lets FFmpeg choose. Raises
    LrcnError naming the file and the cause.
    """
    path = Path(path)
    reformatter = _reformatter()

    def convert(frame: av.VideoFrame) -> np.ndarray:
        return _to_array(frame, frames, reformatter)

    timing_kind, seeked = "index", False
    wanted: list[int] = []
    kept: dict[int, np.ndarray] | None = None
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = _frame_rate(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        timing, packets = _timing(container, stream, KEEP_PACKET_BYTES)
        if timing is None:
            # One pass in this container, keeping the frames the header's count points at.
            guess = _header_frame_count(container, stream)
            _configure(stream, threads)
            first = set(sample_indices(guess, frames.num_frames)) if guess > 0 else set()
            count, kept = _decode_all(path, container, stream, first, convert, threads)
        else:
            guess = len(timing.pts)
            if timing.variable:
                wanted, timing_kind = timing.indices_by_time(frames.num_frames), "time"
            else:
                wanted = sample_indices(len(timing.pts), frames.num_frames)
            if seek and len(timing.pts) >= SEEK_MIN_FRAMES and len(timing.keyframes) > 1 \
                    and timing.seek_cost(wanted) < len(timing.pts) // 3:
                kept = _seek_frames(path, timing, wanted, convert, threads)
                seeked = kept is not None
            if kept is None and packets is not None:
                _configure(stream, threads)
                kept = _decode_by_time(stream, packets, timing, wanted, convert)
            del packets
    if timing is not None and kept is None:
        with _open(path) as container:
            stream = container.streams.video[0]
            _configure(stream, threads)
            kept = _decode_by_time(stream, container.demux(stream), timing, wanted, convert)
    if timing is not None and kept is not None:
        stacked = np.stack([kept[index] for index in wanted])
        return Clip(frames=stacked, indices=tuple(wanted), num_frames=len(timing.pts), fps=fps,
                    width=width, height=height, header_frames=guess, timing=timing_kind,
                    seeked=seeked)
    if timing is not None:
        # The decoder disagrees with the demuxer: count what actually decodes.
        with _open(path) as container:
            stream = container.streams.video[0]
            _configure(stream, threads)
            count, kept = _decode_all(path, container, stream, set(wanted), convert, threads)
    if count == 0:
        raise LrcnError("no video frames could be decoded", path)
    if timing is None or count != len(timing.pts):
        # No timestamps to go by, or the decoder disagrees with the demuxer: index sampling
        # over the frames actually decoded.
        timing_kind = "index"
        indices = sample_indices(count, frames.num_frames)
    else:
        indices = wanted
    if not set(indices) <= kept.keys():
        # The header lied about the length: decode again, now knowing the true count.
        with _open(path) as container:
            stream = container.streams.video[0]
            _configure(stream, threads)
            recount, kept = _decode_all(path, container, stream, set(indices), convert,
                                        threads)
        if recount != count or not set(indices) <= kept.keys():
            raise LrcnError("decoding is not repeatable (two passes disagree)", path)
    stacked = np.stack([kept[index] for index in indices])
    return Clip(frames=stacked, indices=tuple(indices), num_frames=count, fps=fps,
                width=width, height=height, header_frames=guess, timing=timing_kind)


def _seek_frames(path: Path, timing: _Timing, wanted: list[int], convert, threads: int
                 ) -> dict[int, np.ndarray] | None:
    """The wanted frames (by output index) by seeking to the keyframe before each and decoding
    forward until the frame with its timestamp (unwanted non-reference frames on the way are
    skipped, as in _decode_by_time). None when anything does not add up (a frame that should
    be there is not): the caller then decodes the whole stream."""
    kept: dict[int, np.ndarray] = {}
    wanted_pts = {timing.pts[i] for i in wanted}
    with _open(path) as container:
        stream = container.streams.video[0]
        _configure(stream, threads)
        decoded = None
        last = None                       # pts of the last frame decoded
        try:
            for index in sorted(set(wanted)):
                target = timing.pts[index]
                k = int(np.searchsorted(timing.keyframes, target, side="right")) - 1
                keyframe = timing.keyframes[max(k, 0)]
                if decoded is None or last is None or last >= target or keyframe > last:
                    container.seek(keyframe, stream=stream, backward=True, any_frame=False)
                    decoded = _frames(stream.codec_context, container.demux(stream),
                                      wanted_pts)
                for frame in decoded:
                    if frame.pts is None:
                        return None
                    last = frame.pts
                    if frame.pts == target:
                        if frame.is_corrupt:
                            return None
                        kept[index] = convert(frame)
                        break
                    if frame.pts > target:
                        return None
                else:
                    return None
        except av.error.FFmpegError:
            return None
    return kept


def _configure(stream, threads: int) -> None:
    stream.thread_type = "AUTO" if threads != 1 else "SLICE"
    if threads:
        stream.thread_count = threads


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    width: int
    height: int
    has_audio: bool


def iter_frames(path: str | os.PathLike, channel_order: str = "rgb"
                ) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """All frames of a video at full size, upright, as (H, W, 3) uint8 arrays, in decode order.
    For drawing annotations; the model's input always comes from `read_clip`. The info's width
    and height are those of the upright frames."""
    path = Path(path)
    container = _open(path)
    stream = container.streams.video[0]
    _configure(stream, 0)
    fmt = "rgb24" if channel_order == "rgb" else "bgr24"
    decoded = container.decode(stream)

    def upright(frame: av.VideoFrame) -> np.ndarray:
        return upright_image(frame, fmt)

    try:
        first = upright(next(decoded))
    except (StopIteration, av.error.FFmpegError):
        container.close()
        raise LrcnError("no video frames could be decoded", path) from None
    info = VideoInfo(fps=_frame_rate(stream) or 25.0, width=first.shape[1],
                     height=first.shape[0], has_audio=bool(container.streams.audio))

    def generate() -> Iterator[np.ndarray]:
        try:
            yield first
            for frame in decoded:
                if not frame.is_corrupt:
                    yield upright(frame)
        except av.error.FFmpegError:
            return  # a truncated file ends at its last good frame, as in read_clip
        finally:
            container.close()

    return info, generate()


_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}


class VideoWriter:
    """H.264 (yuv420p, +faststart) MP4 writer: plays in every web browser. PyAV's wheels carry
    libx264, so no system FFmpeg is needed."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float,
                 crf: int = 23, audio=None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # H.264 in yuv420p needs even dimensions; frames are padded by one pixel if needed.
        self.width, self.height = width + width % 2, height + height % 2
        self._tmp = self.path.with_name(f".{self.path.name}.partial{self.path.suffix}")
        self._container = av.open(str(self._tmp), mode="w", format="mp4",
                                  options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._audio, self._audio_copy = None, False
        if audio is not None:
            self._add_audio(audio)

    def _add_audio(self, source) -> None:
        """Keep a source's audio track: copied as is when MP4 can hold its codec, else
        re-encoded to AAC (e.g. the PCM audio of many AVIs)."""
        if source.codec_context.name in _MP4_AUDIO:
            try:
                self._audio = self._container.add_stream_from_template(source)
                self._audio_copy = True
                return
            except (av.error.FFmpegError, ValueError):
                pass
        self._audio = self._container.add_stream(
            "aac", rate=source.codec_context.sample_rate or 44100)

    def write_audio(self, packet: av.Packet) -> None:
        """Append one demuxed packet of the source's audio track."""
        if self._audio is None or packet.dts is None:
            return
        if self._audio_copy:
            packet.stream = self._audio
            self._container.mux(packet)
            return
        try:
            for frame in packet.decode():
                frame.pts = None  # the encoder counts samples itself
                for out in self._audio.encode(frame):
                    self._container.mux(out)
        except av.error.FFmpegError:
            pass  # a damaged audio packet costs that packet's sound, not the video

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if image.shape[0] != self.height or image.shape[1] != self.width:
            padded = np.zeros((self.height, self.width, 3), np.uint8)
            padded[:image.shape[0], :image.shape[1]] = image[:self.height, :self.width]
            image = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        if self._audio is not None and not self._audio_copy:
            for packet in self._audio.encode():
                self._container.mux(packet)
        self._container.close()
        os.replace(self._tmp, self.path)  # a reader never sees a half-written video
        return self.path

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()
            self._tmp.unlink(missing_ok=True)
