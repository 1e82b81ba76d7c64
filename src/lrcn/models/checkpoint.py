"""Checkpoints: safetensors weights plus JSON settings in the same file's header.

Loading never unpickles anything, so a checkpoint from a stranger cannot run code. The file holds
everything evaluate and predict need: model settings, preprocessing settings, class names, the
time span of a typical training clip (which long videos and streams are windowed by), and what
training and evaluation measured. Writes are atomic (temporary file, then rename).

The model's input shape (frames, height, width) is stored once, in the frame settings; the
model settings are completed from them on load. Checkpoints written before that (format 1)
carry it twice, and loading checks that the two agree.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from ..config import FrameConfig, ModelConfig, from_dict, to_dict
from ..errors import ErrorKind, LrcnError
from ..files import atomic_path
from .registry import OPTIONS, build_model, get_spec

# torch is imported where tensors are, not with this module: a checkpoint's settings
# (load_checkpoint(weights=False), for an engine whose ONNX graphs are already in the graph
# cache) are read without it, and importing it is 1-2 s of a short command.
if TYPE_CHECKING:
    import torch

FORMAT = "lrcn-checkpoint"
FORMAT_VERSION = 2
_INPUT_SHAPE = ("num_frames", "height", "width")   # stored in the frame settings only
CHECKPOINT_NAME = "model.safetensors"


@dataclass
class Checkpoint:
    model_config: ModelConfig
    frame_config: FrameConfig
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # training summary, test metrics
    clip_seconds: float = 0.0       # median span of the training clips; 0: not known
    temperature: float = 1.0        # calibration fitted on validation (calibrate.py)
    state_dict: dict[str, torch.Tensor] | None = None
    # the file it was loaded from (None: made in memory); engine.py keys its cached ONNX
    # graphs by the file's hash and int8 calibration finds the run folder beside it
    path: Path | None = field(default=None, compare=False)
    # trainable parameters, as the file's header records them (None: not recorded)
    params: int | None = field(default=None, compare=False)

    def build_model(self):
        """The model (zoo.py) with the checkpoint's weights, in eval mode."""
        model = build_model(self.model_config)
        if self.state_dict is not None:
            model.load_state_dict(self.state_dict)
        model.eval()
        return model


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None. A
    model with one gives NaN probabilities for every input: it is refused where it is loaded,
    not met as a crash or invalid JSON in predict, or a 500 from every request of serve."""
    import torch
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def save_checkpoint(path: str | os.PathLike, model, frame_config: FrameConfig,
                    class_names: list[str], info: dict[str, Any] | None = None,
                    clip_seconds: float = 0.0, temperature: float = 1.0) -> Path:
    from safetensors.torch import save_file
    from .base import count_trainable
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_settings = to_dict(model.config)
    for key in _INPUT_SHAPE:
        if model_settings.pop(key) != getattr(frame_config, key):
            raise ValueError(f"the model's input {key} differs from the frame settings'")
    header = {"model": model_settings, "frames": to_dict(frame_config),
              "classes": list(class_names), "clip_seconds": float(clip_seconds),
              "temperature": float(temperature), "info": info or {},
              # for people and other tools: the file alone says what the model is
              "params": count_trainable(model),
              "normalisation": get_spec(model.config.name).normalisation}
    tensors = {name: tensor.detach().to("cpu").contiguous()
               for name, tensor in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "version": str(FORMAT_VERSION),
                                               "lrcn": json.dumps(header)})
    return path


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise LrcnError("no such checkpoint file or run folder", path, ErrorKind.NOT_FOUND)
    return path


def _read_header(path: Path) -> dict[str, str]:
    """The safetensors header's metadata, read without loading tensors (and without pickle)."""
    with open(path, "rb") as handle:
        size_bytes = handle.read(8)
        if len(size_bytes) < 8:
            raise LrcnError("not an lrcn checkpoint (file too short)", path)
        size = int.from_bytes(size_bytes, "little")
        if size <= 0 or size > 100_000_000 or size + 8 > path.stat().st_size:
            raise LrcnError("not an lrcn checkpoint (no safetensors header)", path)
        try:
            header = json.loads(handle.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise LrcnError("not an lrcn checkpoint (corrupt safetensors header)", path) from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise LrcnError("not an lrcn checkpoint (safetensors file without lrcn settings)", path)
    return metadata


def load_checkpoint(path: str | os.PathLike, weights: bool = True) -> Checkpoint:
    """Load a checkpoint file (or a run folder's). Raises LrcnError with a one-line cause for
    anything that is not an intact lrcn checkpoint."""
    path = resolve_checkpoint_path(path)
    metadata = _read_header(path)
    try:
        header = json.loads(metadata["lrcn"])
        frame_config = from_dict(FrameConfig, header["frames"])
        model_settings = dict(header["model"])
        class_names = [str(name) for name in header["classes"]]
        info = dict(header.get("info") or {})
        # Format 1 kept the clip span among the free info entries.
        clip_seconds = float(header.get("clip_seconds", info.pop("clip_seconds", 0.0)) or 0.0)
        temperature = float(header.get("temperature", 1.0))
        params = param_count(header.get("params"))
        if not 0 < temperature < math.inf:
            raise ValueError(f"temperature {temperature}")
        if not 0 <= clip_seconds < math.inf:
            raise ValueError(f"clip_seconds {clip_seconds}")
    except (KeyError, TypeError, ValueError) as exc:
        raise LrcnError(f"checkpoint settings are damaged ({exc})", path) from None
    for key in _INPUT_SHAPE:
        stored = model_settings.get(key, getattr(frame_config, key))
        if stored != getattr(frame_config, key):
            raise LrcnError(f"checkpoint settings disagree: the model's input {key} is {stored}, "
                            f"the frame settings' {getattr(frame_config, key)}", path)
        model_settings[key] = getattr(frame_config, key)
    try:
        model_config = from_dict(ModelConfig, model_settings)
    except (TypeError, ValueError) as exc:
        raise LrcnError(f"checkpoint settings are damaged ({exc})", path) from None
    try:
        get_spec(model_config.name)
    except LrcnError as exc:
        raise LrcnError(f"{exc}: made by a newer lrcn?", path) from None
    if len(class_names) != model_config.num_classes:
        raise LrcnError("checkpoint class names do not match its model", path)
    checkpoint = Checkpoint(model_config, frame_config, class_names, info, clip_seconds,
                            temperature, path=path, params=params)
    if weights:
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise LrcnError(f"checkpoint weights are damaged ({exc})", path) from None
        try:
            expected = build_model(model_config).state_dict()
        except LrcnError as exc:
            raise LrcnError(f"{exc}", path) from None
        for name, tensor in expected.items():
            if name not in state or state[name].shape != tensor.shape:
                raise LrcnError(f"checkpoint weights do not fit its model (tensor {name})", path)
        damaged = first_non_finite(state)
        if damaged:
            raise LrcnError(f"checkpoint weights are damaged: tensor {damaged} holds NaN or "
                            "infinite values (a diverged training run, or a corrupted file)",
                            path)
        checkpoint.state_dict = state
    return checkpoint


def update_info(path: str | os.PathLike, temperature: float | None = None,
                **entries: Any) -> None:
    """Add entries (e.g. test metrics) to a checkpoint's info, or set its calibration
    temperature, rewriting it atomically."""
    checkpoint = load_checkpoint(path)
    model = checkpoint.build_model()
    save_checkpoint(resolve_checkpoint_path(path), model, checkpoint.frame_config,
                    checkpoint.class_names, {**checkpoint.info, **entries},
                    clip_seconds=checkpoint.clip_seconds,
                    temperature=checkpoint.temperature if temperature is None else temperature)


HEAD = "head."      # every model's classifier layer (base.add_lstm_head, convlstm): a row a class


def init_from(model, checkpoint: Checkpoint, class_names: list[str]) -> str:
    """Start `model` (built for `class_names`) from a trained checkpoint's weights, for
    fine-tuning (`lrcn train --init-from`): every weight but the classifier's is copied; the
    classifier's row (and bias) of each class the checkpoint knows is copied too, and a new
    class keeps its fresh row. Returns what was taken, for the log."""
    state = checkpoint.state_dict or {}
    own = model.state_dict()
    known = [name for name in class_names if name in checkpoint.class_names]
    taken = {}
    for name, tensor in own.items():
        saved = state.get(name)
        head = name.startswith(HEAD)     # its first dimension is the classes
        fits = saved is not None and (saved.shape[1:] == tensor.shape[1:] if head else
                                      saved.shape == tensor.shape)
        if not fits:
            raise LrcnError(f"the checkpoint's weights do not fit this model (tensor {name})",
                            kind=ErrorKind.SETTING)
        if head:
            rows = tensor.clone()
            for i, class_name in enumerate(class_names):
                if class_name in checkpoint.class_names:
                    rows[i] = state[name][checkpoint.class_names.index(class_name)]
            taken[name] = rows
        else:
            taken[name] = state[name]
    model.load_state_dict(taken)
    if known == list(checkpoint.class_names) == list(class_names):
        return "all weights (the same classes)"
    new = [name for name in class_names if name not in known]
    return (f"every weight but the classifier's; its rows for {len(known)} known "
            f"class{'' if len(known) == 1 else 'es'}" +
            (f", new rows for {', '.join(new)}" if new else " (in a new order)"))


def used_settings(config: ModelConfig) -> dict[str, Any]:
    """A model's settings without the options it does not use (ModelSpec.uses): effnet-lstm
    has no conv_filters, whatever ModelConfig's defaults say."""
    uses = get_spec(config.name).uses
    return {k: v for k, v in to_dict(config).items() if k not in OPTIONS or k in uses}


def summary(path: str | os.PathLike, weights: bool = True) -> dict[str, Any]:
    """What `lrcn info --json` shows: a checkpoint's classes, parameter count, settings (those
    its model uses), clip span, training summary and test metrics. `weights`: check them too
    (load_checkpoint); without, torch is not needed (a server whose engine checked them)."""
    path = resolve_checkpoint_path(path)
    checkpoint = load_checkpoint(path, weights=weights)
    return describe(path, checkpoint.model_config, checkpoint.class_names,
                    checkpoint.frame_config, checkpoint.clip_seconds, checkpoint.temperature,
                    checkpoint.info, checkpoint.params)


def param_count(value: Any) -> int | None:
    """A recorded parameter count (a checkpoint's header, an export's metadata) when it is
    one, else None: a count is only shown, so a damaged one is treated as not recorded."""
    return value if type(value) is int and value > 0 else None


def trainable_parameters(model: ModelConfig) -> int | None:
    """The model's trainable parameters, counted on a model built for it; None without torch
    (an exported file's metadata from before it recorded the count, on a machine with ONNX
    Runtime alone)."""
    try:
        from .base import count_trainable
        return count_trainable(build_model(model))
    except ImportError:
        return None


def describe(path: str | os.PathLike, model: ModelConfig, classes: list[str],
             frames: FrameConfig, clip_seconds: float, temperature: float,
             info: dict[str, Any], params: int | None = None) -> dict[str, Any]:
    """summary()'s layout, for a checkpoint or an exported ONNX file's metadata (one layout, so
    that `lrcn info` says the same of a run and of its export). `params`: the trainable
    parameters the file records; counted when it records none (None without torch)."""
    return {"checkpoint": str(path), "model_name": model.name, "classes": list(classes),
            "trainable_parameters": params or trainable_parameters(model),
            "normalisation": get_spec(model.name).normalisation,
            "frames": to_dict(frames), "model": used_settings(model),
            "clip_seconds": clip_seconds, "temperature": temperature, "info": info}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(_value(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_summary(data: dict[str, Any]) -> str:
    """`lrcn info`: summary() for a person, a line a subject."""
    frames, info = data["frames"], dict(data["info"])
    options = {k: v for k, v in data["model"].items()
               if k not in ("name", "num_classes", "num_frames", "height", "width", "channels")}
    lines = [("checkpoint", data["checkpoint"]),
             *([("precision", f"{data['precision']} (an exported ONNX file)")]
               if "precision" in data else []),
             ("model", data["model_name"] if data["trainable_parameters"] is None else
              f"{data['model_name']}, {data['trainable_parameters']:,} trainable parameters"),
             ("settings", "; ".join(f"{k} {_value(v)}" for k, v in options.items())),
             (f"classes ({len(data['classes'])})", ", ".join(data["classes"])),
             ("frames", f"{frames['num_frames']} of {frames['width']}x{frames['height']}, "
                        f"{frames['channel_order'].upper()}, {frames['interpolation']} resize; "
                        f"input {data['normalisation']}"),
             ("clip span", f"{data['clip_seconds']:g} s (windows of long videos and streams "
                           "cover this)" if data["clip_seconds"] else
                           "not recorded (windows default to 6 s)")]
    calibration = info.pop("calibration", None)
    if calibration and calibration.get("skipped"):
        fitted = f" (none fitted: {calibration['skipped']})"
    elif calibration:
        fitted = f", fitted on {calibration.get('num_clips', '?')} validation clips"
    else:
        fitted = "" if data["temperature"] != 1.0 else " (none fitted)"
    lines.append(("calibration", f"temperature {data['temperature']:.3f}{fitted}"))
    metrics = info.pop("test_metrics", None)
    lines.append(("test metrics", ", ".join(f"{k.replace('_', ' ')} {_value(v)}"
                                     for k, v in metrics.items()) if metrics else
                  "none recorded (run `lrcn evaluate`)"))
    clips = info.pop("clips", None)
    if clips:
        lines.append(("clips", ", ".join(f"{k} {v}" for k, v in clips.items())))
    for key in ("data", "init_from", "run_dir"):
        if key in info:
            lines.append((key.replace("_", " "), str(info.pop(key))))
    if info:
        lines.append(("training", "; ".join(f"{k.replace('_', ' ')} {_value(v)}"
                                            for k, v in info.items())))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label:<{width}}{text}" for label, text in lines)
