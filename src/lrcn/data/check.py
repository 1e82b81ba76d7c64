"""Checking a data set, in one place for `lrcn check` and for training.

`lrcn check DATA` scans a data set without training: every file is decoded exactly as training
would decode it (so the frame cache is warm afterwards), and the report lists, per class, clip
and group counts and the ranges of duration and frame count, then every file that is
unreadable, truncated, too short or suspicious, with the cause, and notes on the classes (too
few groups for a split, imbalance).

Training runs the same checks on its decoded clips before it splits them (`screen`): unreadable
files are listed and left out of the split, truncated ones listed, a class that cannot appear
in every part of the split refused or dropped, imbalance noted.
"""
from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .cache import CachedClip, prepare
from ..config import FrameConfig, SplitConfig
from ..console import plural
from .dataset import Sample, load_samples, read_ucf101_split
from .split import split_data
from ..errors import LrcnError


def _samples(data: Path, classes, ucf_split, lists):
    if ucf_split is not None:
        names, parts, missing = read_ucf101_split(data, ucf_split, lists, classes)
        return names, parts["train"] + parts["test"], missing
    return load_samples(data, classes, min_classes=1)   # a scan needs no second class


# The kinds of problem a readable clip can have (the report's "kind"; the causes say more).
TRUNCATED, TOO_SHORT, SUSPICIOUS, NOTE = "truncated", "too short", "suspicious", "note"
# The kinds that make `lrcn check` exit 1: files to fix or remove.
BAD_FILE_KINDS = ("unreadable", "missing", TRUNCATED)
# A line about imbalance when the largest class has more than this many times the clips of
# the smallest (--balance is then worth a try).
IMBALANCE_RATIO = 3.0


def suspicions(clip: CachedClip, frames: FrameConfig) -> list[tuple[str, str]]:
    """What is odd about a readable clip, as (kind, cause) pairs (empty when nothing is):
    TRUNCATED (decoded well short of its header: media.clip.truncation), TOO_SHORT (frames
    repeated), SUSPICIOUS, or a NOTE about how it was sampled."""
    meta = clip.meta or {}
    found = []
    header = meta.get("header_frames", 0)
    if clip.truncated:
        found.append((TRUNCATED, clip.truncated))
    elif header and abs(header - clip.num_frames) > max(2, 0.05 * clip.num_frames):
        found.append((SUSPICIOUS, f"header claims {header} frames, {clip.num_frames} decoded"))
    if clip.num_frames < frames.num_frames:
        found.append((TOO_SHORT, f"too short: {clip.num_frames} frames (< {frames.num_frames}; "
                                 "frames are repeated to fill the clip)"))
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
    # with the official lists, what a class needs depends on the lists, not on fractions
    small = {} if ucf_split is not None else \
        small_classes([c.sample for c in clips], names, SplitConfig())
    notes = [f"class {name!r} is too small to split by group ({why} with the default "
             "fractions): `lrcn train` refuses it unless --drop-small-classes"
             for name, why in small.items()]
    notes += [line for line in [imbalance([c.sample for c in clips], names)] if line]
    return {"data": str(data), "classes": table, "problems": problems, "notes": notes,
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
    lines += [f"note: {note}" for note in report.get("notes", [])]
    if report["problems"]:
        lines.append(f"{len(report['problems'])} problem(s):")
        for p in report["problems"]:
            lines.append(f"  {p['kind']:<11} {p['path']}: {p['cause']}")
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def small_classes(samples: Sequence[Sample], names: Sequence[str], split: SplitConfig,
                  test_listed: set[Path] | None = None) -> dict[str, str]:
    """The classes that the split of `samples` (readable clips; split.split_data, the rule
    training splits by) leaves out of a part that should have them, each with why: training
    always, validation when val_fraction > 0, test when test_fraction > 0 or the test part is
    the official list (`test_listed`). Per class, a class's split does not depend on the
    others, so dropping one changes no other's; across classes (SplitConfig.across_classes)
    it can, and screen checks again."""
    parts, _ = split_data(samples, split, test_listed)
    wanted = {"train": "training", "val": "validation", "test": "test"}
    if split.val_fraction == 0:
        del wanted["val"]
    if split.test_fraction == 0 and test_listed is None:
        del wanted["test"]
    groups: dict[str, set[str]] = {name: set() for name in names}
    for sample in samples:
        groups[sample.class_name].add(sample.group)
    clips = Counter(s.class_name for s in samples)
    present = {(part, s.class_name) for part, members in parts.items() for s in members}
    found = {}
    for name in names:
        lacking = [label for part, label in wanted.items() if (part, name) not in present]
        if lacking:
            found[name] = (f"{plural(len(groups[name]), 'readable group')} "
                           f"({plural(clips[name], 'clip')}), none for "
                           f"{' or '.join(lacking)}")
    return found


def groups_needed(split: SplitConfig) -> int:
    """The fewest groups with which a class appears in every part `split` asks for."""
    for n in range(1, 100):
        if not small_classes([Sample(Path(str(i)), "c", f"c/{i}") for i in range(n)], ["c"],
                             split):
            return n
    return 100


def imbalance(samples: Sequence[Sample], names: Sequence[str]) -> str | None:
    """A line when the largest class has more than IMBALANCE_RATIO times the clips of the
    smallest, else None."""
    counts = Counter(s.class_name for s in samples)
    largest = max(names, key=lambda n: counts[n])
    smallest = min(names, key=lambda n: counts[n])
    if counts[largest] <= IMBALANCE_RATIO * counts[smallest]:
        return None
    ratio = f"{counts[largest] / counts[smallest]:.1f}x" if counts[smallest] else "no clips"
    return (f"imbalanced classes: {largest!r} has {plural(counts[largest], 'clip')}, "
            f"{smallest!r} {counts[smallest]} ({ratio})")


def report_truncated(truncated: Sequence[tuple[str, str]]) -> None:
    """Files that look cut short, with the cause, on stderr: they are used as far as they
    decode (training's check, and lrcn evaluate)."""
    if truncated:
        count = len(truncated)
        print(f"warning: {plural(count, 'truncated video')} (used as far as "
              f"{'it decodes' if count == 1 else 'they decode'}):", file=sys.stderr)
        for path, cause in truncated:
            print(f"  {path}: {cause}", file=sys.stderr)


@dataclass
class Screened:
    """A data set's readable clips, checked before the split (`screen`)."""
    class_names: list[str]                 # the classes kept
    clips: list[CachedClip]                # their readable clips, in the order found
    skipped: list[tuple[str, str]]         # (path, cause): missing and unreadable files
    truncated: list[tuple[str, str]]       # (path, cause): kept, sampled from what decodes
    notes: list[str]                       # dropped classes: lines for the log
    imbalance: str | None                  # the line about imbalance (`imbalance`), if any
    refusal: LrcnError | None = None       # why training cannot go on with this data

    def report(self, log=print, balance: bool = False) -> None:
        """Say what the check found: skipped and truncated files with their causes (on
        stderr), dropped classes and imbalance (in the log; `balance`: --balance is on)."""
        report_skipped(self.skipped)
        report_truncated(self.truncated)
        for note in self.notes:
            log(f"note: {note}")
        if self.imbalance:
            log(f"note: {self.imbalance}" + ("" if balance else "; --balance weights the "
                                             "loss by inverse class frequency"))


def report_skipped(failures: Sequence[tuple[str, str]], out=None) -> None:
    """Unreadable videos are listed by name and cause, never dropped silently."""
    out = out or sys.stderr
    if failures:
        print(f"skipped {plural(len(failures), 'unreadable video')}:", file=out)
        for path, cause in failures:
            print(f"  {path}: {cause}", file=out)


def screen(names: Sequence[str], clips: Sequence[CachedClip],
           failures: Sequence[tuple[Sample, str]], missing: Sequence[tuple[str, str]],
           split: SplitConfig, where: Path, test_listed: set[Path] | None = None
           ) -> Screened:
    """Training's data check, on the decoded clips, before the split. Unreadable and missing
    files are listed (the split never sees them); truncated ones are listed and kept. A class
    that the split would leave out of a part (`small_classes`) is refused (`Screened.refusal`,
    naming every such class), or with split.drop_small_classes dropped with a note; fewer
    than two classes left is refused too. Imbalance is noted."""
    skipped = list(missing) + [(str(s.path), cause) for s, cause in failures]
    truncated = [(str(c.sample.path), c.truncated) for c in clips if c.truncated]
    small = small_classes([c.sample for c in clips], names, split, test_listed)
    while small and split.drop_small_classes and split.across_classes:
        # across classes, dropping a class moves the others' groups: again until none is short
        rest = [n for n in names if n not in small]
        more = small_classes([c.sample for c in clips if c.sample.class_name in rest], rest,
                             split, test_listed)
        if not more:
            break
        small = {**small, **more}
    notes, refusal = [], None
    need = "" if test_listed is not None else \
        f" (a class needs {groups_needed(split)} groups with these split fractions)"
    listed = "; ".join(f"{name!r}: {why}" for name, why in small.items())
    if small and not split.drop_small_classes:
        refusal = LrcnError(f"too few readable groups to split: {listed}{need}; add clips, or "
                            "--drop-small-classes to train without "
                            f"{'it' if len(small) == 1 else 'them'}", where)
    elif small:
        notes.append(f"dropped {plural(len(small), 'class')} too small to split{need}: "
                     f"{listed}")
    kept = [n for n in names if n not in small] if refusal is None else list(names)
    if refusal is None and len(kept) < 2:
        refusal = LrcnError("fewer than two classes left to train after dropping "
                            f"{', '.join(map(repr, small))}", where)
    clips = [c for c in clips if c.sample.class_name in kept]
    return Screened(kept, clips, skipped, truncated, notes,
                    imbalance([c.sample for c in clips], kept), refusal)


__all__ = ["check_dataset", "format_check", "suspicions", "screen", "Screened",
           "small_classes", "groups_needed", "imbalance", "report_skipped", "BAD_FILE_KINDS",
           "IMBALANCE_RATIO"]
