"""Cached clips as batches on the device, fast enough to feed a GPU.

The frame cache holds one small .npy file per clip; opening one per clip per epoch (what a
PyTorch Dataset does) caps a loader at a few thousand clips per second on a small machine, and a
GPU trains the seed model at ten thousand. So a data set's clips are gathered once into one
uint8 array (N, T, H, W, 3):
- resident: when it fits (on a GPU, in half of its free memory; on the CPU, in a third of the
  available memory; UCF50 at 64x64 is about 1.6 GB), it is held on the device itself, and a
  batch is an index_select there; the conversion to float happens there too, in the model's
  input path;
- mapped: otherwise it is written once into the cache folder (packs/, keyed by the clips' cache
  keys, atomically) and memory-mapped; batches are gathered from the page cache, pinned, and
  copied to the device by a prefetch thread while the previous batch trains.
No per-clip file is opened on the hot path either way.

Shuffling draws from the same generator in the same order as a PyTorch DataLoader with
shuffle=True, so a run with this loader trains on the same batches as one with a DataLoader.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..files import atomic_path
from .cache import CachedClip

PACK_FOLDER = "packs"


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):   # not on this system: assume little
        return 1 << 30


def resident_budget(device: torch.device) -> int:
    """Bytes of frames that may be held on `device` at once."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return _available_ram() // 3


def _pack_path(paths: Sequence[Path]) -> Path:
    cache_dir = paths[0].parents[1]
    key = hashlib.sha256("\n".join(p.stem for p in paths).encode()).hexdigest()[:32]
    return cache_dir / PACK_FOLDER / f"{key}.npy"


def _read_entries(paths: Sequence[Path], out: np.ndarray) -> None:
    for i, path in enumerate(paths):
        out[i] = np.load(path)


class FrameStore:
    """The uint8 frames of a list of cached clips, as one array, resident or mapped; or any
    other per-clip arrays of one shape and type given as .npy paths (cached features)."""

    def __init__(self, clips: Sequence[CachedClip | Path], device: torch.device | str = "cpu",
                 max_resident_bytes: int | None = None):
        self.device = torch.device(device)
        self.count = len(clips)
        if not clips:
            self.shape, self.resident, self.array, self.tensor = (0,), True, None, None
            return
        paths = [c if isinstance(c, Path) else c.frames_path for c in clips]
        first = np.load(paths[0], mmap_mode="r")
        self.shape, self.dtype = (len(clips), *first.shape), first.dtype
        size = int(np.prod(self.shape)) * first.dtype.itemsize
        budget = resident_budget(self.device) if max_resident_bytes is None \
            else max_resident_bytes
        self.resident = size <= budget
        if self.resident:
            array = np.empty(self.shape, self.dtype)
            _read_entries(paths, array)
            self.array = None
            self.tensor = torch.from_numpy(array).to(self.device)
        else:
            self.array = self._mapped(paths)
            self.tensor = None

    def _mapped(self, paths: Sequence[Path]) -> np.ndarray:
        """The pack file of these clips, written once (atomically), then memory-mapped."""
        path = _pack_path(paths)
        if path.exists():
            mapped = np.load(path, mmap_mode="r")
            if mapped.shape == self.shape and mapped.dtype == self.dtype:
                return mapped
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=self.shape)
            _read_entries(paths, out)
            out.flush()
            del out
        return np.load(path, mmap_mode="r")

    def gather(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 (len(indices), T, H, W, 3) on the device (or the stored arrays' rows)."""
        if self.resident:
            index = torch.as_tensor(indices, dtype=torch.long).to(self.device)
            return self.tensor.index_select(0, index)
        order = np.asarray(indices, dtype=np.int64)
        batch = torch.from_numpy(np.ascontiguousarray(self.array[np.sort(order)]))
        if not np.all(order[:-1] <= order[1:]):     # read in file order, return in given order
            rank = np.argsort(np.argsort(order, kind="stable"), kind="stable")
            batch = batch[torch.from_numpy(rank)]
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)


class Batch(tuple):
    """(uint8 clips, labels), and `divisor`: what this process divides its summed loss by, so
    that the gradients averaged over the processes are those of the whole batch in one
    process: the global batch's size over the number of processes (0: a stand-in clip for a
    process that got none of a small last batch, to be ignored)."""
    divisor: float

    def __new__(cls, clips: torch.Tensor, labels: torch.Tensor, divisor: float):
        batch = super().__new__(cls, (clips, labels))
        batch.divisor = divisor
        return batch


class ClipBatches:
    """Batches of (uint8 clips, labels) on the device, shuffled each epoch or in order; an
    iterable like a DataLoader (one epoch per iteration). With `world` > 1 processes, every
    process draws the same global batches and takes its share of each (`rank::world`), as a
    DistributedSampler would, but batch by batch: the processes together step through exactly
    the batches one process would."""

    def __init__(self, store: FrameStore, labels: Sequence[int], batch_size: int,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 prefetch: int = 2, rank: int = 0, world: int = 1, transform=None):
        self.store, self.batch_size, self.shuffle = store, batch_size, shuffle
        self.transform = transform   # applied to each batch's clips (augment.Augmenter)
        self.rank, self.world = rank, world
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.device_labels = self.labels.to(store.device)
        self.generator = generator if generator is not None else torch.Generator()
        self.prefetch = prefetch

    def __len__(self) -> int:
        return (self.store.count + self.batch_size - 1) // self.batch_size

    def _order(self) -> torch.Tensor:
        n = self.store.count
        if not self.shuffle:
            return torch.arange(n)
        # As DataLoader(shuffle=True, generator=g) draws: its iterator's base seed, the
        # sampler's permutation, and the permutation the sampler starts for its remainder.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.randperm(n, generator=self.generator)
        torch.randperm(n, generator=self.generator)
        return order

    def _shares(self) -> list[tuple[torch.Tensor, float]]:
        order = self._order()
        shares = []
        for i in range(0, len(order), self.batch_size):
            chunk = order[i:i + self.batch_size]
            mine = chunk[self.rank::self.world]
            shares.append((mine, len(chunk) / self.world) if len(mine) else (chunk[:1], 0.0))
        return shares

    def __iter__(self) -> Iterator[Batch]:
        shares = self._shares()
        if self.store.resident or self.prefetch < 1:
            for index, divisor in shares:
                yield Batch(self._clips(index),
                            self.device_labels[index.to(self.store.device)], divisor)
            return
        yield from self._prefetched(shares)

    def _clips(self, index: torch.Tensor) -> torch.Tensor:
        clips = self.store.gather(index)
        return self.transform(clips) if self.transform is not None else clips

    def _prefetched(self, chunks) -> Iterator[Batch]:
        """Gathering (page cache reads, pinning, the copy) runs a few batches ahead in a
        thread; NumPy and the copy release the GIL, so it overlaps the training step."""
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce() -> None:
            try:
                for index, divisor in chunks:
                    if stop.is_set():
                        return
                    ready.put(Batch(self._clips(index),
                                    self.labels[index].to(self.store.device), divisor))
                ready.put(None)
            except BaseException as exc:   # handed to the consumer, raised there
                ready.put(exc)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():       # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)


def clip_batches(clips: Sequence[CachedClip], class_names: Sequence[str], batch_size: int,
                 device: torch.device | str = "cpu", shuffle: bool = False,
                 generator: torch.Generator | None = None,
                 max_resident_bytes: int | None = None, rank: int = 0,
                 world: int = 1, arrays: Sequence[Path] | None = None,
                 transform=None) -> ClipBatches:
    """Cached clips -> batches of (uint8 clips, class indices) on `device`; with `world` > 1,
    this process's share of each batch. (Each process holds the frames of all the clips it may
    be given, i.e. of all of them: shuffling mixes them every epoch.) `arrays`: what to load
    for each clip instead of its cached frames (candidate frames, cached features)."""
    index = {name: i for i, name in enumerate(class_names)}
    store = FrameStore(list(arrays) if arrays is not None else clips, device,
                       max_resident_bytes)
    return ClipBatches(store, [index[c.sample.class_name] for c in clips], batch_size,
                       shuffle=shuffle, generator=generator, rank=rank, world=world,
                       transform=transform)


__all__ = ["FrameStore", "ClipBatches", "Batch", "clip_batches", "resident_budget"]
