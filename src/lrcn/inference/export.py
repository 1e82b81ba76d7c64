"""ONNX graphs of a checkpoint, made by one exporter with one opset: in memory for the ONNX
Runtime engine (the CNN and the LSTM as two graphs, engine.py), and as a file for users
(`lrcn export`), so that lrcn models run where PyTorch is not installed.

Every graph takes frames as uint8, as decoded, and scales them to [0, 1] inside. The exported
file is the whole classifier: input `frames`, uint8 (batch, T, H, W, 3) in the channel order the
checkpoint records (the seed's Keras layout); output `logits`, (batch, classes): the
temperature and the softmax are applied by whoever reads them (lrcn's engine: calibrate.softmax
with the `temperature` of the metadata). The class names, the preprocessing settings, the clip
span and a format version travel in its metadata, so the .onnx file alone is enough to predict
(`OrtEngine.from_file`). Older files still load and predict the same: before format version 3
the output is `probabilities`, and before version 2 the input is float32 frames in [0, 1].

torch is imported when a graph is made, not with this module: the engine reads the format
constants here on machines without PyTorch.
"""
from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import FrameConfig, to_dict
from ..errors import ErrorKind, LrcnError
from ..files import atomic_path

if TYPE_CHECKING:
    from ..models.checkpoint import Checkpoint

OPSET = 17
ONNX_FORMAT = "lrcn-onnx"   # metadata marking an lrcn export
# 3: the file outputs logits. 2: it takes uint8 frames and scales them inside the graph, and
# outputs probabilities. 1 (files without the version entry): float32 frames in [0, 1], scaled
# by the caller, probabilities out.
ONNX_FORMAT_VERSION = 3


def _graph(wrapper_class, checkpoint: Checkpoint, example, input_name: str, output_name: str,
           dynamic: dict[int, str]) -> bytes:
    """The one call of the exporter. The model is exported from a fresh copy: tracing leaves
    the traced module computing wrong results in the exporting process (seen with torch 2.13),
    and the caller may go on using its model."""
    import torch
    module = wrapper_class(copy.deepcopy(checkpoint.build_model())).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter's deprecation note and the LSTM batch-size warning (its initial
        # state is zeros made inside the graph) do not apply.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: dynamic, output_name: {0: dynamic[0]}})
    return buffer.getvalue()


def _frames_example(checkpoint: Checkpoint, *leading: int):
    import torch
    frames = checkpoint.frame_config
    return torch.randint(0, 256, (*leading, frames.height, frames.width, 3), dtype=torch.uint8)


def feature_graph(checkpoint: Checkpoint) -> bytes:
    """uint8 frames (n, H, W, 3) -> features (n, F)."""
    from ..models.base import FrameFeatures
    return _graph(FrameFeatures, checkpoint, _frames_example(checkpoint, 2), "frames", "out",
                  {0: "n"})


def sequence_graph(checkpoint: Checkpoint) -> bytes:
    """features (n, steps, F) -> logits (n, classes)."""
    import torch
    from ..models.base import SequenceLogits
    model = checkpoint.build_model()
    example = torch.rand(2, checkpoint.frame_config.num_frames, model.feature_size)
    return _graph(SequenceLogits, checkpoint, example, "features", "out",
                  {0: "n", 1: "steps"})


def clip_graph(checkpoint: Checkpoint) -> bytes:
    """uint8 clips (batch, T, H, W, 3) -> logits (batch, classes)."""
    from ..models.base import ClipLogits
    example = _frames_example(checkpoint, 2, checkpoint.frame_config.num_frames)
    return _graph(ClipLogits, checkpoint, example, "frames", "logits",
                  {0: "batch"})


def onnx_target(path: str | os.PathLike) -> Path:
    """`path` if an export may be written there, else a one-line SETTING error, checked
    before the work (int8's calibration): lrcn takes an exported file by its .onnx suffix, so
    `--out model.txt` wrote a file that `lrcn predict` and `lrcn info` then refused as "not an
    lrcn checkpoint"; a folder there failed only at the end."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise LrcnError(f"an ONNX export is named .onnx, not "
                        f"{path.suffix or 'without a suffix'} (lrcn knows it by that)", path,
                        ErrorKind.SETTING)
    if path.is_dir():
        raise LrcnError("is a folder: give the export a file's name (.onnx)", path,
                        ErrorKind.SETTING)
    return path


def export_onnx(checkpoint: Checkpoint, out: str | os.PathLike, graph: bytes | None = None,
                precision: str = "fp32") -> Path:
    """Write the checkpoint's classifier as an ONNX file with lrcn's metadata (atomically):
    `graph` when given (the int8 one, graphs.py, whose `precision` the metadata records),
    else the fp32 clip graph."""
    try:
        import onnx
    except ImportError as exc:
        raise LrcnError(f"ONNX export needs the onnx package ({exc.name} missing): "
                        "pip install 'lrcn[onnx]'", kind=ErrorKind.SETTING) from None
    from ..models.checkpoint import trainable_parameters
    out = onnx_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load_from_string(graph or clip_graph(checkpoint))
    metadata = {"lrcn_format": ONNX_FORMAT, "lrcn_format_version": str(ONNX_FORMAT_VERSION),
                "classes": json.dumps(checkpoint.class_names),
                "frames": json.dumps(to_dict(checkpoint.frame_config)),
                "model": json.dumps(to_dict(checkpoint.model_config)),
                "clip_seconds": json.dumps(checkpoint.clip_seconds),
                # divides the file's logits before the softmax (calibrate.py)
                "temperature": json.dumps(checkpoint.temperature),
                "info": json.dumps(checkpoint.info), "precision": precision,
                # so that `lrcn info` of the file needs no model built (and no torch)
                "params": json.dumps(checkpoint.params or trainable_parameters(
                    checkpoint.model_config))}
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return out


def check_onnx_file(session, frames: FrameConfig, names: list[str], path: Path) -> None:
    """What an exported file must hold to be run, checked when it is loaded (engine.py, with
    its ONNX Runtime `session` and the frame settings and class names of its metadata): the
    shapes this exporter writes and finite weights. An LrcnError naming the file otherwise."""
    _check_shapes(session, frames, names, path)
    _check_weights(path)


def _check_shapes(session, frames: FrameConfig, names: list[str], path: Path) -> None:
    """The shapes a file declares against its own metadata, before anything runs: input
    (batch, T, H, W, 3) as its frame settings say, output (batch, one per class name). ONNX
    Runtime would otherwise refuse every clip (InvalidArgument), or hand out fewer
    probabilities than there are names. A dimension the file leaves symbolic is not checked
    here (Engine.check_logits checks the output of every call)."""
    expected = ["batch", frames.num_frames, frames.height, frames.width, 3]
    declared = list(session.get_inputs()[0].shape)
    if len(declared) != 5 or any(isinstance(d, int) and d != e
                                 for d, e in zip(declared[1:], expected[1:])):
        raise LrcnError(f"the ONNX model's input shape {declared} does not match its frame "
                        f"settings {expected}", path)
    outputs = session.get_outputs()
    out = list(outputs[0].shape) if len(outputs) == 1 else []
    if len(out) != 2 or (isinstance(out[1], int) and out[1] != len(names)):
        raise LrcnError(f"the ONNX model's output shape {out} does not match its "
                        f"{len(names)} class names", path)


def _check_weights(path: Path) -> None:
    """Refuse an ONNX file with a NaN or infinite weight (initializers and constants): its
    answers would be NaN, or silently wrong where max-pooling drops a NaN. Reading the weights
    again costs little (0.3 MB for the seed's model); without the onnx package this check is
    skipped and Engine.check_logits still guards each answer."""
    try:
        import onnx
        from google.protobuf.message import DecodeError   # onnx's own dependency
        from onnx import numpy_helper
    except ImportError:
        return
    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as exc:
        raise LrcnError(f"not a loadable ONNX model ({exc})", path) from None
    tensors = list(model.graph.initializer) + [
        attribute.t for node in model.graph.node if node.op_type == "Constant"
        for attribute in node.attribute if attribute.HasField("t")]
    for tensor in tensors:
        array = numpy_helper.to_array(tensor)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        # A lone infinite constant is the exporter's own (-inf padding before convlstm's
        # max-pooling); a weight never is one number alone.
        if np.isnan(array).any() or (array.size > 1 and np.isinf(array).any()):
            raise LrcnError(f"the ONNX model's weights are damaged: {tensor.name or 'a constant'} "
                            "holds NaN or infinite values", path)


__all__ = ["OPSET", "ONNX_FORMAT", "ONNX_FORMAT_VERSION", "feature_graph", "sequence_graph",
           "clip_graph", "export_onnx", "check_onnx_file"]
