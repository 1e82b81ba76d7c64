"""UCF50's official protocol: leave-one-group-out cross-validation.

UCF50 has 25 groups (g01..g25) per class; clips of a group come from one recording session, and
group k of every class was filmed under similar conditions. Fold k trains on the other groups
and tests on group k of every class; the protocol's figure is the mean accuracy over folds.
Each fold is an ordinary run folder (train + evaluate); the summary is cv.json and cv.csv.
A list's group column names groups as the tags do: group "session3" of every class is one fold.
"""
from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import replace

from ..console import plural
from ..data.dataset import load_samples
from ..data.split import named_source, split_train_val
from ..errors import ErrorKind, LrcnError
from ..files import atomic_write_text
from .job import TrainingJob
from .runs import train_and_evaluate
from .train import report_skipped


def folds_of(samples, wanted: Sequence[str] | None = None) -> list[str]:
    """The groups present ("g01", ..., or a list's names), or the requested ones (numbers for
    UCF tags, or names; a name in another case is the same group)."""
    # in natural order: a list's groups "2" before "10" (UCF's tags are zero-padded anyway)
    present = sorted({g for s in samples if (g := named_source(s))},
                     key=lambda g: [(0, int(t), "") if t.isdigit() else (1, 0, t)
                                    for t in re.split(r"(\d+)", g)])
    if not present:
        raise LrcnError("no groups: leave-one-group-out needs UCF group tags (_gNN_cNN) in "
                        "the file names or a list's group column",
                        kind=ErrorKind.BAD_INPUT)     # the data, not a setting
    if not wanted:
        return present
    chosen = []
    by_case = {g.lower(): g for g in present}
    for item in wanted:
        name = str(item).strip()
        tag = f"g{int(name):02d}" if name.isdigit() and name not in present else name
        tag = tag if tag in present else by_case.get(tag.lower(), tag)
        if tag not in present:
            raise LrcnError(f"no group {tag} in the data (groups: {present[0]}..{present[-1]})",
                            kind=ErrorKind.SETTING)
        if tag in chosen:
            raise LrcnError(f"group {tag} is asked for twice in --folds", kind=ErrorKind.SETTING)
        chosen.append(tag)
    return chosen


def fold_folders(tags: Sequence[str]) -> dict[str, str]:
    """A run folder's name per fold: "fold-" and the group, with anything but letters, digits,
    ".", "_" and "-" made "_" (a list's group names a folder, never a path), numbered where
    two groups would get one name."""
    names: dict[str, str] = {}
    for tag in tags:
        name = "fold-" + re.sub(r"[^A-Za-z0-9._-]", "_", tag)
        base, k = name, 2
        while name.lower() in {n.lower() for n in names.values()}:   # macOS, Windows
            name, k = f"{base}-{k}", k + 1
        names[tag] = name
    return names


def cross_validate(job: TrainingJob, folds: Sequence[str] | None = None,
                   log=print) -> dict:
    """Leave-one-group-out over `job.data` (each of `folds`, or every group): fold k is the
    job run in `job.out`/fold-gNN on the other groups (split into train and validation as
    `job.split` says) and tested on group k. Writes cv.json and cv.csv into `job.out`."""
    data, out = job.data, job.out
    names, samples, missing = load_samples(data, job.classes)
    report_skipped(missing)
    tags = folds_of(samples, folds)
    folders = fold_folders(tags)
    rows = []
    for k, tag in enumerate(tags, 1):
        test = [s for s in samples if named_source(s) == tag]
        rest = [s for s in samples if named_source(s) != tag]
        parts = {**split_train_val(rest, job.split), "test": test}
        log(f"fold {k}/{len(tags)}: test group {tag} ({plural(len(test), 'clip')})")
        run = out / folders[tag]
        result = train_and_evaluate(replace(job, out=run, fixed=(names, parts)), log)
        report = result.report
        rows.append({"fold": tag, "test_clips": report["num_clips"],
                     "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                     "group_accuracy": report["group_accuracy"],
                     "best_epoch": result.training.best_epoch, "run": str(run)})
        log(f"fold {tag}: accuracy {report['accuracy']:.3f} on "
            f"{plural(report['num_clips'], 'clip')}")
    accuracies = [r["accuracy"] for r in rows]
    summary = {"protocol": "leave-one-group-out", "data": str(data.resolve()),
               "classes": names, "folds": rows,
               "mean_accuracy": statistics.fmean(accuracies),
               "std_accuracy": statistics.pstdev(accuracies),
               "min_accuracy": min(accuracies), "max_accuracy": max(accuracies)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cv.json", json.dumps(summary, indent=1))
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")   # a group's name may hold a quote
    writer.writerow(["fold", "test_clips", "accuracy", "macro_f1", "group_accuracy",
                     "best_epoch"])
    writer.writerows([r["fold"], r["test_clips"], f"{r['accuracy']:.4f}", f"{r['macro_f1']:.4f}",
                      f"{r['group_accuracy']:.4f}", r["best_epoch"]] for r in rows)
    atomic_write_text(out / "cv.csv", table.getvalue())
    return summary


def format_summary(summary: dict) -> str:
    rows = summary["folds"]
    lines = [f"leave-one-group-out over {plural(len(rows), 'fold')}, "
             f"{plural(len(summary['classes']), 'class', 'classes')}"]
    for r in rows:
        lines.append(f"  {r['fold']}: accuracy {r['accuracy']:.3f} "
                     f"({plural(r['test_clips'], 'clip')})")
    lines.append(f"mean accuracy {summary['mean_accuracy']:.3f} +- "
                 f"{summary['std_accuracy']:.3f} (min {summary['min_accuracy']:.3f}, max "
                 f"{summary['max_accuracy']:.3f})")
    return "\n".join(lines)


__all__ = ["cross_validate", "folds_of", "fold_folders", "format_summary"]
