"""Video file -> the model's clip: `num_frames` frames evenly spaced over the whole video, as
uint8, by `read_clip`, the one function that training (through the frame cache), evaluation and
prediction all use.

The frames are exactly those at `sample_indices(decoded count)` of a full sequential decode in
output order (video.py), whatever shortcut fastdecode.py takes to get them. The container's frame
count is never trusted (it is wrong on some real UCF files), and neither is seeking by frame
index (the tutorial's OpenCV way), which is both slower on short clips and wrong on such files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..config import FrameConfig
from ..errors import LrcnError
from .fastdecode import (KEEP_PACKET_BYTES, SEEK_MIN_FRAMES, Timing, decode_all,
                         decode_by_time, header_frame_count, header_seconds, read_timing,
                         seek_frames)
from .sampling import sample_indices
from .video import configure, frame_rate, open_video, thread_reformatter, to_model_frame

# A file whose decoder gives fewer than this share of the frames its container claims was cut
# short (an interrupted download or copy) or is damaged. It is still sampled from what
# decodes, but every caller says so (check, train, predict, the API). Honest headers are exact
# on the real UCF clips here (49 XviD AVIs and 77 H.264 MP4s: decoded = claimed), and the
# README's "lying" AVI headers are off by a frame or two, far above this.
TRUNCATED_BELOW = 0.8


def truncation(decoded: int, claimed: int) -> str | None:
    """The one truncation rule: the cause when `decoded` frames fall well short of the
    `claimed` count (the container's header: a frame count, or its duration times the frame
    rate; 0 where it states neither, as raw streams and MPEG-TS), else None."""
    if claimed > 0 and decoded < TRUNCATED_BELOW * claimed:
        return (f"header claims {claimed} frames, {decoded} decoded ({decoded / claimed:.0%}): "
                "cut short or damaged, so only its start is seen")
    return None


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

    @property
    def truncated(self) -> str | None:
        """Why this clip looks cut short (`truncation`), or None."""
        return truncation(self.num_frames, self.header_frames)


def claimed_frames(container, stream, timing: Timing | None) -> int:
    """The frame count the container claims (0: it claims none). Its own count where it has
    one (MP4, AVI); a container with timestamps that states only a duration (MKV, WebM) has
    that duration counted at the spacing of the frames actually there, because a stated frame
    rate is a guess on variable-frame-rate files (1000 fps for an MKV of 100 fps bursts)."""
    if stream.frames or timing is None:
        return header_frame_count(container, stream)
    return _stated_count(container, stream, len(timing.pts), timing.seconds)


def _stated_count(container, stream, count: int, span: float) -> int:
    """The stated duration counted at the spacing of `count` frames over `span` seconds."""
    seconds = header_seconds(container, stream)
    return round(count * seconds / span) if seconds > 0 and span > 0 else 0


def source_claimed_frames(source) -> int:
    """claimed_frames for a video.FrameSource once its frames are read (timelines, streams)."""
    stream = source.stream
    if stream.frames or not source.timed:
        return int(stream.frames or 0)
    return _stated_count(source.container, stream, source.count, source.end_time)


def read_clip(path: str | os.PathLike, frames: FrameConfig = FrameConfig(),
              threads: int = 0, seek: bool = True) -> Clip:
    """Decode a video file and return its `frames.num_frames` evenly spaced frames.

    The result is exactly the frames at `sample_indices(decoded count)` of a full sequential
    decode in decoder output order, chosen as follows.
    - Containers with trustworthy timestamps (MP4, MKV, WebM, ...) get a demux pass first (no
      decoding): it gives the true frame count and the frame times, and keeps a short clip's
      packets for decoding. Variable frame rate video is then sampled evenly in time, not in
      frame index (`Clip.timing` says which was done). Wanted frames are found by their
      timestamps, and unwanted non-reference frames are not decoded (`fastdecode.SKIP_DECODERS`). A
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
    reformatter = thread_reformatter()

    def convert(frame: av.VideoFrame) -> np.ndarray:
        return to_model_frame(frame, frames, reformatter)

    timing_kind, seeked = "index", False
    wanted: list[int] = []
    kept: dict[int, np.ndarray] | None = None
    with open_video(path) as container:
        stream = container.streams.video[0]
        fps = frame_rate(stream, default=0.0)
        width, height = stream.codec_context.width, stream.codec_context.height
        timing, packets = read_timing(container, stream, KEEP_PACKET_BYTES)
        # The container's claim: a hint for which frames to keep on a first pass, and what
        # the frames decoded are held against (`truncation`).
        claimed = claimed_frames(container, stream, timing)
        if timing is None:
            # One pass in this container, keeping the frames the header's count points at.
            configure(stream, threads)
            first = set(sample_indices(claimed, frames.num_frames)) if claimed > 0 else set()
            count, kept = decode_all(path, container, stream, first, convert, threads)
        else:
            if timing.variable:
                wanted, timing_kind = timing.indices_by_time(frames.num_frames), "time"
            else:
                wanted = sample_indices(len(timing.pts), frames.num_frames)
            if seek and len(timing.pts) >= SEEK_MIN_FRAMES and len(timing.keyframes) > 1 \
                    and timing.seek_cost(wanted) < len(timing.pts) // 3:
                kept = seek_frames(path, timing, wanted, convert, threads)
                seeked = kept is not None
            if kept is None and packets is not None:
                configure(stream, threads)
                kept = decode_by_time(stream, packets, timing, wanted, convert)
            del packets
    if timing is not None and kept is None:
        with open_video(path) as container:
            stream = container.streams.video[0]
            configure(stream, threads)
            kept = decode_by_time(stream, container.demux(stream), timing, wanted, convert)
    if timing is not None and kept is not None:
        stacked = np.stack([kept[index] for index in wanted])
        return Clip(frames=stacked, indices=tuple(wanted), num_frames=len(timing.pts), fps=fps,
                    width=width, height=height, header_frames=claimed, timing=timing_kind,
                    seeked=seeked)
    if timing is not None:
        # The decoder disagrees with the demuxer: count what actually decodes.
        with open_video(path) as container:
            stream = container.streams.video[0]
            configure(stream, threads)
            count, kept = decode_all(path, container, stream, set(wanted), convert, threads)
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
        with open_video(path) as container:
            stream = container.streams.video[0]
            configure(stream, threads)
            recount, kept = decode_all(path, container, stream, set(indices), convert,
                                        threads)
        if recount != count or not set(indices) <= kept.keys():
            raise LrcnError("decoding is not repeatable (two passes disagree)", path)
    stacked = np.stack([kept[index] for index in indices])
    return Clip(frames=stacked, indices=tuple(indices), num_frames=count, fps=fps,
                width=width, height=height, header_frames=claimed, timing=timing_kind)


def read_clip_task(task: tuple[str, dict]) -> dict:
    """For a worker process (workers.WorkerPool): (path, FrameConfig as a dict) -> the clip's
    frames and facts ("truncated": the cause when it looks cut short, else None), or
    {"error": the one-line cause, "kind": its ErrorKind's value} for a file that is not a
    usable video."""
    path, frames = task
    try:
        clip = read_clip(path, FrameConfig(**frames), threads=1)
    except LrcnError as exc:
        return {"error": exc.reason, "kind": exc.kind.value}
    return {"frames": clip.frames, "indices": list(clip.indices), "num_frames": clip.num_frames,
            "fps": clip.fps, "width": clip.width, "height": clip.height, "timing": clip.timing,
            "truncated": clip.truncated}


__all__ = ["Clip", "TRUNCATED_BELOW", "read_clip", "read_clip_task", "source_claimed_frames",
           "truncation"]
