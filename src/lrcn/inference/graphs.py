"""ONNX graphs of a checkpoint, built once and kept on disk, in fp32 and in int8.

The cache: exporting effnet's backbone takes seconds (7-13 s on 2 cores), too long to repeat on
every `lrcn predict`. A graph is written once, atomically, to `CACHE/onnx/` (the frame cache's
folder, `$LRCN_CACHE_DIR` or ~/.cache/lrcn), under a name made of the SHA-256 of the
checkpoint's weights and model and frame settings (not its info or temperature, which no graph
holds and `lrcn evaluate` rewrites) and everything else the graph depends on (its kind, lrcn's
ONNX format and opset, the torch and ONNX Runtime versions): other weights get new files, and a
checkpoint made in memory is exported every time.

int8: ONNX Runtime's static quantization (`quantize_static`, QDQ format, per-channel int8
weights, uint8 activations) of the convolutions, calibrated on the run's own validation clips
(split.json and the frame cache named in config.json, beside the checkpoint). Only the CNN is
quantized: it is nearly all the work, and the LSTM and the Dense layer stay fp32. Convolutions
over the frames' RGB (the first layer of every model; the seed model's reads its frames
reshaped to one channel, lrcn.py) stay fp32 too: ONNX Runtime's int8 kernels are slower than
its fp32 ones there (seed model: 62 ms against 35 ms for 160 frames; reshaped, 145 against 75
for 1280). A graph is the same on every CPU; where its int8 products would overflow (x86 without
VNNI), the session computes them exactly instead (sessions.int8_products_saturate).
"""
from __future__ import annotations

import hashlib
import sys
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from ..errors import ErrorKind, LrcnError
from ..files import atomic_path
from .export import ONNX_FORMAT_VERSION, OPSET, clip_graph, feature_graph, sequence_graph
from .sessions import unshare_weights

if TYPE_CHECKING:
    from ..models.checkpoint import Checkpoint

# Bump when what a cached graph holds changes. 2: effnet's padding inside its Conv nodes, the
# seed model's first convolution rewritten (models/lrcn.py). 3: the seed model's first layer in
# bands of rows. 4: effnet's int8 with its depthwise convolutions, ReLU6 and Adds
# quantized, its first block in fp32. 5: no int8 weight shared by several nodes (convlstm).
GRAPH_CACHE_VERSION = 5
CALIBRATION_CLIPS = 16           # validation clips run through the fp32 graph to set int8 ranges
CALIBRATION_BATCH = 20           # frames (or 1 clip) per calibration call
# What is quantized, by model (ModelSpec.int8_ops and int8_fp32): the convolutions, and for
# effnet its ReLU6 (Clip) and residual Adds too, its first block kept fp32. effnet's depthwise
# convolutions were left in fp32 until 2026-12-03 by mistake (the rule for the RGB first layer
# caught their one input channel per group): each block went int8 -> fp32 -> int8, and int8
# was slower than fp32 (6.77 against 6.04 ms per 160x128 frame on one thread); with the
# depthwise in int8 too, 2.51 ms (bench/effnet_int8.py; its closeness: models/registry.py).
# MaxPool and ReLU quantized too made the seed model's int8 40% slower.


def _weights_sha256(checkpoint: Checkpoint) -> str:
    """SHA-256 of what a graph is made of: the checkpoint file's tensor bytes (everything after
    safetensors' header) and its model and frame settings. Not its info or temperature, which
    `lrcn evaluate` and calibration rewrite and no graph holds."""
    from ..config import to_dict
    digest = hashlib.sha256(json.dumps([to_dict(checkpoint.model_config),
                                        to_dict(checkpoint.frame_config)]).encode())
    with open(checkpoint.path, "rb") as handle:
        handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> str:
    # The installed versions as their packages record them: read without importing torch,
    # so that a cached graph is found without it (cached_engine_graphs).
    from importlib.metadata import version
    import onnxruntime       # not its package's version: onnxruntime-gpu is another package
    return f"{GRAPH_CACHE_VERSION} {ONNX_FORMAT_VERSION} {OPSET} {version('torch')} " \
           f"{onnxruntime.__version__}"


def _cache_path(checkpoint: Checkpoint, kind: str, weights: str | None = None) -> Path:
    from ..data.cache import default_cache_dir
    weights = weights or _weights_sha256(checkpoint)
    key = hashlib.sha256(f"{weights} {kind} {_versions()}".encode())
    return default_cache_dir() / "onnx" / f"{key.hexdigest()[:32]}-{kind}.onnx"


def cached_graph(checkpoint: Checkpoint, kind: str, make: Callable[[], bytes]) -> bytes | str:
    """The graph `make()` builds for `checkpoint`, from the cache when it was built before:
    a file path (ONNX Runtime loads it directly), or the bytes for a checkpoint that has no
    file."""
    if checkpoint.path is None:
        return make()
    path = _cache_path(checkpoint, kind)
    if path.is_file():
        return str(path)
    graph = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(graph)
    except OSError as exc:   # a read-only or full cache folder costs the export, not the answer
        print(f"lrcn: warning: {path.parent}: cannot keep the exported graph "
              f"({exc.strerror or exc}); it is exported again next time", file=sys.stderr)
        return graph
    return str(path)


def run_folder(checkpoint: Checkpoint) -> Path:
    """The run folder beside a checkpoint, which int8 calibration reads its clips from."""
    folder = checkpoint.path.parent if checkpoint.path is not None else None
    if folder is None or not (folder / "split.json").is_file():
        raise LrcnError("int8 is calibrated on the run's validation clips: no split.json beside "
                        "the checkpoint (pass the checkpoint inside its run folder)",
                        checkpoint.path or "", ErrorKind.SETTING)
    return folder


def calibration_clips(checkpoint: Checkpoint, limit: int = CALIBRATION_CLIPS) -> np.ndarray:
    """(N, T, H, W, 3) uint8: up to `limit` of the run's validation clips (the training clips
    when it has none), spread over the list, from the frame cache the run used (decoded again
    where it is gone)."""
    from ..data.cache import prepare
    from ..data.dataset import read_split
    folder = run_folder(checkpoint)
    split = read_split(folder / "split.json")
    samples = split.get("val") or split.get("train") or []
    try:
        cache_dir = json.loads((folder / "config.json").read_text()).get("cache_dir")
    except (OSError, ValueError):
        cache_dir = None
    if len(samples) > limit:
        samples = [samples[round(i * (len(samples) - 1) / (limit - 1))] for i in range(limit)]
    clips, _ = prepare(samples, checkpoint.frame_config, cache_dir=cache_dir, progress=False)
    if not clips:
        raise LrcnError("int8 calibration: none of the run's validation clips can be read",
                        folder, ErrorKind.NOT_FOUND)
    return np.stack([np.load(c.frames_path) for c in clips])


def _fp32_first_convs(model) -> list[str]:
    """Convolutions over the frames' RGB (at most 4 input channels, not grouped: a depthwise
    convolution has one input channel per group too): left in fp32."""
    import onnx
    weights = {w.name: w.dims for w in model.graph.initializer}

    def group(node) -> int:
        return next((onnx.helper.get_attribute_value(a) for a in node.attribute
                     if a.name == "group"), 1)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and group(n) == 1
            and n.input[1] in weights and weights[n.input[1]][1] <= 4]


def _named(model, parts: Sequence[str]) -> list[str]:
    """The nodes whose names hold one of `parts`; a part that names none is an error (an
    exporter that names layers otherwise would quantize them silently), and so is a bare
    string (its characters would be the parts: "/" names every node)."""
    if isinstance(parts, str):
        raise TypeError(f"keep_fp32 must be a sequence of name parts, not the string {parts!r}")
    names = [n.name for n in model.graph.node]
    found = []
    for part in parts:
        matched = [name for name in names if part in name]
        if not matched:
            raise ValueError(f"no node of the graph is named like {part!r}")
        found += matched
    return found


def quantize_graph(graph: bytes, batches: Iterable[np.ndarray], input_name: str = "frames",
                   ops: Sequence[str] = ("Conv",), keep_fp32: Sequence[str] = ()) -> bytes:
    """int8 QDQ graph of an fp32 graph, its activation ranges taken from running `batches`:
    the nodes of the op types `ops`, but for the convolutions over the frames' RGB and the
    nodes whose names hold one of `keep_fp32`, which stay fp32."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch)}

    model = onnx.load_from_string(graph)
    with tempfile.TemporaryDirectory(prefix="lrcn-int8-") as folder:
        source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
        source.write_bytes(graph)
        # ONNX Runtime's advice to pre-process the graph goes to the root logger, where a
        # user reads it as their mistake: this graph is lrcn's own export, already optimised
        logging.disable(logging.WARNING)
        try:
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, op_types_to_quantize=list(ops),
                            nodes_to_exclude=_fp32_first_convs(model) + _named(model, keep_fp32))
        finally:
            logging.disable(logging.NOTSET)
        quantized = onnx.load(str(target))
        if unshare_weights(quantized.graph):
            return quantized.SerializeToString()
        return target.read_bytes()


def int8_feature_graph(checkpoint: Checkpoint) -> bytes:
    """The CNN half (uint8 frames -> features) in int8, calibrated on the run's clips."""
    clips = calibration_clips(checkpoint)
    frames = clips.reshape(-1, *clips.shape[2:])
    return quantize_graph(feature_graph(checkpoint),
                          (frames[i:i + CALIBRATION_BATCH]
                           for i in range(0, len(frames), CALIBRATION_BATCH)),
                          **_quantized(checkpoint))


def int8_clip_graph(checkpoint: Checkpoint) -> bytes:
    """The whole classifier (uint8 clips -> logits) with its CNN in int8, calibrated on the
    run's clips: what `lrcn export --quantize int8` writes."""
    clips = calibration_clips(checkpoint)
    return quantize_graph(clip_graph(checkpoint), (clips[i:i + 1] for i in range(len(clips))),
                          **_quantized(checkpoint))


def _quantized(checkpoint: Checkpoint) -> dict:
    """quantize_graph's `ops` and `keep_fp32` for the checkpoint's model."""
    from ..models.registry import get_spec
    spec = get_spec(checkpoint.model_config.name)
    return {"ops": spec.int8_ops, "keep_fp32": spec.int8_fp32}


def _engine_kinds(int8: bool) -> tuple[str, str]:
    """The cache kinds of OrtEngine's two graphs: (CNN, LSTM)."""
    return ("features-int8" if int8 else "features"), "sequence"


def engine_graphs(checkpoint: Checkpoint, int8: bool = False) -> tuple[bytes | str, bytes | str]:
    """(CNN graph, LSTM graph) for OrtEngine, from the cache or built (and cached) now."""
    cnn_kind, lstm_kind = _engine_kinds(int8)
    cnn = cached_graph(checkpoint, cnn_kind, (lambda: int8_feature_graph(checkpoint)) if int8
                       else (lambda: feature_graph(checkpoint)))
    return cnn, cached_graph(checkpoint, lstm_kind, lambda: sequence_graph(checkpoint))


def cached_engine_graphs(checkpoint: Checkpoint, int8: bool = False) -> tuple[str, str] | None:
    """engine_graphs' two files if both are in the cache already, else None; needs only the
    checkpoint's file and settings, not its tensors loaded (nor torch). A graph's key holds
    the file's tensor bytes, so a graph found was exported from these very weights, which
    passed load_checkpoint's checks then."""
    if checkpoint.path is None:
        return None
    weights = _weights_sha256(checkpoint)
    paths = [_cache_path(checkpoint, kind, weights) for kind in _engine_kinds(int8)]
    if not all(p.is_file() for p in paths):
        return None
    return str(paths[0]), str(paths[1])


__all__ = ["cached_graph", "cached_engine_graphs", "calibration_clips", "quantize_graph",
           "int8_feature_graph", "int8_clip_graph", "engine_graphs", "run_folder"]
