"""A training run's data, made ready before any model exists: the clips found, decoded into
the frame cache (in shares, with several processes), checked before the split (data.check:
unreadable files listed and left out, truncated ones listed, classes too small to split
refused or dropped, imbalance noted), split, and the split written into the run folder.
train.py trains on the result.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import FrameConfig
from ..console import plural
from ..data.cache import CachedClip, prepare
from ..data.check import report_skipped, screen
from ..data.dataset import Sample, find_data, write_split
from ..data.split import split_data
from ..distributed import World, barrier, broadcast
from ..errors import LrcnError
from .job import TrainingJob


@dataclass
class TrainingData:
    """A data set made ready for training: its classes, its split (samples by part), the
    decoded clips by part (in the frame cache), and the files skipped, with the cause."""
    root: Path
    class_names: list[str]
    parts: dict[str, list[Sample]]
    clips: dict[str, list[CachedClip]]
    skipped: list[tuple[str, str]]
    # what the loaders read instead of a part's cached frames (training_inputs): candidate
    # frames for temporal jitter, cached features of a frozen CNN
    inputs: dict[str, list[Path]] = dataclasses.field(default_factory=dict)
    candidates: int = 1            # frames per segment in inputs["train"]


def prepare_shared(samples: Sequence[Sample], frames: FrameConfig, job: TrainingJob,
                   world: World):
    """prepare() with the job's cache, workers and decode timeout, in several processes: each
    decodes its share (`rank::size`) into the shared cache, then, after a barrier, every one
    reads every entry (an entry is complete once its JSON is there, so no other coordination is
    needed). (clips, failures) as prepare's."""
    options = {"cache_dir": job.cache_dir, "workers": job.workers,
               "timeout": job.decode_timeout}
    if world.distributed:
        prepare(samples[world.rank::world.size], frames, progress=job.progress and world.main,
                **options)
        barrier(world)
    return prepare(samples, frames, progress=job.progress and not world.distributed, **options)


def prepare_data(job: TrainingJob, log=print, on_classes=None,
                 world: World = World()) -> TrainingData:
    """Find the job's clips, decode all into the frame cache (the test clips too, for the
    evaluation), check them before the split (data.check.screen), split the readable ones and
    write split.json. `on_classes(class names)` is called before decoding (a run killed then
    resumes: the check and the split are made again, from the cache) and again when classes
    were dropped. `job.fixed` (cross-validation's folds, a resumed run's split) is used as
    given: its unreadable files are reported and skipped.

    With several processes, rank 0 finds the data and every rank receives it; each decodes
    its share (`rank::size`) into the shared cache, then, after a barrier, reads every entry
    (complete once its JSON is there: no other coordination) and makes the same check and
    split. Only rank 0 writes into the run folder and speaks."""
    data_root, run_dir = job.data, job.out
    if job.fixed is not None:
        class_names, parts = job.fixed
        if world.main:
            how = "the run's own split, resumed" if job.resume else "the given split"
            _write_split(run_dir, data_root, class_names, parts, how, log)
            if on_classes is not None:
                on_classes(class_names)
        clips, failures = _decode(parts["train"] + parts["val"] + parts["test"], job, log,
                                  world)
        skipped = [(str(sample.path), cause) for sample, cause in failures]
        if world.main:
            report_skipped(skipped)
    else:
        found: tuple | LrcnError | None = None
        if world.main:
            try:
                found = find_data(data_root, job.classes, job.ucf_split, job.lists)
            except LrcnError as exc:
                # raised on every rank, not only on rank 0, with its path and kind (an
                # LrcnError pickles with both)
                found = exc
        found = broadcast(found, world)
        if isinstance(found, LrcnError):
            raise found
        class_names, samples, missing, test_listed = found
        if world.main and on_classes is not None:
            on_classes(class_names)
        clips, failures = _decode(samples, job, log, world)
        checked = screen(class_names, clips, failures, missing, job.split, data_root,
                         test_listed)
        if world.main:
            checked.report(log, job.train.balance)
        if checked.refusal is not None:
            raise checked.refusal
        if world.main and checked.class_names != class_names and on_classes is not None:
            on_classes(checked.class_names)
        class_names, clips, skipped = checked.class_names, checked.clips, checked.skipped
        parts, how = split_data([c.sample for c in clips], job.split, test_listed,
                                job.ucf_split)
        if world.main:
            _write_split(run_dir, data_root, class_names, parts, how, log)
    part_of = {sample.path: part for part, members in parts.items() for sample in members}
    by_part = {part: [c for c in clips if part_of.get(c.sample.path) == part]
               for part in parts}
    untrained = [n for n in class_names if not any(c.sample.class_name == n
                                                   for c in by_part["train"])]
    if untrained:
        raise LrcnError(f"no readable training clips for class {untrained[0]!r}", data_root)
    return TrainingData(data_root, class_names, parts, by_part, skipped)


def _decode(samples: Sequence[Sample], job: TrainingJob, log, world: World):
    """prepare_shared, timed and logged."""
    started = time.perf_counter()
    clips, failures = prepare_shared(samples, job.frames, job, world)
    seconds = time.perf_counter() - started
    log(f"frame cache: {plural(len(clips), 'clip')} ready in {seconds:.1f} s "
        f"({len(samples) / max(seconds, 1e-9):.1f} clips/s"
        f"{f', {world.size} processes' if world.distributed else ''})")
    return clips, failures


def _write_split(run_dir: Path, data_root: Path, class_names: Sequence[str],
                 parts: dict[str, list[Sample]], how: str, log) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_split(run_dir / "split.json", data_root if data_root.is_dir() else data_root.parent,
                parts)
    log(f"data: {plural(sum(len(v) for v in parts.values()), 'clip')} in "
        f"{plural(len(class_names), 'class')} ({', '.join(class_names)}); {how}: "
        f"train {len(parts['train'])}, "
        f"val {len(parts['val'])}, test {len(parts['test'])} clips")


__all__ = ["TrainingData", "prepare_shared", "prepare_data"]
