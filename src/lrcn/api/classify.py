"""Classifying with a trained model: `lrcn.load` and the Classifier it returns, the API's
`lrcn predict` and `lrcn predict --timeline`.

Frames that are not a file (an array, an iterable of frames, a cv2.VideoCapture) are sampled
exactly as a file is (`sample_indices` over all of them: the frames evenly spaced over the
whole video, a short input padded by repeats) and scaled by the checkpoint's frame settings
(`image_to_model_frame`), then classified as a file's frames are."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import ErrorKind, LrcnError, real_number, whole_number

if TYPE_CHECKING:                      # annotations only: these import numpy, av, torch
    import numpy as np
    from ..config import FrameConfig
    from ..inference.predict import Prediction, Predictor
    from ..inference.timeline import Timeline

PathLike = str | os.PathLike


def _setting(message: str) -> LrcnError:
    return LrcnError(message, kind=ErrorKind.SETTING)


class Classifier:
    """A trained model ready to classify videos: `lrcn.load(path)` makes one. Holds the
    checkpoint's classes and frame settings; every input is decoded and scaled with them."""

    def __init__(self, predictor: Predictor, source: Path):
        self._predictor = predictor
        self.source = source                       # the file or folder it was loaded from
        self.reject_below = predictor.reject_below

    @property
    def classes(self) -> list[str]:
        """The class names, in the model's output order."""
        return list(self._predictor.names)

    @property
    def frame_config(self) -> FrameConfig:
        """How a video becomes the model's input (frames, size, channel order, resize)."""
        return self._predictor.frame_config

    @property
    def engine(self):
        """The inference engine underneath (engine.Engine: logits from frames or features),
        for lower-level use; `engine.splits` says whether it can run timelines and streams."""
        return self._predictor.engine

    @property
    def backend(self) -> str:
        """What runs the model: the engine's backend (ONNX Runtime or PyTorch)."""
        return self._predictor.engine.backend

    def __repr__(self) -> str:
        return f"lrcn.Classifier({str(self.source)!r}, classes={self.classes}, " \
               f"backend={self.backend!r})"

    def predict(self, video: PathLike | np.ndarray | Iterable[np.ndarray] | Any, *,
                top_k: int | None = None, views: int = 1, channels: str = "rgb"
                ) -> Prediction:
        """Classify one video, as `lrcn predict` does.

        video: a video file's path; a uint8 array (T, H, W, 3); an iterable of (H, W, 3)
            uint8 frames; or an open cv2.VideoCapture, read from where it stands to its end
            (its frames are BGR whatever `channels` says). A live camera never ends: use
            `lrcn stream` for that.
        top_k: keep only the k most probable classes in `probabilities`, most probable first
            (default: every class, in the model's order).
        views: average this many temporal offsets of the clip's frames (multi-view testing).
        channels: the channel order of an array's or an iterable's frames, "rgb" or "bgr"
            (OpenCV's).
        """
        views = whole_number("views", views)
        if top_k is not None:
            top_k = whole_number("top_k", top_k)
        predictor = _predictor_with_views(self._predictor, views)
        if isinstance(video, (str, os.PathLike)):
            return predictor.predict_file(video, top_k)
        frames, name = model_frames(video, predictor.decode_frames, channels)
        return predictor.predict_frames(frames, name, top_k)

    def predict_many(self, videos: Iterable[PathLike | np.ndarray | Any], *,
                     top_k: int | None = None, views: int = 1, channels: str = "rgb"
                     ) -> list[Prediction]:
        """`predict` for each video. A file that cannot be read gives a Prediction whose
        `error` says why (as `lrcn predict` reports it), not an exception; a wrong setting or
        array still raises."""
        if isinstance(videos, (str, bytes, os.PathLike)):   # it would iterate its letters
            raise _setting(f"videos must be a list of videos, not one path ({str(videos)!r}): "
                           "predict() takes one")
        results = []
        for video in videos:
            try:
                results.append(self.predict(video, top_k=top_k, views=views,
                                            channels=channels))
            except LrcnError as exc:
                if exc.kind is ErrorKind.SETTING or not isinstance(video, (str, os.PathLike)):
                    raise
                results.append(_failed(video, exc))
        return results

    def timeline(self, video: PathLike, *, span: float | None = None,
                 stride: float | None = None, smooth: int | None = None,
                 out: PathLike | None = None, annotate: PathLike | None = None) -> Timeline:
        """Label a long video over time, as `lrcn predict --timeline` does: windows of `span`
        seconds (default: the checkpoint's typical training clip) every `stride` seconds
        (default: a quarter span), averaged over `smooth` windows (default 3), merged into
        segments.

        out: a folder for timeline.json, segments.csv, windows.csv and timeline.png.
        annotate: an H.264 MP4 to write with the label drawn on every frame.
        The files written are in the timeline's `files` (keys json, segments, windows, plot,
        video).
        Needs a video file's path (it is opened more than once) and a checkpoint
        (an exported .onnx file cannot be split into per-frame features and the LSTM)."""
        if not isinstance(video, (str, os.PathLike)):
            raise _setting(f"a timeline needs a video file's path, not {type(video).__name__}:"
                           " it opens the file more than once (to choose its decoding threads, "
                           "and again where the header overstates the length); write the bytes"
                           " to a file first")
        from ..inference.windows import WindowConfig
        span = None if span is None else real_number("span", span)
        stride = None if stride is None else real_number("stride", stride)
        smooth = None if smooth is None else whole_number("smooth", smooth)
        try:
            given = {"span": span, "stride": stride, "smooth": smooth}
            config = WindowConfig(**{k: v for k, v in given.items() if v is not None},
                                  reject_below=self.reject_below)
        except ValueError as exc:
            raise _setting(str(exc)) from None
        return _timeline(self._predictor.engine, video, config, out, annotate)


def load(path: PathLike, *, backend: str = "auto", device: str = "auto",
         precision: str = "fp32", reject_below: float = 0.0) -> Classifier:
    """A Classifier from a checkpoint file, a run folder or an exported .onnx file.

    backend: "auto" (ONNX Runtime when it can run the model, else PyTorch), "onnx" or "torch".
    device: "auto" (a GPU when there is one), "cpu", "cuda", "cuda:N" or "mps".
    precision: "fp32", or "bf16"/"fp16" under PyTorch's autocast, or "int8" (the CNN
        quantized on ONNX Runtime, calibrated on the run's validation clips; CPU).
    reject_below: a clip whose most probable class is less probable than this is labelled
        "unknown" (a model knows only its classes); 0 always names a class.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise _setting(f"load takes a checkpoint file, a run folder or an .onnx file's path, "
                       f"not {type(path).__name__}")
    if not 0 <= real_number("reject_below", reject_below) < 1:
        raise _setting(f"reject_below must be in [0, 1), not {reject_below}")
    return Classifier(_load_predictor(path, backend, device, precision, reject_below),
                      Path(path))


def model_frames(video: np.ndarray | Iterable[np.ndarray] | Any, frames: FrameConfig,
                 channels: str = "rgb") -> tuple[np.ndarray, str]:
    """Frames that are not a file -> the (frames.num_frames, H, W, 3) uint8 model input,
    sampled as `read_clip` samples a file, and the name a Prediction gives them.

    The result is close to the file's, not bit-identical: a decoded frame is converted from
    YUV at the model's size, an RGB image (already converted at full size) is only resized,
    so chroma rounds differently by a few levels."""
    import numpy as np
    from ..media.sampling import sample_indices
    if channels not in ("rgb", "bgr"):
        raise _setting(f"channels must be 'rgb' or 'bgr', not {channels!r}")
    cv2 = sys.modules.get("cv2")       # a capture was made by OpenCV, so it is imported
    if cv2 is not None and isinstance(video, cv2.VideoCapture):
        if not video.isOpened():
            raise LrcnError("the cv2.VideoCapture is not open (no such file or camera?)",
                            kind=ErrorKind.NOT_FOUND)
        images, name, channels = _capture_images(video), "<cv2.VideoCapture>", "bgr"
    elif isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 \
                or 0 in video.shape:
            raise _setting(f"a video array must be (T, H, W, 3) uint8 with T, H, W >= 1, not "
                           f"{video.dtype} {tuple(video.shape)}")
        # Only the sampled frames are scaled: the count is known beforehand.
        picked = sample_indices(len(video), frames.num_frames)
        return np.stack(_scaled(video[picked], frames, channels)), "<array>"
    elif isinstance(video, (bytes, dict)) or not isinstance(video, Iterable):
        raise _setting(f"a video is a path, a (T, H, W, 3) uint8 array, an iterable of "
                       f"frames or a cv2.VideoCapture, not {type(video).__name__}")
    else:
        images, name = video, "<frames>"
    # The count is known only at the end: every frame is scaled as it comes (model-sized
    # frames are small), then the same frames a file of this length gives are taken.
    scaled = _scaled(images, frames, channels)
    if not scaled:
        raise _setting(f"{name}: no frames")
    return np.stack([scaled[i] for i in sample_indices(len(scaled), frames.num_frames)]), name


def _capture_images(capture) -> Iterable[np.ndarray]:
    while True:
        ok, image = capture.read()
        if not ok:
            return
        yield image


def _scaled(images: Iterable[np.ndarray], frames: FrameConfig, channels: str
            ) -> list[np.ndarray]:
    from ..media.video import image_to_model_frame
    scaled = []
    for index, image in enumerate(images):
        try:
            scaled.append(image_to_model_frame(image, frames, channels))
        except LrcnError as exc:
            raise LrcnError(f"frame {index}: {exc.reason}", kind=exc.kind) from None
    return scaled


# Each library entry point that prediction uses is called from exactly one function below, so
# that a change of its signature is one edit here.

def _load_predictor(path: PathLike, backend: str, device: str, precision: str,
                    reject_below: float) -> Predictor:
    from ..inference.predict import Predictor
    return Predictor.load(path, backend, device, precision, reject_below)


def _predictor_with_views(predictor: Predictor, views: int) -> Predictor:
    """The same engine, averaging `views` temporal offsets (no reloading)."""
    from ..inference.predict import Predictor
    return Predictor(predictor.engine, predictor.reject_below, views)


def _failed(video: PathLike, exc: LrcnError) -> Prediction:
    from ..inference.predict import Prediction
    return Prediction.failed(video, exc)


def _timeline(engine, video: PathLike, config, out: PathLike | None,
              annotate: PathLike | None) -> Timeline:
    from ..inference.timeline import timeline_outputs
    return timeline_outputs(engine, video, config, out, annotate)


__all__ = ["Classifier", "load", "model_frames"]
