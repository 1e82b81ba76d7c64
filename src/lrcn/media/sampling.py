"""Which frames of a clip the model sees. Pure functions, tested against tables of cases."""
from __future__ import annotations

import re
from bisect import bisect_right
from typing import Sequence

_GROUP = re.compile(r"_g(\d+)_c(\d+)", re.IGNORECASE)


def sample_indices(num_frames: int, num_samples: int) -> list[int]:
    """`num_samples` frame indices evenly spaced over a clip of `num_frames` decoded frames.

    Index i is the frame at the centre of the i-th of `num_samples` equal segments, so the
    samples cover the whole clip symmetrically (the tutorial's `i * (count // 20)` never reaches
    the last part of the clip). A clip shorter than `num_samples` repeats frames, in order,
    instead of being dropped: 10 frames -> 0, 0, 1, 1, ..., 9, 9.
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if num_samples < 1:
        raise ValueError("num_samples must be positive")
    return [min(num_frames - 1, ((2 * i + 1) * num_frames) // (2 * num_samples))
            for i in range(num_samples)]


def views(clips, count: int) -> list:
    """(B, T*count, ...) clips cached with `count` frames per segment (config.candidate_frames)
    -> `count` views (B, T, ...), view v taking frame v of every segment: the temporal offsets
    that multi-view testing (--views) averages. NumPy arrays or torch tensors alike."""
    return [clips[:, v::count] for v in range(count)]


def parse_group(filename: str) -> str | None:
    """The UCF group tag of a file name (`v_TaiChi_g08_c03.avi` -> "g08"), or None.

    Clips of one group are cut from one longer video: they must stay in one part of a split.
    """
    match = _GROUP.search(filename)
    return f"g{int(match.group(1)):02d}" if match else None


# Times that agree to this relative precision are one instant: a frame whose start coincides
# with a sampling instant is the one on screen, whatever rounding the two computations took.
_SAME_INSTANT = 1e-9


def segment_instants(start: float, end: float, count: int) -> list[float]:
    """The centres of `count` equal segments of [start, end): the instants a clip's frames are
    taken at (the time analogue of sample_indices)."""
    return [start + (i + 0.5) * (end - start) / count for i in range(count)]


def frames_at(times: Sequence[float], instants: Sequence[float]) -> list[int]:
    """For each instant, the index of the frame on screen then: the last frame whose time is at
    or before it (the first frame for instants before it). `times` must be increasing.

    The one rule by which read_clip (variable frame rate), timeline windows and streams pick
    frames, so that a window and a clip over the same stretch of a video see the same frames.
    """
    return [max(0, bisect_right(times, _latest(t)) - 1) for t in instants]


def _latest(instant: float) -> float:
    return instant + _SAME_INSTANT * max(1.0, abs(instant))


def on_screen_at(frame_time: float, instant: float) -> bool:
    """Whether a frame shown from `frame_time` has started by `instant` (frames_at's rule)."""
    return frame_time <= _latest(instant)
