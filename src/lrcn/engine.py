"""Inference engines: a trained LRCN split where the model itself splits it, into per-frame CNN
features and the LSTM over a sequence of them.

The split is what long videos need (each frame's features are computed once and shared by every
window that covers it, see timeline.py); whole clips go through both halves. Two engines give
the same numbers (within 1e-5, tested):
- OrtEngine runs both halves on ONNX Runtime, exported in memory from the checkpoint (0.3 s).
  On a 2-core CPU it measured about 2x eager PyTorch at batch 64 and 0.6-0.7x its latency for
  one clip (bench/train_infer.py). It is the default when onnxruntime imports; if the export
  or the runtime fails for a model, the PyTorch engine is used instead (same results).
- TorchEngine runs the same model on PyTorch: the fallback, and the reference.
Frames go in as uint8 (N, H, W, 3), as decoded; the conversion to [0, 1] floats happens inside
the engine (inside the ONNX graph for ORT), so no float copy of a batch is made in Python.
"""
from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpoint
from .config import FrameConfig, ModelConfig
from .model import LRCN, clips_to_input

OPSET = 17
FRAMES_PER_CALL = 160       # CNN frames per engine call (8 clips)


class Engine:
    """features(uint8 frames) -> per-frame features; sequence(features) -> probabilities."""
    backend: str
    names: list[str]
    frame_config: FrameConfig
    model_config: ModelConfig

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
        b, t = batch.shape[:2]
        frames = batch.reshape(b * t, *batch.shape[2:])
        # The CNN in slices of frames: memory stays bounded (the first layer's output is
        # 256 KB per frame) and the activations stay in cache, whatever the batch.
        feats = np.concatenate([self.features(frames[i:i + FRAMES_PER_CALL])
                                for i in range(0, len(frames), FRAMES_PER_CALL)])
        probs = self.sequence(feats.reshape(b, t, -1))
        return probs[0] if single else probs


class _Features(nn.Module):
    def __init__(self, model: LRCN):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.frame_features(clips_to_input(frames))


class _Sequence(nn.Module):
    def __init__(self, model: LRCN):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.sequence_logits(features), dim=1)


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint: Checkpoint, model: LRCN | None = None):
        self.model = (model or checkpoint.build_model()).eval()
        self.names = checkpoint.class_names
        self.frame_config = checkpoint.frame_config
        self.model_config = checkpoint.model_config
        self._features, self._sequence = _Features(self.model), _Sequence(self.model)

    @torch.inference_mode()
    def features(self, frames: np.ndarray) -> np.ndarray:
        return self._features(torch.from_numpy(np.ascontiguousarray(frames))).numpy()

    @torch.inference_mode()
    def sequence(self, features: np.ndarray) -> np.ndarray:
        return self._sequence(torch.from_numpy(np.ascontiguousarray(features,
                                                                     dtype=np.float32))).numpy()


def _onnx_bytes(module: nn.Module, example: torch.Tensor, name: str, dynamic: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter's deprecation note and the LSTM batch-size warning (its initial
        # state is zeros made inside the graph) do not apply.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[name], output_names=["out"],
                          dynamic_axes={name: dynamic, "out": {0: "n"}})
    return buffer.getvalue()


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, checkpoint: Checkpoint, threads: int = 0):
        import onnxruntime as ort
        self.names = checkpoint.class_names
        self.frame_config = checkpoint.frame_config
        cfg = self.model_config = checkpoint.model_config
        # Exported from copies: tracing leaves the traced module computing wrong results in
        # the exporting process (seen with torch 2.13); the checkpoint's own model is untouched.
        model = checkpoint.build_model().eval()
        frames = torch.randint(0, 256, (2, cfg.height, cfg.width, cfg.channels),
                               dtype=torch.uint8)
        feature_size = int(np.prod(model.feature_shape))
        cnn = _onnx_bytes(_Features(copy.deepcopy(model)), frames, "frames", {0: "n"})
        lstm = _onnx_bytes(_Sequence(copy.deepcopy(model)),
                           torch.rand(2, cfg.num_frames, feature_size), "features",
                           {0: "n", 1: "steps"})
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # ORT's workers spin after each run by default, stealing the cores from whatever runs
        # next in this process (decoding, PyTorch, the next ORT call's own setup): measured as
        # a 2x slowdown of batch inference fed from the frame cache on 2 cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        self._cnn = ort.InferenceSession(cnn, options, providers=providers)
        self._lstm = ort.InferenceSession(lstm, options, providers=providers)

    def features(self, frames: np.ndarray) -> np.ndarray:
        return self._cnn.run(None, {"frames": np.ascontiguousarray(frames, dtype=np.uint8)})[0]

    def sequence(self, features: np.ndarray) -> np.ndarray:
        return self._lstm.run(None, {"features": np.ascontiguousarray(features,
                                                                      dtype=np.float32)})[0]


def make_engine(checkpoint: Checkpoint, backend: str = "auto") -> Engine:
    """"auto": ONNX Runtime when it is installed and the export works, else PyTorch."""
    if backend == "torch":
        return TorchEngine(checkpoint)
    try:
        return OrtEngine(checkpoint)
    except ImportError:
        if backend == "onnx":
            raise
    except Exception:  # an exporter or runtime that cannot take this model: PyTorch still can
        if backend == "onnx":
            raise
    return TorchEngine(checkpoint)


__all__ = ["Engine", "TorchEngine", "OrtEngine", "make_engine"]
