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
from ..media.video import VIDEO_EXTENSIONS

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


def _entry(folder: Path, name: str, pattern: re.Pattern, what: str) -> Path:
    """The entry of `folder` called `name`, found by listing the folder (the name is checked by
    `pattern` first and never used as a path itself)."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise _bad(f"bad {what} name {str(name)[:40]!r}")
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name == name:
                return path
    raise _bad(f"no {what} {name!r}", ErrorKind.NOT_FOUND)


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
        return _entry(self.class_folder(class_name), name, FILE_NAME, "clip")

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

    def _next_name(self, class_name: str, group: str, reserved: set[Path] = frozenset()
                   ) -> Path:
        """The next free clip name of a class and group (`reserved`: names given out and not
        written yet)."""
        folder = self.data / check_class(class_name)
        folder.mkdir(exist_ok=True)
        taken = [int(m.group(3)) for p in [*folder.iterdir(), *reserved]
                 if (m := STUDIO_CLIP.fullmatch(p.name)) and f"g{m.group(2)}" == group
                 and p.parent == folder]
        return folder / f"v_{class_name}_{group}_c{max(taken + [0]) + 1:02d}.mp4"

    # -- writing clips -------------------------------------------------------------------
    def add_frames(self, class_name: str, group: str, images: Iterable[np.ndarray],
                   fps: float) -> Path:
        """A recorded clip: RGB frames at `fps`, written as H.264 MP4 into the class."""
        from ..media.writer import VideoWriter
        check_class(class_name)
        if group not in self.state().get("groups", {}):
            raise _bad(f"no recording session {group!r}: start one first", ErrorKind.NOT_FOUND)
        images = list(images)
        if not images:
            raise _bad("no frames in the recording")
        with self._lock:
            target = self._next_name(class_name, group)
            height, width = images[0].shape[:2]
            with VideoWriter(target, width, height, fps) as writer:
                for image in images:
                    writer.write(image)
        return target

    def add_source(self, upload: Path, original_name: str) -> dict:
        """Move an uploaded long video into sources/ with a group of its own."""
        from ..media.video import FrameSource
        source_id = "s" + secrets.token_hex(6)
        folder = self.sources / source_id
        folder.mkdir()
        video = folder / "video.mp4"     # the container is found by probing, not by the name
        shutil.move(str(upload), video)
        try:
            with FrameSource.open(video) as source:
                stream = source.stream
                duration = float(stream.duration * stream.time_base) \
                    if stream.duration and stream.time_base else \
                    (source.container.duration or 0) / 1e6
                size = [stream.codec_context.width, stream.codec_context.height]
        except LrcnError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        label = re.sub(r"[^A-Za-z0-9 ._-]", "_", original_name or "video")[:80]
        meta = {"id": source_id, "name": label, "duration": duration, "size": size,
                "group": self.new_group("video", label)}
        atomic_write_text(folder / "meta.json", json.dumps(meta))
        return meta

    def source_meta(self, source_id: str) -> dict:
        return json.loads((self.source(source_id) / "meta.json").read_text())

    def list_sources(self) -> list[dict]:
        return [json.loads((p / "meta.json").read_text()) for p in sorted(self.sources.iterdir())
                if SOURCE_ID.fullmatch(p.name) and (p / "meta.json").exists()]

    def cut(self, source_id: str, segments: list[dict]) -> list[Path]:
        """Cut segments ({"start": s, "end": s, "class": name}) of a source into clips of its
        group, in one decoding pass, each frame going to every segment that covers it."""
        from ..media.video import FrameSource, upright_image
        from ..media.writer import VideoWriter
        meta = self.source_meta(source_id)
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
        writers: dict[int, VideoWriter] = {}
        # Each writer leaves its temporary behind it on an error (VideoWriter's __exit__).
        with self._lock, FrameSource.open(self.source(source_id) / "video.mp4") as source, \
                contextlib.ExitStack() as open_writers:
            last = max(end for _, end, _ in wanted)
            for timed in source.frames():
                if timed.time >= last:
                    break
                image = None
                for i, (start, end, name) in enumerate(wanted):
                    if not start <= timed.time < end:
                        continue
                    if image is None:
                        image = upright_image(timed.frame)
                    if i not in writers:
                        target = self._next_name(name, meta["group"],
                                                 {w.path for w in writers.values()})
                        writers[i] = open_writers.enter_context(VideoWriter(
                            target, image.shape[1],
                            image.shape[0], source.fps))
                    writers[i].write(image)
        written = [writers[i].path for i in sorted(writers)]
        if not written:
            raise _bad("no frames in the segments (past the video's end?)")
        return written

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
