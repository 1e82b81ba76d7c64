"""A synthetic action-video data set, written as real video files in UCF's layout and naming,
so that lrcn's whole pipeline runs on a fresh machine with no download.

Each class is a kind of motion of an "actor" shape over a textured background. Clips of one
group share a setting (background, lighting, distractors, actor shape and colour, frame rate,
codec, camera noise), as UCF clips cut from one video do; clips differ in position, size,
speed, length and timing. Two pairs of classes are each other's time reversal (SlideLeft and
SlideRight, Grow and Shrink): every frame of a SlideLeft clip could appear in a SlideRight clip,
so only a model that uses frame order can tell them apart. Bounce drops the actor onto a floor
1-3 times; Spin turns a wheel (a disc with a dark spoke) in place.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..console import progress as console_progress
from ..files import atomic_write_text, output_folder
from ..media.writer import VideoWriter
from .workers import run_tasks

# class name -> (motion family, reversed in time)
CLASSES: dict[str, tuple[str, bool]] = {
    "SlideRight": ("slide", False),
    "SlideLeft": ("slide", True),
    "Grow": ("grow", False),
    "Shrink": ("grow", True),
    "Bounce": ("bounce", False),
    "Spin": ("spin", False),
}
DEFAULT_CLASSES = tuple(CLASSES)
CLASSES_INDEX = {name: i for i, name in enumerate(CLASSES)}
FRAME_RATES = (15.0, 20.0, 24.0, 25.0, 30000 / 1001, 30.0)


@dataclass(frozen=True)
class SynthConfig:
    classes: tuple[str, ...] = DEFAULT_CLASSES
    groups: int = 8                 # per class
    clips_per_group: int = 4
    width: int = 320                # UCF's frame size
    height: int = 240
    min_seconds: float = 2.0
    max_seconds: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in CLASSES]
        if unknown:
            raise ValueError(f"unknown synthetic class {unknown[0]!r} "
                             f"(choose from {', '.join(CLASSES)})")
        if len(self.classes) < 2 or self.groups < 1 or self.clips_per_group < 1:
            raise ValueError("need at least 2 classes, 1 group and 1 clip per group")
        if not 16 <= self.width <= 4096 or not 16 <= self.height <= 4096:
            raise ValueError("frame size must be between 16 and 4096 pixels")
        if not 0.1 <= self.min_seconds <= self.max_seconds <= 3600:   # NaN fails too
            raise ValueError("need 0.1 <= min_seconds <= max_seconds <= 3600")


def _group_setting(rng: np.random.Generator, width: int, height: int,
                   hue_slot: tuple[int, int] | None = None) -> dict:
    """What every clip of a group shares: the scene and the camera. `hue_slot` = (i, n): the
    actor's hue is drawn from the i-th of n equal parts of the hue circle, not from all of it."""
    margin = 8
    big_h, big_w = height + 2 * margin, width + 2 * margin
    # Background: a muted two-colour gradient, low-frequency texture, static distractors.
    c0, c1 = _muted(rng), _muted(rng)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    ramp = (xx * math.cos(angle) + yy * math.sin(angle))
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    background = c0 + (c1 - c0) * ramp[..., None]
    texture = cv2.resize(rng.normal(0, 1, (big_h // 16 + 2, big_w // 16 + 2, 3)).astype(np.float32),
                         (big_w, big_h), interpolation=cv2.INTER_CUBIC)
    background += texture * rng.uniform(4, 16)
    background = np.clip(background, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 5)):
        colour = tuple(int(v) for v in _muted(rng))
        centre = (int(rng.uniform(0, big_w)), int(rng.uniform(0, big_h)))
        size = int(rng.uniform(0.04, 0.12) * height)
        if rng.random() < 0.5:
            cv2.circle(background, centre, size, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(background, (centre[0] - size, centre[1] - size // 2),
                          (centre[0] + size, centre[1] + size // 2), colour, -1, cv2.LINE_AA)
    # The actor, like UCF's humans, looks alike in every scene: a saturated shape with a dark
    # outline on a muted scene; its hue, shape and size vary.
    slot, slots = hue_slot if hue_slot is not None else (0, 1)
    hue = int(180 * (slot + rng.uniform()) / slots) % 180
    hsv = np.uint8([[[hue, rng.integers(170, 256), rng.integers(200, 256)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(float)
    return {
        "background": background, "margin": margin,
        "shape": str(rng.choice(["circle", "square", "triangle", "diamond"])),
        "colour": tuple(float(v) for v in colour),
        "size": float(rng.uniform(0.11, 0.18)),           # radius, fraction of height
        "fps": float(rng.choice(FRAME_RATES)),
        "noise": float(rng.uniform(0, 10)),               # camera noise sigma, grey levels
        "jitter": float(rng.uniform(0, 1.5)),             # camera shake, pixels per frame
        "distractor": bool(rng.random() < 0.5),           # a second, slowly drifting shape
        "container": "mp4" if rng.random() < 0.25 else "avi",
    }


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour of any brightness."""
    grey = rng.uniform(40, 210)
    return np.clip(grey + rng.normal(0, 18, 3), 0, 255)


def _polygon(shape: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    corners = {"triangle": 3, "square": 4, "diamond": 4}[shape]
    offset = angle + (math.pi / 4 if shape == "square" else 0)
    theta = offset + np.arange(corners) * 2 * math.pi / corners
    return np.stack([cx + radius * np.cos(theta), cy + radius * np.sin(theta)], 1)


def _draw_actor(image: np.ndarray, shape: str, colour, cx: float, cy: float, radius: float,
                angle: float, wheel: bool) -> None:
    shift = 4  # sub-pixel drawing: coordinates in 1/16 pixel, so slow motion is smooth
    scale = 1 << shift
    colour = tuple(int(c) for c in colour)
    if wheel:
        # Spin: a disc with a dark spoke, whatever the actor's shape. Its outline never changes,
        # only the spoke turns. (It was a bar, whose height and width swap as it turns: to the
        # seed's model, which keeps little more than which quadrant holds what, a turning bar
        # looked like an up-and-down motion, and Spin clips were called Bounce; issue 20.)
        centre = (int(cx * scale), int(cy * scale))
        cv2.circle(image, centre, int(radius * scale), colour, -1, cv2.LINE_AA, shift)
        dx, dy = math.cos(angle) * radius, math.sin(angle) * radius
        nx, ny = -math.sin(angle) * radius * 0.22, math.cos(angle) * radius * 0.22
        spoke = np.array([[cx - dx - nx, cy - dy - ny], [cx + dx - nx, cy + dy - ny],
                          [cx + dx + nx, cy + dy + ny], [cx - dx + nx, cy - dy + ny]])
        cv2.fillPoly(image, [np.round(spoke * scale).astype(np.int32)], (20, 20, 20),
                     cv2.LINE_AA, shift)
        cv2.circle(image, centre, int(radius * scale), (20, 20, 20), 2, cv2.LINE_AA, shift)
        return
    if shape == "circle":
        centre = (int(cx * scale), int(cy * scale))
        cv2.circle(image, centre, int(radius * scale), colour, -1, cv2.LINE_AA, shift)
        cv2.circle(image, centre, int(radius * scale), (20, 20, 20), 2, cv2.LINE_AA, shift)
        return
    else:
        points = _polygon(shape, cx, cy, radius, angle)
    polygon = [np.round(points * scale).astype(np.int32)]
    cv2.fillPoly(image, polygon, colour, cv2.LINE_AA, shift)
    cv2.polylines(image, polygon, True, (20, 20, 20), 2, cv2.LINE_AA, shift)


def _trajectory(family: str, rng: np.random.Generator, w: float, h: float, size: float):
    """A function of normalised time t in [0, 1] -> (cx, cy, radius, angle)."""
    radius = size * h * rng.uniform(0.8, 1.25)
    if family == "slide":
        x0, x1 = rng.uniform(0.08, 0.4) * w, rng.uniform(0.6, 0.92) * w
        y = rng.uniform(0.3, 0.7) * h
        bob, steps, phase = rng.uniform(0, 0.04) * h, rng.integers(2, 8), rng.uniform(0, 2 * math.pi)
        return lambda t: (x0 + (x1 - x0) * t, y + bob * math.sin(2 * math.pi * steps * t + phase),
                          radius, 0.0)
    if family == "grow":
        r0, r1 = rng.uniform(0.04, 0.09) * h, rng.uniform(0.26, 0.4) * h
        x, y = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
        return lambda t: (x, y, r0 + (r1 - r0) * t, 0.0)
    if family == "bounce":
        x, floor = rng.uniform(0.2, 0.8) * w, rng.uniform(0.7, 0.85) * h
        # At most 3 bounces: 20 frames sampled over the clip still see every bounce.
        height, bounces = rng.uniform(0.3, 0.5) * h, rng.integers(1, 4)
        phase = rng.uniform(0, math.pi)
        return lambda t: (x, floor - height * abs(math.sin(math.pi * bounces * t + phase)),
                          radius, 0.0)
    if family == "spin":
        x, y = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        turns = rng.uniform(0.75, 3.0) * rng.choice([-1, 1])
        start = rng.uniform(0, 2 * math.pi)
        return lambda t: (x, y, radius * 1.3, start + 2 * math.pi * turns * t)
    raise ValueError(family)


def render_clip(class_name: str, setting: dict, rng: np.random.Generator, width: int,
                height: int, seconds: float):
    """Yield the clip's frames, (H, W, 3) uint8 RGB."""
    family, reverse = CLASSES[class_name]
    fps = setting["fps"]
    count = max(2, int(round(seconds * fps)))
    path = _trajectory(family, rng, width, height, setting["size"])
    background, margin = setting["background"], setting["margin"]
    noise_bank = [rng.normal(0, setting["noise"], (height, width, 3)).astype(np.int16)
                  for _ in range(4)] if setting["noise"] > 0.5 else None
    # Camera shake: a random walk pulled back to the centre (time-reversible in distribution).
    offsets = np.zeros((count, 2))
    for i in range(1, count):
        offsets[i] = 0.9 * offsets[i - 1] + rng.normal(0, setting["jitter"], 2)
    offsets = np.clip(np.round(offsets), -margin, margin).astype(int)
    distractor = None
    if setting["distractor"]:
        start = rng.uniform([0, 0], [width, height])
        velocity = rng.normal(0, 0.15, 2) * min(width, height)  # over the whole clip
        distractor = (start, velocity, rng.uniform(0, 255, 3), rng.uniform(0.03, 0.07) * height)
    for i in range(count):
        t = i / (count - 1)
        if reverse:
            t = 1.0 - t
        oy, ox = offsets[i]
        frame = background[margin + oy:margin + oy + height, margin + ox:margin + ox + width].copy()
        if distractor is not None:
            start, velocity, colour, size = distractor
            position = start + velocity * (i / (count - 1))
            cv2.circle(frame, (int(position[0]), int(position[1])), int(size),
                       tuple(int(c) for c in colour), -1, cv2.LINE_AA)
        cx, cy, radius, angle = path(t)
        _draw_actor(frame, setting["shape"], setting["colour"], cx, cy, radius, angle,
                    wheel=family == "spin")
        if noise_bank is not None:
            frame = np.clip(frame.astype(np.int16) + noise_bank[rng.integers(len(noise_bank))],
                            0, 255).astype(np.uint8)
        yield frame


def write_frames(path: Path, frames, fps: float, width: int, height: int) -> None:
    """Encode frames as XviD-style MPEG-4 Part 2 in AVI (as UCF ships) or H.264 in MP4, by the
    suffix, repeatably (media.writer: one encoder thread, no macroblock tree)."""
    # repeatable: the same seed writes the same bytes, whatever the load (the demo repeats)
    with VideoWriter(path, width, height, fps, crf=20, repeatable=True) as out:
        for image in frames:
            out.write(image)


def _make_group(task: tuple) -> list[dict]:
    """Worker: render and write every clip of one group; returns their manifest rows."""
    root, class_index, class_name, group, config_dict = task
    config = SynthConfig(**{**config_dict, "classes": tuple(config_dict["classes"])})
    rng = np.random.default_rng([config.seed, class_index, group])
    # Every class draws its settings from the same distribution: a scene never tells the class.
    # The actor's hue is stratified: group g of every class takes the g-th part of the hue
    # circle, so that each class's groups cover all hues alike. Drawn freely, the demo's 40
    # groups left chance clusters (seed 1: 9 of Bounce's 28 training groups green or yellow,
    # 2 of Spin's), and the seed's model took colour for motion: its green and yellow Spin
    # test groups were called Bounce, whole groups at a time (issue 20).
    setting = _group_setting(rng, config.width, config.height, (group - 1, config.groups))
    rows = []
    folder = Path(root) / class_name
    folder.mkdir(parents=True, exist_ok=True)
    for clip in range(1, config.clips_per_group + 1):
        seconds = float(rng.uniform(config.min_seconds, config.max_seconds))
        name = f"v_{class_name}_g{group:02d}_c{clip:02d}.{setting['container']}"
        frames = render_clip(class_name, setting, rng, config.width, config.height, seconds)
        write_frames(folder / name, frames, setting["fps"], config.width, config.height)
        rows.append({"path": f"{class_name}/{name}", "class": class_name, "group": f"g{group:02d}",
                     "fps": round(setting["fps"], 3),
                     "frames": max(2, int(round(seconds * setting["fps"]))),
                     "seconds": round(seconds, 2)})
    return rows


MANIFEST_HEADER = "path,class,group,fps,frames,seconds"   # manifest.csv's first line
# The generator's version, written with every data set (synth.json): raise it whenever a seed's
# files change, so that a data set written before is known to be another (the demo writes it
# again rather than train on it). 2: Spin's wheel and the stratified hue (issue 20).
GENERATOR = 2


def settings_record(config: SynthConfig) -> dict:
    """What synth.json holds for a data set written with `config`: the generator's version and
    the settings, as JSON gives them back."""
    return json.loads(json.dumps({"generator": GENERATOR, **dataclasses.asdict(config)}))


def written_with(root: str | os.PathLike) -> dict | None:
    """The settings record of the finished data set in `root` (its synth.json), or None: no
    data set, an unfinished one (no manifest.csv yet), or one written before synth.json was."""
    root = Path(root)
    try:
        if (root / "manifest.csv").is_file():
            return json.loads((root / "synth.json").read_text())
    except (OSError, ValueError):
        pass
    return None


def is_synthetic(data: str | os.PathLike) -> bool:
    """Whether `data` is a data set this module wrote: its manifest.csv, and class folders
    of its classes only."""
    root = Path(data)
    try:
        header = (root / "manifest.csv").read_text().split("\n", 1)[0]
    except OSError:
        return False
    return header == MANIFEST_HEADER and all(
        p.name in CLASSES for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def make_dataset(root: str | os.PathLike, config: SynthConfig = SynthConfig(),
                 workers: int | None = None, progress: bool = True) -> Path:
    """Write the synthetic data set under `root` (a folder per class) with synth.json (the
    settings and the generator's version) and, last, manifest.csv."""
    if workers is None:
        workers = os.cpu_count() or 1
    root = output_folder(root, "a data set is")
    config_dict = {**config.__dict__, "classes": list(config.classes)}
    tasks = [(str(root), CLASSES_INDEX[c], c, g, config_dict)
             for c in config.classes for g in range(1, config.groups + 1)]
    rows: list[dict] = []
    errors: list[str] = []
    machine = True           # every failure an OSError (a full disk, an unwritable folder)
    with console_progress(total=len(tasks), desc="synthesising", unit="group",
                          enabled=progress) as bar:
        for result in run_tasks(_make_group, tasks, workers, timeout=600):
            if result.error:
                errors.append(f"{result.item[2]} g{result.item[3]:02d}: {result.error}")
                machine = machine and result.os_error
            else:
                rows.extend(result.value)
            bar.update(1)
    if errors:
        message = (f"synthesis failed for {len(errors)} of {len(tasks)} groups in {root}; "
                   f"the first: {errors[0]}")
        # A full disk or an unwritable folder is the machine's, not lrcn's: an OSError, which
        # the CLI prints as one line. Anything else is a bug here and keeps its kind.
        raise (OSError if machine else RuntimeError)(message)
    rows.sort(key=lambda r: r["path"])
    assert ",".join(rows[0].keys()) == MANIFEST_HEADER
    atomic_write_text(root / "synth.json", json.dumps(settings_record(config), indent=1) + "\n")
    lines = [MANIFEST_HEADER] + [",".join(str(v) for v in r.values()) for r in rows]
    atomic_write_text(root / "manifest.csv", "\n".join(lines) + "\n")
    return root



def make_long_video(path: str | os.PathLike, plan: list[tuple[str, int]], seed: int = 0,
                    width: int = 320, height: int = 240, fps: float = 25.0,
                    min_seconds: float = 3.0, max_seconds: float = 6.0) -> list[dict]:
    """One long recording of a single scene in which actions follow each other: for each
    (class, n) of `plan`, n performances of that class back to back. H.264 MP4 (or XviD AVI by
    suffix). Returns the ground truth: [{"label", "start", "end"}] in seconds, one per run of a
    class. For timelines' tests and benchmarks."""
    path = Path(path)
    rng = np.random.default_rng([seed, 7919])
    setting = {**_group_setting(rng, width, height), "fps": fps}
    truth: list[dict] = []
    frames_written = 0

    def frames():
        nonlocal frames_written
        for class_name, repeats in plan:
            start = frames_written / fps
            for _ in range(repeats):
                seconds = float(rng.uniform(min_seconds, max_seconds))
                for image in render_clip(class_name, setting, rng, width, height, seconds):
                    frames_written += 1
                    yield image
            truth.append({"label": class_name, "start": start, "end": frames_written / fps})

    write_frames(path, frames(), fps, width, height)
    return truth
