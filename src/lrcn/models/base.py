"""What every model of the family shares: seeded dropout (MaskDropout), the clip classifier's
shape (per-frame features, then an LSTM and a Dense layer to logits, ClipClassifier), Keras's
LSTM initialisation, the uint8-to-float input conversion and the wrappers that inference and
ONNX export run (FrameFeatures, SequenceLogits, ClipLogits).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import torch
from torch import nn

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

    def draw(self, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
             ) -> torch.Tensor:
        """The mask of this forward pass: the next of the stream, or, where a training step's
        chunks run in threads, this thread's chunk's (ChunkMasks). What a model calls."""
        chunk = getattr(_running_chunk, "value", None)
        if chunk is not None:
            return chunk[0].mask(self, chunk[1], shape, device, dtype)
        return self.mask(shape, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.draw(tuple(x.shape), x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


_running_chunk = threading.local()    # (ChunkMasks, chunk index) of this thread's forward pass


class ChunkMasks:
    """The dropout masks of one training step whose chunks of clips run in threads at once
    (training.steps). A layer's stream is drawn in call order, so threads racing for it would
    make a seed's masks depend on timing. Here the first chunk to reach a layer draws that
    layer's masks for every chunk, in chunk order: chunk i gets what it would have drawn had
    the chunks run one after another, which is also what one pass over the batch draws.
    Each layer must draw once per forward pass (MaskDropout.draw; true of every model here:
    ConvLSTM's recurrent dropout draws one mask for all of a clip's steps)."""

    def __init__(self, clips: list[int]):
        self.clips = clips                       # clips in each chunk, in order
        self.lock = threading.Lock()
        self.masks: dict[MaskDropout, list[torch.Tensor]] = {}

    @contextlib.contextmanager
    def chunk(self, index: int):
        """Dropout in this thread's forward passes takes chunk `index`'s masks."""
        _running_chunk.value = (self, index)
        try:
            yield
        finally:
            _running_chunk.value = None

    def mask(self, layer: MaskDropout, index: int, shape: tuple[int, ...],
             device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        with self.lock:
            masks = self.masks.get(layer)
            if masks is None:
                per_clip, rest = divmod(shape[0], self.clips[index])   # frames, or 1 (a clip)
                if rest:
                    raise ValueError(f"dropout input of {shape[0]} rows for "
                                     f"{self.clips[index]} clips")
                masks = self.masks[layer] = [layer.mask((per_clip * n, *shape[1:]), device, dtype)
                                             for n in self.clips]
            return masks[index]


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

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) float frames in [0, 1] -> per-frame features."""
        raise NotImplementedError

    def sequence_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) per-frame features -> (B, classes) logits."""
        raise NotImplementedError

    def frame_features_uint8(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) uint8 frames, as decoded -> per-frame features: the scaling to [0, 1]
        included (a model may fold it into its first layer: the seed model does)."""
        return self.frame_features(clips_to_input(frames))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C) clips (Keras's layout), float in [0, 1] or uint8 as decoded ->
        (B, classes) logits; or (B, T, F) frame features computed before (a frozen CNN's
        cached features)."""
        if clips.dim() == 3:
            return self.sequence_logits(clips)
        batch, steps = clips.shape[:2]
        cnn = self.frame_features_uint8 if clips.dtype == torch.uint8 else self.frame_features
        features = cnn(clips.flatten(0, 1))                  # all B*T frames in one CNN call
        return self.sequence_logits(features.view(batch, steps, *features.shape[1:]))

    def regularization_loss(self) -> torch.Tensor:
        """A loss term added in training (the seed model's optional L2); zero by default."""
        return torch.zeros(())

    def add_lstm_head(self, feature_size: int, units: int, classes: int,
                      init: bool = True) -> None:
        """LSTM(units) over the frame features and Dense to logits, as the seed's Keras model
        has them: one LSTM bias (PyTorch's second, `bias_hh_l0`, is fixed at zero), Keras's
        initialisation (init=False leaves it to a model that initialises all its layers in
        one pass, so that a seed draws the same weights as before)."""
        self.lstm = nn.LSTM(feature_size, units, batch_first=True)
        self.lstm.bias_hh_l0.requires_grad_(False)
        self.head = nn.Linear(units, classes)
        if not init:
            return
        with torch.no_grad():
            keras_lstm_init(self.lstm)
            nn.init.xavier_uniform_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def lstm_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, classes): the LSTM's last state, then Dense.

        The LSTM runs in fp32 even under bf16/fp16 autocast: it is a small part of the work,
        and oneDNN has no bf16 LSTM on CPUs without bf16 instructions."""
        with torch.autocast(features.device.type, enabled=False):
            _, (hidden, _) = self.lstm(features.float())    # hidden: (1, B, units)
        return self.head(hidden[-1])


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

    def __init__(self, model: ClipClassifier):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.frame_features_uint8(frames)


class SequenceLogits(nn.Module):
    """(B, T, F) frame features -> (B, classes) logits: the second half. No softmax here: the
    temperature and the one softmax are applied to logits by the caller (calibrate.softmax)."""

    def __init__(self, model: ClipClassifier):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.sequence_logits(features)


class ClipLogits(nn.Module):
    """uint8 (B, T, H, W, C) clips -> (B, classes) logits: the whole classifier as it is
    deployed (the exported ONNX file)."""

    def __init__(self, model: ClipClassifier):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips)
