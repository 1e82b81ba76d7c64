"""Honest evaluation: a checkpoint on clips it never trained on (the run's group-aware test
split by default), with its metrics (numpy), a JSON report and PNG plots."""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..console import plural
from ..data.cache import prepare
from ..inference.calibrate import (all_right, expected_calibration_error, fit_temperature,
                                   reliability, softmax, too_few_to_fit)
from ..config import candidate_frames
from ..models.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint_path, update_info
from ..data.dataset import Sample, discover, list_class_folders, read_split
from ..devices import resolve_device
from ..inference.engine import Engine, make_engine
from ..errors import ErrorKind, LrcnError, whole_number
from ..files import atomic_write_text, output_folder
from .history import read_history
from ..media.sampling import views as split_views
from ..media.plots import plot_confusion, plot_curves, plot_reliability


SPLIT_PARTS = ("test", "val", "train")


def cached_logits(engine: Engine, clips, batch_size: int = 64,
                  shuffle_seed: int | None = None, views: int = 1) -> np.ndarray:
    """(N, views, classes) logits for cached clips, in order, on predict's engine. One pass,
    a batch at a time: memory stays flat whatever the number of clips. With `shuffle_seed`,
    each clip's frames are put in a random order first (seeded): the frame-order ablation.
    `views` > 1: the clips were cached with `views` frames per segment (sampling.views)."""
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None

    def frames(clip) -> np.ndarray:
        array = np.load(clip.frames_path)
        return array[rng.permutation(len(array))] if rng is not None else array

    out = []
    for i in range(0, len(clips), batch_size):
        batch = np.stack([frames(c) for c in clips[i:i + batch_size]])
        stacked = np.concatenate(split_views(batch, views))
        out.append(engine.logits(stacked).reshape(views, len(batch), -1).transpose(1, 0, 2))
    return np.concatenate(out) if out else np.zeros((0, views, len(engine.names)), np.float32)


def view_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(N, views, classes) logits -> (N, classes) probabilities: each view through the
    temperature and the one softmax, then the mean over the views (as `lrcn predict --views`)."""
    return softmax(logits, temperature).mean(1)


def predict_cached(engine: Engine, clips, batch_size: int = 64,
                   shuffle_seed: int | None = None, views: int = 1) -> np.ndarray:
    """(N, classes) calibrated probabilities for cached clips (`cached_logits`, then
    `view_probabilities` with the engine's temperature)."""
    return view_probabilities(cached_logits(engine, clips, batch_size, shuffle_seed, views),
                              engine.temperature)


def _data_samples(names: Sequence[str], data: Path, warn) -> list[Sample]:
    """A data folder's clips of the model's classes (a folder's name in another case is the
    class). Folders of other classes are left out, and named on `warn`; a folder with none of
    the model's classes is an error."""
    folders = list_class_folders(data) if data.is_dir() else []
    by_case = {name.lower(): name for name in names}
    known = {folder: folder if folder in names else by_case[folder.lower()]
             for folder in folders if folder in names or folder.lower() in by_case}
    if not known:
        _, samples = discover(data, min_classes=1)   # its own errors: no folder, no classes
        raise LrcnError(f"class {samples[0].class_name!r} is not one the model knows "
                        f"({', '.join(names)})", data)
    other = [folder for folder in folders if folder not in known]
    warn = sys.stderr if warn is None else warn      # as it is now (a notebook's capture)
    if other:
        print(f"lrcn: note: {data}: left out, not classes the model knows: "
              f"{', '.join(other[:8])}{', ...' if len(other) > 8 else ''}", file=warn)
    _, samples = discover(data, list(known), min_classes=1)
    return [dataclasses.replace(s, class_name=known[s.class_name]) for s in samples]


def samples_for(checkpoint: Checkpoint, run_dir: Path | None, data: Path | None,
                part: str = "test", warn=None) -> list[Sample]:
    """The clips to evaluate: a data folder's clips of the checkpoint's classes, or the run's
    split part."""
    if data is not None:
        return _data_samples(checkpoint.class_names, Path(data), warn)
    if run_dir is None or not (run_dir / "split.json").exists():
        raise LrcnError("no split.json beside the checkpoint: pass --data DIR", run_dir or "")
    samples = read_split(run_dir / "split.json")[part]
    if not samples:
        raise LrcnError(f"the run's {part} split is empty: pass --data DIR", run_dir)
    return samples


def metrics(names: Sequence[str], true: Sequence[int], probabilities: np.ndarray,
            groups: Sequence[str]) -> dict:
    """The report's figures for clips with true class indices `true`, predicted
    `probabilities` (N, classes), and the group of each clip: accuracy, macro F1, per-class
    precision/recall/F1/support, the confusion matrix (rows true, columns predicted), and group
    accuracy ("video-level" in UCF terms: the clips of one group are cut from one video; a
    group is right when the mean of its clips' probabilities names its class)."""
    # In numpy, not scikit-learn: these few counts are all the report needs, and importing
    # sklearn.metrics (scipy.stats with it) was about 1 s of a 7 s `lrcn evaluate` of 600
    # cached clips (2026-12-03), and scikit-learn a dependency for nothing else.
    y_true = np.asarray(true, dtype=np.int64)
    y_pred = probabilities.argmax(1)
    k = len(names)
    matrix = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # rows: true
    hits, support, predicted = np.diag(matrix), matrix.sum(1), matrix.sum(0)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:    # 0 where b is 0 (no clips)
        return np.divide(a, b, out=np.zeros(k), where=b > 0)
    precision, recall = ratio(hits, predicted), ratio(hits, support)
    f1 = ratio(2 * hits, support + predicted)     # = 2PR/(P+R), and 0 without a hit
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)
    group_correct = [probabilities[idx].mean(0).argmax() == y_true[idx[0]]
                     for idx in by_group.values()]
    return {
        "num_clips": len(y_true),
        "accuracy": float(hits.sum() / len(y_true)),
        "macro_f1": float(np.mean(f1)),
        "group_accuracy": float(np.mean(group_correct)),
        "num_groups": len(by_group),
        "classes": list(names),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(names)},
        "confusion_matrix": matrix.tolist(),
    }


def evaluate(checkpoint: Checkpoint, samples: Sequence[Sample], out_dir: Path,
             cache_dir: Path | None = None, workers: int | None = None,
             progress: bool = True, history: Path | None = None, device: str = "auto",
             precision: str = "fp32", shuffle_frames: bool = False, views: int = 1,
             decode_timeout: float | None = None, evaluated: str | None = None) -> dict:
    """Evaluate on `samples`; write report.json, confusion_matrix.png, reliability.png (and
    curves.png when a training history is given) into out_dir; return the report.
    `shuffle_frames`: the frame-order ablation, each clip's frames in a random order (seed
    0): a model that uses the order of frames loses the classes that differ only by it.
    `views`: multi-view testing, the mean over `views` temporal offsets of each clip's frames.
    The calibration figures compare the checkpoint's temperature with none. `evaluated` says
    in the report which clips these are (a part of the run's split, or a data folder)."""
    out_dir = output_folder(out_dir, "reports are")
    logits, clips, failures = _logits(checkpoint, samples, cache_dir, workers, progress,
                                      device, precision, 0 if shuffle_frames else None, views,
                                      decode_timeout)
    if not clips:
        raise LrcnError("none of the evaluation videos could be read", out_dir)
    names = checkpoint.class_names
    labels = [names.index(c.sample.class_name) for c in clips]
    raw = view_probabilities(logits, 1.0)
    probabilities = view_probabilities(logits, checkpoint.temperature)
    report = metrics(names, labels, probabilities, [c.sample.group for c in clips])
    y_pred = probabilities.argmax(1)
    report["model"] = checkpoint.model_config.name
    if evaluated is not None:
        report["evaluated"] = evaluated
    report["views"] = views
    report["frame_order"] = "shuffled (seed 0)" if shuffle_frames else "as recorded"
    eces = (expected_calibration_error(raw, labels),
            expected_calibration_error(probabilities, labels))
    report["calibration"] = {"temperature": checkpoint.temperature, "ece_before": eces[0],
                             "ece_after": eces[1], "bins": reliability(probabilities, labels)}
    plot_reliability(reliability(raw, labels), report["calibration"]["bins"],
                     checkpoint.temperature, eces, out_dir / "reliability.png")
    report["skipped"] = [{"path": str(s.path), "cause": cause} for s, cause in failures]
    report["truncated"] = [{"path": str(c.sample.path), "cause": c.truncated}
                           for c in clips if c.truncated]
    report["predictions"] = [{"path": str(c.sample.path), "true": c.sample.class_name,
                              "predicted": names[int(y_pred[i])],
                              "probability": float(probabilities[i, y_pred[i]])}
                             for i, c in enumerate(clips)]
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1))
    plot_confusion(np.array(report["confusion_matrix"]), names,
                   out_dir / "confusion_matrix.png", report["accuracy"])
    if history is not None and Path(history).exists():
        plot_curves(read_history(Path(history)), out_dir / "curves.png")
    return report


def _logits(checkpoint: Checkpoint, samples: Sequence[Sample], cache_dir: Path | None,
            workers: int | None, progress: bool, device: str, precision: str,
            shuffle_seed: int | None = None, views: int = 1,
            decode_timeout: float | None = None):
    """((N, views, classes) logits, the clips read, the failures) for `samples`."""
    frames = candidate_frames(checkpoint.frame_config, views) if views > 1 \
        else checkpoint.frame_config
    clips, failures = prepare(samples, frames, cache_dir=cache_dir, workers=workers,
                              progress=progress, timeout=decode_timeout)
    engine = make_engine(checkpoint, device=device, precision=precision)
    return cached_logits(engine, clips, shuffle_seed=shuffle_seed, views=views), clips, failures


def calibrate_checkpoint(checkpoint_path: Path, samples: Sequence[Sample],
                         cache_dir: Path | None = None, workers: int | None = None,
                         device: str = "auto", log=print,
                         decode_timeout: float | None = None) -> float:
    """Fit the checkpoint's temperature on `samples` (the validation clips) and store it,
    with the validation ECE before and after. Returns the temperature (1.0: no clips, too
    few to fit one on (calibrate.too_few_to_fit; some may not have decoded), or all answered
    right (calibrate.all_right); the checkpoint then records why).
    `decode_timeout`: the run's (a clip that stalled under it in data prep is not retried
    with a longer default)."""
    checkpoint = load_checkpoint(checkpoint_path)
    names = checkpoint.class_names
    too_few = too_few_to_fit(len(samples), len(names))
    if not too_few:
        logits, clips, _ = _logits(checkpoint, samples, cache_dir, workers, False, device,
                                   "fp32", decode_timeout=decode_timeout)
        logits = logits[:, 0]
        labels = [names.index(c.sample.class_name) for c in clips]
        too_few = too_few_to_fit(len(clips), len(names)) or all_right(logits, labels)
    if too_few:
        update_info(checkpoint_path, temperature=1.0,
                    calibration={"temperature": 1.0, "fitted_on": None, "skipped": too_few})
        log(f"calibration: skipped, {too_few}; temperature stays 1")
        return 1.0
    temperature = fit_temperature(logits, labels)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, temperature), labels)
    update_info(checkpoint_path, temperature=temperature,
                calibration={"temperature": temperature, "fitted_on": "val",
                             "num_clips": len(clips), "val_ece_before": before,
                             "val_ece_after": after})
    log(f"calibration: temperature {temperature:.3f} fitted on {len(clips)} validation clips "
        f"(ECE on them {before:.3f} -> {after:.3f})")
    return temperature


@dataclass
class Evaluation:
    report: dict
    written: list[Path]      # report.json and the plots


def evaluate_run(target: str | Path, data: str | Path | None = None,
                 out: str | Path | None = None, part: str = "test",
                 cache_dir: Path | None = None, workers: int | None = None,
                 progress: bool = True, device: str = "auto",
                 precision: str = "fp32", shuffle_frames: bool = False,
                 views: int = 1, decode_timeout: float | None = None) -> Evaluation:
    """`lrcn evaluate`: a checkpoint (or run folder) on a part of its run's split, or on every
    clip of a data folder. Reports go beside the checkpoint (or into `out`); the test part's
    headline figures are recorded in the checkpoint. Only the test part's reports go into the
    run folder itself, as its report: another part's go to RUN/eval-val or RUN/eval-train (the
    run's test report stays), a data folder's to RUN/eval."""
    if part not in SPLIT_PARTS:
        raise LrcnError(f"unknown split part {part!r} ({', '.join(SPLIT_PARTS)})",
                        kind=ErrorKind.SETTING)
    if data is not None and part != "test":
        raise LrcnError(f"the split part {part!r} is a part of the run's split; with a data "
                        "folder every clip of it is evaluated", data, ErrorKind.SETTING)
    views = whole_number("views", views)
    resolve_device(device)          # a device that is not there: before any decoding
    checkpoint_path = resolve_checkpoint_path(target)
    checkpoint = load_checkpoint(checkpoint_path)
    run_dir = checkpoint_path.parent
    samples = samples_for(checkpoint, run_dir, Path(data) if data else None, part)
    default = run_dir / "eval" if data is not None else \
        run_dir if part == "test" else run_dir / f"eval-{part}"
    out_dir = Path(out) if out else (default / "shuffled-frames" if shuffle_frames else default)
    report = evaluate(checkpoint, samples, out_dir, cache_dir=cache_dir, workers=workers,
                      progress=progress, history=run_dir / "history.csv", device=device,
                      precision=precision, shuffle_frames=shuffle_frames, views=views,
                      decode_timeout=decode_timeout,
                      evaluated=str(data) if data is not None else f"the run's {part} split")
    if data is None and part == "test" and not shuffle_frames:
        record_test_metrics(checkpoint_path, report)
    written = [out_dir / "report.json", out_dir / "confusion_matrix.png",
               out_dir / "reliability.png"]
    if (out_dir / "curves.png").exists():
        written.append(out_dir / "curves.png")
    return Evaluation(report, written)


def record_test_metrics(checkpoint_path: Path, report: dict) -> None:
    """Store the headline test figures in the checkpoint, for `lrcn info`."""
    update_info(checkpoint_path, test_metrics={
        k: report[k] for k in ("accuracy", "macro_f1", "group_accuracy", "num_clips")})


def format_confusion(names: Sequence[str], matrix: Sequence[Sequence[int]],
                     width: int, line_limit: int = 100) -> list[str]:
    """The confusion matrix with a header row: the class names when they fit in
    `line_limit` characters, else their numbers, each row then starting with its number."""
    cell = max(4, len(str(max((max(row) for row in matrix), default=0))) + 1,
               max(len(n) for n in names) + 1)
    numbered = 2 + width + cell * len(names) > line_limit
    if numbered:
        cell = max(4, len(str(len(names) - 1)) + 2,
                   len(str(max((max(row) for row in matrix), default=0))) + 1)
        labels = [f"{i}" for i in range(len(names))]
        rows = [f"{i} {name}" for i, name in enumerate(names)]
        width = max(width, max(len(r) for r in rows) + 1)
    else:
        labels, rows = list(names), list(names)
    lines = ["confusion matrix (rows: true, columns: predicted"
             + (", by class number):" if numbered else "):"),
             "  " + " " * width + "".join(f"{label:>{cell}}" for label in labels)]
    for label, row in zip(rows, matrix):
        lines.append(f"  {label:<{width}}" + "".join(f"{v:>{cell}d}" for v in row))
    return lines


def format_report(report: dict) -> str:
    names = report["classes"]
    width = max(12, max(len(n) for n in names) + 2)
    lines = [f"accuracy {report['accuracy']:.3f} on {plural(report['num_clips'], 'clip')} "
             f"(group-level {report['group_accuracy']:.3f} on "
             f"{plural(report['num_groups'], 'group')}), "
             f"macro F1 {report['macro_f1']:.3f}"
             + (f"; frames {report['frame_order']}"
                if report.get("frame_order", "as recorded") != "as recorded" else "")
             + (f"; mean of {report['views']} views" if report.get("views", 1) > 1 else ""),
             f"{'class':<{width}}{'precision':>10}{'recall':>8}{'f1':>8}{'clips':>7}"]
    for name in names:
        row = report["per_class"][name]
        lines.append(f"{name:<{width}}{row['precision']:>10.3f}{row['recall']:>8.3f}"
                     f"{row['f1']:>8.3f}{row['support']:>7d}")
    lines.extend(format_confusion(names, report["confusion_matrix"], width))
    calibration = report.get("calibration")
    if calibration:
        lines.append(f"calibration: temperature {calibration['temperature']:.3f}, expected "
                     f"calibration error on these clips {calibration['ece_before']:.3f} without it, "
                     f"{calibration['ece_after']:.3f} with it")
    return "\n".join(lines)


__all__ = ["evaluate", "evaluate_run", "calibrate_checkpoint", "metrics", "record_test_metrics",
           "format_report", "format_confusion", "samples_for", "predict_cached", "cached_logits",
           "view_probabilities", "Evaluation"]
