"""Training and data sets from Python: `lrcn.train` and the Run it returns, `lrcn.synth`,
`lrcn.check` and `lrcn.compare`, the API's `lrcn train`, `evaluate`, `export`, `synth`,
`check` and `compare`.

Settings are keyword-only; None means "not given", and settings come in the layers the CLI's
do (config.resolve_settings): the model's defaults (ModelSpec.defaults), then a JSON settings
file (`config=`), then the keywords given."""
from __future__ import annotations

import json
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import ErrorKind, LrcnError
from .classify import Classifier, load

if TYPE_CHECKING:
    from ..config import FrameConfig
    from ..data.dataset import Sample

PathLike = str | os.PathLike
Size = int | tuple[int, int]           # 64 (square) or (width, height)
Log = Callable[..., None]


def _quiet(*args: Any, **kwargs: Any) -> None:
    """The log when none is wanted."""


def _size(size: Size | None) -> tuple[int | None, int | None]:
    """(width, height) from 64 or (width, height); (None, None) when not given."""
    if size is None:
        return None, None
    pair = (size, size) if isinstance(size, numbers.Integral) else \
        tuple(size) if hasattr(size, "__iter__") and not isinstance(size, str) else ()
    if len(pair) != 2 or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool)
                                 and n >= 1 for n in pair):
        raise LrcnError(f"size must be a positive int or (width, height), not {size!r}",
                        kind=ErrorKind.SETTING)
    return int(pair[0]), int(pair[1])


def _names(value: Sequence[str] | str | None) -> list[str] | None:
    """A list of names, where one name may be given alone: "Grow" is ["Grow"], not the
    letters G, r, o, w."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


class Run:
    """A run folder: what `lrcn.train` wrote (checkpoint, settings, split, history, report and
    plots). `lrcn.Run(folder)` opens one written before, by the API or by `lrcn train`."""

    def __init__(self, folder: PathLike, report: dict | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():     # not later, as a report of None ("not evaluated")
            raise LrcnError("no such run folder" if not self.folder.exists() else
                            "is a file: a run is a folder (lrcn.load takes a checkpoint file)",
                            self.folder, ErrorKind.NOT_FOUND)
        self._report = report

    def __repr__(self) -> str:
        return f"lrcn.Run({str(self.folder)!r})"

    @property
    def checkpoint(self) -> Path:
        """The checkpoint file (the best epoch's weights, its settings and classes)."""
        return _checkpoint_path(self.folder)

    @property
    def report(self) -> dict | None:
        """The test report (report.json: accuracy, per-class figures, confusion matrix,
        calibration, every prediction); None when the run was not evaluated."""
        if self._report is None and (self.folder / "report.json").exists():
            self._report = json.loads((self.folder / "report.json").read_text())
        return self._report

    @property
    def history(self) -> list[dict[str, float]]:
        """Every epoch's figures (history.csv): loss, accuracy, val_loss, val_accuracy,
        seconds and lr (the epoch's learning rate)."""
        return _read_history(self.folder / "history.csv")

    @property
    def split(self) -> dict[str, list[Sample]]:
        """The clips of each part ("train", "val", "test"), with their class and group."""
        return _read_split(self.folder / "split.json")

    @property
    def settings(self) -> dict:
        """The resolved settings the run was trained with (config.json)."""
        path = self.folder / "config.json"
        if not path.is_file():
            raise LrcnError("no config.json: not a run folder", self.folder, ErrorKind.NOT_FOUND)
        return json.loads(path.read_text())

    def evaluate(self, *, data: PathLike | None = None, split: str = "test",
                 out: PathLike | None = None, views: int = 1, shuffle_frames: bool = False,
                 device: str = "auto", precision: str = "fp32", cache: PathLike | None = None,
                 workers: int | None = None, progress: bool = True,
                 decode_timeout: float | None = None) -> dict:
        """Evaluate the checkpoint, as `lrcn evaluate` does, and return the report.

        data: every clip of this data folder instead of a part of the run's split.
        split: which part of the run's split: "test" (default), "val" or "train".
        out: the folder for report.json and the plots (default: the run folder for the test
            split, RUN/eval-val or RUN/eval-train for the others, RUN/eval with `data`, and
            shuffled-frames inside that with `shuffle_frames`).
        views: average this many temporal offsets of each clip's frames.
        shuffle_frames: the frame-order ablation (each clip's frames in a random order).
        decode_timeout: seconds a file may take to decode before it is reported as stalled
            and skipped (default $LRCN_DECODE_TIMEOUT or 120).
        """
        report = _evaluate_run(self.checkpoint, data, out, split, cache, workers, progress,
                               device, precision, shuffle_frames, views, decode_timeout)
        if data is None and split == "test" and out is None and not shuffle_frames:
            self._report = report
        return report

    def export(self, path: PathLike | None = None, *, quantize: str | None = None) -> Path:
        """Export the checkpoint to ONNX, as `lrcn export` does (default: beside it, .onnx):
        uint8 frames in, the classes' logits out (ONNX format 3: lrcn applies the checkpoint's
        temperature, stored in the file, and the softmax); `lrcn.load` takes the file.
        quantize="int8": the CNN in int8, calibrated on the run's validation clips
        (`lrcn export --quantize int8`; default file .int8.onnx)."""
        return _export(self.checkpoint, path, quantize)

    def classifier(self, *, backend: str = "auto", device: str = "auto",
                   precision: str = "fp32", reject_below: float = 0.0) -> Classifier:
        """`lrcn.load` of the run's checkpoint."""
        return load(self.checkpoint, backend=backend, device=device, precision=precision,
                    reject_below=reject_below)


def train(data: PathLike, *, model: str | None = None, out: PathLike | None = None,
          classes: Sequence[str] | None = None, config: PathLike | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          schedule: str | None = None, patience: int | None = None, seed: int | None = None,
          threads: int | None = None, frames: int | None = None, size: Size | None = None,
          test_fraction: float | None = None, val_fraction: float | None = None,
          split_seed: int | None = None, drop_small_classes: bool | None = None,
          groups_across_classes: bool | None = None, augment: bool | None = None,
          scale_jitter: float | None = None, temporal_jitter: bool | None = None,
          flip: bool | None = None, hue_jitter: float | None = None,
          balance: bool | None = None, batchnorm: bool | None = None,
          lstm_units: int | None = None, l2: float | None = None, device: str | None = None,
          precision: str | None = None, ucf_split: int | None = None,
          lists: PathLike | None = None, cache: PathLike | None = None,
          workers: int | None = None, decode_timeout: float | None = None,
          init_from: PathLike | None = None, overwrite: bool = False,
          evaluate: bool = True, progress: bool = True, log: Log | None = print) -> Run:
    """Train a model, as `lrcn train` does, calibrate it and evaluate it on the held-out test
    groups; return the Run. A setting left at None takes the config file's value, else the
    model's default (the seed tutorial's: 70 epochs, patience 15, batch 4, Adam 1e-3).

    data: a folder per class (<data>/<Class>/*.avi), or a CSV/text list of path,label lines.
    model: a registered model (`lrcn models`): lrcn (default), lrcn-bn, convlstm,
        effnet-lstm, effnet-lrcn.
    out: the run folder (default runs/run-DATE-TIME).
    classes: a subset of the classes (default: the seed's four if present, else all).
    config: a JSON settings file with sections frames, model, split, train.
    epochs, batch_size, lr, patience, seed, threads: the training loop (threads: PyTorch's;
        default all cores).
    schedule: the learning rate over the epochs, "constant" (default) or "cosine" (from lr
        down to lr/epochs).
    frames, size: frames per clip (20) and their size, 64 or (width, height) (64x64).
    test_fraction, val_fraction, split_seed: the group-aware split (clips of one group
        are never on two sides).
    drop_small_classes: train without the classes with too few readable groups to appear in
        train, validation and test (default: such a class is an LrcnError).
    groups_across_classes: a group tag found in several classes is one source (a webcam
        session, a long video cut into several actions), held out whole (default: per class).
    augment: True: the augmentation the model can take (`lrcn train --augment`: crop/scale
        and TSN temporal jitter; temporal only for effnet-lstm); False: none; None: as the
        model and the config file say (off for the seed's model, on for effnet-lrcn).
    scale_jitter, temporal_jitter, flip: each augmentation on its own, over `augment`.
    hue_jitter: turn each training clip's colours by a random share of the hue circle up to
        this (0 to 0.5; 0.5: any hue), so that colour cannot stand for the class.
    balance: weight the loss by inverse class frequency.
    batchnorm, lstm_units, l2: the lrcn model's options.
    device, precision: where to train ("auto", "cpu", "cuda:N", "mps") and "fp32",
        "bf16" or "fp16".
    ucf_split, lists: the official UCF101 split N and the folder of its lists.
    cache: the frame cache folder (default $LRCN_CACHE_DIR or ~/.cache/lrcn).
    workers: decoding processes (default one per core; 0: in this process).
    decode_timeout: seconds a file may take to decode before it is reported as stalled and
        skipped (default $LRCN_DECODE_TIMEOUT or 120).
    init_from: a run folder or checkpoint to fine-tune (`lrcn train --init-from`): its model
        and frame settings (model, frames, size and the model options cannot be given), all
        its weights but the classifier rows of classes it does not know.
    overwrite: replace a run already in `out` (otherwise that is refused).
    evaluate: evaluate on the test split after training (Run.report).
    progress, log: progress bars, and where messages go (None: nowhere).
    """
    width, height = _size(size)
    folder = Path(out) if out is not None else default_run_folder()
    job = _make_job(
        data, folder, model=model, config=config, augment=augment,
        frames={"num_frames": frames, "height": height, "width": width},
        split={"test_fraction": test_fraction, "val_fraction": val_fraction,
               "seed": split_seed, "drop_small_classes": drop_small_classes,
               "across_classes": groups_across_classes},
        train={"epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule,
               "patience": patience,
               "seed": seed, "num_threads": threads, "device": device,
               "precision": precision, "scale_jitter": scale_jitter,
               "temporal_jitter": temporal_jitter, "flip": flip, "hue_jitter": hue_jitter,
               "balance": balance},
        model_options={"batchnorm": batchnorm, "lstm_units": lstm_units, "l2": l2},
        classes=_names(classes), cache_dir=cache, ucf_split=ucf_split, lists=lists, workers=workers,
        progress=progress, decode_timeout=decode_timeout, init_from=init_from)
    _claim_run_folder(folder, overwrite)
    return Run(folder, _train_and_evaluate(job, log or _quiet, evaluate))


def default_run_folder() -> Path:
    """runs/run-DATE-TIME, under the working folder."""
    from ..training.job import default_out
    return default_out("run")


def synth(out: PathLike, *, classes: Sequence[str] | None = None, groups: int | None = None,
          clips_per_group: int | None = None, width: int | None = None,
          height: int | None = None, min_seconds: float | None = None,
          max_seconds: float | None = None, seed: int | None = None,
          workers: int | None = None, progress: bool = True) -> Path:
    """Write the built-in synthetic action data set into `out`, as `lrcn synth` does: a folder
    per class of real video files in UCF's naming, and manifest.csv; returns `out`.
    Settings left at None keep data.synth.SynthConfig's defaults (6 classes, 8 groups of 4
    clips, 320x240, 2-10 s, seed 0).

    classes: a subset of SlideRight, SlideLeft, Grow, Shrink, Bounce, Spin.
    groups, clips_per_group: groups per class (a group's clips share one setting, as UCF
        clips cut from one video do) and clips per group.
    width, height, min_seconds, max_seconds: frame size and clip length range.
    """
    given = {"classes": tuple(_names(classes)) if classes is not None else None, "groups": groups,
             "clips_per_group": clips_per_group, "width": width, "height": height,
             "min_seconds": min_seconds, "max_seconds": max_seconds, "seed": seed}
    return _make_dataset(out, {k: v for k, v in given.items() if v is not None}, workers,
                         progress)


def check(data: PathLike, *, classes: Sequence[str] | None = None,
          config: PathLike | None = None, frames: int | None = None, size: Size | None = None,
          ucf_split: int | None = None, lists: PathLike | None = None,
          cache: PathLike | None = None, workers: int | None = None,
          decode_timeout: float | None = None, progress: bool = True) -> dict:
    """Scan a data set, as `lrcn check` does: per class the clip and group counts and the
    ranges of duration and frame count, and every file that is unreadable, missing, too short
    or suspicious (report["problems"]). The frame settings are those `train` would use with
    the same `config`, `frames` and `size`. decode_timeout: seconds a file may take to decode
    before it is reported as stalled (default $LRCN_DECODE_TIMEOUT or 120)."""
    width, height = _size(size)
    frame_config = _frame_settings(config, {"num_frames": frames, "height": height,
                                            "width": width})
    return _check_dataset(data, _names(classes), frame_config, ucf_split, lists, cache, workers,
                          decode_timeout, progress)


def compare(data: PathLike, *, models: Sequence[str] = ("lrcn", "convlstm", "effnet-lstm"),
            repeats: int = 3, protocol: str = "group", out: PathLike | None = None,
            classes: Sequence[str] | None = None, epochs: int | None = None,
            batch_size: int | None = None, lr: float | None = None,
            patience: int | None = None, seed: int | None = None,
            test_fraction: float | None = None, val_fraction: float | None = None,
            split_seed: int | None = None, device: str | None = None,
            cache: PathLike | None = None, workers: int | None = None,
            decode_timeout: float | None = None, log: Log | None = print) -> list[dict]:
    """Train and test several models on the same splits, `repeats` times, as `lrcn compare`
    does; write compare.json/.csv/.md/.png into `out` (default runs/compare-DATE-TIME) and
    return the table's rows (accuracy mean and spread, frame-shuffled accuracy, calibration,
    parameters, speed).

    protocol: "group" (clips of one group on one side: honest), "random" (the tutorial's
        leaking split) or "both".
    The training settings apply to every model, over each model's own defaults.
    decode_timeout: seconds a file may take to decode before it is reported as stalled and
        skipped (default $LRCN_DECODE_TIMEOUT or 120)."""
    folder = Path(out) if out is not None else \
        _default_out("compare")
    split = {"test_fraction": test_fraction, "val_fraction": val_fraction, "seed": split_seed}
    train_settings = dict(epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                          seed=seed, device=device)
    return _compare(data, folder, _names(models), repeats, protocol, _names(classes), split,
                    train_settings, cache, workers, decode_timeout, log or _quiet)


# Each library entry point used here is called from exactly one function below, so that a
# change of its signature is one edit here.

def _default_out(kind: str) -> Path:
    from ..training.job import default_out
    return default_out(kind)


def _make_job(data: PathLike, folder: Path, *, config: PathLike | None, **settings):
    """The run's TrainingJob, its settings layered as `lrcn train` layers them
    (training.job.make_job: the model's defaults, the config file, the keywords)."""
    from ..config import load_config_file
    from ..training.job import make_job
    return make_job(data, folder, config=load_config_file(config), **settings)


def _claim_run_folder(folder: Path, overwrite: bool) -> None:
    from ..training.job import claim_run_folder
    claim_run_folder(folder, overwrite, how="overwrite=True replaces it, or choose another "
                                            "out= (the CLI's lrcn train --resume continues it)")


def _frame_settings(config: PathLike | None, frames: dict) -> FrameConfig:
    from ..config import FrameConfig, layered, load_config_file
    return layered(FrameConfig, load_config_file(config).get("frames", {}), frames)


def _train_and_evaluate(job, log: Log, evaluate: bool) -> dict | None:
    from ..training.runs import train_and_evaluate
    return train_and_evaluate(job, log=log, evaluate_test=evaluate).report


def _evaluate_run(checkpoint: Path, data, out, part: str, cache, workers, progress: bool,
                  device: str, precision: str, shuffle_frames: bool, views: int,
                  decode_timeout: float | None) -> dict:
    from ..training.evaluate import evaluate_run
    return evaluate_run(checkpoint, data, out, part=part,
                        cache_dir=Path(cache) if cache else None, workers=workers,
                        progress=progress, device=device, precision=precision,
                        shuffle_frames=shuffle_frames, views=views,
                        decode_timeout=decode_timeout).report


def _export(checkpoint: Path, path: PathLike | None, quantize: str | None = None) -> Path:
    from ..inference.export import export_onnx, onnx_target
    from ..inference.graphs import int8_clip_graph
    from ..models.checkpoint import load_checkpoint
    if quantize not in (None, "int8"):
        raise LrcnError(f"unknown quantization {quantize!r} (int8)", kind=ErrorKind.SETTING)
    default = checkpoint.with_suffix(".int8.onnx" if quantize else ".onnx")
    out = onnx_target(path if path is not None else default)    # before int8's calibration
    loaded = load_checkpoint(checkpoint)
    return export_onnx(loaded, out, int8_clip_graph(loaded) if quantize else None,
                       quantize or "fp32")


def _checkpoint_path(folder: Path) -> Path:
    from ..models.checkpoint import resolve_checkpoint_path
    return resolve_checkpoint_path(folder)


def _read_history(path: Path) -> list[dict[str, float]]:
    from ..training.history import read_history
    if not path.exists():
        raise LrcnError("no training history (history.csv) in the run folder", path.parent,
                        kind=ErrorKind.NOT_FOUND)
    return read_history(path)


def _read_split(path: Path) -> dict[str, list[Sample]]:
    from ..data.dataset import read_split
    if not path.exists():
        raise LrcnError("no split (split.json) in the run folder", path.parent,
                        kind=ErrorKind.NOT_FOUND)
    return read_split(path)


def _make_dataset(out: PathLike, settings: dict, workers: int | None, progress: bool) -> Path:
    from ..data.synth import SynthConfig, make_dataset
    try:
        config = SynthConfig(**settings)
    except ValueError as exc:
        raise LrcnError(str(exc), kind=ErrorKind.SETTING) from None
    return make_dataset(out, config, workers=workers, progress=progress)


def _check_dataset(data, classes, frames: FrameConfig, ucf_split, lists, cache, workers,
                   decode_timeout: float | None, progress: bool) -> dict:
    from ..data.check import check_dataset
    return check_dataset(data, classes, frames=frames, ucf_split=ucf_split,
                         lists=Path(lists) if lists else None,
                         cache_dir=Path(cache) if cache else None, workers=workers,
                         progress=progress, decode_timeout=decode_timeout)


def _compare(data, folder: Path, models, repeats: int, protocol: str, classes, split: dict,
             train: dict, cache, workers, decode_timeout: float | None,
             log: Log) -> list[dict]:
    from ..config import SplitConfig, layered
    from ..training.compare import CompareTraining, compare as compare_models
    return compare_models(data, folder, list(models), repeats=repeats, protocol=protocol,
                          classes=classes, split=layered(SplitConfig, {}, split),
                          train=CompareTraining(**train),
                          cache_dir=Path(cache) if cache else None, workers=workers,
                          progress=False, log=log, decode_timeout=decode_timeout)


__all__ = ["Run", "train", "synth", "check", "compare", "default_run_folder"]
