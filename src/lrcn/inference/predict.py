"""Classification, the one path every caller takes: frames (decoded by the checkpoint's frame
settings: `read_clip` for a file, `media.video.image_to_model_frame` for an image) -> the
engine's logits -> the temperature and the one softmax (calibrate.softmax) -> a `Prediction`.
`lrcn predict`, `lrcn evaluate`, the REST routes, the webcam, `lrcn stream` and timelines use
it; windowed paths score each window from frame features -> sequence logits -> the same softmax
(windows.window_probabilities), and name it with `prediction_of`.

No torch here: with an exported .onnx file, prediction runs where PyTorch is not installed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..media.annotate import Label, annotate_video
from ..media.clip import read_clip
from ..config import FrameConfig, candidate_frames
from ..media.sampling import views as split_views
from .calibrate import softmax
from .engine import Backend, Engine, load_engine
from ..errors import ErrorKind, LrcnError
from .windows import name_of


@dataclass
class Prediction:
    """A clip's (or a window's) answer. `label`: the most probable class, or "unknown" when
    its probability is below the predictor's reject_below (None only with an `error`);
    `probability`: the most probable class's; `probabilities`: per class, in the classes'
    order, or the k most probable, most probable first, when top_k was asked for. With an
    `error` (the one-line cause), `error_kind` is its ErrorKind's value ("not_found",
    "not_video", ...), so that callers decide by it, not by the message's text. `warning`:
    why the answer may be off though the file was read (a file cut short:
    media.clip.truncation), else None."""
    path: str | None = None
    label: str | None = None
    probability: float = 0.0
    probabilities: dict[str, float] | None = None
    error: str | None = None
    error_kind: str | None = None
    warning: str | None = None

    @classmethod
    def failed(cls, path: str | os.PathLike, error: LrcnError) -> "Prediction":
        """The entry for a clip that could not be classified."""
        return cls(str(path), error=str(error), error_kind=error.kind.value)

    def as_dict(self) -> dict:
        if self.error:
            return {"path": self.path, "error": self.error, "error_kind": self.error_kind}
        answer = {"path": self.path, "label": self.label, "probability": self.probability,
                  "probabilities": self.probabilities}
        return {**answer, "warning": self.warning} if self.warning else answer

    def as_label(self) -> Label:
        return Label(self.label, self.probability, self.probabilities)


def prediction_of(names: Sequence[str], probabilities: np.ndarray, reject_below: float = 0.0,
                  top_k: int | None = None, path: str | os.PathLike | None = None
                  ) -> Prediction:
    """(classes,) calibrated probabilities -> their Prediction. `top_k`: None for every class
    (in the classes' order), else the k most probable (most probable first)."""
    probabilities = np.asarray(probabilities)
    top = int(probabilities.argmax())
    if top_k is None:
        shown = range(len(names))
    else:
        if top_k < 1:
            raise LrcnError(f"top_k must be at least 1, not {top_k}", kind=ErrorKind.SETTING)
        shown = np.argsort(-probabilities, kind="stable")[:top_k]
    return Prediction(None if path is None else str(path),
                      name_of(names, probabilities, reject_below), float(probabilities[top]),
                      {names[int(i)]: float(probabilities[int(i)]) for i in shown})


class Predictor:
    """Clips -> Predictions on an engine (engine.py). Files are decoded by `read_clip` with the
    model's frame settings (`decode_frames`: with views, the candidate frames they are cut
    from)."""

    def __init__(self, engine: Engine, reject_below: float = 0.0, views: int = 1):
        if views < 1:
            raise LrcnError(f"views must be at least 1, not {views}", kind=ErrorKind.SETTING)
        self.engine, self.reject_below, self.views = engine, reject_below, views
        self.names = engine.names
        self.frame_config = engine.frame_config

    @classmethod
    def load(cls, path: str | os.PathLike, backend: Backend | str = Backend.AUTO,
             device: str = "auto", precision: str = "fp32", reject_below: float = 0.0,
             views: int = 1) -> "Predictor":
        """From a checkpoint file, a run folder or an exported .onnx file. `reject_below`:
        a clip whose most probable class is less probable than this is "unknown". `views`:
        the mean over that many temporal offsets of the clip's frames (multi-view testing)."""
        return cls(load_engine(path, backend, device, precision), reject_below, views)

    @property
    def decode_frames(self) -> FrameConfig:
        """The frames to decode a clip with: the model's, or with views the candidate frames
        the views are cut from."""
        if self.views > 1:
            return candidate_frames(self.frame_config, self.views)
        return self.frame_config

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 model frames -> (classes,) or (B, classes)
        calibrated probabilities: the engine's logits, the temperature, the one softmax."""
        return softmax(self.engine.logits(frames), self.engine.temperature)

    def clip_probabilities(self, frames: np.ndarray) -> np.ndarray:
        """One clip's frames as decoded with `decode_frames` -> (classes,) probabilities: with
        views, the mean of each view's."""
        if self.views > 1:
            return self.probabilities(np.concatenate(split_views(frames[None],
                                                                 self.views))).mean(0)
        return self.probabilities(frames)

    def predict_frames(self, frames: np.ndarray, path: str | os.PathLike | None = None,
                       top_k: int | None = None) -> Prediction:
        """One clip's frames as decoded with `decode_frames` -> its Prediction."""
        return prediction_of(self.names, self.clip_probabilities(frames), self.reject_below,
                             top_k, path)

    def predict_file(self, path: str | os.PathLike, top_k: int | None = None) -> Prediction:
        """A file's Prediction; one that looks cut short gets its `warning`."""
        clip = read_clip(path, self.decode_frames)
        prediction = self.predict_frames(clip.frames, path, top_k)
        prediction.warning = clip.truncated
        return prediction

    def predict_files(self, paths: Sequence[str | os.PathLike],
                      top_k: int | None = None) -> list[Prediction]:
        """One result per file; an unreadable file gives an error entry, not an exception."""
        results = []
        for path in paths:
            try:
                results.append(self.predict_file(path, top_k))
            except LrcnError as exc:
                results.append(Prediction.failed(path, exc))
        return results


def format_prediction(prediction: Prediction) -> str:
    if prediction.error:
        return f"{prediction.error}"
    lines = [f"{prediction.path}: {prediction.label} ({prediction.probability:.1%})"]
    for name, p in sorted(prediction.probabilities.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<24} {p:7.2%}  {'#' * int(round(p * 30))}")
    return "\n".join(lines)


def annotate(video: str | os.PathLike, prediction: Prediction, out: str | os.PathLike) -> Path:
    """Write `video` with the prediction drawn on every frame, as browser-playable H.264 with
    the video's audio."""
    shown = prediction.as_label()
    return annotate_video(video, out, lambda t: shown)


__all__ = ["Prediction", "Predictor", "prediction_of", "format_prediction", "annotate"]
