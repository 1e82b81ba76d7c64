"""Typed settings. Every dataclass here is saved as JSON in the run folder and inside the
checkpoint, so that evaluate and predict rebuild the model and its preprocessing from the file
alone (nothing has to be re-typed at prediction time)."""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ErrorKind, LrcnError

# The seed tutorial's four UCF50 classes: the default subset when a data set has all four.
SEED_CLASSES = ("WalkingWithDog", "TaiChi", "Swing", "HorseRace")

# The largest frames a model may take, so that a typo (--frames 100000 --size 4096) is refused
# here instead of when decoding asks for terabytes: a side of at most 4096 pixels (a 4K frame)
# and at most 1 GiB of uint8 RGB per clip (20 frames of 4096x4096 fit; the seed's clip is
# 240 KB). Every clip array lrcn allocates is num_frames x height x width x 3 of a FrameConfig.
MAX_FRAME_SIDE = 4096
MAX_CLIP_BYTES = 1 << 30


class Precision(str, enum.Enum):
    """The precision of a model's maths (devices.autocast). A str, so that configs, checkpoints
    and JSON reports keep the plain strings "fp32", "bf16", "fp16"."""
    FP32 = "fp32"   # full fp32, no TF32 (the tutorial's; what a CPU computes)
    BF16 = "bf16"   # torch's autocast to bfloat16
    FP16 = "fp16"   # torch's autocast to float16 (training scales the loss)

    def __str__(self) -> str:   # f"{precision}" is "bf16", on every Python
        return self.value


@dataclass(frozen=True)
class FrameConfig:
    """How a video file becomes the model's input: `num_frames` frames evenly spaced over the
    whole clip, resized to height x width, in `channel_order`, scaled to [0, 1] by the model
    input path. Part of the cache key, so any change re-decodes."""
    num_frames: int = 20
    height: int = 64
    width: int = 64
    channel_order: str = "rgb"      # "bgr" for models trained on OpenCV frames (Keras tutorial)
    interpolation: str = "area"     # swscale filter for the resize: "area" or "bilinear"

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError("num_frames, height and width must be positive")
        if max(self.height, self.width) > MAX_FRAME_SIDE:
            raise ValueError(f"a frame of {self.width}x{self.height} is larger than "
                             f"{MAX_FRAME_SIDE} pixels a side")
        if self.clip_bytes > MAX_CLIP_BYTES:
            raise ValueError(f"a clip of {self.num_frames}x{self.height}x{self.width} frames "
                             f"would take {self.clip_bytes / 2**30:.1f} GiB, over the "
                             f"{MAX_CLIP_BYTES / 2**30:g} GiB a clip may take")
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', not {self.channel_order!r}")
        if self.interpolation not in ("area", "bilinear"):
            raise ValueError(f"interpolation must be 'area' or 'bilinear', not {self.interpolation!r}")

    @property
    def clip_bytes(self) -> int:
        """The bytes of one decoded clip (uint8 RGB)."""
        return self.num_frames * self.height * self.width * 3


RECURRENT_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "hard_sigmoid6")   # ModelConfig's


@dataclass(frozen=True)
class ModelConfig:
    """A model of the family (zoo.py) by `name`; the defaults are exactly the seed's LRCN.
    batchnorm, lstm_units and l2 are the seed's own suggestions, off (or at the seed's value)
    by default. Each registered model sets its own defaults (convlstm: the tutorial's filters
    and dropout). Fields a model does not use are kept at their defaults."""
    name: str = "lrcn"
    num_classes: int = 4
    num_frames: int = 20
    height: int = 64
    width: int = 64
    channels: int = 3
    conv_filters: tuple[int, ...] = (16, 32, 64, 64)
    pool_sizes: tuple[int, ...] = (4, 4, 2, 2)
    dropout_after: tuple[bool, ...] = (True, True, True, False)
    dropout: float = 0.25
    lstm_units: int = 32
    batchnorm: bool = False
    l2: float = 0.0                  # Keras-style kernel_regularizer on conv and LSTM weights
    # convlstm's gates: "sigmoid" (Keras 3's default), "hard_sigmoid" (Keras 2's, the
    # tutorial's: clip(0.2x + 0.5)) or "hard_sigmoid6" (Keras 3's hard_sigmoid: clip(x/6 + 0.5))
    recurrent_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        # The ranges are checked here, not only by the CLI's argument types, so that the
        # Python API and config files cannot build a model argparse would refuse (l2=-1
        # would train with a negative penalty).
        if not (len(self.conv_filters) == len(self.pool_sizes) == len(self.dropout_after)):
            raise ValueError("conv_filters, pool_sizes and dropout_after must have equal length")
        if self.num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes")
        if min(self.num_frames, self.height, self.width, self.channels) < 1:
            raise ValueError("num_frames, height, width and channels must be positive")
        if min(self.conv_filters, default=1) < 1 or min(self.pool_sizes, default=1) < 1:
            raise ValueError("conv_filters and pool_sizes must be positive")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.lstm_units < 1:
            raise ValueError(f"lstm_units must be at least 1, not {self.lstm_units}")
        if not 0 <= self.l2 < float("inf"):      # NaN fails this too
            raise ValueError(f"l2 must be 0 or more, not {self.l2}")
        if self.recurrent_activation not in RECURRENT_ACTIVATIONS:
            raise ValueError(f"recurrent_activation must be "
                             f"{', '.join(RECURRENT_ACTIVATIONS)}, "
                             f"not {self.recurrent_activation!r}")


@dataclass(frozen=True)
class SplitConfig:
    """Group-aware split: fractions of each class's groups that go to test and validation."""
    test_fraction: float = 0.25      # the tutorial's test_size
    val_fraction: float = 0.2        # the tutorial's validation_split, of what is left
    seed: int = 27                   # the tutorial's seed_constant
    # A class with too few readable groups to appear in train, validation and test: refused
    # (False: the user adds clips or decides), or dropped from the run with a message (True).
    drop_small_classes: bool = False
    # True: one group tag in several classes is one source (a webcam session or a long video
    # cut into clips of several actions, as the studio makes; UCF101's official lists hold
    # group numbers out across classes too), kept on one side of the split in every class.
    # False (the tutorial's data): a group is per class.
    across_classes: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.test_fraction < 1 and 0 <= self.val_fraction < 1):
            raise ValueError("split fractions must be in [0, 1)")


SCHEDULES = ("constant", "cosine")      # TrainConfig.schedule's values


@dataclass(frozen=True)
class TrainConfig:
    """The seed tutorial's training defaults (Adam 1e-3, batch 4, 70 epochs, early stopping on
    validation loss with patience 15 restoring the best weights)."""
    epochs: int = 70
    batch_size: int = 4
    lr: float = 1e-3
    patience: int = 15
    # constant (the tutorial's), or cosine: the rate falls from lr to lr/epochs along half a
    # cosine, so that the last epochs settle instead of jumping about the minimum at full rate.
    # Set per epoch from the epoch's number: a resumed run follows the same curve, and one
    # extended to more epochs follows the longer curve: its rate may rise (a warm restart).
    schedule: str = "constant"
    seed: int = 27
    num_threads: int = 0             # 0: let PyTorch decide (all cores)
    device: str = "auto"             # auto (CUDA when there is one), cpu, cuda, cuda:N, mps
    precision: Precision = Precision.FP32   # fp32 (the tutorial's), or bf16/fp16 (autocast)
    # Augmentation (augment.py), all off for the seed's model so that it trains as the
    # tutorial's does.
    scale_jitter: float = 0.0        # crop a random 1-s..1 of each side (same for all frames)
    temporal_jitter: bool = False    # a random instant inside each segment, as TSN samples
    flip: bool = False               # horizontal flip: opt-in, it turns left into right
    hue_jitter: float = 0.0          # turn each clip's hues by up to this share of the circle
    balance: bool = False            # weight the loss by inverse class frequency

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be positive")
        if not 0 < self.lr < math.inf:          # NaN fails this too
            raise ValueError(f"lr must be a positive finite number, not {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be {' or '.join(SCHEDULES)}, not {self.schedule!r}")
        if not 0 <= self.scale_jitter < 1:
            raise ValueError(f"scale_jitter must be in [0, 1), not {self.scale_jitter}")
        if not 0 <= self.hue_jitter <= 0.5:
            raise ValueError(f"hue_jitter must be in [0, 0.5], not {self.hue_jitter}")
        if self.precision not in tuple(Precision):
            raise ValueError(f"precision must be {', '.join(p.value for p in Precision)}, "
                             f"not {self.precision!r}")
        object.__setattr__(self, "precision", Precision(self.precision))


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(obj)


def _typed(hint: Any, value: Any) -> Any:
    """`value` as the type `hint` declares (JSON's lists become tuples, whole numbers given for
    a float become floats), or TypeError saying what was expected. Floats must be finite: no
    setting of lrcn means anything at NaN or infinity."""
    if hint is bool:
        ok = isinstance(value, bool)
        expected = "true or false"
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        expected = "a finite number"
        value = float(value) if ok else value
    elif hint is str or (isinstance(hint, type) and issubclass(hint, str)):
        ok = isinstance(value, str)     # a str enum's values: the dataclass says which
        expected = "a string"
    elif typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        return tuple(_typed(item, element) for element in value)
    else:
        return value
    if not ok:
        raise TypeError(f"expected {expected}, got {value!r}")
    return value


def typed_settings(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of `cls`, each checked against (and converted to)
    the type the field declares; TypeError naming the field for a value of the wrong type
    (`batch_size: 2.5`, `conv_filters: "abc"`)."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            try:
                kwargs[f.name] = _typed(hints[f.name], data[f.name])
            except TypeError as exc:
                raise TypeError(f"{f.name}: {exc}") from None
    return kwargs


def from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Rebuild a dataclass from JSON data, ignoring unknown keys (newer files), converting
    lists back to the tuples the dataclass declares, and refusing values of the wrong type
    (TypeError naming the field) or out of range (the dataclass's ValueError)."""
    if data is not None and not isinstance(data, dict):
        raise TypeError(f"expected a JSON object of {cls.__name__} settings")
    return cls(**typed_settings(cls, data or {}))


CONFIG_SECTIONS = ("frames", "model", "split", "train")
# The model settings that follow from the data (classes) and the frame settings (input shape).
_DERIVED_MODEL_SETTINGS = ("num_classes", "num_frames", "height", "width")


def load_config_file(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """A JSON settings file with any of the sections frames, model, split, train ({} for
    None). LrcnError naming the file for anything else."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LrcnError("no such config file", path, ErrorKind.NOT_FOUND) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LrcnError(f"not a JSON config file ({exc})", path) from None
    if not isinstance(data, dict) or not set(data) <= set(CONFIG_SECTIONS) \
            or not all(isinstance(v, dict) for v in data.values()):
        raise LrcnError(f"a config file holds the sections {', '.join(CONFIG_SECTIONS)}", path)
    for section, cls in _SECTION_CLASSES.items():
        try:
            typed_settings(cls, data.get(section, {}))
            if section != "model":   # model settings are checked with the data's (layered)
                from_dict(cls, data.get(section, {}))
        except (TypeError, ValueError) as exc:
            raise LrcnError(f"bad {section} setting: {exc}", path, ErrorKind.SETTING) from None
    return data


_SECTION_CLASSES = {"frames": FrameConfig, "model": ModelConfig, "split": SplitConfig,
                    "train": TrainConfig}


def layered(cls: type, section: dict[str, Any], flags: dict[str, Any]) -> Any:
    """Settings in layers: the dataclass's defaults, then a config file's section, then the
    flags that were given (None: not given). Bad values are an LrcnError."""
    merged = {**section, **{k: v for k, v in flags.items() if v is not None}}
    unknown = sorted(set(merged) - {f.name for f in fields(cls)})
    if unknown:
        raise LrcnError(f"unknown {cls.__name__} setting {unknown[0]!r}", kind=ErrorKind.SETTING)
    try:
        return from_dict(cls, merged)
    except (TypeError, ValueError) as exc:
        raise LrcnError(f"bad {cls.__name__} setting: {exc}", kind=ErrorKind.SETTING) from None


@dataclass(frozen=True)
class RunSettings:
    """Everything `lrcn train` and `lrcn cv` are configured by. `model` holds the model
    options only: the rest of the model settings follow from the data and the frames."""
    frames: FrameConfig
    split: SplitConfig
    train: TrainConfig
    model: dict[str, Any]


def resolve_settings(file: dict[str, dict[str, Any]], frames: dict[str, Any] | None = None,
                     split: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
                     model: dict[str, Any] | None = None,
                     defaults: dict[str, dict[str, Any]] | None = None) -> RunSettings:
    """Defaults <- the chosen model's defaults (`defaults`: sections frames, model, train; see
    zoo.ModelSpec) <- config file (load_config_file) <- flags, per section."""
    defaults = defaults or {}
    model_options = {**defaults.get("model", {}), **file.get("model", {}),
                     **{k: v for k, v in (model or {}).items() if v is not None}}
    for key in _DERIVED_MODEL_SETTINGS:
        model_options.pop(key, None)
    unknown = sorted(set(model_options) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise LrcnError(f"unknown ModelConfig setting {unknown[0]!r}", kind=ErrorKind.SETTING)
    return RunSettings(layered(FrameConfig, {**defaults.get("frames", {}),
                                             **file.get("frames", {})}, frames or {}),
                       layered(SplitConfig, file.get("split", {}), split or {}),
                       layered(TrainConfig, {**defaults.get("train", {}),
                                             **file.get("train", {})}, train or {}),
                       model_options)


def candidate_frames(frames: FrameConfig, count: int) -> FrameConfig:
    """`count` frames per segment instead of one: what temporal jitter chooses from in
    training (augment.py) and what multi-view testing averages over. With sampling's centred
    rule, frame c of segment i among T*count lies at the instant (i + (c + 0.5) / count) / T
    of the clip; for odd `count` the middle one is the frame of the plain setting. A clip of
    them over MAX_CLIP_BYTES is an LrcnError (SETTING)."""
    try:
        return dataclasses.replace(frames, num_frames=frames.num_frames * count)
    except ValueError as exc:
        raise LrcnError(f"{count} frames per segment (temporal jitter, --views): {exc}",
                        kind=ErrorKind.SETTING) from None


def model_config_for(frames: FrameConfig, num_classes: int, **overrides: Any) -> ModelConfig:
    """The model settings that match a preprocessing setting (input shape from the frames)."""
    return ModelConfig(num_classes=num_classes, num_frames=frames.num_frames,
                       height=frames.height, width=frames.width, **overrides)


__all__ = ["SEED_CLASSES", "MAX_FRAME_SIDE", "MAX_CLIP_BYTES", "FrameConfig", "ModelConfig",
           "SplitConfig", "TrainConfig", "RunSettings", "to_dict", "from_dict", "typed_settings",
           "model_config_for", "load_config_file", "layered", "resolve_settings",
           "candidate_frames"]
