"""Data sets: finding the clips and splitting them by group.

Flow: a folder per class -> `Sample`s with a group each -> a group-aware split; the clips' frames
are decoded once into the on-disk cache (cache.py), and `ClipDataset` reads them from there one
clip at a time, so memory does not grow with the data set.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .cache import CachedClip, Sample
from .config import SEED_CLASSES, SplitConfig
from .errors import LrcnError
from .files import atomic_write_text
from .sampling import parse_group
from .video import VIDEO_EXTENSIONS

__all__ = ["Sample", "CachedClip", "discover", "split_groups", "split_samples", "ClipDataset"]


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS \
        and not path.name.startswith(".")


def list_class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_classes(root: Path, requested: Sequence[str] | None) -> list[str]:
    """The classes to use: those asked for (in that order), else the seed's four when all four
    folders exist, else every class folder."""
    root = Path(root)
    if not root.is_dir():
        raise LrcnError("no such data folder" if not root.exists() else "not a folder", root)
    available = list_class_folders(root)
    if not available:
        raise LrcnError("no class folders in the data folder (expected <root>/<Class>/*.avi)",
                        root)
    if requested:
        lookup = {name.lower(): name for name in available}
        chosen = []
        for name in requested:
            match = name if name in available else lookup.get(name.lower())
            if match is None:
                raise LrcnError(f"unknown class {name!r} (folders: {', '.join(available[:12])}"
                                f"{', ...' if len(available) > 12 else ''})", root)
            chosen.append(match)
        if len(set(chosen)) != len(chosen):
            raise LrcnError("a class is listed twice in --classes", root)
        return chosen
    if all(name in available for name in SEED_CLASSES):
        return list(SEED_CLASSES)
    return available


def discover(root: str | os.PathLike, classes: Sequence[str] | None = None
             ) -> tuple[list[str], list[Sample]]:
    """Find the clips of a folder-per-class data set. Every chosen class folder must hold at
    least one video file."""
    root = Path(root)
    class_names = resolve_classes(root, classes)
    samples: list[Sample] = []
    for name in class_names:
        files = sorted(p for p in (root / name).rglob("*") if is_video_file(p))
        if not files:
            raise LrcnError(f"class folder has no video files ({', '.join(VIDEO_EXTENSIONS[:5])}"
                            ", ...)", root / name)
        for path in files:
            tag = parse_group(path.name)
            samples.append(Sample(path, name, f"{name}/{tag or path.name}"))
    if len(class_names) < 2:
        raise LrcnError("at least two classes are needed to train a classifier", root)
    return class_names, samples


def split_groups(groups_by_class: dict[str, Sequence[str]], config: SplitConfig
                 ) -> dict[str, str]:
    """Assign every group to "train", "val" or "test"; all clips of a group share its part.

    Pure and deterministic: per class, the sorted groups are shuffled with a generator seeded
    by (seed, class), then round(n * test_fraction) go to test and round(rest * val_fraction)
    to validation. A class keeps at least one training group; with at least two groups it gets
    one test group when test_fraction > 0, and with at least two left, one validation group when
    val_fraction > 0.
    """
    parts: dict[str, str] = {}
    for class_name in sorted(groups_by_class):
        groups = sorted(set(groups_by_class[class_name]))
        random.Random(f"{config.seed}:{class_name}").shuffle(groups)
        n = len(groups)
        n_test = round(n * config.test_fraction)
        if config.test_fraction > 0 and n >= 2:
            n_test = max(1, n_test)
        n_test = min(n_test, n - 1)
        rest = n - n_test
        n_val = round(rest * config.val_fraction)
        if config.val_fraction > 0 and rest >= 2:
            n_val = max(1, n_val)
        n_val = min(n_val, rest - 1)
        for i, group in enumerate(groups):
            parts[group] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return parts


def split_samples(samples: Sequence[Sample], config: SplitConfig) -> dict[str, list[Sample]]:
    groups_by_class: dict[str, list[str]] = {}
    for sample in samples:
        groups_by_class.setdefault(sample.class_name, []).append(sample.group)
    parts = split_groups(groups_by_class, config)
    split: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for sample in samples:
        split[parts[sample.group]].append(sample)
    return split


def write_split(path: Path, root: Path, split: dict[str, list[Sample]]) -> None:
    data = {"root": str(Path(root).resolve()),
            **{part: [{"path": str(s.path.relative_to(root)), "class": s.class_name,
                       "group": s.group} for s in samples] for part, samples in split.items()}}
    atomic_write_text(path, json.dumps(data, indent=1))


def read_split(path: Path, root: Path | None = None) -> dict[str, list[Sample]]:
    data = json.loads(Path(path).read_text())
    root = Path(root or data["root"])
    return {part: [Sample(root / e["path"], e["class"], e["group"]) for e in data[part]]
            for part in ("train", "val", "test")}


class ClipDataset(torch.utils.data.Dataset):
    """Cached clips as (uint8 (T, H, W, 3) tensor, label). The float conversion happens per
    batch in the training loop, so the data set never sits in memory as float32."""

    def __init__(self, clips: Sequence[CachedClip], class_names: Sequence[str]):
        index = {name: i for i, name in enumerate(class_names)}
        self.items = [(clip.frames_path, index[clip.sample.class_name]) for clip in clips]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames_path, label = self.items[i]
        return torch.from_numpy(np.load(frames_path)), label
