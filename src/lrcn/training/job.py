"""One training run's settings in one object, `TrainingJob`: what `lrcn train`, `lrcn cv` (each
fold), `lrcn compare` (each model and repeat), `lrcn demo`, `lrcn train --resume` and the Python
API hand to runs.train_and_evaluate, which hands it to train.train and train.prepare_data.

A run folder's config.json holds the job's saved settings (`saved_settings`); `job_from_run`
reads them back, so a resumed run is the job that was started. The format is the one runs have
always written: data, classes, frames, model, split, train, cache_dir, processes, and
evaluate (absent in older runs: true).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..config import (FrameConfig, ModelConfig, SplitConfig, TrainConfig, from_dict,
                      model_config_for, to_dict)
from ..data.dataset import Sample, read_split
from ..distributed import launched_rank
from ..console import plural
from ..errors import ErrorKind, LrcnError
from ..models.checkpoint import CHECKPOINT_NAME, load_checkpoint, resolve_checkpoint_path
from ..models.registry import DEFAULT_MODEL, settings_for
from .resume import STATE_NAME, saved_progress

# The model settings that follow from the data (classes) and the frames (input shape).
DERIVED_MODEL_SETTINGS = ("num_classes", "num_frames", "height", "width")


@dataclass(frozen=True)
class TrainingJob:
    """Everything one training run is configured by. Built once (by the CLI from its flags and
    config file, by `job_from_run` from a run folder, by cv and compare per run) and passed
    down whole."""
    data: Path                  # a folder per class, a `path,label` list, or the UCF101 folder
    out: Path                   # the run folder (cv and compare: the folder of their runs)
    classes: tuple[str, ...] | None = None   # a subset; None: the seed's four if there, else all
    frames: FrameConfig = FrameConfig()
    # ModelConfig options (name, lstm_units, l2, ...); the rest follows from data and frames
    model: dict[str, Any] = field(default_factory=dict)
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    cache_dir: Path | None = None            # None: $LRCN_CACHE_DIR or ~/.cache/lrcn
    ucf_split: int | None = None             # the official UCF101 split N (its lists)
    lists: Path | None = None                # where those lists are (default: in data)
    # classes and parts given instead of a split made here: cross-validation's folds, a
    # resumed run's split as it was made
    fixed: tuple[list[str], dict[str, list[Sample]]] | None = None
    resume: bool = False                     # continue from the run folder's training state
    # evaluate on the test split after training (--no-evaluate: False); saved with the run,
    # so that --resume finishes the run as it was started
    evaluate: bool = True
    # a resumed run that had finished, given more epochs: early stopping's patience counts
    # again from where it stopped
    extend: bool = False
    init_from: Path | None = None            # a trained checkpoint to start from (fine-tuning)
    # how to run, not what: neither is saved with the run
    workers: int | None = None               # decoding processes (None: one per core)
    progress: bool = True                    # progress bars
    decode_timeout: float | None = None      # seconds per file (None: cache's default)

    def __post_init__(self) -> None:
        # paths and names as given by a caller (str, list) in the types the fields declare
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))
        if self.lists is not None:
            object.__setattr__(self, "lists", Path(self.lists))
        if self.init_from is not None:
            object.__setattr__(self, "init_from", Path(self.init_from))
        derived = sorted(set(self.model) & set(DERIVED_MODEL_SETTINGS))
        if derived:
            raise LrcnError(f"model setting {derived[0]!r} follows from the data and the frames",
                            kind=ErrorKind.SETTING)
        try:       # out-of-range model options, before any work (ModelConfig checks them)
            self.model_config(2)
        except (TypeError, ValueError) as exc:
            raise LrcnError(f"bad ModelConfig setting: {exc}", kind=ErrorKind.SETTING) from None

    def model_config(self, num_classes: int) -> ModelConfig:
        """The model's settings for `num_classes` classes and this job's frames."""
        return model_config_for(self.frames, num_classes, **self.model)

    def saved_settings(self, class_names: Sequence[str], processes: int = 1) -> dict[str, Any]:
        """What config.json records (and `job_from_run` reads back)."""
        return {"data": str(self.data.resolve()), "classes": list(class_names),
                "frames": to_dict(self.frames),
                "model": to_dict(self.model_config(len(class_names))),
                "split": to_dict(self.split), "train": to_dict(self.train),
                "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                "ucf_split": self.ucf_split,
                "lists": str(self.lists.resolve()) if self.lists else None,
                "processes": processes, "evaluate": self.evaluate,
                "init_from": str(self.init_from.resolve()) if self.init_from else None}


def seed_model_hint(job: TrainingJob) -> str | None:
    """The line `lrcn train` prints when it trains the default model, the seed tutorial's
    LRCN, on data that is not the built-in synthetic set; None otherwise. Measured here: on
    real footage (9 UCF101 classes, group split) the seed model is right on 22% of clips,
    effnet-lstm on 82% (README, `lrcn compare`); on the synthetic set, whose classes differ
    only in motion, the seed model wins (92% against 54%)."""
    from ..data.synth import is_synthetic
    if job.model_config(2).name != DEFAULT_MODEL or is_synthetic(job.data) \
            or not Path(job.data).exists():      # the error that follows says enough
        return None
    return ("hint: this trains the seed tutorial's model (lrcn, the default), made for classes "
            "told apart by motion; for real footage --model effnet-lstm is far better (82% "
            "against 22% on real UCF101 classes, README)")


def default_out(kind: str) -> Path:
    """Where a run (kind "run"), a cross-validation ("cv") or a comparison ("compare") goes when
    no folder is given: runs/KIND-DATE-TIME under the working folder."""
    return Path("runs") / time.strftime(f"{kind}-%Y%m%d-%H%M%S")


# What a run writes into its folder: a new run over an old one removes these first (--overwrite),
# so that no file of the old run (a report, an exported model) passes for the new one's.
RUN_FILES = ("config.json", "split.json", "history.csv", STATE_NAME, CHECKPOINT_NAME,
             "report.json", "confusion_matrix.png", "reliability.png", "curves.png",
             "model.onnx", "model.int8.onnx", "eval", "eval-val", "eval-train",
             "shuffled-frames", ".finishing")
# Written when a run's epochs are done and removed when its calibration and test evaluation
# are: a run stopped between them is finished by --resume (older runs never have it).
FINISHING = ".finishing"


# An --overwrite's previous run, set aside until the new one ends (replacing).
REPLACED = ".replaced-run"


def claim_run_folder(out: str | Path, overwrite: bool = False,
                     how: str = "--overwrite replaces it, --resume continues it, or choose "
                                "another --out") -> Path:
    """The folder of a new run: refused (one line, naming the flags) when it holds a run
    already, unless `overwrite`, which sets that run's files (RUN_FILES; nothing else) aside
    in REPLACED: training removes them when the new run ends, and puts them back if it
    stops before its first epoch (`replacing`), so a mistyped data folder costs nothing.
    Under torchrun only rank 0 looks (the others would find what rank 0 has begun to write);
    the others wait for its split, and stop with it if it stops here. `how` says what to do
    about a run there (the API has keywords, not flags)."""
    out = Path(out)
    if launched_rank() != 0:
        return out
    if out.exists() and not out.is_dir():
        raise LrcnError("is a file: a run is written into a folder", out, ErrorKind.SETTING)
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        raise LrcnError(f"already holds a run ({', '.join(present[:3])}"
                        f"{', ...' if len(present) > 3 else ''}): {how}", out,
                        ErrorKind.SETTING)
    aside = out / REPLACED
    if aside.is_dir():
        # An earlier --overwrite was killed before it finished: what is set aside is the last
        # whole run, and what is here that attempt's beginning, which this one replaces.
        remove_run_files(out)
    elif present:
        aside.mkdir()
        for name in present:
            (out / name).replace(aside / name)
    return out


@contextlib.contextmanager
def replacing(out: Path):
    """Around a new run's training (after claim_run_folder): the run an --overwrite set aside
    comes back if anything stops it before its first epoch (a setting refused, a device not
    there, a Ctrl-C), and is removed once it ends; a run stopped after an epoch keeps the new
    one (it resumes), and a later --resume that finishes it removes the old."""
    try:
        yield
    except BaseException:
        # After an epoch the new run stands, and the old stays aside until a --resume ends it
        # (this same block, around the resumed run): removing it here lost a finished run to
        # a Ctrl-C of its replacement.
        if launched_rank() == 0 and not (out / STATE_NAME).exists():
            settle_replaced(out, keep_new=False)
        raise
    if launched_rank() == 0:
        settle_replaced(out, keep_new=True)


def remove_run_files(out: Path) -> None:
    """A run's files (RUN_FILES) in `out`, and nothing else of the folder."""
    for name in RUN_FILES:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        elif (out / name).exists():
            (out / name).unlink()


def settle_replaced(out: Path, keep_new: bool) -> None:
    """The run an --overwrite set aside in `out`: removed when the new run is kept, else put
    back in place of the new run's files."""
    aside = out / REPLACED
    if not aside.is_dir():
        return
    if not keep_new:
        remove_run_files(out)
        for path in aside.iterdir():
            path.replace(out / path.name)
    shutil.rmtree(aside)


def make_job(data: str | Path, out: str | Path, *, model: str | None = None,
             config: dict[str, dict[str, Any]] | None = None,
             frames: dict[str, Any] | None = None, split: dict[str, Any] | None = None,
             train: dict[str, Any] | None = None, model_options: dict[str, Any] | None = None,
             augment: bool | None = None, classes: Sequence[str] | None = None,
             cache_dir: str | Path | None = None, ucf_split: int | None = None,
             lists: str | Path | None = None, workers: int | None = None,
             progress: bool = True, decode_timeout: float | None = None,
             init_from: str | Path | None = None) -> TrainingJob:
    """A job from settings given in layers (registry.settings_for): the model `model` (None:
    the config's, else the default), its defaults, then `config` (a settings file's sections,
    config.load_config_file), then `frames`, `split`, `train` and `model_options` (None
    values: not given), with `augment` (True, False, None: as the model and config say) over
    the training settings. `lrcn train`, `lrcn cv` and the Python API build their jobs here.

    `init_from` (a checkpoint or run folder): fine-tune that model; its model and frame
    settings are the job's (giving others is refused), the training settings are layered as
    above on that model's defaults."""
    base = None
    if init_from is not None:
        init_from = resolve_checkpoint_path(init_from)
        base = load_checkpoint(init_from, weights=False)
        given = [k for k, v in {"model": model, **(frames or {}), **(model_options or {})}.items()
                 if v is not None] + [f"the config file's {k} section"
                                      for k in ("model", "frames") if (config or {}).get(k)]
        if given:
            raise LrcnError(f"--init-from takes the model and frame settings from the "
                            f"checkpoint: {given[0]} cannot be given with it",
                            kind=ErrorKind.SETTING)
        model = base.model_config.name
    settings = settings_for(model, config, frames=frames, split=split, train=train,
                            model=model_options, augment=augment)
    if base is not None:
        settings = dataclasses.replace(
            settings, frames=base.frame_config,
            model={k: v for k, v in to_dict(base.model_config).items()
                   if k not in DERIVED_MODEL_SETTINGS})
    return TrainingJob(data, out, classes=classes, frames=settings.frames,
                       model=settings.model, split=settings.split, train=settings.train,
                       cache_dir=cache_dir, ucf_split=ucf_split, lists=lists, workers=workers,
                       progress=progress, decode_timeout=decode_timeout, init_from=init_from)


def job_from_run(run_dir: str | Path, workers: int | None = None,
                 progress: bool = True, decode_timeout: float | None = None,
                 epochs: int | None = None) -> TrainingJob:
    """The job a run folder's config.json recorded, with its split as it was made (by group,
    from official lists or a fold), set to resume: `lrcn train --resume RUN`. A run killed
    before its split was written (while decoding) has none yet: the data is checked and
    split again, as the run would have done.

    `epochs`: train to this many epochs in all (more than the run has done). A run that is
    finished (all its epochs done, or stopped early) is refused without it: there is nothing
    to resume. A run that had stopped early trains on with early stopping's patience counted
    again from there."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise LrcnError("not a run folder (no config.json): nothing to resume", run_dir,
                        ErrorKind.NOT_FOUND)
    # its own error names split.json; a run killed while decoding has none yet
    split = read_split(run_dir / "split.json") if (run_dir / "split.json").exists() else None
    try:
        saved = json.loads(path.read_text())
        model = to_dict(from_dict(ModelConfig, saved["model"]))
        job = TrainingJob(
            data=Path(saved["data"]), out=run_dir, classes=saved["classes"],
            frames=from_dict(FrameConfig, saved["frames"]),
            model={k: v for k, v in model.items() if k not in DERIVED_MODEL_SETTINGS},
            split=from_dict(SplitConfig, saved["split"]),
            train=from_dict(TrainConfig, saved["train"]),
            cache_dir=Path(saved["cache_dir"]) if saved.get("cache_dir") else None,
            ucf_split=saved.get("ucf_split"), lists=saved.get("lists"),
            fixed=None if split is None else (saved["classes"], split), resume=True,
            evaluate=saved.get("evaluate", True) is not False,   # runs from before: True
            init_from=saved.get("init_from"),
            workers=workers, progress=progress, decode_timeout=decode_timeout)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise LrcnError(f"damaged config.json ({exc})", path) from None
    return _continued(job, saved_progress(run_dir / STATE_NAME), epochs)


def _continued(job: TrainingJob, done: dict | None, epochs: int | None) -> TrainingJob:
    """A resumed job with `epochs` (None: as saved), refused when there is nothing to train."""
    trained = len(done["history"]) if done else 0
    finished = bool(done) and (done["stopped"] or trained >= job.train.epochs)
    if epochs is not None and epochs <= trained:
        raise LrcnError(f"the run has trained {plural(trained, 'epoch')} already; --epochs "
                        f"{epochs} would train none (--epochs N is the total: more than "
                        f"{trained})", job.out, ErrorKind.SETTING)
    if epochs is None and finished and (job.out / FINISHING).exists():
        return job   # stopped after training: no epoch to train; calibrates and evaluates
    if epochs is None and finished:
        how = (f"stopped early after {plural(trained, 'epoch')}" if done["stopped"] else
               f"all {plural(trained, 'epoch')} trained")
        raise LrcnError(f"the run is finished ({how}; best epoch {done['best_epoch']}): "
                        f"nothing to resume; --epochs N (more than {trained}) trains it on",
                        job.out, ErrorKind.SETTING)
    if epochs is None:
        return job
    return dataclasses.replace(job, train=dataclasses.replace(job.train, epochs=epochs),
                               extend=finished)


__all__ = ["TrainingJob", "default_out", "seed_model_hint", "make_job", "job_from_run",
           "claim_run_folder", "replacing", "remove_run_files", "settle_replaced",
           "RUN_FILES", "FINISHING", "DERIVED_MODEL_SETTINGS"]
