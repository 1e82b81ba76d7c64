"""The video writer: annotated H.264 MP4s that play in every web browser, with the source's
audio, and the synthetic data set's XviD AVIs (UCF's codec). PyAV's wheels carry libx264, so
no system FFmpeg is needed."""
from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import ErrorKind, LrcnError
from ..files import atomic_path
from .video import one_thread

_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}
# What the writer makes, by suffix (a .gif or .webm named file would hold an MP4 stream).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi")


def check_video_suffix(path: str | os.PathLike) -> Path:
    """`path` if the writer can make a video of its suffix, else a one-line LrcnError (checked
    before the work: --annotate out.gif is refused before the video is read)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise LrcnError(f"cannot write {path.suffix or 'a file without a suffix'}: videos are "
                        "written as H.264 MP4 (name it .mp4, .m4v or .mov) or XviD AVI (.avi)",
                        path, ErrorKind.SETTING)
    return path


def check_annotated_target(path: str | os.PathLike, video) -> Path:
    """`path` as check_video_suffix checks it, and not the file `video` itself: the annotated
    copy is written to a temporary name and renamed over `path` at the end, so naming the
    input would replace the user's video with its annotated re-encode. (A camera index or a
    URL is no file, and passes.)"""
    path = check_video_suffix(path)
    if isinstance(video, (str, os.PathLike)):
        try:
            same = os.path.samefile(path, video)
        except (OSError, ValueError):      # either is not there (yet), or not a path at all
            same = False
        if same:
            raise LrcnError("is the video being read: the annotated video would replace it; "
                            "give it another name", path, ErrorKind.SETTING)
    return path


class VideoWriter:
    """By the file's suffix: H.264 (yuv420p, +faststart) MP4, which plays in every web browser,
    or for ".avi" XviD-tagged MPEG-4 Part 2 at `bit_rate` (as UCF ships its videos). Written to
    a temporary sibling that replaces `path` on close (files.atomic_path), so a reader never
    sees half a video; on an exception inside a `with` block the temporary is removed.
    `repeatable`: H.264 whose bytes depend on the frames alone (the synthetic data set)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float,
                 crf: int = 23, audio=None, preset: str = "veryfast",
                 bit_rate: int = 1_200_000, repeatable: bool = False):
        self.path = check_video_suffix(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # yuv420p needs even dimensions; frames are padded by one pixel if needed.
        self.width, self.height = width + width % 2, height + height % 2
        self._target = contextlib.ExitStack()
        self._tmp = self._target.enter_context(atomic_path(self.path))
        avi = self.path.suffix.lower() == ".avi"
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        try:
            if avi:
                self._container = av.open(str(self._tmp), mode="w", format="avi")
                self._stream = self._container.add_stream("mpeg4", rate=rate)
                self._stream.codec_context.codec_tag = "XVID"
                self._stream.bit_rate = bit_rate
            else:
                self._container = av.open(str(self._tmp), mode="w", format="mp4",
                                          options={"movflags": "+faststart"})
                self._stream = self._container.add_stream("libx264", rate=rate)
                self._stream.options = {"crf": str(crf), "preset": preset}
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = "yuv420p"
            if repeatable and not avi:
                # The same frames, the same bytes (a data set that must repeat: issue 20).
                # libx264's macroblock-tree rate control reads memory it has not written:
                # 10 encodes of the same frames in one process gave 5 different files (96x72,
                # crf 20, one thread), and with mbtree=0 one. One thread besides, so that
                # nothing depends on scheduling.
                self._stream.options = {**self._stream.options, "threads": "1",
                                        "x264-params": "mbtree=0:threads=1"}
            self._audio, self._audio_copy = None, False
            if audio is not None:
                self._add_audio(audio)
        except BaseException as exc:
            self._abort(exc)
            raise

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
        # The colour conversion here, on one thread, not inside encode(): PyAV's own runs
        # swscale with a thread per core, and its output was seen to differ between runs of
        # the same frames (issue 20); one thread is also faster at these sizes.
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format="yuv420p", **one_thread())
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> Path:
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            if self._audio is not None and not self._audio_copy:
                for packet in self._audio.encode():
                    self._container.mux(packet)
            self._container.close()
        except BaseException as exc:
            self._abort(exc)
            raise
        self._target.close()   # the finished file replaces the target
        return self.path

    def _abort(self, exc: BaseException) -> None:
        """Close what is open and remove the temporary; the target stays as it was."""
        container = getattr(self, "_container", None)
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        self._target.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)


__all__ = ["check_annotated_target", "VideoWriter"]
