"""Prediction on new videos: video file -> frames (the same `read_clip` as training) -> model ->
probabilities -> a printed/JSON result and, optionally, an annotated H.264 video."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .checkpoint import Checkpoint
from .config import FrameConfig
from .errors import LrcnError
from .video import VideoWriter, iter_frames, read_clip


@dataclass
class Prediction:
    path: str
    label: str | None = None
    confidence: float = 0.0
    probabilities: dict[str, float] | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "label": self.label, "confidence": self.confidence,
                "probabilities": self.probabilities}


class Classifier:
    """Video files -> Predictions, for any backend that provides `names`, `frame_config` and
    `probabilities(uint8 frames)`; decoding is always `read_clip` with the model's settings."""
    names: list[str]
    frame_config: FrameConfig

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        clip = read_clip(path, self.frame_config)
        probs = self.probabilities(clip.frames)
        top = int(probs.argmax())
        return Prediction(str(path), self.names[top], float(probs[top]),
                          {name: float(p) for name, p in zip(self.names, probs)})

    def predict_files(self, paths: Sequence[str | os.PathLike]) -> list[Prediction]:
        """One result per file; an unreadable file gives an error entry, not an exception."""
        results = []
        for path in paths:
            try:
                results.append(self.predict_file(path))
            except LrcnError as exc:
                results.append(Prediction(str(path), error=str(exc)))
        return results


class Predictor(Classifier):
    """A checkpoint's model and preprocessing, on the fastest engine available (engine.py):
    ONNX Runtime when installed, else PyTorch; `backend` picks one."""

    def __init__(self, checkpoint: Checkpoint, backend: str = "auto"):
        from .engine import make_engine
        self.checkpoint = checkpoint
        self.engine = make_engine(checkpoint, backend)
        self.names = checkpoint.class_names
        self.frame_config = checkpoint.frame_config

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 frames -> (classes,) or (B, classes)."""
        return self.engine.probabilities(frames)


def format_prediction(prediction: Prediction) -> str:
    if prediction.error:
        return f"{prediction.error}"
    lines = [f"{prediction.path}: {prediction.label} ({prediction.confidence:.1%})"]
    for name, p in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<24} {p:7.2%}  {'#' * int(round(p * 30))}")
    return "\n".join(lines)


def draw_label(image: np.ndarray, prediction: Prediction, top_k: int = 3) -> np.ndarray:
    """Draw the label, its confidence and the top classes' bars on an RGB frame (in place)."""
    height, width = image.shape[:2]
    scale = max(0.6, min(width, height) / 300)
    thickness = max(1, int(round(scale * 2)))
    ranked = sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])[:top_k]
    line_h = int(28 * scale)
    box_h = line_h * (len(ranked) + 1) + int(10 * scale)
    box_w = min(width, int(330 * scale))
    overlay = image.copy()
    cv2.rectangle(overlay, (0, 0), (box_w, box_h), (0, 0, 0), -1)
    cv2.addWeighted(overlay, 0.55, image, 0.45, 0, dst=image)
    title = f"{prediction.label} {prediction.confidence:.0%}"
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


def annotate(video: str | os.PathLike, prediction: Prediction, out: str | os.PathLike) -> Path:
    """Write `video` with the prediction drawn on every frame, as browser-playable H.264."""
    info, frames = iter_frames(video)
    with VideoWriter(out, info.width, info.height, info.fps) as writer:
        for image in frames:
            writer.write(draw_label(image, prediction))
    return Path(out)
