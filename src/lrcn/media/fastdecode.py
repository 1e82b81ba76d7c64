"""The fast decode paths behind `read_clip` (clip.py). Each returns exactly the frames that a
plain sequential decode returns (tested against full decodes), or None when the decoder does
not behave as the shortcut assumes, and the caller then decodes plainly:
- `decode_counting`: the plain decode, counting frames and keeping the wanted ones;
- `decode_mpeg4_skipping`: XviD/DivX (UCF's codec) without decoding the unkept B-frames;
- `read_timing` + `decode_by_time`: containers with trustworthy timestamps, wanted frames found
  by timestamp, unwanted non-reference frames not decoded;
- `seek_frames`: long videos, by seeking to the keyframe before each wanted frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from .sampling import frames_at, segment_instants
from .video import configure, decoded, frame_rate, is_timed, open_video

SEEK_MIN_FRAMES = 600       # shorter videos are always decoded whole (seeking does not pay)
KEEP_PACKET_BYTES = 32 << 20  # a clip's packets up to this size are kept from the demux pass


def header_frame_count(container, stream) -> int:
    """The container's claim of the frame count: only a hint for which frames to keep on the
    first pass (it is checked against the frames actually decoded)."""
    if stream.frames:
        return int(stream.frames)
    rate = frame_rate(stream, default=0.0)
    if stream.duration and stream.time_base and rate:
        return int(round(float(stream.duration * stream.time_base) * rate))
    if container.duration and rate:
        return int(round(container.duration / av.time_base * rate))
    return 0


def header_seconds(container, stream) -> float:
    """The duration the container states for the video (the stream's, else the file's), in
    seconds; 0.0 where it states none."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def decode_counting(container, stream, keep: set[int], convert
                    ) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the whole stream in output order; return the frame count and the kept frames
    (`video.decoded`: corrupt frames not counted, a broken stream ends at its last good frame,
    one that breaks before its first frame is an LrcnError)."""
    kept: dict[int, np.ndarray] = {}
    count = 0
    for frame in decoded(container.decode(stream), container.name):
        if count in keep:
            # Converted at once: holding decoded frames makes the decoder allocate anew.
            kept[count] = convert(frame)
        count += 1
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


def decode_mpeg4_skipping(container, stream, keep: set[int], convert
                  ) -> tuple[int, dict[int, np.ndarray]] | None:
    """`decode_counting` for MPEG-4 Part 2 (XviD/DivX, UCF's codec) on one thread, without decoding
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
    decodes everything with `decode_counting`."""
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


def decode_all(path: Path, container, stream, keep: set[int], convert, threads: int
                ) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the whole stream of a freshly opened container (configured for `threads`),
    skipping unkept B-frames where that is safe (`decode_mpeg4_skipping`)."""
    if threads == 1 and BitStreamFilterContext is not None \
            and stream.codec_context.name == "mpeg4":
        # One thread only: frame threading delays output and breaks the one-in-one-out model.
        result = decode_mpeg4_skipping(container, stream, keep, convert)
        if result is not None:
            return result
        with open_video(path) as fresh:
            stream = fresh.streams.video[0]
            configure(stream, threads)
            return decode_counting(fresh, stream, keep, convert)
    return decode_counting(container, stream, keep, convert)


@dataclass(frozen=True)
class Timing:
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

    @property
    def end(self) -> float:
        """Where the video ends (time_base units): the last frame's time plus the typical
        frame duration (1 unit for a single frame)."""
        deltas = np.diff(np.asarray(self.pts, dtype=np.float64))
        return self.pts[-1] + (float(np.median(deltas)) if len(deltas) else 1.0)

    @property
    def seconds(self) -> float:
        """The time the frames span, first frame to `end` (0.0 for a single frame)."""
        if len(self.pts) < 2:
            return 0.0
        return float((self.end - self.pts[0]) * self.time_base)

    def indices_by_time(self, count: int) -> list[int]:
        """The frames on screen at the centres of `count` equal slices of the video's time:
        the time analogue of sample_indices (identical to it for a constant frame rate)."""
        return frames_at(self.pts, segment_instants(self.pts[0], self.end, count))

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


def read_timing(container, stream, keep_bytes: int = 0
            ) -> tuple[Timing | None, list[av.Packet] | None]:
    """Timestamps and keyframes from one demux pass, for containers that can be trusted; and
    the packets themselves while they total at most `keep_bytes`, so that a short clip is
    decoded without reading the file a second time (None when they were more)."""
    if not is_timed(container):
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
    return Timing(sorted(pts), sorted(keyframes), stream.time_base), packets


# Decoders checked to honour `skip_frame` set packet by packet (tests compare against full
# decodes): the non-reference frames that are not wanted are then not decoded at all. No other
# frame depends on them, so every frame that is decoded is bit-identical to a full decode's.
# On H.264 with B-frames this skips about 40% of the decoding. Other decoders (VP9 has no
# such frames; libdav1d reads the setting once, at opening) decode everything.
SKIP_DECODERS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})


def decode_skipping(codec, packets: Iterable[av.Packet], wanted_pts: set[int]
            ) -> Iterator[av.VideoFrame]:
    """Decoded frames of `packets` (demux order), then the decoder's delayed ones; unwanted
    non-reference frames are skipped where the decoder allows it (SKIP_DECODERS)."""
    skipping = codec.name in SKIP_DECODERS
    for packet in packets:
        if packet.size == 0:
            continue
        if skipping:
            codec.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
        yield from codec.decode(packet)
    if skipping:
        codec.skip_frame = "DEFAULT"
    yield from codec.decode(None)


def decode_by_time(stream, packets: Iterable[av.Packet], timing: Timing, wanted: list[int],
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
        for frame in decode_skipping(codec, packets, set(want)):
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
    if codec.name not in SKIP_DECODERS and count != len(timing.pts):
        return None
    return kept


def seek_frames(path: Path, timing: Timing, wanted: list[int], convert, threads: int
                 ) -> dict[int, np.ndarray] | None:
    """The wanted frames (by output index) by seeking to the keyframe before each and decoding
    forward until the frame with its timestamp (unwanted non-reference frames on the way are
    skipped, as in decode_by_time). None when anything does not add up (a frame that should
    be there is not): the caller then decodes the whole stream."""
    kept: dict[int, np.ndarray] = {}
    wanted_pts = {timing.pts[i] for i in wanted}
    with open_video(path) as container:
        stream = container.streams.video[0]
        configure(stream, threads)
        frames = None
        last = None                       # pts of the last frame decoded
        try:
            for index in sorted(set(wanted)):
                target = timing.pts[index]
                k = int(np.searchsorted(timing.keyframes, target, side="right")) - 1
                keyframe = timing.keyframes[max(k, 0)]
                if frames is None or last is None or last >= target or keyframe > last:
                    container.seek(keyframe, stream=stream, backward=True, any_frame=False)
                    frames = decode_skipping(stream.codec_context, container.demux(stream),
                                      wanted_pts)
                for frame in frames:
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
