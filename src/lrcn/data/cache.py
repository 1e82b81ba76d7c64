"""The on-disk frame cache: every clip's sampled frames, decoded once, as uint8.

Entries are keyed by the file's identity and every frame setting; each is written atomically
(frames first, then the JSON that marks it complete), so an interrupted run loses nothing and
the next run decodes only what is missing. This module must not import torch: its decoding
function runs in freshly spawned worker processes that should start in a blink.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..media.clip import read_clip, truncation
from ..config import FrameConfig, to_dict
from .dataset import Sample
from ..console import progress as console_progress
from ..errors import ErrorKind, LrcnError
from ..files import atomic_path, atomic_write_text
from .workers import run_tasks

# bump when decoding changes what lands in the cache (4: header_frames is the container's
# claim on every path, not the demux pass's count, so that truncated MP4s are found)
CACHE_VERSION = 4
DECODE_TIMEOUT_S = 120.0   # a clip that takes longer is reported as stalled and skipped


@functools.cache
def default_decode_timeout() -> float:
    """Seconds one file may take to decode when the caller gives no `timeout` (the CLI's
    --decode-timeout, ServeConfig.decode_timeout): $LRCN_DECODE_TIMEOUT, read once per process
    and never written, else DECODE_TIMEOUT_S."""
    env = os.environ.get("LRCN_DECODE_TIMEOUT")
    if not env:
        return DECODE_TIMEOUT_S
    try:
        seconds = float(env)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise LrcnError(f"$LRCN_DECODE_TIMEOUT={env!r}: not a positive number of seconds",
                        kind=ErrorKind.SETTING)
    return seconds


def default_cache_dir() -> Path:
    env = os.environ.get("LRCN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lrcn"


def cache_key(path: Path, frames: FrameConfig) -> str:
    """Hash of the file's identity (resolved path, size, modification time) and every setting
    that changes the cached frames; any change makes a new entry."""
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "frames": to_dict(frames), "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedClip:
    sample: Sample
    frames_path: Path     # .npy, uint8 (T, H, W, 3)
    num_frames: int
    fps: float
    # the cache entry: size, header frame count, sampled indices, timing
    meta: dict | None = field(default=None, compare=False)

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    @property
    def truncated(self) -> str | None:
        """Why the file looks cut short (media.clip.truncation), or None."""
        return truncation(self.num_frames, (self.meta or {}).get("header_frames", 0))


def _entry_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    folder = cache_dir / key[:2]
    return folder / f"{key}.npy", folder / f"{key}.json"


def _decode_into_cache(task: tuple[str, str, str, dict]) -> dict:
    """Worker: decode one clip and write its cache entry (frames, then the JSON that marks the
    entry complete). A failure is cached too, so an unchanged bad file is not decoded again."""
    path, key, cache_dir, frames_dict = task
    frames = FrameConfig(**frames_dict)
    frames_path, meta_path = _entry_paths(Path(cache_dir), key)
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        clip = read_clip(path, frames, threads=1)
    except LrcnError as exc:
        meta = {"error": exc.reason}
    else:
        with atomic_path(frames_path) as tmp:
            np.save(tmp, clip.frames)
        meta = {"num_frames": clip.num_frames, "fps": clip.fps, "width": clip.width,
                "height": clip.height, "indices": list(clip.indices),
                "header_frames": clip.header_frames, "timing": clip.timing,
                "seeked": clip.seeked}
    atomic_write_text(meta_path, json.dumps(meta))
    return meta


def prepare(samples: Sequence[Sample], frames: FrameConfig, cache_dir: Path | None = None,
            workers: int | None = None, progress: bool = True, timeout: float | None = None
            ) -> tuple[list[CachedClip], list[tuple[Sample, str]]]:
    """Make sure every sample's frames are in the cache; return the cached clips (in the order
    given) and the samples that could not be read, with the cause.

    Only files missing from the cache are decoded, in `workers` processes (default: one per
    core) so that an interrupted run resumes where it stopped. A file that takes longer than
    `timeout` seconds (default: default_decode_timeout()) has its process killed and is
    reported.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = os.cpu_count() or 1
    if timeout is None:
        timeout = default_decode_timeout()
    metas: dict[Path, dict] = {}
    keys: dict[Path, str] = {}
    todo: list[Sample] = []
    for sample in samples:
        try:
            keys[sample.path] = cache_key(sample.path, frames)
        except OSError as exc:  # vanished or unreadable since the folder was listed
            metas[sample.path] = {"error": exc.strerror or str(exc)}
            continue
        _, meta_path = _entry_paths(cache_dir, keys[sample.path])
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            todo.append(sample)
            continue
        if meta.get("stalled_after", float("inf")) < timeout:
            todo.append(sample)   # it stalled under a shorter limit than this run's: retry
        else:
            metas[sample.path] = meta
    if todo:
        by_path = {str(s.path): s for s in todo}
        tasks = [(str(s.path), keys[s.path], str(cache_dir), to_dict(frames)) for s in todo]
        bar = console_progress(total=len(tasks), desc="decoding", unit="clip",
                               enabled=progress)
        with bar:
            for result in run_tasks(_decode_into_cache, tasks, workers, timeout=timeout):
                path = result.item[0]
                if result.error is not None:
                    # The process died or stalled. A stall is remembered with its time
                    # limit, so that an unchanged file does not cost the wait on every run
                    # (a longer limit retries it); a crash is not, it may not recur.
                    meta = {"error": result.error}
                    if result.timed_out:
                        meta["stalled_after"] = timeout
                        _, meta_path = _entry_paths(cache_dir, result.item[1])
                        meta_path.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_text(meta_path, json.dumps(meta))
                    metas[by_path[path].path] = meta
                else:
                    metas[by_path[path].path] = result.value
                bar.update(1)
    clips: list[CachedClip] = []
    failures: list[tuple[Sample, str]] = []
    for sample in samples:
        meta = metas[sample.path]
        if "error" in meta:
            failures.append((sample, meta["error"]))
            continue
        frames_path, _ = _entry_paths(cache_dir, keys[sample.path])
        clips.append(CachedClip(sample, frames_path, meta["num_frames"], meta["fps"], meta))
    return clips, failures


