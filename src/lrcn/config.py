"""Typed settings. Every dataclass here is saved as JSON in the run folder and inside the
checkpoint, so that evaluate and predict rebuild the model and its preprocessing from the file
alone (nothing has to be re-typed at prediction time)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

# The seed tutorial's four UCF50 classes: the default subset when a data set has all four.
SEED_CLASSES = ("WalkingWithDog", "TaiChi", "Swing", "HorseRace")


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
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', not {self.channel_order!r}")
        if self.interpolation not in ("area", "bilinear"):
            raise ValueError(f"interpolation must be 'area' or 'bilinear', not {self.interpolation!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The seed's LRCN. The defaults are exactly the seed's model; batchnorm, lstm_units and l2
    are the seed's own suggestions, off (or at the seed's value) by default."""
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

    def __post_init__(self) -> None:
        if not (len(self.conv_filters) == len(self.pool_sizes) == len(self.dropout_after)):
            raise ValueError("conv_filters, pool_sizes and dropout_after must have equal length")
        if self.num_classes < 2:
            raise ValueError("a classifier needs at least 2 classes")


@dataclass(frozen=True)
class SplitConfig:
    """Group-aware split: fractions of each class's groups that go to test and validation."""
    test_fraction: float = 0.25      # the tutorial's test_size
    val_fraction: float = 0.2        # the tutorial's validation_split, of what is left
    seed: int = 27                   # the tutorial's seed_constant

    def __post_init__(self) -> None:
        if not (0 <= self.test_fraction < 1 and 0 <= self.val_fraction < 1):
            raise ValueError("split fractions must be in [0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """The seed tutorial's training defaults (Adam 1e-3, batch 4, 70 epochs, early stopping on
    validation loss with patience 15 restoring the best weights)."""
    epochs: int = 70
    batch_size: int = 4
    lr: float = 1e-3
    patience: int = 15
    seed: int = 27
    num_threads: int = 0             # 0: let PyTorch decide (all cores)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 1:
            raise ValueError("epochs, batch_size, patience and lr must be positive")


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    """Rebuild a dataclass from JSON data, ignoring unknown keys (newer files) and converting
    lists back to the tuples the dataclass declares."""
    data = data or {}
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            if isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def model_config_for(frames: FrameConfig, num_classes: int, **overrides: Any) -> ModelConfig:
    """The model settings that match a preprocessing setting (input shape from the frames)."""
    return ModelConfig(num_classes=num_classes, num_frames=frames.num_frames,
                       height=frames.height, width=frames.width, **overrides)


__all__ = ["SEED_CLASSES", "FrameConfig", "ModelConfig", "SplitConfig", "TrainConfig",
           "to_dict", "from_dict", "model_config_for"]
