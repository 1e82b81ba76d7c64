"""Bring a Keras LRCN or the tutorial's ConvLSTM (`.h5` or `.keras` file) into lrcn, without
TensorFlow.

The architecture is read from the file's JSON config and checked layer by layer against what
lrcn's LRCN can represent; the weights are read with h5py and mapped one to one:
Conv2D kernels (kh, kw, in, out) -> (out, in, kh, kw); the LSTM's kernel, recurrent kernel and
single bias (gate order i, f, c, o, which is PyTorch's i, f, g, o) -> weight_ih, weight_hh,
bias_ih (bias_hh stays zero); Dense (in, out) -> (out, in); ConvLSTM2D's kernel and recurrent
kernel (kh, kw, in, 4f) -> (4f, in, kh, kw), gates i, f, c, o in both. Nothing in the file is
executed.

Why this module is long: two architectures are checked layer by layer (refusing, by name, any
layer lrcn cannot represent), and weights are read from two file formats.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .checkpoint import save_checkpoint
from ..config import FrameConfig, ModelConfig
from ..errors import ErrorKind, LrcnError
from .lrcn import LRCN
from .registry import build_model


@dataclass
class KerasLayer:
    index: int
    name: str
    kind: str             # class name; "TimeDistributed(Conv2D)" for wrapped layers
    config: dict[str, Any]
    outer: str = ""       # the (outer) class name: "TimeDistributed" for wrapped layers


def _load_h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        raise LrcnError("reading Keras files needs h5py (pip install h5py)") from None
    return h5py


def _decode(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _layers_from_config(config: dict, path: Path) -> tuple[list[KerasLayer], tuple | None]:
    """The Sequential model's layers, flattened, and the input shape if the config gives it."""
    if config.get("class_name") not in ("Sequential", "Functional", "Model"):
        raise LrcnError(f"not a Keras Sequential model ({config.get('class_name')})", path)
    raw = config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]
    layers, input_shape = [], None
    for i, layer in enumerate(raw):
        cls, cfg = layer["class_name"], layer.get("config", {})
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape and input_shape is None:
            input_shape = tuple(shape[1:])
        if cls == "InputLayer":
            continue
        kind = cls
        if cls == "TimeDistributed":
            inner = cfg["layer"]
            kind, cfg = f"TimeDistributed({inner['class_name']})", {**inner.get("config", {}),
                                                                   "_wrapper": cfg}
        layers.append(KerasLayer(i, cfg.get("_wrapper", cfg).get("name", cls), kind, cfg, cls))
    return layers, input_shape


def _refuse(layer: KerasLayer | None, expected: str, path: Path) -> None:
    if layer is None:
        raise LrcnError(f"the model ends where lrcn expects {expected}", path)
    raise LrcnError(f"layer {layer.index} ({layer.name}: {layer.kind}) differs from what lrcn "
                    f"can represent: expected {expected}", path)


def _pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _dropout_after(layers: list[KerasLayer], position: int, drops: list[bool],
                   rates: list[float]) -> int:
    """An optional TimeDistributed(Dropout) at `position`, after a block: noted in `drops`
    (and its rate in `rates`); returns the position after it."""
    drop = layers[position] if position < len(layers) else None
    present = drop is not None and drop.kind == "TimeDistributed(Dropout)"
    drops.append(present)
    if present:
        rates.append(float(drop.config.get("rate", 0.0)))
    return position + present


def _input_shape(input_shape: tuple | None, path: Path) -> tuple[int, int, int, int]:
    if input_shape is None or len(input_shape) != 4 or None in input_shape:
        raise LrcnError("the Keras config does not give a fixed input shape "
                        "(frames, height, width, channels)", path)
    return tuple(int(v) for v in input_shape)


def parse_convlstm(layers: list[KerasLayer], input_shape: tuple | None, path: Path,
                   keras_major: int = 2) -> ModelConfig:
    """The tutorial's ConvLSTM model: ConvLSTM2D blocks (3x3, tanh, "valid", sequences out),
    each followed by MaxPooling3D((1, p, p), "same") and optionally TimeDistributed(Dropout),
    then Flatten and Dense softmax. "hard_sigmoid" names clip(0.2x + 0.5) in Keras 2 (the
    tutorial's) and clip(x/6 + 0.5) in Keras 3, so the file's Keras version decides."""
    position = 0
    filters, pools, drops, rates, activations = [], [], [], [], set()
    while position < len(layers) and layers[position].kind == "ConvLSTM2D":
        layer = layers[position]
        c = layer.config
        ok = (_pair(c.get("kernel_size")) == (3, 3) and _pair(c.get("strides", 1)) == (1, 1)
              and c.get("padding", "valid") == "valid" and c.get("activation") == "tanh"
              and c.get("return_sequences") and not c.get("go_backwards")
              and c.get("use_bias", True) and not c.get("dropout", 0)
              and c.get("recurrent_activation", "sigmoid") in ("sigmoid", "hard_sigmoid")
              and c.get("data_format", "channels_last") in ("channels_last", None))
        if not ok:
            _refuse(layer, "ConvLSTM2D 3x3, stride 1, padding 'valid', tanh, returning "
                           "sequences", path)
        filters.append(int(c["filters"]))
        rates.append(float(c.get("recurrent_dropout", 0.0)))
        activation = c.get("recurrent_activation", "sigmoid")
        activations.add("hard_sigmoid6" if activation == "hard_sigmoid" and keras_major >= 3
                        else activation)
        position += 1
        pool = layers[position] if position < len(layers) else None
        size = tuple(pool.config.get("pool_size", (2, 2, 2))) if pool else ()
        if pool is None or pool.kind not in ("MaxPooling3D", "MaxPool3D") or \
                len(size) != 3 or size[0] != 1 or size[1] != size[2] or \
                pool.config.get("padding") != "same" or \
                tuple(pool.config.get("strides") or size) != size:
            _refuse(pool, "MaxPooling3D((1, p, p), padding 'same') after each ConvLSTM2D", path)
        pools.append(int(size[1]))
        position += 1
        position = _dropout_after(layers, position, drops, rates)
    if len(set(rates)) > 1 or len(activations) > 1:
        _refuse(layers[0], "one dropout rate and one recurrent activation for all blocks", path)
    layer = layers[position] if position < len(layers) else None
    if layer is None or layer.kind != "Flatten":
        _refuse(layer, "Flatten after the ConvLSTM2D blocks", path)
    position += 1
    layer = layers[position] if position < len(layers) else None
    if layer is None or layer.kind != "Dense" or layer.config.get("activation") != "softmax" \
            or not layer.config.get("use_bias", True):
        _refuse(layer, "Dense with softmax", path)
    if position + 1 < len(layers):
        _refuse(layers[position + 1], "nothing after the Dense softmax layer", path)
    frames, height, width, channels = _input_shape(input_shape, path)
    try:
        return ModelConfig(name="convlstm", num_classes=int(layer.config["units"]),
                           num_frames=frames, height=height, width=width, channels=channels,
                           conv_filters=tuple(filters), pool_sizes=tuple(pools),
                           dropout_after=tuple(drops), dropout=rates[0] if rates else 0.2,
                           recurrent_activation=activations.pop())
    except ValueError as exc:
        raise LrcnError(f"cannot represent this model: {exc}", path) from None


def parse_architecture(layers: list[KerasLayer], input_shape: tuple | None, path: Path,
                       keras_major: int = 2) -> ModelConfig:
    """Check the layers against lrcn's LRCN (or the tutorial's ConvLSTM) and return the
    matching ModelConfig; refuse, naming the first layer that differs, anything else."""
    if layers and layers[0].kind == "ConvLSTM2D":
        return parse_convlstm(layers, input_shape, path, keras_major)
    position = 0

    def peek() -> KerasLayer | None:
        return layers[position] if position < len(layers) else None

    filters, pools, drops, rates = [], [], [], []
    while (layer := peek()) is not None and layer.kind == "TimeDistributed(Conv2D)":
        c = layer.config
        ok = (_pair(c.get("kernel_size")) == (3, 3) and _pair(c.get("strides", 1)) == (1, 1)
              and c.get("padding") == "same" and c.get("activation") == "relu"
              and c.get("use_bias", True) and _pair(c.get("dilation_rate", 1)) == (1, 1)
              and c.get("groups", 1) == 1
              and c.get("data_format", "channels_last") in ("channels_last", None))
        if not ok:
            _refuse(layer, "Conv2D 3x3, stride 1, padding 'same', ReLU, with bias", path)
        filters.append(int(c["filters"]))
        position += 1
        pool = peek()
        if pool is None or pool.kind not in ("TimeDistributed(MaxPooling2D)",
                                             "TimeDistributed(MaxPool2D)"):
            _refuse(pool, "TimeDistributed(MaxPooling2D) after each Conv2D", path)
        size = _pair(pool.config.get("pool_size", 2))
        strides = pool.config.get("strides")
        if size[0] != size[1] or (strides is not None and _pair(strides) != size) \
                or pool.config.get("padding", "valid") != "valid":
            _refuse(pool, "square MaxPooling2D with stride equal to its size, padding 'valid'",
                    path)
        pools.append(size[0])
        position += 1
        position = _dropout_after(layers, position, drops, rates)
    if not filters:
        _refuse(peek(), "TimeDistributed(Conv2D) as the first layer", path)
    if len(set(rates)) > 1:
        _refuse(layers[0], "one dropout rate for all blocks", path)
    layer = peek()
    if layer is None or layer.kind != "TimeDistributed(Flatten)":
        _refuse(layer, "TimeDistributed(Flatten) after the convolution blocks", path)
    position += 1
    layer = peek()
    c = layer.config if layer else {}
    if layer is None or layer.kind != "LSTM" or c.get("return_sequences") or \
            c.get("go_backwards") or c.get("activation", "tanh") != "tanh" or \
            c.get("recurrent_activation", "sigmoid") != "sigmoid" or not c.get("use_bias", True):
        _refuse(layer, "LSTM (tanh, sigmoid gates, with bias, last state only)", path)
    units = int(c["units"])
    position += 1
    layer = peek()
    if layer is None or layer.kind != "Dense" or layer.config.get("activation") != "softmax" \
            or not layer.config.get("use_bias", True):
        _refuse(layer, "Dense with softmax", path)
    num_classes = int(layer.config["units"])
    position += 1
    if peek() is not None:
        _refuse(peek(), "nothing after the Dense softmax layer", path)
    frames, height, width, channels = _input_shape(input_shape, path)
    try:
        return ModelConfig(num_classes=num_classes, num_frames=frames, height=height, width=width,
                           channels=channels, conv_filters=tuple(filters),
                           pool_sizes=tuple(pools), dropout_after=tuple(drops),
                           dropout=rates[0] if rates else 0.25, lstm_units=units)
    except ValueError as exc:
        raise LrcnError(f"cannot represent this model: {exc}", path) from None


def _weights_h5(handle, layers: list[KerasLayer]) -> dict[str, list[np.ndarray]]:
    """Legacy .h5: model_weights/<layer>/ lists its weights in the `weight_names` attribute."""
    group = handle["model_weights"]
    out = {}
    for layer in layers:
        if layer.name not in group:
            continue
        names = [_decode(n) for n in group[layer.name].attrs.get("weight_names", [])]
        out[layer.name] = [np.asarray(group[layer.name][n]) for n in names]
    return out


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _weights_keras_v3(handle, layers: list[KerasLayer]) -> dict[str, list[np.ndarray]]:
    """Keras 3 .keras: layers/<key>/[layer/|cell/]vars/<i>, where the key is not the layer's
    name but its class in snake case, numbered in model order (time_distributed,
    time_distributed_1, ..., lstm, dense)."""
    out = {}
    root = handle["layers"]
    seen: dict[str, int] = {}
    for layer in layers:
        base = _snake_case(layer.outer)
        count = seen.get(base, 0)
        seen[base] = count + 1
        key = base if count == 0 else f"{base}_{count}"
        if key not in root:
            key = layer.name
        if key not in root:
            continue
        group = root[key]
        for sub in ("layer", "cell"):
            if sub in group and "vars" in group[sub] and len(group[sub]["vars"]):
                group = group[sub]
                break
        variables = group["vars"] if "vars" in group else {}
        out[layer.name] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
    return out


@dataclass
class KerasModel:
    config: ModelConfig
    weights: dict[str, list[np.ndarray]]
    layers: list[KerasLayer]
    class_names: list[str] | None


def read_keras(path: str | Path) -> KerasModel:
    """Read a Keras `.h5` or `.keras` file's architecture and weights."""
    h5py = _load_h5py()
    path = Path(path)
    if not path.is_file():
        raise LrcnError("no such file", path, ErrorKind.NOT_FOUND)
    class_names = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                layers, input_shape = _layers_from_config(config, path)
                metadata = json.loads(archive.read("metadata.json")) \
                    if "metadata.json" in archive.namelist() else {}
                class_names = metadata.get("class_names")
                version = str(metadata.get("keras_version", "3"))
                with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as handle:
                    weights = _weights_keras_v3(handle, layers)
        else:
            with h5py.File(path, "r") as handle:
                if "model_config" not in handle.attrs:
                    raise LrcnError("not a Keras model file (no model_config)", path)
                config = json.loads(_decode(handle.attrs["model_config"]))
                version = str(_decode(handle.attrs.get("keras_version", "2")))
                layers, input_shape = _layers_from_config(config, path)
                if "class_names" in handle.attrs:
                    class_names = [_decode(n) for n in
                                   json.loads(_decode(handle.attrs["class_names"]))]
                weights = _weights_h5(handle, layers)
    except LrcnError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise LrcnError(f"not a readable Keras .h5/.keras model ({exc})", path) from None
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 2
    model_config = parse_architecture(layers, input_shape, path, major)
    return KerasModel(model_config, weights, layers, class_names)


def to_lrcn(keras: KerasModel, path: Path):
    """Build lrcn's LRCN (or ConvLSTM) with the Keras weights."""
    model = build_model(keras.config)
    dense_layer = next(layer for layer in keras.layers if layer.kind == "Dense")

    def weights_of(layer: KerasLayer, count: int) -> list[np.ndarray]:
        values = keras.weights.get(layer.name, [])
        if len(values) != count:
            raise LrcnError(f"layer {layer.name}: expected {count} weight arrays, found "
                            f"{len(values)}", path)
        return values

    def assign(param: torch.Tensor, value: np.ndarray, what: str) -> None:
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tensor.shape != param.shape:
            raise LrcnError(f"{what}: weight shape {tuple(value.shape)} does not fit "
                            f"{tuple(param.shape)}", path)
        param.copy_(tensor)

    if keras.config.name == "convlstm":
        cells = [layer for layer in keras.layers if layer.kind == "ConvLSTM2D"]
        with torch.no_grad():
            for cell, layer in zip(model.cells, cells):
                kernel, recurrent, bias = weights_of(layer, 3)
                # (kh, kw, in, 4f) -> (4f, in, kh, kw); gates i, f, c, o in both
                assign(cell.input_conv.weight, np.transpose(kernel, (3, 2, 0, 1)), layer.name)
                assign(cell.recurrent_conv.weight, np.transpose(recurrent, (3, 2, 0, 1)),
                       layer.name)
                assign(cell.input_conv.bias, bias, layer.name)
            kernel, bias = weights_of(dense_layer, 2)
            assign(model.head.weight, kernel.T, dense_layer.name)
            assign(model.head.bias, bias, dense_layer.name)
        return model.eval()
    convs = [m for m in model.cnn if isinstance(m, torch.nn.Conv2d)]
    conv_layers = [layer for layer in keras.layers if layer.kind == "TimeDistributed(Conv2D)"]
    lstm_layer = next(layer for layer in keras.layers if layer.kind == "LSTM")
    with torch.no_grad():
        for conv, layer in zip(convs, conv_layers):
            kernel, bias = weights_of(layer, 2)
            assign(conv.weight, np.transpose(kernel, (3, 2, 0, 1)), layer.name)
            assign(conv.bias, bias, layer.name)
        kernel, recurrent, bias = weights_of(lstm_layer, 3)
        assign(model.lstm.weight_ih_l0, kernel.T, lstm_layer.name)
        assign(model.lstm.weight_hh_l0, recurrent.T, lstm_layer.name)
        assign(model.lstm.bias_ih_l0, bias, lstm_layer.name)
        model.lstm.bias_hh_l0.zero_()
        kernel, bias = weights_of(dense_layer, 2)
        assign(model.head.weight, kernel.T, dense_layer.name)
        assign(model.head.bias, bias, dense_layer.name)
    return model.eval()


def import_keras(path: str | Path, class_names: Sequence[str] | None = None,
                 channel_order: str = "bgr", interpolation: str = "bilinear"
                 ) -> tuple[LRCN, FrameConfig, list[str]]:
    """A Keras LRCN file -> (lrcn model, preprocessing, class names).

    The tutorial feeds OpenCV frames (BGR) resized with cv2.resize's bilinear default, scaled to
    [0, 1]: those are the defaults here, recorded in the checkpoint so prediction feeds the
    model what it was trained on.
    """
    path = Path(path)
    keras = read_keras(path)
    names = list(class_names) if class_names else keras.class_names
    if not names:
        raise LrcnError("the file holds no class names: pass --classes A,B,...", path)
    if len(names) != keras.config.num_classes:
        raise LrcnError(f"{len(names)} class names given for a model with "
                        f"{keras.config.num_classes} outputs", path)
    frames = FrameConfig(num_frames=keras.config.num_frames, height=keras.config.height,
                         width=keras.config.width, channel_order=channel_order,
                         interpolation=interpolation)
    return to_lrcn(keras, path), frames, names


def import_keras_to_checkpoint(path: str | Path, out: str | Path | None = None,
                               class_names: Sequence[str] | None = None,
                               channel_order: str = "bgr", interpolation: str = "bilinear"
                               ) -> tuple[Path, LRCN, FrameConfig, list[str]]:
    """`lrcn import-keras`: a Keras LRCN file -> an lrcn checkpoint (default: the file's name
    with .safetensors), returning where it went and what it holds."""
    model, frames, names = import_keras(path, class_names, channel_order, interpolation)
    target = Path(out) if out else Path(path).with_suffix(".safetensors")
    save_checkpoint(target, model, frames, names,
                    {"imported_from": str(Path(path).resolve())})
    return target, model, frames, names
