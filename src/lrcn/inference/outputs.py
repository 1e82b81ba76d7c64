"""Where `lrcn predict` writes its files for one video or several, and what happens when one of
several videos fails.

Naming: for one video, `--annotate PATH` and `--out FOLDER` (a timeline's folder) are the paths
themselves; for several, they are folders holding NAME.annotated.mp4 and NAME.timeline per
video (NAME: the video's file name without its suffix, or with it where two videos of the
batch share that stem, a.mp4 and a.avi, or with their folders too, x/a.mp4 and y/a.mp4:
output_names); a timeline without --out goes to ./NAME.timeline.

Errors: a video that cannot be read is that video's failure, not the batch's. It is reported,
the next video goes on, and the batch ends as failed (the command's exit status 1). An error
that would be the same for every video (the model cannot do what was asked) stops the batch at
once: saying it once per file would help no one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from ..errors import LrcnError

T = TypeVar("T")


def output_names(videos: Sequence[str | Path]) -> dict[str, str]:
    """Each video's NAME in a batch's output folder, distinct wherever the videos are (in any
    case): its stem; its file name where two share the stem; its path's parts from the
    nearest common folder, joined by "-", where two share the file name; a number where
    names still clash (one video listed twice gets one name). Named by stem alone, x/a.mp4
    and y/a.avi wrote the same a.annotated.mp4, the second over the first."""
    def clashing(names: dict[str, str]) -> set[str]:     # in any case: A.mp4 is a.mp4 on
        seen: dict[str, int] = {}                         # macOS's and Windows's disks
        for name in names.values():
            seen[name.casefold()] = seen.get(name.casefold(), 0) + 1
        return {video for video, name in names.items() if seen[name.casefold()] > 1}

    names = {str(video): Path(video).stem for video in videos}
    for video in clashing(names):
        names[video] = Path(video).name
    same_name = clashing(names)
    if same_name:
        where = {video: Path(os.path.abspath(video)) for video in same_name}
        try:
            common = Path(os.path.commonpath([path.parent for path in where.values()]))
        except ValueError:                      # Windows: on different drives
            common = None
        for video, path in where.items():
            parts = path.relative_to(common).parts if common else path.parts
            names[video] = "-".join(part.strip("\\/:") for part in parts if part.strip("\\/:"))
    for number, video in enumerate(sorted(clashing(names)), 1):   # what is left: numbered
        names[video] = f"{names[video]}-{number}"
    return names


def annotated_path(target: str | Path, video: str | Path, many: bool,
                   name: str | None = None) -> Path:
    """Where `--annotate TARGET` writes `video` annotated: TARGET itself for one video, else
    TARGET/NAME.annotated.mp4 (NAME: `name`, else the video's stem)."""
    name = Path(video).stem if name is None else name
    return Path(target) / f"{name}.annotated.mp4" if many else Path(target)


def timeline_folder(out: str | Path | None, video: str | Path, many: bool,
                    name: str | None = None) -> Path:
    """The folder of `video`'s timeline files: `out` itself for one video, else
    OUT/NAME.timeline (./NAME.timeline without `out`)."""
    if out and not many:
        return Path(out)
    name = Path(video).stem if name is None else name
    return Path(out or ".") / f"{name}.timeline"


@dataclass
class Batch(Generic[T]):
    """Videos done one after the other under the policy above. Iterate `run(work)` for the
    (video, result) of every video that worked; `report(video, error)` is called for every
    one that failed, and `failed` lists them afterwards. `fatal(error)`: whether an error
    stops the batch (it is raised)."""
    videos: list[str]
    report: Callable[[str, LrcnError], None]
    fatal: Callable[[LrcnError], bool] = lambda error: False
    failed: list[tuple[str, LrcnError]] = field(default_factory=list)

    @property
    def many(self) -> bool:
        return len(self.videos) > 1

    def run(self, work: Callable[[str], T]) -> Iterator[tuple[str, T]]:
        for video in self.videos:
            try:
                result = work(video)
            except LrcnError as error:
                if self.fatal(error):
                    raise
                self.failed.append((video, error))
                self.report(video, error)
                continue
            yield video, result


__all__ = ["output_names", "annotated_path", "timeline_folder", "Batch"]
