"""Training-time augmentation, done on the device batch by batch: the frames in the cache stay
as decoded, and every epoch sees the clips differently.

- Temporal jitter, as TSN samples: a random instant inside each of the clip's segments instead
  of the segment's fixed one. The cache holds `CANDIDATES` evenly spaced frames per segment for
  the training clips (`candidate_frames`); candidate `CANDIDATES // 2` of each segment is the
  frame evaluation uses (sampling.sample_indices), the others lie before and after it.
- Spatial crop and scale jitter: one random crop per clip, the same for all its frames (a
  different crop per frame would make the camera shake), of 1-s..1 of each side, resized back.
- Hue jitter: the colours of each clip turned by one random angle about the grey axis of RGB
  space (greys stay grey; the channels' mean stays, but where a saturated colour is clipped to
  [0, 1]), so that a class cannot be learnt by its colour: with a few dozen scenes per class,
  chance colour clusters are common, and the seed's model took them for the action (issue 20).
  Off unless asked for; the demo uses it.
- Horizontal flip: opt-in only. It turns a left-to-right action into a right-to-left one; the
  synthetic SlideLeft/SlideRight pair shows the harm.

Draws come from a generator reseeded every epoch from the training seed, the epoch and the
rank, so a resumed run augments its remaining epochs exactly as an uninterrupted one would.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..config import TrainConfig, candidate_frames
from ..distributed import rank_seed
from ..models.base import clips_to_input

CANDIDATES = 3     # cached frames per segment for temporal jitter (odd: the middle is the eval one)


class Augmenter:
    """Turns a batch of uint8 clips (B, T*k, H, W, 3) with k candidates per segment (k = 1: no
    temporal jitter) into augmented float clips (B, T, H, W, 3) in [0, 1]. Also works on cached
    features (B, T*k, F): temporal jitter only."""

    def __init__(self, config: TrainConfig, candidates: int, rank: int = 0):
        self.scale_jitter, self.flip = config.scale_jitter, config.flip
        self.hue_jitter = config.hue_jitter
        self.candidates = candidates
        self.seed = rank_seed(config.seed * 7919, rank)
        self.generator = torch.Generator()

    @property
    def pixels(self) -> bool:
        """Whether any augmentation changes pixels (not only which frames are read)."""
        return bool(self.scale_jitter or self.flip or self.hue_jitter)

    @property
    def active(self) -> bool:
        return self.candidates > 1 or self.pixels

    def start_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        g = self.generator
        b = clips.shape[0]
        if self.candidates > 1:
            steps = clips.shape[1] // self.candidates
            pick = torch.randint(0, self.candidates, (b, steps), generator=g)
            index = (torch.arange(steps) * self.candidates + pick).to(clips.device)
            clips = clips[torch.arange(b, device=clips.device)[:, None], index]
        if clips.dim() == 3 or not self.pixels:
            return clips if clips.dtype != torch.uint8 else clips_to_input(clips)
        clips = clips_to_input(clips)
        if self.scale_jitter or self.flip:
            clips = self._spatial(clips, g)
        if self.hue_jitter:     # drawn after the crops, so runs without it draw as before
            angle = (torch.rand(b, generator=g) * 2 - 1) * (2 * math.pi * self.hue_jitter)
            rotation = hue_rotation(angle).to(clips.device, clips.dtype)
            clips = torch.einsum("bthwc,bdc->bthwd", clips, rotation).clamp_(0, 1)
        return clips

    def _spatial(self, clips: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, t, h, w, c = clips.shape
        scale = 1.0 - self.scale_jitter * torch.rand(b, generator=g)
        # the crop's centre, kept inside the frame (affine_grid's coordinates are in [-1, 1])
        shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - scale)[:, None]
        sign = torch.ones(b)
        if self.flip:
            sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = scale * sign, scale
        theta[:, :, 2] = shift
        theta = theta.to(clips.device).repeat_interleave(t, dim=0)
        frames = clips.reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        grid = F.affine_grid(theta, [b * t, c, h, w], align_corners=False)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out.permute(0, 2, 3, 1).reshape(b, t, h, w, c)


def hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B,) angles in radians -> (B, 3, 3) rotations of RGB space about its grey axis
    (Rodrigues' formula with the axis (1, 1, 1)/sqrt(3)): a turn of the hue circle that keeps
    greys and the mean of the channels; 2*pi/3 takes red to green, green to blue."""
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    return cos * torch.eye(3) + sin * cross + (1 - cos) * torch.full((3, 3), 1 / 3)


__all__ = ["CANDIDATES", "candidate_frames", "Augmenter", "hue_rotation"]   # candidate_frames: config
