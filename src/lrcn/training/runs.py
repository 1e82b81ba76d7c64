"""A whole run: train, then evaluate the best checkpoint on the held-out test part and record the
test figures in it. `lrcn train`, `lrcn demo` and `lrcn cv` (each fold) all run this."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..models.checkpoint import load_checkpoint
from ..errors import LrcnError
from .evaluate import calibrate_checkpoint, evaluate, record_test_metrics
from .job import FINISHING, TrainingJob, replacing
from ..files import atomic_write_text
from .train import TrainResult, train


@dataclass
class RunResult:
    training: TrainResult
    report: dict | None      # the test report; None when evaluation was not asked for

    @property
    def checkpoint(self) -> Path:
        return self.training.checkpoint


def train_and_evaluate(job: TrainingJob, log=print, evaluate_test: bool = True) -> RunResult:
    """Train as `job` says (train.train), fit the checkpoint's calibration temperature on the
    validation clips, then evaluate the checkpoint on the run's test part, writing report.json,
    confusion_matrix.png, reliability.png and curves.png into the run folder (`job.out`), and
    record the test figures in the checkpoint (for `lrcn info`). Files that cannot be read
    were reported while training prepared the data. `evaluate_test=False` (or a job that says
    so: a resumed run started with --no-evaluate) skips the test evaluation; the run folder
    records it."""
    job = dataclasses.replace(job, evaluate=job.evaluate and evaluate_test)
    with replacing(job.out):    # a run --overwrite set aside: back if this one stops early
        return _run(job, log)


def _run(job: TrainingJob, log) -> RunResult:
    result = train(job, log)
    if result.rank != 0:          # with several processes, rank 0 calibrates and evaluates
        return RunResult(result, None)
    finishing = job.out / FINISHING
    atomic_write_text(finishing, "calibration and test evaluation after training\n")
    try:
        report = _after_training(job, result, log)
    except KeyboardInterrupt:
        log(f"interrupted after training: the model is in {result.checkpoint}; continue with: "
            f"lrcn train --resume {job.out} (it finishes the run)")
        raise
    finishing.unlink()
    return RunResult(result, report)


def _after_training(job: TrainingJob, result: TrainResult, log) -> dict | None:
    """The calibration, then the test evaluation if asked for: the report, or None."""
    run_dir, config = job.out, job.train
    cache_dir, workers, progress = job.cache_dir, job.workers, job.progress
    calibrate_checkpoint(result.checkpoint, result.parts["val"], cache_dir=cache_dir,
                         workers=workers, device=config.device, log=log,
                         decode_timeout=job.decode_timeout)
    if not job.evaluate:
        return None
    test = result.parts["test"]
    if not test:
        raise LrcnError("the run's test split is empty (too few groups per class): the model "
                        "is trained, evaluate it with `lrcn evaluate RUN --data DIR`", run_dir)
    report = evaluate(load_checkpoint(result.checkpoint), test, run_dir, cache_dir=cache_dir,
                      workers=workers, progress=progress, history=run_dir / "history.csv",
                      device=config.device, precision=config.precision,
                      decode_timeout=job.decode_timeout)
    record_test_metrics(result.checkpoint, report)
    return report


__all__ = ["RunResult", "TrainingJob", "train_and_evaluate"]
