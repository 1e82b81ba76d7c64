"""The H.264 writer: annotated videos that play in every web browser, with the source's audio.
PyAV's wheels carry libx264, so no system FFmpeg is needed."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

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


__all__ = ["VideoWriter"]
