"""The tutorial's other model: a stack of Keras ConvLSTM2D layers, then Dense.

ConvLSTM2D(4, 8, 14, 16 filters; 3x3, tanh, recurrent dropout 0.2, return_sequences), each
followed by MaxPooling3D((1, 2, 2), "same"), the first three then by TimeDistributed
Dropout(0.2); Flatten; Dense softmax: 44,524 parameters for four classes, as Keras counts them.

Keras's maths, so that the tutorial's saved model imports (keras_import.py): the input
convolution pads "valid", the recurrent one "same"; the gates are ordered i, f, c, o in one
kernel; the forget gate's bias starts at one; the recurrent dropout mask is drawn once per
sequence and applied to the hidden state at every step. The model does not split into per-frame
features and a sequence part the way the LRCN does (its first layer is already recurrent), so
its "frame features" are the frames themselves, flattened, and the whole network runs in
`sequence_logits`: timelines and streams still work, they just share no CNN work between
windows.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .base import ClipClassifier, MaskDropout


class ConvLSTMCell(nn.Module):
    """One Keras ConvLSTM2D layer (return_sequences=True, channels-first inside)."""

    def __init__(self, cin: int, filters: int, kernel: int = 3, recurrent_dropout: float = 0.2,
                 recurrent_activation: str = "sigmoid"):
        super().__init__()
        self.filters, self.kernel = filters, kernel
        self.input_conv = nn.Conv2d(cin, 4 * filters, kernel)                  # "valid"
        self.recurrent_conv = nn.Conv2d(filters, 4 * filters, kernel, padding=kernel // 2,
                                        bias=False)                           # "same"
        self.recurrent_dropout = MaskDropout(recurrent_dropout)
        if recurrent_activation not in ("sigmoid", "hard_sigmoid", "hard_sigmoid6"):
            raise ValueError(f"unsupported recurrent activation {recurrent_activation!r}")
        self.recurrent_activation = recurrent_activation

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        if self.recurrent_activation == "hard_sigmoid":   # Keras 2's: clip(0.2x + 0.5, 0, 1)
            return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)
        if self.recurrent_activation == "hard_sigmoid6":  # Keras 3's: clip(x/6 + 0.5, 0, 1)
            return torch.clamp(x / 6 + 0.5, 0.0, 1.0)
        return torch.sigmoid(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, filters, H-k+1, W-k+1)."""
        b, t = x.shape[:2]
        inputs = self.input_conv(x.flatten(0, 1))           # all steps' input parts at once
        inputs = inputs.view(b, t, *inputs.shape[1:])
        h = inputs.new_zeros(b, self.filters, *inputs.shape[3:])
        c = torch.zeros_like(h)
        mask = None
        if self.training and self.recurrent_dropout.p:
            mask = self.recurrent_dropout.draw(tuple(h.shape), h.device, h.dtype)
        outputs = []
        for step in range(t):
            z = inputs[:, step] + self.recurrent_conv(h if mask is None else h * mask)
            i, f, g, o = z.chunk(4, dim=1)
            c = self.gate(f) * c + self.gate(i) * torch.tanh(g)
            h = self.gate(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class ConvLSTM(ClipClassifier):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        cells, drops = [], []
        channels, height, width = config.channels, config.height, config.width
        for filters, pool, drop in zip(config.conv_filters, config.pool_sizes,
                                       config.dropout_after):
            cells.append(ConvLSTMCell(channels, filters, 3, config.dropout,
                                      config.recurrent_activation))
            drops.append(MaskDropout(config.dropout) if drop else nn.Identity())
            # valid 3x3, then "same" pooling: ceil
            height, width = -(-(height - 2) // pool), -(-(width - 2) // pool)
            channels = filters
        if height < 1 or width < 1:
            raise ValueError(f"input {config.height}x{config.width} is too small for ConvLSTM")
        self.cells = nn.ModuleList(cells)
        self.drops = nn.ModuleList(drops)
        self.pools = list(config.pool_sizes)
        self.feature_size = config.height * config.width * config.channels
        self.head = nn.Linear(config.num_frames * height * width * channels, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Keras's initialisation: Glorot-uniform input kernels and Dense, orthogonal
        recurrent kernels, zero biases but the forget gate's (unit_forget_bias)."""
        for cell in self.cells:
            # Keras draws one kernel of shape (k, k, cin, 4*filters); fans as Keras computes.
            nn.init.xavier_uniform_(cell.input_conv.weight)
            nn.init.orthogonal_(cell.recurrent_conv.weight.view(4 * cell.filters, -1))
            nn.init.zeros_(cell.input_conv.bias)
            cell.input_conv.bias[cell.filters:2 * cell.filters] = 1.0
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The frames themselves, flattened: the recurrence starts at the first layer."""
        return frames.flatten(1)

    def sequence_logits(self, features: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, t = features.shape[:2]
        x = features.reshape(b, t, cfg.height, cfg.width, cfg.channels).permute(0, 1, 4, 2, 3)
        for cell, drop, pool in zip(self.cells, self.drops, self.pools):
            x = cell(x)
            frames = x.flatten(0, 1)
            h, w = frames.shape[-2:]
            # MaxPooling3D((1, p, p), padding="same"): pad the bottom/right edge with -inf
            frames = F.pad(frames, (0, (-w) % pool, 0, (-h) % pool), value=float("-inf"))
            frames = drop(F.max_pool2d(frames, pool))
            x = frames.view(b, t, *frames.shape[1:])
        # Keras flattens (T, H, W, C)
        return self.head(x.permute(0, 1, 3, 4, 2).flatten(1))


__all__ = ["ConvLSTM", "ConvLSTMCell"]
