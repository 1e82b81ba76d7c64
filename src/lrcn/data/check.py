"""`lrcn check DATA`: scan a data set without training. Every file is decoded exactly as
training would decode it (so the frame cache is warm afterwards), and the report lists, per
class, clip and group counts and the ranges of duration and frame count, then every file that
is unreadable, too short or suspicious, with the cause."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .cache import CachedClip, prepare
from ..config import FrameConfig
from .dataset import load_samples, read_ucf101_split


def _samples(data: Path, classes, ucf_split, lists):
    if ucf_split is not None:
        names, parts, missing = read_ucf101_split(data, ucf_split, lists, classes)
        return names, parts["train"] + parts["test"], missing
    return load_samples(data, classes, min_classes=1)   # a scan needs no second class


# The kinds of problem a readable clip can have (the report's "kind"; the causes say more).
TOO_SHORT, SUSPICIOUS, NOTE = "too short", "suspicious", "note"


def suspicions(clip: CachedClip, frames: FrameConfig) -> list[tuple[str, str]]:
    """What is odd about a readable clip, as (kind, cause) pairs (empty when nothing is):
    TOO_SHORT (frames repeated), SUSPICIOUS, or a NOTE about how it was sampled."""
    meta = clip.meta or {}
    found = []
    if clip.num_frames < frames.num_frames:
        found.append((TOO_SHORT, f"too short: {clip.num_frames} frames (< {frames.num_frames}; "
                                 "frames are repeated to fill the clip)"))
    header = meta.get("header_frames", 0)
    if header and abs(header - clip.num_frames) > max(2, 0.05 * clip.num_frames):
        found.append((SUSPICIOUS, f"header claims {header} frames, {clip.num_frames} decoded"))
    if not clip.fps or clip.fps > 240:
        found.append((SUSPICIOUS, f"odd frame rate {clip.fps:g}"))
    width, height = meta.get("width", 0), meta.get("height", 0)
    if width and height and (width < frames.width or height < frames.height):
        found.append((SUSPICIOUS, f"tiny frames {width}x{height} (upscaled to "
                                  f"{frames.width}x{frames.height})"))
    if 0 < clip.duration < 0.5:
        found.append((SUSPICIOUS, f"very short: {clip.duration:.2f} s"))
    if meta.get("timing") == "time":
        found.append((NOTE, "variable frame rate: frames sampled evenly in time"))
    return found


def check_dataset(data: str | Path, classes: Sequence[str] | None = None,
                  frames: FrameConfig = FrameConfig(), ucf_split: int | None = None,
                  lists: Path | None = None, cache_dir: Path | None = None,
                  workers: int | None = None, progress: bool = True,
                  decode_timeout: float | None = None) -> dict:
    """`decode_timeout`: seconds a file may take to decode (None: the default of
    cache.default_decode_timeout)."""
    data = Path(data)
    names, samples, missing = _samples(data, classes, ucf_split, lists)
    clips, failures = prepare(samples, frames, cache_dir=cache_dir, workers=workers,
                              progress=progress, timeout=decode_timeout)
    problems = [{"path": path, "class": None, "kind": "missing", "cause": cause}
                for path, cause in missing]
    problems += [{"path": str(s.path), "class": s.class_name, "kind": "unreadable",
                  "cause": cause} for s, cause in failures]
    table = []
    for name in names:
        mine = [c for c in clips if c.sample.class_name == name]
        bad = [f for f in failures if f[0].class_name == name]
        for clip in mine:
            for kind, cause in suspicions(clip, frames):
                problems.append({"path": str(clip.sample.path), "class": name, "kind": kind,
                                 "cause": cause})
        durations = [c.duration for c in mine] or [0.0]
        counts = [c.num_frames for c in mine] or [0]
        table.append({"class": name, "clips": len(mine) + len(bad), "readable": len(mine),
                      "groups": len({c.sample.group for c in mine}),
                      "seconds": [round(min(durations), 2), round(max(durations), 2)],
                      "frames": [min(counts), max(counts)]})
    return {"data": str(data), "classes": table, "problems": problems,
            "clips": len(samples) + len(missing), "readable": len(clips)}


def format_check(report: dict) -> str:
    width = max([12] + [len(row["class"]) + 2 for row in report["classes"]])
    lines = [f"{'class':<{width}}{'clips':>6}{'groups':>8}{'seconds':>16}{'frames':>14}"]
    for row in report["classes"]:
        secs = f"{row['seconds'][0]:.1f}-{row['seconds'][1]:.1f}"
        frames = f"{row['frames'][0]}-{row['frames'][1]}"
        clips = str(row["clips"]) if row["clips"] == row["readable"] else \
            f"{row['readable']}/{row['clips']}"
        lines.append(f"{row['class']:<{width}}{clips:>6}{row['groups']:>8}{secs:>16}"
                     f"{frames:>14}")
    lines.append(f"{report['readable']} of {report['clips']} files readable")
    if report["problems"]:
        lines.append(f"{len(report['problems'])} problem(s):")
        for p in report["problems"]:
            lines.append(f"  {p['kind']:<11} {p['path']}: {p['cause']}")
    else:
        lines.append("no problems found")
    return "\n".join(lines)


__all__ = ["check_dataset", "format_check", "suspicions"]
