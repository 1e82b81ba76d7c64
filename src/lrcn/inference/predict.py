"""Prediction on new videos: video file -> frames (the same `read_clip` as training) -> engine ->
probabilities -> a printed/JSON result and, optionally, an annotated H.264 video.

No torch here: with an exported .onnx file, prediction runs where PyTorch is not installed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..media.annotate import Label, annotate_video
from ..media.clip import read_clip
from ..config import candidate_frames
from ..media.sampling import views
from .engine import Engine, load_engine
from ..errors import LrcnError
from .windows import name_of


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

    def as_label(self) -> Label:
        return Label(self.label, self.confidence, self.probabilities)


class Predictor:
    """Video files -> Predictions on an engine (engine.py); decoding is always `read_clip` with
    the model's frame settings."""

    def __init__(self, engine: Engine, reject_below: float = 0.0, views: int = 1):
        self.engine, self.reject_below, self.views = engine, reject_below, views
        self.names = engine.names
        self.frame_config = engine.frame_config

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", device: str = "auto",
             precision: str = "fp32", reject_below: float = 0.0,
             views: int = 1) -> "Predictor":
        """From a checkpoint file, a run folder or an exported .onnx file. `reject_below`:
        a clip whose most probable class is less probable than this is "unknown". `views`:
        the mean over that many temporal offsets of the clip's frames (multi-view testing)."""
        return cls(load_engine(path, backend, device, precision), reject_below, views)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 frames -> (classes,) or (B, classes)."""
        return self.engine.probabilities(frames)

    def predict_file(self, path: str | os.PathLike) -> Prediction:
        if self.views > 1:
            clip = read_clip(path, candidate_frames(self.frame_config, self.views))
            probs = self.probabilities(np.concatenate(views(clip.frames[None],
                                                            self.views))).mean(0)
        else:
            probs = self.probabilities(read_clip(path, self.frame_config).frames)
        top = int(probs.argmax())
        return Prediction(str(path), name_of(self.names, probs, self.reject_below),
                          float(probs[top]),
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


def format_prediction(prediction: Prediction) -> str:
    if prediction.error:
        return f"{prediction.error}"
    lines = [f"{prediction.path}: {prediction.label} ({prediction.confidence:.1%})"]
    for name, p in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<24} {p:7.2%}  {'#' * int(round(p * 30))}")
    return "\n".join(lines)


def annotate(video: str | os.PathLike, prediction: Prediction, out: str | os.PathLike) -> Path:
    """Write `video` with the prediction drawn on every frame, as browser-playable H.264 with
    the video's audio."""
    shown = prediction.as_label()
    return annotate_video(video, out, lambda t: shown)


__all__ = ["Prediction", "Predictor", "format_prediction", "annotate"]
