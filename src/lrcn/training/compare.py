"""`lrcn compare`: several models trained and tested on the same splits, repeated, under the
group-aware protocol, the tutorial's random one, or both side by side.

Every model of a repeat gets exactly the same split (made once per protocol and repeat, from
the split seed plus the repeat number), so differences between models are not differences
between splits. Each run is a whole `lrcn train` (runs.train_and_evaluate: early stopping,
calibration, the test report) in OUT/<protocol>/<model>/r<N>, and each is also evaluated with
its frames shuffled (the frame-order ablation). The table: compare.json (rows as below),
compare.csv, compare.md and compare.png (accuracy with its spread).
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from ..data.cache import prepare
from ..models.checkpoint import load_checkpoint
from ..config import SplitConfig
from ..data.dataset import load_samples
from ..data.split import random_split, split_samples
from ..inference.engine import make_engine
from ..errors import ErrorKind, LrcnError, whole_number
from .evaluate import evaluate, predict_cached
from ..files import atomic_write_text
from ..models.base import count_trainable
from ..media.plots import plot_compare
from .job import TrainingJob
from .runs import train_and_evaluate
from ..models.registry import get_spec, settings_for

PROTOCOLS = ("group", "random")
COLUMNS = ("model", "protocol", "repeats", "accuracy_mean", "accuracy_std", "macro_f1_mean",
           "shuffled_accuracy_mean", "ece_before_mean", "ece_after_mean", "params",
           "train_seconds", "infer_clips_per_s", "infer_backend")


def protocols_of(protocol: str) -> tuple[str, ...]:
    if protocol == "both":
        return PROTOCOLS
    if protocol not in PROTOCOLS:
        raise LrcnError(f"unknown protocol {protocol!r} (group, random or both)",
                        kind=ErrorKind.SETTING)
    return (protocol,)


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _inference_speed(checkpoint_path: Path, samples, cache_dir, device: str,
                     decode_timeout: float | None = None) -> tuple[float, str, str | None]:
    """Clips per second through the engine that predict uses, from the frame cache; the
    engine's backend, and why it is PyTorch where ONNX Runtime was expected (None if not):
    the speed is that backend's, so the table says which it was."""
    checkpoint = load_checkpoint(checkpoint_path)
    clips, _ = prepare(samples, checkpoint.frame_config, cache_dir=cache_dir, progress=False,
                       timeout=decode_timeout)
    engine = make_engine(checkpoint, device=device, warn=None)   # the reason is returned
    predict_cached(engine, clips[:2])                       # warm-up
    start = time.perf_counter()
    predict_cached(engine, clips)
    return (len(clips) / max(time.perf_counter() - start, 1e-9), str(engine.backend),
            engine.fallback_reason)


@dataclass(frozen=True)
class CompareTraining:
    """The training settings `lrcn compare` gives every model, over each model's own defaults
    (ModelSpec: an effnet model's frames and augmentation stay its own); None: the model's."""
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    patience: int | None = None
    seed: int | None = None
    device: str | None = None


def compare(data: str | Path, out: str | Path, models: Sequence[str], *, repeats: int = 3,
            protocol: str = "group", classes: Sequence[str] | None = None,
            split: SplitConfig = SplitConfig(), train: CompareTraining = CompareTraining(),
            cache_dir: Path | None = None, workers: int | None = None,
            progress: bool = False, log=print, decode_timeout: float | None = None
            ) -> list[dict]:
    """Train and test every model on the same splits; write and return the table's rows.
    `train`: what every model trains with, over each model's own defaults. A folder that
    holds a comparison already is refused: its runs would be trained again in place, and its
    table replaced by one that need not name the same models."""
    out = Path(out)
    repeats = whole_number("repeats", repeats)
    if out.exists() and not out.is_dir():
        raise LrcnError("is a file: a comparison is written into a folder", out,
                        ErrorKind.SETTING)
    held = [name for name in ("compare.json", *PROTOCOLS) if (out / name).exists()]
    if held:
        raise LrcnError(f"already holds a comparison ({', '.join(held)}): choose another "
                        "folder (--out, or out= in Python)", out, ErrorKind.SETTING)
    specs = [get_spec(name) for name in models]
    names, samples, missing = load_samples(data, classes)
    for path, cause in missing:
        log(f"skipped {path}: {cause}")
    results: dict[tuple[str, str], list[dict]] = {}
    for proto in protocols_of(protocol):
        for repeat in range(repeats):
            cfg = replace(split, seed=split.seed + repeat)
            parts = (split_samples if proto == "group" else random_split)(samples, cfg)
            for spec in specs:
                settings = settings_for(spec.name, train=asdict(train))
                run_dir = out / proto / spec.name / f"r{repeat + 1}"
                log(f"compare: {spec.name}, {proto} split, repeat {repeat + 1}/{repeats}")
                start = time.perf_counter()
                job = TrainingJob(data, run_dir, classes=names, frames=settings.frames,
                                  model=settings.model, split=cfg, train=settings.train,
                                  cache_dir=cache_dir, fixed=(names, parts), workers=workers,
                                  progress=progress, decode_timeout=decode_timeout)
                result = train_and_evaluate(job, log=lambda *a, **k: None)
                seconds = time.perf_counter() - start
                speed, backend, fallback = _inference_speed(result.checkpoint, parts["test"],
                                                            cache_dir, settings.train.device,
                                                            decode_timeout)
                if fallback:
                    log(f"  note: inference speed measured on PyTorch, not ONNX Runtime "
                        f"({fallback})")
                checkpoint = load_checkpoint(result.checkpoint)
                shuffled = evaluate(checkpoint, parts["test"], run_dir / "shuffled-frames",
                                    cache_dir=cache_dir, workers=workers, progress=False,
                                    device=settings.train.device, shuffle_frames=True,
                                    decode_timeout=decode_timeout)
                report = result.report
                row = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                       "shuffled_accuracy": shuffled["accuracy"],
                       "ece_before": report["calibration"]["ece_before"],
                       "ece_after": report["calibration"]["ece_after"],
                       "params": count_trainable(checkpoint.build_model()),
                       "train_seconds": seconds, "infer_clips_per_s": speed,
                       "infer_backend": backend, "infer_fallback": fallback}
                log(f"  accuracy {row['accuracy']:.3f} (frames shuffled "
                    f"{row['shuffled_accuracy']:.3f}), {seconds:.0f} s")
                results.setdefault((spec.name, proto), []).append(row)
    rows = [summarise(model, proto, runs) for (model, proto), runs in results.items()]
    write_table(rows, out)
    return rows


def summarise(model: str, protocol: str, runs: list[dict]) -> dict:
    accuracy = [r["accuracy"] for r in runs]
    return {"model": model, "protocol": protocol, "repeats": len(runs),
            "accuracy_mean": statistics.mean(accuracy), "accuracy_std": _std(accuracy),
            "macro_f1_mean": statistics.mean(r["macro_f1"] for r in runs),
            "shuffled_accuracy_mean": statistics.mean(r["shuffled_accuracy"] for r in runs),
            "ece_before_mean": statistics.mean(r["ece_before"] for r in runs),
            "ece_after_mean": statistics.mean(r["ece_after"] for r in runs),
            "params": runs[0]["params"],
            "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
            "infer_clips_per_s": statistics.median(r["infer_clips_per_s"] for r in runs),
            # the engine(s) the speed was measured on (PyTorch where ONNX Runtime failed: the
            # runs' infer_fallback says why)
            "infer_backend": ", ".join(sorted({r.get("infer_backend", "") for r in runs})),
            "runs": runs}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | protocol | accuracy (mean ± std) | macro F1 | frames shuffled | "
             "ECE before → after | params | train s | infer clips/s |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['protocol']} | {r['accuracy_mean']:.3f} ± "
                     f"{r['accuracy_std']:.3f} (n={r['repeats']}) | {r['macro_f1_mean']:.3f} | "
                     f"{r['shuffled_accuracy_mean']:.3f} | {r['ece_before_mean']:.3f} → "
                     f"{r['ece_after_mean']:.3f} | {r['params']:,} | {r['train_seconds']:.0f} "
                     f"| {r['infer_clips_per_s']:.0f} |")
    return "\n".join(lines)


def write_table(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.json", json.dumps(rows, indent=1))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    atomic_write_text(out / "compare.md", markdown(rows) + "\n")
    plot_compare(rows, out / "compare.png")


__all__ = ["compare", "CompareTraining", "markdown", "summarise", "protocols_of", "PROTOCOLS", "COLUMNS"]
