"""Annotated videos: the source's frames at full size with the label, its confidence and the top
classes' bars drawn on, written as browser-playable H.264 with the source's audio kept. One
writer for every path: a clip's prediction, a long video's timeline, a live stream."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

import av
import cv2
import numpy as np

from ..errors import LrcnError
from .video import FrameSource, upright_image
from .writer import VideoWriter, check_annotated_target


class Label(NamedTuple):
    """What is drawn on a frame."""
    label: str
    confidence: float
    probabilities: dict[str, float]


def draw_label(image: np.ndarray, shown: Label, top_k: int = 3) -> np.ndarray:
    """Draw the label, its confidence and the top classes' bars on an RGB frame (in place)."""
    height, width = image.shape[:2]
    scale = max(0.6, min(width, height) / 300)
    thickness = max(1, int(round(scale * 2)))
    ranked = sorted(shown.probabilities.items(), key=lambda kv: -kv[1])[:top_k]
    line_h = int(28 * scale)
    box_h = line_h * (len(ranked) + 1) + int(10 * scale)
    box_w = min(width, int(330 * scale))
    overlay = image.copy()
    cv2.rectangle(overlay, (0, 0), (box_w, box_h), (0, 0, 0), -1)
    cv2.addWeighted(overlay, 0.55, image, 0.45, 0, dst=image)
    title = f"{shown.label} {shown.confidence:.0%}"
    cv2.putText(image, title, (int(8 * scale), line_h), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    bar_x, bar_w = int(8 * scale), box_w - int(16 * scale)
    for i, (name, p) in enumerate(ranked):
        y = line_h * (i + 2)
        cv2.rectangle(image, (bar_x, y - int(14 * scale)),
                      (bar_x + int(bar_w * p), y + int(4 * scale)),
                      (60, 200, 90) if i == 0 else (90, 140, 220), -1)
        cv2.putText(image, f"{name} {p:.0%}", (bar_x + 4, y), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * scale, (255, 255, 255), max(1, thickness - 1), cv2.LINE_AA)
    return image


class AnnotatedVideo:
    """Decoded frames in, each with the label to show (or None), annotated H.264 out. The
    writer opens at the first frame (its size is the upright frame's); audio packets demuxed
    before it are held until then. Written to a temporary name and renamed on close, so a
    reader never sees half a video; on an exception the partial file is removed."""

    def __init__(self, out: str | os.PathLike, fps: float, audio=None):
        self.out, self.fps, self.audio = Path(out), fps, audio
        self._writer: VideoWriter | None = None
        self._early_audio: list[av.Packet] = []
        self.frames = 0

    def add_frame(self, frame: av.VideoFrame, shown: Label | None) -> None:
        image = upright_image(frame)
        if self._writer is None:
            self._writer = VideoWriter(self.out, image.shape[1], image.shape[0], self.fps,
                                       audio=self.audio)
            for packet in self._early_audio:
                self._writer.write_audio(packet)
            self._early_audio.clear()
        self._writer.write(draw_label(image, shown) if shown is not None else image)
        self.frames += 1

    def add_audio(self, packet: av.Packet) -> None:
        if self._writer is None:
            self._early_audio.append(packet)
        else:
            self._writer.write_audio(packet)

    def close(self) -> Path | None:
        """The written file, or None when no frame came."""
        return self._writer.close() if self._writer is not None else None

    def __enter__(self) -> "AnnotatedVideo":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.__exit__(exc_type, exc, tb)


def annotate_video(video: str | os.PathLike, out: str | os.PathLike,
                   shown_at: Callable[[float], Label | None]) -> Path:
    """Write `video` with, on each frame, what `shown_at(time of the frame)` says."""
    check_annotated_target(out, video)
    with FrameSource.open(video) as source:
        with AnnotatedVideo(out, source.fps, audio=source.audio) as writer:
            for item in source.frames(on_audio=writer.add_audio):
                writer.add_frame(item.frame, shown_at(item.time))
            if not writer.frames:
                raise LrcnError("no video frames could be decoded", video)
    return Path(out)


__all__ = ["Label", "draw_label", "AnnotatedVideo", "annotate_video"]
