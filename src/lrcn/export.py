"""ONNX export and an ONNX Runtime predictor, so lrcn models run where PyTorch is not installed.

The ONNX graph takes `frames`, float32 (batch, T, H, W, 3) in [0, 1] (the seed's Keras layout,
channels in the order the checkpoint records) and returns `probabilities`, (batch, classes).
The class names and the preprocessing settings travel in the model's metadata, so the .onnx
file alone is enough to predict.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from .checkpoint import Checkpoint
from .config import FrameConfig, from_dict, to_dict
from .errors import LrcnError
from .predict import Classifier

OPSET = 17


class _Probabilities(torch.nn.Module):
    """The model plus its softmax: what a deployed classifier returns."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(frames), dim=1)


def export_onnx(checkpoint: Checkpoint, out: str | os.PathLike) -> Path:
    import onnx
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = checkpoint.model_config
    # Exported from a copy: tracing leaves the traced module computing wrong results in this
    # process (seen with torch 2.13), and the caller may go on using its model.
    wrapper = _Probabilities(copy.deepcopy(checkpoint.build_model())).eval()
    example = torch.rand(2, cfg.num_frames, cfg.height, cfg.width, cfg.channels)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    with warnings.catch_warnings():
        # The LSTM batch-size warning does not apply: its initial state is zeros, made inside.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["frames"], output_names=["probabilities"],
                          dynamic_axes={"frames": {0: "batch"}, "probabilities": {0: "batch"}})
    model = onnx.load(str(tmp))
    metadata = {"lrcn_format": "lrcn-onnx", "classes": json.dumps(checkpoint.class_names),
                "frames": json.dumps(to_dict(checkpoint.frame_config)),
                "model": json.dumps(to_dict(cfg)), "info": json.dumps(checkpoint.info)}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp))
    os.replace(tmp, out)
    return out


class OnnxPredictor(Classifier):
    """predict.Predictor's interface, on ONNX Runtime, from the .onnx file alone."""

    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime as ort
        except ImportError:
            raise LrcnError("--backend onnx needs ONNX Runtime (pip install onnxruntime)") \
                from None
        path = Path(path)
        if not path.is_file():
            raise LrcnError("no such ONNX model file", path)
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types
            raise LrcnError(f"not a loadable ONNX model ({str(exc).splitlines()[0]})",
                            path) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("lrcn_format") != "lrcn-onnx":
            raise LrcnError("an ONNX model without lrcn metadata (export it with "
                            "`lrcn export`)", path)
        self.names = json.loads(meta["classes"])
        self.frame_config = from_dict(FrameConfig, json.loads(meta["frames"]))

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 frames -> (classes,) or (B, classes)."""
        batch = frames[None] if frames.ndim == 4 else frames
        probs = self.session.run(["probabilities"],
                                 {"frames": batch.astype(np.float32) / np.float32(255)})[0]
        return probs[0] if frames.ndim == 4 else probs
