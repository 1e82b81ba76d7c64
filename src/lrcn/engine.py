"""Inference engines: what runs a trained LRCN on decoded frames, for predict, evaluate,
timelines and streams. A model is run split where the model itself splits, into per-frame CNN
features and the LSTM over a sequence of them: long videos need the split (each frame's
features are computed once and shared by every window that covers it, see windows.py); whole
clips go through both halves.

- OrtEngine runs on ONNX Runtime: from a checkpoint (both halves exported in memory, 0.3 s), or
  from an exported .onnx file (the whole classifier; no PyTorch needed). On a 2-core CPU it
  measured about 2x eager PyTorch at batch 64 and 0.6-0.7x its latency for one clip
  (bench/train_infer.py). It is the default when onnxruntime imports.
- TorchEngine runs the same model on PyTorch: the fallback, and the reference.
The two give the same numbers (within 1e-5, tested). Frames go in as uint8 (N, H, W, 3), as
decoded; the conversion to [0, 1] floats happens inside the engine (inside the ONNX graph for
ORT), so no float copy of a batch is made in Python.

This module imports neither torch nor the checkpoint code until a checkpoint is used, so that an
exported .onnx file predicts on a machine without PyTorch (tested with torch unimportable).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import FrameConfig, from_dict
from .errors import LrcnError
from .export import ONNX_FORMAT, ONNX_FORMAT_VERSION, feature_graph, sequence_graph

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

FRAMES_PER_CALL = 160       # CNN frames per engine call (8 clips)


class Engine:
    """features(uint8 frames) -> per-frame features; sequence(features) -> probabilities;
    probabilities(uint8 clips) -> probabilities."""
    backend: str
    names: list[str]
    frame_config: FrameConfig
    clip_seconds: float = 0.0   # the training clips' typical span, for windows (0: unknown)
    splits: bool = True         # runs the CNN and the LSTM separately (timelines, streams)

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 frames -> (N, F) float32 CNN features."""
        raise NotImplementedError

    def sequence(self, features: np.ndarray) -> np.ndarray:
        """(B, T, F) float32 features -> (B, classes) probabilities."""
        raise NotImplementedError

    def probabilities(self, clips: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 clips -> (classes,) or (B, classes)."""
        single = clips.ndim == 4
        batch = clips[None] if single else clips
        probs = self._clip_probabilities(batch)
        return probs[0] if single else probs

    def _clip_probabilities(self, batch: np.ndarray) -> np.ndarray:
        b, t = batch.shape[:2]
        frames = batch.reshape(b * t, *batch.shape[2:])
        # The CNN in slices of frames: memory stays bounded (the first layer's output is
        # 256 KB per frame) and the activations stay in cache, whatever the batch.
        feats = np.concatenate([self.features(frames[i:i + FRAMES_PER_CALL])
                                for i in range(0, len(frames), FRAMES_PER_CALL)])
        return self.sequence(feats.reshape(b, t, -1))


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint: Checkpoint, model=None):
        import torch
        from .model import FrameFeatures, SequenceProbabilities
        self._torch = torch
        self.model = (model or checkpoint.build_model()).eval()
        self.names = checkpoint.class_names
        self.frame_config = checkpoint.frame_config
        self.clip_seconds = checkpoint.clip_seconds
        self._features = FrameFeatures(self.model)
        self._sequence = SequenceProbabilities(self.model)

    def features(self, frames: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._features(self._torch.from_numpy(np.ascontiguousarray(frames))).numpy()

    def sequence(self, features: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
            return self._sequence(x).numpy()


def ort_session(model: bytes | str, threads: int = 0):
    """An ONNX Runtime session with lrcn's options, on the CPU."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # ORT's workers spin after each run by default, stealing the cores from whatever runs
    # next in this process (decoding, PyTorch, the next ORT call's own setup): measured as
    # a 2x slowdown of batch inference fed from the frame cache on 2 cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, names: list[str], frame_config: FrameConfig, clip_seconds: float = 0.0,
                 cnn=None, lstm=None, clip=None, clip_takes_float: bool = False):
        """Sessions for the two halves (`cnn`, `lstm`), or for the whole classifier (`clip`,
        from a file: it cannot be split, so it predicts clips only)."""
        self.names, self.frame_config, self.clip_seconds = names, frame_config, clip_seconds
        self._cnn, self._lstm, self._clip = cnn, lstm, clip
        self._clip_takes_float = clip_takes_float
        self.splits = cnn is not None and lstm is not None

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, threads: int = 0) -> "OrtEngine":
        return cls(checkpoint.class_names, checkpoint.frame_config, checkpoint.clip_seconds,
                   cnn=ort_session(feature_graph(checkpoint), threads),
                   lstm=ort_session(sequence_graph(checkpoint), threads))

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int = 0) -> "OrtEngine":
        """An exported .onnx file: the model, its classes and its preprocessing settings."""
        path = Path(path)
        if not path.is_file():
            raise LrcnError("no such ONNX model file", path)
        try:
            session = ort_session(str(path), threads)
        except ImportError:
            raise LrcnError("an ONNX model needs ONNX Runtime (pip install onnxruntime)",
                            path) from None
        except Exception as exc:  # ORT raises its own exception types
            raise LrcnError(f"not a loadable ONNX model ({str(exc).splitlines()[0]})",
                            path) from None
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("lrcn_format") != ONNX_FORMAT:
            raise LrcnError("an ONNX model without lrcn metadata (export it with "
                            "`lrcn export`)", path)
        version = int(meta.get("lrcn_format_version", "1"))
        if version > ONNX_FORMAT_VERSION:
            raise LrcnError(f"ONNX format version {version} is newer than this lrcn reads "
                            f"({ONNX_FORMAT_VERSION}): upgrade lrcn", path)
        inputs = session.get_inputs()
        if [i.name for i in inputs] != ["frames"]:
            raise LrcnError("the ONNX model does not take lrcn's 'frames' input", path)
        try:
            names = [str(n) for n in json.loads(meta["classes"])]
            frames = from_dict(FrameConfig, json.loads(meta["frames"]))
            info = json.loads(meta.get("info", "{}"))
            clip_seconds = float(meta.get("clip_seconds", info.get("clip_seconds", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise LrcnError(f"damaged lrcn metadata in the ONNX model ({exc})", path) from None
        return cls(names, frames, clip_seconds, clip=session,
                   clip_takes_float=inputs[0].type == "tensor(float)")

    def features(self, frames: np.ndarray) -> np.ndarray:
        self._need_split()
        return self._cnn.run(None, {"frames": np.ascontiguousarray(frames, dtype=np.uint8)})[0]

    def sequence(self, features: np.ndarray) -> np.ndarray:
        self._need_split()
        return self._lstm.run(None, {"features": np.ascontiguousarray(features,
                                                                      dtype=np.float32)})[0]

    def _clip_probabilities(self, batch: np.ndarray) -> np.ndarray:
        if self._clip is None:
            return super()._clip_probabilities(batch)
        if self._clip_takes_float:   # a file from before format 2
            batch = batch.astype(np.float32) / np.float32(255)
        else:
            batch = np.ascontiguousarray(batch, dtype=np.uint8)
        return self._clip.run(None, {"frames": batch})[0]

    def _need_split(self) -> None:
        if not self.splits:
            raise LrcnError("an exported ONNX file holds the whole classifier, which cannot "
                            "be split into per-frame features and the LSTM: long videos and "
                            "streams need the checkpoint")


def make_engine(checkpoint: Checkpoint, backend: str = "auto", warn=sys.stderr) -> Engine:
    """"auto": ONNX Runtime when it is installed and the export works, else PyTorch, saying why
    on `warn` (the results are the same; only the speed differs). "onnx" or "torch": that one,
    or an LrcnError."""
    if backend not in ("auto", "onnx", "torch"):
        raise LrcnError(f"unknown backend {backend!r} (auto, onnx or torch)")
    if backend == "torch":
        return TorchEngine(checkpoint)
    try:
        return OrtEngine.from_checkpoint(checkpoint)
    except ImportError as exc:
        cause = f"ONNX Runtime is not installed ({exc.name or exc})"
    except Exception as exc:  # an exporter or runtime that cannot take this model
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if backend == "onnx":
        raise LrcnError(f"--backend onnx failed: {cause}")
    if warn is not None:
        print(f"lrcn: note: running on PyTorch, not ONNX Runtime ({cause}); the results are "
              "the same, only slower", file=warn)
    engine = TorchEngine(checkpoint)
    engine.fallback_reason = cause
    return engine


def load_engine(path: str | os.PathLike, backend: str = "auto") -> Engine:
    """An engine for a checkpoint file, a run folder or an exported .onnx file."""
    if str(path).endswith(".onnx"):
        if backend == "torch":
            raise LrcnError("an ONNX model runs on ONNX Runtime only; for --backend torch, "
                            "pass the checkpoint", path)
        return OrtEngine.from_file(path)
    from .checkpoint import load_checkpoint
    return make_engine(load_checkpoint(path), backend)


__all__ = ["Engine", "TorchEngine", "OrtEngine", "make_engine", "load_engine", "ort_session"]
