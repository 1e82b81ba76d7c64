"""Which frames of a clip the model sees. Pure functions, tested against tables of cases."""
from __future__ import annotations

import re

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


def parse_group(filename: str) -> str | None:
    """The UCF group tag of a file name (`v_TaiChi_g08_c03.avi` -> "g08"), or None.

    Clips of one group are cut from one longer video: they must stay in one part of a split.
    """
    match = _GROUP.search(filename)
    return f"g{int(match.group(1)):02d}" if match else None
