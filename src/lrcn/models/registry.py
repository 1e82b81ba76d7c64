"""The model family, registered by name as timm registers its models: `--model NAME`.

A ModelSpec says what a model needs and can do: its default settings (model, frames, training),
how it normalises its input, whether it exports to ONNX, and whether its per-frame CNN is
frozen (its features are then computed once and cached, features.py). The model's name is part
of its ModelConfig, so a checkpoint rebuilds it from the file alone (checkpoint.py).

Every model has the same interface: `forward` ((B, T, H, W, 3) clips in [0, 1], or (B, T, F)
features computed before) -> logits; `frame_features` and `sequence_logits`, the two halves
that timelines and streams run separately; `feature_size`; `seed_dropout`.

The settings data here is torch-free; the models are imported when one is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

from ..config import ModelConfig, RunSettings, resolve_settings
from ..errors import ErrorKind, LrcnError

DEFAULT_MODEL = "lrcn"


def _lrcn(config: ModelConfig, pretrained: bool):
    from .lrcn import LRCN
    return LRCN(config)


def _lrcn_bn(config: ModelConfig, pretrained: bool):
    from .lrcn import LRCN
    return LRCN(ModelConfig(**{**config.__dict__, "batchnorm": True}))


def _convlstm(config: ModelConfig, pretrained: bool):
    from .convlstm import ConvLSTM
    return ConvLSTM(config)


def _effnet(frozen: bool) -> Callable:
    def build(config: ModelConfig, pretrained: bool):
        from .effnet import EffNetLSTM
        return EffNetLSTM(config, frozen=frozen, pretrained=pretrained)
    return build


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    normalisation: str                   # what the model does to frames in [0, 1]
    # (ModelConfig, pretrained) -> the model; the import happens there, so that listing the
    # family needs no torch
    build: Callable[[ModelConfig, bool], Any] = field(default=_lrcn, repr=False)
    model: dict[str, Any] = field(default_factory=dict)    # ModelConfig defaults
    frames: dict[str, Any] = field(default_factory=dict)   # FrameConfig defaults
    train: dict[str, Any] = field(default_factory=dict)    # TrainConfig defaults
    exportable: bool = True              # to ONNX (lrcn export, the ONNX Runtime engine)
    cached_features: bool = False        # a frozen per-frame CNN: features cached for training
    pixel_augment: bool = True           # can crop/flip frames while training
    needs_rgb: bool = False              # pretrained on RGB frames
    # What int8 graphs quantize (inference/graphs.py): ONNX op types, and parts of node names
    # kept fp32 besides the convolutions over the frames' RGB (layers whose rounding costs more
    # than they gain). Convolutions only by default: convlstm's exported graph unrolls its
    # recurrence into Adds (gates, the cell state), which must not be rounded at every step.
    int8_ops: tuple[str, ...] = ("Conv",)
    int8_fp32: tuple[str, ...] = ()
    # the ModelConfig options (OPTIONS) its build reads; another option set away from the
    # model's default would be silently ignored, so check_settings refuses it
    uses: frozenset[str] = frozenset()

    @property
    def defaults(self) -> dict[str, dict[str, Any]]:
        """config.resolve_settings's `defaults`."""
        return {"model": {"name": self.name, **self.model}, "frames": dict(self.frames),
                "train": dict(self.train)}

    def augmentation(self, augment: bool | None) -> dict[str, Any]:
        """The TrainConfig settings that `augment` asks of this model: True (--augment) the
        crop/scale jitter (only where the model sees pixels: a frozen CNN's cached features
        take temporal jitter alone) and TSN temporal jitter; False (--no-augment) none at
        all; None: what the model's defaults and the config file say."""
        if augment is None:
            return {}
        if not augment:
            return {"scale_jitter": 0.0, "temporal_jitter": False, "flip": False,
                    "hue_jitter": 0.0}
        return {"temporal_jitter": True, **({"scale_jitter": 0.2} if self.pixel_augment else {})}


# The ModelConfig fields a user may set (flags, a config file's model section, the API); the
# others follow from the data and the frames, or name the model.
OPTIONS = ("conv_filters", "pool_sizes", "dropout_after", "dropout", "lstm_units", "batchnorm",
           "l2", "recurrent_activation")
_FLAGS = ("lstm_units", "batchnorm", "l2")      # the options `lrcn train` has a flag for
_CNN = frozenset({"conv_filters", "pool_sizes", "dropout_after", "dropout"})

_EFFNET_FRAMES = {"height": 128, "width": 160, "channel_order": "rgb"}
_EFFNET_NORMALISATION = "rgb (x*255 - 127) / 128 (EfficientNet-Lite)"
# effnet's first block (after the stem) in fp32 in int8 graphs: at full resolution with 32
# channels, its rounding moved the features most. `python bench/effnet_int8.py` on an
# effnet-lstm run trained on ../shared/realdata (2026-12-03; calibrated on its 11 validation
# clips; all 76 clips): everything but the stem in int8, a feature cosine to fp32's of 0.9915
# (worst clip 0.967), 2 answers of 76 changed, 2.48x fp32's speed on one thread; with block 0
# in fp32 too, 0.9955 (worst 0.991), 1 changed (a 0.002 margin), 2.41x.
_EFFNET_INT8_FP32 = ("/backbone/_blocks.0/",)
# effnet's ReLU6 (Clip) and residual Adds quantized too, so that its tensors stay int8 from one
# convolution to the next (the quantizer folds a ReLU6 into the range of the int8 tensor)
_EFFNET_INT8_OPS = ("Conv", "Clip", "Add")

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("lrcn", "the seed's LRCN: 4 conv blocks, LSTM(32), Dense (73,060 parameters "
              "for 4 classes)", "x in [0, 1]",
              uses=_CNN | {"lstm_units", "batchnorm", "l2"}),
    ModelSpec("lrcn-bn", "the seed's LRCN with BatchNorm after each convolution (the seed's "
              "suggestion)", "x in [0, 1]", build=_lrcn_bn, model={"batchnorm": True},
              uses=_CNN | {"lstm_units", "l2"}),      # batchnorm: always
    ModelSpec("convlstm", "the tutorial's ConvLSTM2D stack, 4-8-14-16 filters (44,524 "
              "parameters for 4 classes)", "x in [0, 1]", build=_convlstm,
              model={"conv_filters": (4, 8, 14, 16), "pool_sizes": (2, 2, 2, 2),
                     "dropout_after": (True, True, True, False), "dropout": 0.2},
              uses=_CNN | {"recurrent_activation"}),
    ModelSpec("effnet-lstm", "frozen ImageNet EfficientNet-Lite0 per frame (features cached), "
              "LSTM(32), Dense", _EFFNET_NORMALISATION, build=_effnet(frozen=True),
              model={"dropout": 0.5},
              frames=_EFFNET_FRAMES, cached_features=True, pixel_augment=False,
              needs_rgb=True, uses=frozenset({"dropout", "lstm_units"}),
              int8_ops=_EFFNET_INT8_OPS, int8_fp32=_EFFNET_INT8_FP32),
    ModelSpec("effnet-lrcn", "EfficientNet-Lite0 fine-tuned end to end with LSTM(32) (for a "
              "GPU; runs on a CPU)", _EFFNET_NORMALISATION, build=_effnet(frozen=False),
              model={"dropout": 0.5},
              frames=_EFFNET_FRAMES, train={"scale_jitter": 0.2, "temporal_jitter": True},
              needs_rgb=True, uses=frozenset({"dropout", "lstm_units"}),
              int8_ops=_EFFNET_INT8_OPS, int8_fp32=_EFFNET_INT8_FP32),
)}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise LrcnError(f"unknown model {name!r} (one of: {', '.join(MODELS)})",
                        kind=ErrorKind.SETTING) from None


def settings_for(name: str | None, file: dict[str, dict[str, Any]] | None = None, *,
                 frames: dict[str, Any] | None = None, split: dict[str, Any] | None = None,
                 train: dict[str, Any] | None = None, model: dict[str, Any] | None = None,
                 augment: bool | None = None) -> RunSettings:
    """A run's settings for the model `name` (None: the config file's model, else the default
    one), in layers: the dataclasses' defaults, the model's own (ModelSpec), the config file's
    sections (config.load_config_file), then the settings given (None: not given), with what
    `augment` asks of this model (ModelSpec.augmentation) over the training ones."""
    file = file or {}
    spec = get_spec(name or file.get("model", {}).get("name") or DEFAULT_MODEL)
    # A config file's augmentation is overridden by --no-augment; one given as a flag is refused.
    if augment is False and (asked := next((k for k, v in (train or {}).items()
                                            if v and k in spec.augmentation(False)), None)):
        raise LrcnError(f"no augmentation (--no-augment) and {asked}={train[asked]!r} ask "
                        "for opposite things: give one", kind=ErrorKind.SETTING)
    return resolve_settings(file, defaults=spec.defaults, frames=frames, split=split,
                            train={**(train or {}), **spec.augmentation(augment)},
                            model={**(model or {}), "name": spec.name})


def check_settings(config: ModelConfig, channel_order: str, train=None) -> ModelSpec:
    """Refuse, in one line (ErrorKind.SETTING), settings that a model cannot honour: an option
    it does not use (ModelSpec.uses) set away from its default, BGR frames for a model
    pretrained on RGB, pixel augmentation of cached features, a frame too small for its
    pooling."""
    spec = get_spec(config.name)
    defaults = {f.name: f.default for f in fields(ModelConfig)} | spec.model
    for option in OPTIONS:
        value = getattr(config, option)   # a config file's lists are the defaults' tuples
        if option not in spec.uses and \
                (tuple(value) if isinstance(value, list) else value) != defaults[option]:
            users = [name for name, other in MODELS.items() if option in other.uses]
            flag = f" (--{option.replace('_', '-')})" if option in _FLAGS else ""
            raise LrcnError(f"{config.name} does not use the {option} setting{flag}; the models "
                            f"that do: {', '.join(users)}", kind=ErrorKind.SETTING)
    if spec.needs_rgb and channel_order != "rgb":
        raise LrcnError(f"{config.name} is pretrained on RGB frames: channel_order must be rgb",
                        kind=ErrorKind.SETTING)
    if train is not None and not spec.pixel_augment and \
            (train.scale_jitter or train.flip or train.hue_jitter):
        raise LrcnError(f"{config.name} trains on cached features: it cannot crop, flip or "
                        "recolour frames (use effnet-lrcn for that)", kind=ErrorKind.SETTING)
    try:
        build_model(config)          # shapes that do not fit (too small a frame for the pooling)
    except ValueError as exc:
        raise LrcnError(f"model {config.name}: {exc}", kind=ErrorKind.SETTING) from None
    return spec


def build_model(config: ModelConfig, pretrained: bool = False):
    """The model for `config`. `pretrained`: load the ImageNet backbone weights (training a
    new effnet model); a checkpoint's weights replace them all, so loading one does not need
    them."""
    return get_spec(config.name).build(config, pretrained)


__all__ = ["ModelSpec", "MODELS", "DEFAULT_MODEL", "get_spec", "settings_for", "check_settings",
           "build_model"]
