"""training.crossval and training.compare: the smallest real runs through the CLI (2 classes, 3
groups of 2 clips, one epoch; two folds, two models), and their summaries checked against the
runs they summarise; the fold choice, the summaries and the table writers on values made here. (A 3-class cv of two chosen folds and a two-protocol compare
are in test_datasets.py and test_models.py.)"""
from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lrcn.data.dataset import Sample, load_samples
from lrcn.errors import LrcnError
from lrcn.training.compare import COLUMNS, markdown, protocols_of, summarise, write_table
from lrcn.training.crossval import fold_folders, folds_of, format_summary


def lrcn(*args):
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


# One epoch of 8-frame 64x64 clips, decoded in this process: the smallest real run.
TINY_RUN = ["--epochs", "1", "--frames", "8", "--size", "64", "--batch-size", "4", "--workers", "0",
            "--quiet"]


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """2 classes x 3 groups x 2 clips, 64x48, under a second each."""
    from lrcn.data.synth import SynthConfig, make_dataset
    root = tmp_path_factory.mktemp("two") / "data"
    make_dataset(root, SynthConfig(classes=("SlideRight", "Grow"), groups=3, clips_per_group=2,
                                   width=64, height=48, min_seconds=0.6, max_seconds=1.0,
                                   seed=3), workers=1, progress=False)
    return root


# --- crossval ----------------------------------------------------------------------------------

def test_cross_validation_holds_out_each_group_and_summarises_its_folds(two_classes, tmp_path):
    out = tmp_path / "cv"
    result = lrcn("cv", two_classes, "--out", out, "--folds", "3,1", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "cv.json").read_text())
    assert summary["protocol"] == "leave-one-group-out"
    assert summary["classes"] == ["Grow", "SlideRight"]
    assert summary["data"] == str(two_classes.resolve())
    folds = summary["folds"]
    assert [f["fold"] for f in folds] == ["g03", "g01"]            # in the order asked
    for fold in folds:
        run = out / f"fold-{fold['fold']}"
        assert fold["run"] == str(run)
        split = json.loads((run / "split.json").read_text())
        held_out = {e["group"].split("/")[1] for e in split["test"]}
        assert held_out == {fold["fold"]}
        assert fold["fold"] not in {e["group"].split("/")[1]
                                    for e in split["train"] + split["val"]}
        assert fold["test_clips"] == len(split["test"]) == 2 * 2   # both classes' clips
        report = json.loads((run / "report.json").read_text())
        assert fold["accuracy"] == report["accuracy"] and fold["macro_f1"] == report["macro_f1"]
        assert fold["group_accuracy"] == report["group_accuracy"]
        matrix = np.array(report["confusion_matrix"])
        assert fold["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
        assert fold["best_epoch"] == 1
        config = json.loads((run / "config.json").read_text())
        assert config["frames"]["num_frames"] == 8 and config["train"]["epochs"] == 1
    accuracies = [f["accuracy"] for f in folds]
    assert summary["mean_accuracy"] == pytest.approx(statistics.fmean(accuracies))
    assert summary["std_accuracy"] == pytest.approx(statistics.pstdev(accuracies))
    assert (summary["min_accuracy"], summary["max_accuracy"]) == (min(accuracies),
                                                                  max(accuracies))
    rows = list(csv.DictReader((out / "cv.csv").open()))
    assert list(rows[0]) == ["fold", "test_clips", "accuracy", "macro_f1", "group_accuracy",
                             "best_epoch"]
    assert [(r["fold"], int(r["test_clips"]), float(r["accuracy"])) for r in rows] == \
        [(f["fold"], f["test_clips"], pytest.approx(f["accuracy"], abs=5e-5)) for f in folds]
    assert format_summary(summary) in result.stdout
    assert f"wrote {out / 'cv.json'}, {out / 'cv.csv'}" in result.stdout


def test_folds_are_the_groups_present_or_those_asked_for(two_classes):
    _, samples, _ = load_samples(two_classes)
    assert folds_of(samples) == ["g01", "g02", "g03"]
    assert folds_of(samples, ["3", "g01", "G02"]) == ["g03", "g01", "g02"]   # in the order asked
    with pytest.raises(LrcnError, match=r"no group g04 in the data \(groups: g01..g03\)"):
        folds_of(samples, ["4"])
    untagged = [Sample(s.path.with_name(f"clip{i}.avi"), s.class_name,
                       f"{s.class_name}/clip{i}.avi") for i, s in enumerate(samples)]
    with pytest.raises(LrcnError, match="no groups: leave-one-group-out needs UCF group tags"):
        folds_of(untagged)
    # a list's group column names groups: numbers are UCF tags only where no group is a number
    listed = [Sample(s.path, s.class_name, f"{s.class_name}/{g}")
              for s, g in zip(samples, ["Kitchen", "3", "a/../b"] * 4)]
    assert folds_of(listed) == ["3", "Kitchen", "a/../b"]
    assert folds_of(listed, ["kitchen", "3"]) == ["Kitchen", "3"]
    with pytest.raises(LrcnError, match="no group g01"):
        folds_of(listed, ["1"])
    assert fold_folders(["Kitchen", "a/../b", "a_.._b", "g01", "kitchen"]) == {
        "Kitchen": "fold-Kitchen", "a/../b": "fold-a_.._b", "a_.._b": "fold-a_.._b-2",
        "g01": "fold-g01", "kitchen": "fold-kitchen-2"}     # one folder on macOS and Windows
    with pytest.raises(LrcnError, match="group Kitchen is asked for twice"):
        folds_of(listed, ["Kitchen", "kitchen"])
    numbered = [Sample(s.path, s.class_name, f"{s.class_name}/{g}")
                for s, g in zip(samples, ["10", "2", "s10", "s9"] * 3)]
    assert folds_of(numbered) == ["2", "10", "s9", "s10"]            # in natural order


def test_cross_validation_holds_out_a_lists_group_column_across_classes(two_classes, tmp_path):
    """A list whose third column names the session: fold "room 1" tests both classes' clips
    of that session and trains on the others, whatever the file names' tags say; a session
    name that is no folder name still makes one fold folder inside --out."""
    files = sorted(p for p in two_classes.rglob("*") if p.suffix in (".avi", ".mp4"))
    sessions = ["room 1", "yard/../x", "room 2"]
    lines = ["path,label,group"] + [f"{f},{f.parent.name},{sessions[i % 3]}"
                                    for i, f in enumerate(files)]
    listing = tmp_path / "mine.csv"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "cv"
    result = lrcn("cv", listing, "--out", out, "--folds", "Room 1,yard/../x", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "cv.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == ["room 1", "yard/../x"]
    for fold, folder in zip(summary["folds"], ["fold-room_1", "fold-yard_.._x"]):
        assert fold["run"] == str(out / folder)
        split = json.loads((out / folder / "split.json").read_text())
        source = {f.name: sessions[i % 3] for i, f in enumerate(files)}
        held_out = {Path(e["path"]).name for e in split["test"]}
        assert held_out == {n for n, g in source.items() if g == fold["fold"]}
        assert {e["class"] for e in split["test"]} == {"Grow", "SlideRight"}
        assert not held_out & {Path(e["path"]).name for e in split["train"] + split["val"]}
    assert sorted(p.name for p in out.iterdir()) == ["cv.csv", "cv.json", "fold-room_1",
                                                     "fold-yard_.._x"]
    rows = list(csv.DictReader((out / "cv.csv").open()))
    assert [r["fold"] for r in rows] == ["room 1", "yard/../x"]


def test_format_summary_lists_every_fold():
    summary = {"classes": ["a", "b"], "mean_accuracy": 0.625, "std_accuracy": 0.125,
               "min_accuracy": 0.5, "max_accuracy": 0.75,
               "folds": [{"fold": "g01", "accuracy": 0.5, "test_clips": 4},
                         {"fold": "g02", "accuracy": 0.75, "test_clips": 8}]}
    assert format_summary(summary).splitlines() == [
        "leave-one-group-out over 2 folds, 2 classes",
        "  g01: accuracy 0.500 (4 clips)",
        "  g02: accuracy 0.750 (8 clips)",
        "mean accuracy 0.625 +- 0.125 (min 0.500, max 0.750)"]


# --- compare -----------------------------------------------------------------------------------

def test_compare_gives_every_model_of_a_repeat_the_same_split(two_classes, tmp_path):
    out = tmp_path / "cmp"
    result = lrcn("compare", two_classes, "--models", "lrcn,lrcn-bn", "--repeats", "1",
                  "--protocol", "random", "--epochs", "1", "--batch-size", "4",
                  "--workers", "0", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    splits = [json.loads((out / "random" / m / "r1" / "split.json").read_text())
              for m in ("lrcn", "lrcn-bn")]
    assert splits[0] == splits[1]
    assert sum(len(splits[0][part]) for part in ("train", "val", "test")) == 12

    rows = json.loads((out / "compare.json").read_text())
    assert [(r["model"], r["protocol"], r["repeats"]) for r in rows] == [
        ("lrcn", "random", 1), ("lrcn-bn", "random", 1)]
    for row in rows:
        [run] = row["runs"]
        folder = out / "random" / row["model"] / "r1"
        report = json.loads((folder / "report.json").read_text())
        assert row["accuracy_mean"] == run["accuracy"] == report["accuracy"]
        assert row["macro_f1_mean"] == run["macro_f1"] == report["macro_f1"]
        assert row["ece_before_mean"] == report["calibration"]["ece_before"]
        assert row["ece_after_mean"] == report["calibration"]["ece_after"]
        assert report["num_clips"] == len(splits[0]["test"])
        shuffled = json.loads((folder / "shuffled-frames" / "report.json").read_text())
        assert row["shuffled_accuracy_mean"] == shuffled["accuracy"]
        assert shuffled["num_clips"] == len(splits[0]["test"])
        assert row["infer_clips_per_s"] > 0 and row["train_seconds"] > 0
        assert row["accuracy_std"] == 0.0
    assert rows[0]["params"] == 73_060 - 2 * 33             # the seed's model, 2 classes
    assert rows[1]["params"] == rows[0]["params"] + 2 * (16 + 32 + 64 + 64)   # BatchNorm

    table = list(csv.DictReader((out / "compare.csv").open()))
    assert tuple(table[0]) == COLUMNS
    assert [float(r["accuracy_mean"]) for r in table] == \
        pytest.approx([r["accuracy_mean"] for r in rows])
    assert (out / "compare.md").read_text() == markdown(rows) + "\n"
    assert markdown(rows) in result.stdout
    image = cv2.imread(str(out / "compare.png"))
    assert image.shape == (440, round((1.6 * 2 + 2) * 110), 3)          # two models
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def test_summarise_and_the_table_files(tmp_path):
    runs = [{"accuracy": a, "macro_f1": a - 0.1, "shuffled_accuracy": 0.5, "ece_before": 0.2,
             "ece_after": 0.1, "params": 1234, "train_seconds": s, "infer_clips_per_s": v}
            for a, s, v in ((0.6, 10.0, 100.0), (0.8, 20.0, 300.0), (0.7, 30.0, 200.0))]
    row = summarise("lrcn", "group", runs)
    assert row["repeats"] == 3 and row["runs"] == runs
    assert row["accuracy_mean"] == pytest.approx(0.7)
    assert row["accuracy_std"] == pytest.approx(0.1)               # the sample std
    assert row["macro_f1_mean"] == pytest.approx(0.6)
    assert row["train_seconds"] == pytest.approx(20.0)
    assert row["infer_clips_per_s"] == 200.0                      # the median
    assert summarise("lrcn", "group", runs[:1])["accuracy_std"] == 0.0
    other = summarise("convlstm", "random", runs[:2])
    write_table([row, other], tmp_path / "t")
    assert json.loads((tmp_path / "t" / "compare.json").read_text()) == [row, other]
    lines = (tmp_path / "t" / "compare.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 3
    assert lines[1].startswith("lrcn,group,3,0.7")
    md = (tmp_path / "t" / "compare.md").read_text().splitlines()
    assert len(md) == 4 and md[0].startswith("| model | protocol |")
    assert md[2].startswith("| lrcn | group | 0.700 ± 0.100 (n=3) | 0.600 | 0.500 | 0.200 → "
                            "0.100 | 1,234 | 20 | 200 |")
    assert md[3].startswith("| convlstm | random | 0.700 ± 0.141 (n=2) |")
    assert (tmp_path / "t" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert protocols_of("both") == ("group", "random") and protocols_of("group") == ("group",)
    with pytest.raises(LrcnError, match="unknown protocol 'leaky'"):
        protocols_of("leaky")
