"""Data sets: finding the clips, with the group of each.

Flow: a folder per class, a `path,label` list or UCF101's split lists -> `Sample`s with a group
each -> a group-aware split (split.py). The clips' frames are then decoded once into the on-disk cache
(cache.py), from which loader.py feeds training. No torch here: the decoding worker processes
import this module and should start in a blink.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import SEED_CLASSES
from ..errors import ErrorKind, LrcnError
from ..files import atomic_write_text
from ..media.sampling import parse_group
from ..media.video import VIDEO_EXTENSIONS


@dataclass(frozen=True)
class Sample:
    """One clip of a data set: its file, its class, and its group (clips of one group come from
    one longer video and always stay in one part of a split)."""
    path: Path
    class_name: str
    group: str             # "<class>/gGG", or "<class>/<file name>" for files with no group tag


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS \
        and not path.name.startswith(".")


def expand_videos(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Videos named on a command line: a folder stands for the video files in it and in its
    subfolders (a data set's class folders), sorted; a file for itself, whatever its suffix
    (it is judged when read). A folder with no video file is kept, so that its error names it."""
    videos: list[Path] = []
    for given in paths:
        if "://" in str(given):     # Path() would make https://x of it https:/x, not found
            raise LrcnError("is a URL: lrcn predict reads files; lrcn stream reads URLs as "
                            "they come", given, ErrorKind.SETTING)
        path = Path(given)
        found = sorted(p for p in path.rglob("*") if is_video_file(p)) if path.is_dir() else []
        videos.extend(found or [path])
    return videos


def list_class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_classes(root: Path, requested: Sequence[str] | None) -> list[str]:
    """The classes to use: those asked for (in that order), else the seed's four when all four
    folders exist, else every class folder."""
    root = Path(root)
    if not root.is_dir():
        if not root.exists():
            raise LrcnError("no such data folder", root, ErrorKind.NOT_FOUND)
        raise LrcnError("not a folder", root, ErrorKind.SETTING)
    available = list_class_folders(root)
    if not available:
        raise LrcnError("no class folders in the data folder (expected <root>/<Class>/*.avi)",
                        root)
    if requested:
        return _class_subset(available, requested, root, "folders")
    if all(name in available for name in SEED_CLASSES):
        return list(SEED_CLASSES)
    return available


def discover(root: str | os.PathLike, classes: Sequence[str] | None = None,
             min_classes: int = 2) -> tuple[list[str], list[Sample]]:
    """Find the clips of a folder-per-class data set. Every chosen class folder must hold at
    least one video file; training needs two classes, a scan (`lrcn check`) one."""
    root = Path(root)
    class_names = resolve_classes(root, classes)
    samples: list[Sample] = []
    for name in class_names:
        files = sorted(p for p in (root / name).rglob("*") if is_video_file(p))
        if not files:
            raise LrcnError(f"class folder has no video files ({', '.join(VIDEO_EXTENSIONS[:5])}"
                            ", ...)", root / name)
        for path in files:
            tag = parse_group(path.name)
            samples.append(Sample(path, name, f"{name}/{tag or path.name}"))
    if len(class_names) < min_classes:
        raise LrcnError("at least two classes are needed to train a classifier", root)
    return class_names, samples


def _class_subset(available: Sequence[str], requested: Sequence[str] | None, where: Path,
                  listed_as: str = "listed") -> list[str]:
    """The requested classes among the available ones (the exact name, else case-insensitive),
    in the order asked, or all of them; `listed_as` says in the error where the available ones
    were found. The same class asked for twice is refused, for folders and lists alike."""
    if not requested:
        return list(available)
    lookup = {name.lower(): name for name in available}
    chosen = []
    for name in requested:
        match = name if name in available else lookup.get(name.lower())
        if match is None:
            raise LrcnError(f"unknown class {name!r} ({listed_as}: "
                            f"{', '.join(list(available)[:12])}"
                            f"{', ...' if len(available) > 12 else ''})", where, ErrorKind.SETTING)
        chosen.append(match)
    if len(set(chosen)) != len(chosen):
        raise LrcnError("a class is listed twice in --classes", where, ErrorKind.SETTING)
    return chosen


def _sample_for(path: Path, class_name: str, group: str | None = None) -> Sample:
    tag = group or parse_group(path.name)
    return Sample(path, class_name, f"{class_name}/{tag or path.name}")


def read_list(list_path: str | os.PathLike, classes: Sequence[str] | None = None,
              min_classes: int = 2) -> tuple[list[str], list[Sample], list[tuple[str, str]]]:
    """A CSV or text list of `path,label` (optionally a third column `group`; a header line
    `path,label` is allowed; paths relative to the list's folder). Returns the classes in first
    appearance order, the samples, and the listed files that are missing, with the cause."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise LrcnError("no such list file", list_path, ErrorKind.NOT_FOUND)
    base = list_path.parent
    rows: list[tuple[Path, str, str | None]] = []
    text = list_path.read_text(encoding="utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line.split(",") if "," in line else line.split())]
        if number == 1 and [f.lower() for f in fields[:2]] == ["path", "label"]:
            continue
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise LrcnError(f"line {number}: expected 'path,label', got {line[:60]!r}",
                            list_path)
        path = Path(fields[0])
        rows.append((path if path.is_absolute() else base / path, fields[1],
                     fields[2] if len(fields) > 2 and fields[2] else None))
    if not rows:
        raise LrcnError("the list has no 'path,label' lines", list_path)
    labels = list(dict.fromkeys(label for _, label, _ in rows))
    chosen = set(_class_subset(labels, classes, list_path))
    names = [n for n in labels if n in chosen] if not classes else \
        _class_subset(labels, classes, list_path)
    samples, missing = [], []
    for path, label, group in rows:
        if label not in chosen:
            continue
        if not path.is_file():
            missing.append((str(path), f"listed in {list_path.name} but missing"))
            continue
        samples.append(_sample_for(path, label, group))
    if len(names) < min_classes:
        raise LrcnError("at least two classes are needed to train a classifier", list_path)
    return names, samples, missing


def _read_lines(path: Path) -> list[str]:
    """Lines of a list file; Windows line endings and a BOM are fine."""
    if not path.is_file():
        raise LrcnError("no such split list", path, ErrorKind.NOT_FOUND)
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_split_lists(root: Path, lists: Path | None) -> Path:
    """Where classInd.txt lives: --lists, else the data folder or its ucfTrainTestlist/."""
    for folder in ([lists] if lists else [root, root / "ucfTrainTestlist",
                                          root.parent / "ucfTrainTestlist"]):
        if folder is not None and (Path(folder) / "classInd.txt").is_file():
            return Path(folder)
    raise LrcnError("no classInd.txt here or in ucfTrainTestlist/ (pass --lists DIR)",
                    lists or root, ErrorKind.NOT_FOUND)


def read_ucf101_split(root: str | os.PathLike, split: int, lists: str | os.PathLike | None,
                      classes: Sequence[str] | None = None
                      ) -> tuple[list[str], dict[str, list[Sample]], list[tuple[str, str]]]:
    """The official UCF101 split N: classInd.txt, trainlist0N.txt, testlist0N.txt. Class and
    file names are matched to the folders without regard to case (the published lists spell
    e.g. HandStandPushups where the folder is HandstandPushups). Returns the classes in
    classInd order, {"train": [...], "test": [...]}, and the listed files that are missing."""
    root = Path(root)
    if not root.is_dir():
        raise LrcnError("no such data folder", root, ErrorKind.NOT_FOUND)
    folder = find_split_lists(root, Path(lists) if lists else None)
    ind = []
    for line in _read_lines(folder / "classInd.txt"):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise LrcnError(f"expected '<number> <class>', got {line[:60]!r}",
                            folder / "classInd.txt")
        ind.append((int(parts[0]), parts[1]))
    ind.sort()
    folders = {name.lower(): name for name in list_class_folders(root)}
    listed = [name for _, name in ind]
    wanted = {n.lower() for n in _class_subset(listed, classes, folder / "classInd.txt")}
    # Every file under the root, by lower-case relative path, found once.
    files = {str(p.relative_to(root)).replace(os.sep, "/").lower(): p
             for p in root.rglob("*") if is_video_file(p)}
    names = [folders.get(n.lower(), n) for n in listed if n.lower() in wanted]
    parts: dict[str, list[Sample]] = {"train": [], "test": []}
    missing: list[tuple[str, str]] = []
    for part in ("train", "test"):
        list_file = folder / f"{part}list{split:02d}.txt"
        for line in _read_lines(list_file):
            rel = line.split()[0].replace("\\", "/")
            class_key = rel.split("/")[0].lower()
            if class_key not in wanted:
                continue
            path = files.get(rel.lower())
            if path is None:
                missing.append((str(root / rel), f"listed in {list_file.name} but missing"))
                continue
            parts[part].append(_sample_for(path, folders.get(class_key, rel.split("/")[0])))
    for name in names:
        if not any(s.class_name == name for s in parts["train"]):
            raise LrcnError(f"no training clips of class {name!r} found for split {split}",
                            root)
    return names, parts, missing


def load_samples(data: str | os.PathLike, classes: Sequence[str] | None = None,
                 min_classes: int = 2
                 ) -> tuple[list[str], list[Sample], list[tuple[str, str]]]:
    """A folder per class or a `path,label` list -> (classes, samples, listed-but-missing)."""
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() in VIDEO_EXTENSIONS:     # read as a list, it quoted its bytes
            raise LrcnError("is a video: a data set is a folder of class folders of videos, "
                            "or a path,label list", data, ErrorKind.SETTING)
        return read_list(data, classes, min_classes)
    names, samples = discover(data, classes, min_classes)
    return names, samples, []


def find_data(data: str | os.PathLike, classes: Sequence[str] | None,
              ucf_split: int | None = None, lists: str | os.PathLike | None = None
              ) -> tuple[list[str], list[Sample], list[tuple[str, str]], set[Path] | None]:
    """Any supported data set -> (classes, samples, listed-but-missing files with causes, the
    paths of the official test list or None). Sources: a folder per class; a CSV/text list of
    `path,label`; a folder with the official UCF101 split lists (`ucf_split` N). Nothing is
    split yet: training checks the clips first (data/check.py), then `split_data`."""
    if ucf_split is not None:
        names, fixed, missing = read_ucf101_split(data, ucf_split, lists, classes)
        return names, fixed["train"] + fixed["test"], missing, {s.path for s in fixed["test"]}
    names, samples, missing = load_samples(data, classes)
    return names, samples, missing, None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:  # a listed file outside the data folder
        return str(path.resolve())


def write_split(path: Path, root: Path, split: dict[str, list[Sample]]) -> None:
    data = {"root": str(Path(root).resolve()),
            **{part: [{"path": _relative(s.path, root), "class": s.class_name,
                       "group": s.group} for s in samples] for part, samples in split.items()}}
    atomic_write_text(path, json.dumps(data, indent=1))


def read_split(path: Path, root: Path | None = None) -> dict[str, list[Sample]]:
    """A run's split.json (write_split's), or a one-line LrcnError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise LrcnError("no split.json (the run's split)", path, ErrorKind.NOT_FOUND)
    try:
        data = json.loads(path.read_text())
        root = Path(root or data["root"])
        return {part: [Sample(root / e["path"], e["class"], e["group"]) for e in data[part]]
                for part in ("train", "val", "test")}
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise LrcnError(f"damaged split.json ({type(exc).__name__}: {exc})", path) from None


__all__ = ["Sample", "discover", "load_samples", "find_data", "read_list", "read_ucf101_split",
           "write_split", "read_split"]
