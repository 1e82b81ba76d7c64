"""The studio's workspace on disk: a data set in the standard layout and the runs trained on it.

    WORKSPACE/data/<Class>/v_<Class>_g<NN>_c<NN>.mp4   the clips (`lrcn train WORKSPACE/data`)
    WORKSPACE/runs/<run>/                              run folders (`lrcn evaluate ...`)
    WORKSPACE/sources/<id>/video<.ext>, meta.json      uploaded long videos, before cutting
    WORKSPACE/cache/                                   the frame and feature cache of training
    WORKSPACE/studio.json                              the groups' origins and the served run

A group is one source: every clip cut from one uploaded video, or recorded in one webcam
session, has that source's group number, whatever its class, so a group-aware split never puts
clips of one source on two sides. Names that come from a client (class, clip, run, source) are
checked against a regex and then looked up among what is on disk; none is joined into a path
unchecked, and nothing is written outside the workspace.

An uploaded video is opened only in a decoder process of the studio's (`source_task`, under the
server's decode limits): probed before it enters sources/, and cut there into a scratch folder
of its source, whose clips are then named and moved into their classes under the lock (which
is never held while a video decodes).
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ErrorKind, LrcnError
from ..files import atomic_write_text
from ..media.sampling import parse_group
from ..media.video import VIDEO_EXTENSIONS, DecodeLimits, decode_limits
from .limits import decode_task

# CamelCase-like class names, as UCF's: no "_" (it separates the parts of a clip's name).
CLASS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,39}")
# Any file name a data folder may hold (for folders opened from elsewhere), and the studio's own.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")
STUDIO_CLIP = re.compile(r"v_([A-Za-z][A-Za-z0-9]{0,39})_g(\d{2,4})_c(\d{2,4})\.mp4")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SOURCE_ID = re.compile(r"s[0-9a-f]{12}")
MAX_SEGMENT_S = 120.0        # one cut clip at most (a segment is an action, not a film)


def _bad(message: str, kind: ErrorKind = ErrorKind.BAD_INPUT) -> LrcnError:
    return LrcnError(message, kind=kind)


def check_class(name: str) -> str:
    if not isinstance(name, str) or not CLASS_NAME.fullmatch(name):
        raise _bad(f"bad class name {str(name)[:40]!r}: letters and digits, starting with a "
                   "letter, at most 40 (UCF style: TaiChi)")
    return name


def _entry(folder: Path, name: str, pattern: re.Pattern, what: str, file: bool = False
           ) -> Path:
    """The entry of `folder` called `name`, found by listing the folder (the name is checked by
    `pattern` first and never used as a path itself); `file`: only a plain file (not a folder,
    not a link) counts."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise _bad(f"bad {what} name {str(name)[:40]!r}")
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name == name and (not file or plain_file(path)):
                return path
    raise _bad(f"no {what} {name!r}", ErrorKind.NOT_FOUND)


def plain_file(path: Path) -> bool:
    """Whether `path` is a regular file itself: not a folder, not a link (to anywhere)."""
    return path.is_file() and not path.is_symlink()


def source_task(task: tuple) -> dict:
    """For the studio's decoder process, under `limits` (DecodeLimits as a tuple):
    ("probe", video, limits) -> {"duration", "size"}; ("cut", video, [(start, end), ...],
    folder, limits) -> {"written": [i, ...]}, segment i's frames written to folder/<i>.mp4
    (those that have frames); or {"error", "kind"}."""
    what, path, *rest = task
    limits = DecodeLimits(*rest[-1])
    try:
        with decode_limits(limits):
            if what == "probe":
                # the server's probe first: its cause for a file that does not open (not a
                # video, 415, or a damaged one, 422)
                probe = decode_task(("probe", path, None, {"max_pixels": limits.max_pixels,
                                                           "max_streams": limits.max_streams}))
                return probe if "error" in probe else _probe(Path(path))
            return {"written": _cut(Path(path), rest[0], Path(rest[1]))}
    except LrcnError as exc:
        return {"error": exc.reason, "kind": exc.kind.value}


def _probe(video: Path) -> dict:
    from ..media.video import FrameSource
    with FrameSource.open(video) as source:
        stream = source.stream
        duration = float(stream.duration * stream.time_base) \
            if stream.duration and stream.time_base else \
            (source.container.duration or 0) / 1e6
        return {"duration": duration,
                "size": [stream.codec_context.width, stream.codec_context.height]}


def _cut(video: Path, spans: list, folder: Path) -> list[int]:
    """One decoding pass over `video`, each frame going to every span that covers it."""
    from ..media.video import FrameSource, upright_image
    from ..media.writer import VideoWriter
    writers: dict[int, VideoWriter] = {}
    # Each writer removes its temporary on an error (VideoWriter's __exit__).
    with FrameSource.open(video) as source, contextlib.ExitStack() as open_writers:
        last = max(end for _, end in spans)
        for timed in source.frames():
            if timed.time >= last:
                break
            image = None
            for i, (start, end) in enumerate(spans):
                if not start <= timed.time < end:
                    continue
                if image is None:
                    image = upright_image(timed.frame)
                if i not in writers:
                    writers[i] = open_writers.enter_context(VideoWriter(
                        folder / f"{i}.mp4", image.shape[1], image.shape[0], source.fps))
                writers[i].write(image)
    return sorted(writers)


class Workspace:
    """One studio workspace. Its methods are the only writers; a lock orders them (the server
    calls them from its thread pool)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.data, self.runs = self.root / "data", self.root / "runs"
        self.sources, self.cache = self.root / "sources", self.root / "cache"
        for folder in (self.data, self.runs, self.sources):
            folder.mkdir(parents=True, exist_ok=True)
        self.state_path = self.root / "studio.json"
        self._lock = threading.RLock()

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {"groups": {}, "served": None}

    def _save_state(self, state: dict) -> None:
        atomic_write_text(self.state_path, json.dumps(state, indent=1))

    def served_run(self) -> Path | None:
        name = self.state().get("served")
        try:
            return self.run(name) if name else None
        except LrcnError:
            return None

    def set_served(self, run: Path) -> None:
        with self._lock:
            state = self.state()
            state["served"] = run.name
            self._save_state(state)

    # -- lookups -------------------------------------------------------------------------
    def class_folder(self, name: str) -> Path:
        return _entry(self.data, check_class(name), CLASS_NAME, "class")

    def clip(self, class_name: str, name: str) -> Path:
        return _entry(self.class_folder(class_name), name, FILE_NAME, "clip", file=True)

    def run(self, name: str) -> Path:
        return _entry(self.runs, name, RUN_NAME, "run")

    def source(self, source_id: str) -> Path:
        return _entry(self.sources, source_id, SOURCE_ID, "source")

    def classes(self) -> list[str]:
        return sorted(p.name for p in self.data.iterdir()
                      if p.is_dir() and CLASS_NAME.fullmatch(p.name))

    def clips(self) -> list[dict]:
        """Every clip: class, file name, group tag (or the file name when it has none)."""
        found = []
        for name in self.classes():
            for path in sorted((self.data / name).iterdir()):
                if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS \
                        and FILE_NAME.fullmatch(path.name):
                    found.append({"class": name, "name": path.name,
                                  "group": parse_group(path.name) or path.name,
                                  "bytes": path.stat().st_size})
        return found

    def summary(self) -> dict:
        clips = self.clips()
        groups = self.state().get("groups", {})
        table = {}
        for clip in clips:
            row = table.setdefault(clip["class"], {"clips": 0, "groups": {}})
            row["clips"] += 1
            row["groups"][clip["group"]] = row["groups"].get(clip["group"], 0) + 1
        return {"classes": table, "clips": clips, "groups": groups,
                "runs": self.list_runs(), "served": self.state().get("served")}

    def list_runs(self) -> list[dict]:
        runs = []
        for path in sorted(self.runs.iterdir()):
            if path.is_dir() and RUN_NAME.fullmatch(path.name):
                report = path / "report.json"
                accuracy = None
                if report.exists():
                    try:
                        accuracy = json.loads(report.read_text()).get("accuracy")
                    except ValueError:
                        pass
                runs.append({"name": path.name, "accuracy": accuracy,
                             "trained": (path / "model.safetensors").exists()})
        return runs

    # -- groups --------------------------------------------------------------------------
    def new_group(self, kind: str, label: str) -> str:
        """A group number no clip or source uses yet ("g07"), recorded with its origin."""
        with self._lock:
            state = self.state()
            used = {int(g[1:]) for g in state.get("groups", {})}
            used |= {int(parse_group(c["name"])[1:]) for c in self.clips()
                     if parse_group(c["name"])}
            number = max(used | {0}) + 1
            group = f"g{number:02d}"
            state.setdefault("groups", {})[group] = {"kind": kind, "label": label[:80],
                                                      "created": time.time()}
            self._save_state(state)
            return group

    def _next_name(self, class_name: str, group: str) -> Path:
        """The next free clip name of a class and group."""
        folder = self.data / check_class(class_name)
        folder.mkdir(exist_ok=True)
        taken = [int(m.group(3)) for p in folder.iterdir()
                 if (m := STUDIO_CLIP.fullmatch(p.name)) and f"g{m.group(2)}" == group]
        return folder / f"v_{class_name}_{group}_c{max(taken + [0]) + 1:02d}.mp4"

    # -- writing clips -------------------------------------------------------------------
    def add_frames(self, class_name: str, group: str, images: Iterable[np.ndarray],
                   fps: float) -> Path:
        """A recorded clip: RGB frames at `fps` (taken one at a time: a recording is not
        held decoded), written as H.264 MP4 into the class."""
        from ..media.writer import VideoWriter
        check_class(class_name)
        if group not in self.state().get("groups", {}):
            raise _bad(f"no recording session {group!r}: start one first", ErrorKind.NOT_FOUND)
        images = iter(images)
        first = next(images, None)
        if first is None:
            raise _bad("no frames in the recording")
        with self._lock:
            target = self._next_name(class_name, group)
            height, width = first.shape[:2]
            with VideoWriter(target, width, height, fps) as writer:
                writer.write(first)
                for image in images:
                    writer.write(image)
        return target

    def add_source(self, upload: Path, original_name: str, probe: dict) -> dict:
        """Move an uploaded long video into sources/ with a group of its own; `probe` is
        source_task's answer for it ({"duration", "size"})."""
        source_id = "s" + secrets.token_hex(6)
        folder = self.sources / source_id
        folder.mkdir()
        # the container is found by probing, not by the name
        shutil.move(str(upload), folder / "video.mp4")
        label = re.sub(r"[^A-Za-z0-9 ._-]", "_", original_name or "video")[:80]
        meta = {"id": source_id, "name": label, "duration": probe["duration"],
                "size": probe["size"], "group": self.new_group("video", label)}
        atomic_write_text(folder / "meta.json", json.dumps(meta))
        return meta

    def source_meta(self, source_id: str) -> dict:
        return json.loads((self.source(source_id) / "meta.json").read_text())

    def source_video(self, source_id: str) -> Path:
        video = self.source(source_id) / "video.mp4"
        if not plain_file(video):
            raise _bad(f"source {source_id!r} has no video", ErrorKind.NOT_FOUND)
        return video

    def list_sources(self) -> list[dict]:
        return [json.loads((p / "meta.json").read_text()) for p in sorted(self.sources.iterdir())
                if SOURCE_ID.fullmatch(p.name) and (p / "meta.json").exists()]

    def plan_cut(self, source_id: str, segments: list[dict]
                 ) -> tuple[Path, list[tuple[float, float, str]], Path]:
        """Check segments ({"start": s, "end": s, "class": name}) of a source -> its video, the
        segments as (start, end, class), and a new scratch folder for source_task's "cut"
        (add_cut takes its clips; remove it after)."""
        video = self.source_video(source_id)
        wanted = []
        for segment in segments:
            try:
                start, end = float(segment["start"]), float(segment["end"])
            except (KeyError, TypeError, ValueError):
                raise _bad("a segment needs start and end in seconds") from None
            check_class(segment.get("class"))
            if not (0 <= start < end) or end - start > MAX_SEGMENT_S:
                raise _bad(f"bad segment {start:g}-{end:g} s (0 <= start < end, at most "
                           f"{MAX_SEGMENT_S:g} s long)")
            wanted.append((start, end, segment["class"]))
        if not wanted:
            raise _bad("no segments to cut")
        scratch = video.parent / f"cut-{secrets.token_hex(4)}"
        scratch.mkdir()
        return video, wanted, scratch

    def add_cut(self, source_id: str, wanted: list[tuple[float, float, str]], scratch: Path,
                written: list[int]) -> list[Path]:
        """The clips a cut wrote into `scratch` (<i>.mp4 for segment i), named in their classes
        in the source's group, in the segments' order."""
        group = self.source_meta(source_id)["group"]
        if not written:
            raise _bad("no frames in the segments (past the video's end?)")
        placed = []
        with self._lock:
            for i in written:
                target = self._next_name(wanted[i][2], group)
                (scratch / f"{i}.mp4").rename(target)
                placed.append(target)
        return placed

    # -- editing -------------------------------------------------------------------------
    def delete(self, class_name: str, name: str) -> None:
        with self._lock:
            self.clip(class_name, name).unlink()

    def relabel(self, class_name: str, name: str, new_class: str) -> Path:
        """Move a clip to another class; the studio's own names are renamed for the class and
        keep their group; other names are kept."""
        check_class(new_class)
        with self._lock:
            path = self.clip(class_name, name)
            match = STUDIO_CLIP.fullmatch(path.name)
            if match:
                target = self._next_name(new_class, f"g{match.group(2)}")
            else:
                (self.data / new_class).mkdir(exist_ok=True)
                target = self.data / new_class / path.name
                if target.exists():
                    raise _bad(f"{new_class} already has a clip {path.name!r}")
            path.rename(target)
            self._drop_empty(path.parent)
            return target

    def _drop_empty(self, folder: Path) -> None:
        if folder.parent == self.data and not any(folder.iterdir()):
            folder.rmdir()

    def new_run_folder(self) -> Path:
        stamp = time.strftime("run-%Y%m%d-%H%M%S")
        folder, n = self.runs / stamp, 1
        while folder.exists():
            n += 1
            folder = self.runs / f"{stamp}-{n}"
        return folder

    def import_data(self, data: str | Path) -> int:
        """Open a workspace from an existing data folder (<data>/<Class>/<videos>): its files
        are hard-linked (copied across file systems) into data/, names kept. Classes whose
        names the studio cannot take are refused. Returns the number of files."""
        data = Path(data)
        if not data.is_dir():
            raise LrcnError("no such data folder", data, ErrorKind.NOT_FOUND)
        count = 0
        for folder in sorted(p for p in data.iterdir() if p.is_dir()
                             and not p.name.startswith(".")):
            if not CLASS_NAME.fullmatch(folder.name):
                raise LrcnError(f"class folder name {folder.name!r} is not letters and digits",
                                folder, ErrorKind.SETTING)
            for path in sorted(folder.iterdir()):
                if not (path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS
                        and FILE_NAME.fullmatch(path.name)):
                    continue
                target = self.data / folder.name / path.name
                target.parent.mkdir(exist_ok=True)
                if target.exists():
                    continue
                try:
                    target.hardlink_to(path)
                except OSError:
                    shutil.copy2(path, target)
                count += 1
        return count


__all__ = ["Workspace", "CLASS_NAME", "FILE_NAME", "RUN_NAME", "SOURCE_ID", "check_class"]
