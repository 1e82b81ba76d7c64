"""The seed's LRCN: a small CNN applied to every frame, an LSTM over the frame features, and a
linear layer to class logits (softmax belongs to the loss and to prediction, never the model).

The maths and the trainable parameter count are Keras's (73,060 for 4 classes): Keras's LSTM
has one bias vector where PyTorch's has two, so the second (`bias_hh_l0`) is fixed at zero and
not trained; weights are initialised as Keras initialises them (Glorot-uniform kernels,
orthogonal recurrent kernel, zero biases with the LSTM forget gate's bias at one).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import ModelConfig


class MaskDropout(nn.Module):
    """Inverted dropout (as nn.Dropout and Keras's Dropout) with seeded masks.

    Why not nn.Dropout: on CPU its Bernoulli sampling costs ~7 ns per element, which made
    dropout about a fifth of a training step of this small model. On the CPU, masks come from
    NumPy's PCG64 as 16-bit integers compared against a threshold: ~1 ns per element, p exact
    to 1/65536, drawn in (N, H, W, C) order whatever the tensor's memory layout, so a seed
    gives the same masks everywhere. On a GPU the same comparison runs on 16-bit integers drawn
    there by a generator seeded from the same seed (copying CPU-drawn masks would cost more
    than the step). `seed()` sets the streams (training seeds them).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 65536)
        self.seed(int(torch.randint(0, 2**62, ()).item()))

    def seed(self, seed: int) -> None:
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def mask(self, shape: tuple[int, ...], device: torch.device = torch.device("cpu"),
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A mask for (N, C, H, W) activations: 0 or 1/(1-p), drawn in NHWC order."""
        n, c, h, w = shape
        if device.type == "cpu":
            bits = np.frombuffer(self.rng.bytes(2 * n * c * h * w), dtype=np.uint16)
            keep = torch.from_numpy(bits >= self.threshold).view(n, h, w, c)
        else:
            generator = self._generators.get(device)
            if generator is None:
                generator = self._generators[device] = \
                    torch.Generator(device=device).manual_seed(self._seed)
            bits = torch.randint(0, 65536, (n, h, w, c), generator=generator, device=device,
                                 dtype=torch.int32)
            keep = bits >= self.threshold
        return keep.permute(0, 3, 1, 2).to(dtype).mul_(1.0 / (1.0 - self.p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.mask(tuple(x.shape), x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ClipClassifier(nn.Module):
    """What every model of the family (zoo.py) shares: seeded dropout streams and the
    optimizer's parameter groups (a model with a pretrained part overrides those)."""

    def seed_dropout(self, seed: int) -> None:
        """Make dropout masks reproducible: each dropout layer gets its own stream from seed."""
        for i, module in enumerate(m for m in self.modules() if isinstance(m, MaskDropout)):
            module.seed(seed * 1000 + i)

    def param_groups(self, lr: float) -> list[dict]:
        """The optimizer's parameter groups: every trainable parameter at `lr`."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


@torch.no_grad()
def keras_lstm_init(lstm: nn.LSTM) -> None:
    """Keras's LSTM initialisation on a one-layer nn.LSTM: Glorot-uniform kernel, orthogonal
    recurrent kernel, zero biases with the forget gate's at one, and the second bias
    (PyTorch's, which Keras does not have) zero."""
    units = lstm.hidden_size
    nn.init.xavier_uniform_(lstm.weight_ih_l0)
    nn.init.orthogonal_(lstm.weight_hh_l0)
    nn.init.zeros_(lstm.bias_ih_l0)
    lstm.bias_ih_l0[units:2 * units] = 1.0  # unit_forget_bias=True
    nn.init.zeros_(lstm.bias_hh_l0)


class LRCN(ClipClassifier):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels, height, width = config.channels, config.height, config.width
        for filters, pool, drop in zip(config.conv_filters, config.pool_sizes,
                                       config.dropout_after):
            conv = nn.Conv2d(in_channels, filters, 3, padding=1)
            if config.batchnorm:
                # Keras's BatchNormalization defaults: momentum 0.99 (torch: 1 - 0.99), eps 1e-3.
                layers += [conv, nn.ReLU(inplace=True),
                           nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01), nn.MaxPool2d(pool)]
            else:
                # Keras computes relu(conv) then max-pools. ReLU is monotonic, so pooling first
                # gives the same values and the same gradients, and ReLU then runs (forward and
                # backward) on a tensor pool*pool times smaller: ~10 ms of a 40 ms step.
                layers += [conv, nn.MaxPool2d(pool), nn.ReLU(inplace=True)]
            if drop:
                layers.append(MaskDropout(config.dropout))
            in_channels, height, width = filters, height // pool, width // pool
        if height < 1 or width < 1:
            raise ValueError(f"input {config.height}x{config.width} is too small for the pooling")
        self.cnn = nn.Sequential(*layers)
        self.feature_shape = (height, width, in_channels)  # per frame, Keras's (H, W, C)
        self.feature_size = height * width * in_channels
        self.lstm = nn.LSTM(self.feature_size, config.lstm_units, batch_first=True)
        self.lstm.bias_hh_l0.requires_grad_(False)  # Keras has a single LSTM bias
        self.head = nn.Linear(config.lstm_units, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Keras's default initialisation, so training behaves as the tutorial's does."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        keras_lstm_init(self.lstm)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) float frames in [0, 1] -> (N, F) per-frame features.

        The permute to (N, C, H, W) is a free view whose memory is channels-last, the layout
        oneDNN's CPU convolutions run fastest on. Features are flattened in Keras's (H, W, C)
        order, so Keras weights map one to one.
        """
        x = self.cnn(frames.permute(0, 3, 1, 2))           # (N, C', H', W')
        return x.permute(0, 2, 3, 1).flatten(1)            # (N, H'*W'*C')

    def sequence_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frame features -> (B, classes) logits: the LSTM's last state, then Dense.

        The LSTM runs in fp32 even under bf16/fp16 autocast: it is a small part of the work,
        and oneDNN has no bf16 LSTM on CPUs without bf16 instructions."""
        with torch.autocast(features.device.type, enabled=False):
            _, (hidden, _) = self.lstm(features.float())    # hidden: (1, B, units)
        return self.head(hidden[-1])

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) float clips in [0, 1] (Keras's layout) -> (B, classes) logits; or
        (B, T, F) frame features computed before (a frozen CNN's cached features)."""
        if clips.dim() == 3:
            return self.sequence_logits(clips)
        batch, steps = clips.shape[:2]
        features = self.frame_features(clips.flatten(0, 1))  # all B*T frames in one CNN call
        return self.sequence_logits(features.view(batch, steps, -1))

    def regularization_loss(self) -> torch.Tensor:
        """Keras-style L2 on conv kernels and LSTM kernels: l2 * sum(w^2). Zero by default."""
        if not self.config.l2:
            return torch.zeros(())
        weights = [m.weight for m in self.cnn if isinstance(m, nn.Conv2d)]
        weights += [self.lstm.weight_ih_l0, self.lstm.weight_hh_l0]
        return self.config.l2 * sum(w.pow(2).sum() for w in weights)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def clips_to_input(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (B, T, H, W, C) clips from the cache -> float32 in [0, 1], the model's input.
    Float tensors are already inputs (augmented clips, cached features) and pass as they are."""
    if clips.dtype != torch.uint8:
        return clips
    return clips.to(torch.float32).div_(255.0)


class FrameFeatures(nn.Module):
    """uint8 (N, H, W, C) frames -> (N, F) per-frame CNN features: the first half of a split
    inference (engine.py), scaling to [0, 1] included so that frames go in as decoded."""

    def __init__(self, model: LRCN):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.frame_features(clips_to_input(frames))


class SequenceProbabilities(nn.Module):
    """(B, T, F) frame features -> (B, classes) probabilities: the second half."""

    def __init__(self, model: LRCN):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model.sequence_logits(features), dim=1)


class ClipProbabilities(nn.Module):
    """uint8 (B, T, H, W, C) clips -> (B, classes) probabilities: the whole classifier as it is
    deployed (the exported ONNX file)."""

    def __init__(self, model: LRCN):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(clips_to_input(clips)), dim=1)


def layer_shapes(model: LRCN) -> list[tuple[str, tuple[int, ...]]]:
    """Per-layer output shapes in Keras's notation (batch as None, channels last), for checking
    against the seed's `model.summary()`."""
    cfg = model.config
    shapes: list[tuple[str, tuple[int, ...]]] = []
    x = torch.zeros(1, cfg.height, cfg.width, cfg.channels).permute(0, 3, 1, 2)
    with torch.no_grad():
        model_was_training = model.training
        model.eval()
        for layer in model.cnn:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                continue  # Keras folds the activation into Conv2D
            name = {nn.Conv2d: "conv2d", nn.MaxPool2d: "max_pooling2d", MaskDropout: "dropout",
                    nn.BatchNorm2d: "batch_normalization"}[type(layer)]
            shapes.append((name, (cfg.num_frames, x.shape[2], x.shape[3], x.shape[1])))
        model.train(model_was_training)
    shapes.append(("flatten", (cfg.num_frames, x.numel())))
    shapes.append(("lstm", (cfg.lstm_units,)))
    shapes.append(("dense", (cfg.num_classes,)))
    return shapes
