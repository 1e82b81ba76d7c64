"""What `lrcn info` says of a model file: a checkpoint's or run's summary (models.checkpoint), or
the same read from an exported ONNX file's metadata (export.py writes it)."""
from __future__ import annotations

import json
import os

from ..config import ModelConfig, from_dict
from ..errors import LrcnError
from ..models.checkpoint import describe, param_count, summary
from .engine import OrtEngine, is_onnx_file


def model_summary(path: str | os.PathLike) -> dict:
    """`lrcn info --json` of a checkpoint, a run folder or an exported ONNX file."""
    return onnx_summary(path) if is_onnx_file(path) else summary(path)


def onnx_summary(path: str | os.PathLike) -> dict:
    """`lrcn info` of an exported file: what summary() says of a checkpoint, read from the
    file's metadata once the file has passed the checks of loading it, and its precision."""
    engine = OrtEngine.from_file(path)
    meta = engine.metadata
    try:
        model = from_dict(ModelConfig, json.loads(meta["model"]))
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise LrcnError(f"damaged lrcn metadata in the ONNX model ({exc})", path) from None
    try:    # not recorded before 2026-12-03; only shown, so a damaged one counts as not there
        params = param_count(json.loads(meta.get("params", "null")))
    except ValueError:
        params = None
    return {**describe(path, model, engine.names, engine.frame_config, engine.clip_seconds,
                       engine.temperature, info, params), "precision": engine.precision}
