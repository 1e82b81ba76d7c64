"""Where `lrcn predict` writes its files for one video or several, and what happens when one of
several videos fails.

Naming: for one video, `--annotate PATH` and `--out FOLDER` (a timeline's folder) are the paths
themselves; for several, they are folders holding NAME.annotated.mp4 and NAME.timeline per
video (NAME: the video's file name without its suffix); a timeline without --out goes to
./NAME.timeline.

Errors: a video that cannot be read is that video's failure, not the batch's. It is reported,
the next video goes on, and the batch ends as failed (the command's exit status 1). An error
that would be the same for every video (the model cannot do what was asked) stops the batch at
once: saying it once per file would help no one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

from ..errors import LrcnError

T = TypeVar("T")


def annotated_path(target: str | Path, video: str | Path, many: bool) -> Path:
    """Where `--annotate TARGET` writes `video` annotated: TARGET itself for one video, else
    TARGET/NAME.annotated.mp4."""
    return Path(target) / f"{Path(video).stem}.annotated.mp4" if many else Path(target)


def timeline_folder(out: str | Path | None, video: str | Path, many: bool) -> Path:
    """The folder of `video`'s timeline files: `out` itself for one video, else
    OUT/NAME.timeline (./NAME.timeline without `out`)."""
    if out and not many:
        return Path(out)
    return Path(out or ".") / f"{Path(video).stem}.timeline"


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


__all__ = ["annotated_path", "timeline_folder", "Batch"]
