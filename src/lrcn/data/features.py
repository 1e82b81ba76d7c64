"""The per-frame feature cache of models with a frozen CNN (effnet-lstm): each cached clip's
frames go through the backbone once, and training reads (T, F) float32 features instead of
frames, so an epoch costs what the seed model's costs.

Entries sit beside the frame cache, under features/<backbone key>/, named by the frame cache
entry they come from (which already keys the file and every frame setting); the backbone key
hashes the pretrained weights' checksum and the input normalisation. Each entry is written
atomically, so an interrupted run keeps what it computed. With several processes each computes
its share, then every process reads them all (as the frame cache is filled).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .cache import CachedClip
from ..console import plural, progress as console_progress
from ..distributed import World, barrier
from ..files import atomic_path
from ..models.base import clips_to_input

FEATURE_FOLDER = "features"
CLIPS_PER_CALL = 4          # 80 frames through the backbone at once: memory stays small


def feature_paths(model, clips: Sequence[CachedClip]) -> list[Path]:
    key = model.feature_key()
    return [c.frames_path.parents[1] / FEATURE_FOLDER / key / c.frames_path.parent.name /
            c.frames_path.name for c in clips]


@torch.inference_mode()
def cached_features(model, clips: Sequence[CachedClip], device: torch.device,
                    progress: bool = True, log=print, world: World = World()) -> list[Path]:
    """The feature entry of every clip, computing those that are missing."""
    paths = feature_paths(model, clips)
    todo = [i for i, path in enumerate(paths) if not path.exists()][world.rank::world.size]
    was_training = model.training
    model.eval()
    bar = console_progress(total=len(todo), desc="features", unit="clip", enabled=progress,
                           leave=False)
    try:
        for start in range(0, len(todo), CLIPS_PER_CALL):
            part = todo[start:start + CLIPS_PER_CALL]
            batch = np.stack([np.load(clips[i].frames_path) for i in part])
            frames = torch.from_numpy(batch).to(device).flatten(0, 1)
            features = model.frame_features(clips_to_input(frames)).float().cpu().numpy()
            for i, row in zip(part, features.reshape(len(part), batch.shape[1], -1)):
                _save(paths[i], row)
            bar.update(len(part))
    finally:
        bar.close()
        model.train(was_training)
    barrier(world)
    if todo:
        log(f"features: computed for {plural(len(todo), 'clip')} ({model.config.name}'s backbone)")
    return paths


def _save(path: Path, features: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.save(tmp, features.astype(np.float32))


__all__ = ["cached_features", "feature_paths"]
