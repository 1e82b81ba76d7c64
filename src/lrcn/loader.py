"""Cached clips as PyTorch batches: what training, validation and batch evaluation read."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .cache import CachedClip


class ClipDataset(torch.utils.data.Dataset):
    """Cached clips as (uint8 (T, H, W, 3) tensor, label), read from the cache one clip at a
    time, so memory does not grow with the data set. The float conversion happens per batch
    in the model's input path, so the data set never sits in memory as float32."""

    def __init__(self, clips: Sequence[CachedClip], class_names: Sequence[str]):
        index = {name: i for i, name in enumerate(class_names)}
        self.items = [(clip.frames_path, index[clip.sample.class_name]) for clip in clips]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames_path, label = self.items[i]
        return torch.from_numpy(np.load(frames_path)), label


__all__ = ["ClipDataset"]
