"""The seed's LRCN: a small CNN applied to every frame, an LSTM over the frame features, and a
linear layer to class logits (softmax belongs to the loss and to prediction, never the model).

The maths and the trainable parameter count are Keras's (73,060 for 4 classes): Keras's LSTM
has one bias vector where PyTorch's has two, so the second (`bias_hh_l0`) is fixed at zero and
not trained; weights are initialised as Keras initialises them (Glorot-uniform kernels,
orthogonal recurrent kernel, zero biases with the LSTM forget gate's bias at one).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .base import ClipClassifier, MaskDropout, keras_lstm_init

# Pooled rows per band of the exported first layer (frame_features_uint8). 64 x 64 frames, runs
# of 48 frames, two at once on 2 cores: 1, 2 and 4 gave 1.15x, 1.17x and 1.02x the frames per
# second of the layer unbanded; in the engine 2 gave 1.04-1.12x (batch 64).
BAND_POOLS = 2


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
        self.add_lstm_head(self.feature_size, config.lstm_units, config.num_classes, init=False)
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

    def frame_features_uint8(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) frames -> features. In an ONNX export, three rewrites that give
        the same sums (the first two cut ONNX Runtime's CPU time for the CNN from 113 to 65 ms
        per 1280 frames, bench/ort_profile.py):
        - the scaling to [0, 1] is folded into the first convolution's weights (conv(x / 255,
          W) = conv(x, W / 255): its padding is zeros either way);
        - the first convolution reads the channels-last frames as they are, as one-channel
          images (H, W * C), with a 3 x 3C kernel at a stride of C along the row: no transpose
          of the input, and ONNX Runtime's kernel for one input channel is faster than for
          three.
        - the first layer (convolution to its pooling) runs in bands of BAND_POOLS pooled rows,
          each band's convolution output (1.5 MB for 48 frames) pooled while it is still in
          the core's cache: the whole layer's (12 MB) went out to memory and back, and the
          pooling read it at memory speed (18% of the CNN's time).
        PyTorch runs the plain form: oneDNN's kernel for the reshaped one is 2x slower."""
        if not torch.onnx.is_in_onnx_export():
            return super().frame_features_uint8(frames)
        first = self.cnn[0]
        h, w, c = (int(size) for size in frames.shape[1:])   # constants in the graph
        weight = first.weight.permute(0, 2, 3, 1).reshape(first.out_channels, 1, 3, 3 * c)
        weight = weight * (1.0 / 255.0)
        pool = next(i for i, layer in enumerate(self.cnn) if isinstance(layer, nn.MaxPool2d))
        size = self.cnn[pool].kernel_size
        # A zero row above and below (the convolution's vertical padding): every band is then
        # its rows and one more on each side, convolved with no vertical padding of its own.
        x = F.pad(frames.reshape(-1, 1, h, w * c), (0, 0, 1, 1))
        kept = (h // size) * size           # the rows the pooling keeps; it drops the rest
        bands = []
        for top in range(0, kept, BAND_POOLS * size):
            bottom = min(top + BAND_POOLS * size, kept)
            band = F.conv2d(x[:, :, top:bottom + 2].to(first.weight.dtype),
                            weight, first.bias, (1, c), (0, c))
            bands.append(self.cnn[1:pool + 1](band))
        x = self.cnn[pool + 1:](torch.cat(bands, dim=2))
        return x.permute(0, 2, 3, 1).flatten(1)

    def sequence_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frame features -> (B, classes) logits."""
        return self.lstm_logits(features)

    def regularization_loss(self) -> torch.Tensor:
        """Keras-style L2 on conv kernels and LSTM kernels: l2 * sum(w^2). Zero by default."""
        if not self.config.l2:
            return torch.zeros(())
        weights = [m.weight for m in self.cnn if isinstance(m, nn.Conv2d)]
        weights += [self.lstm.weight_ih_l0, self.lstm.weight_hh_l0]
        return self.config.l2 * sum(w.pow(2).sum() for w in weights)


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
