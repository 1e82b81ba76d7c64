"""The command line end to end on real (small, synthetic) video files, and its errors."""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import av
import pytest
from PIL import Image

from lrcn.cli import main
from lrcn.media.sampling import parse_group


def lrcn(*args, cwd=None):
    """Run the installed CLI as a user would: a separate process."""
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    settings = run.parent / "settings.json"   # a config file under the flags
    settings.write_text(json.dumps({"train": {"epochs": 5, "lr": 0.002},
                                    "split": {"val_fraction": 0.3}}))
    code = main(["train", str(tiny_dataset), "--out", str(run), "--epochs", "2",
                 "--config", str(settings), "--quiet", "--workers", "2", "--hue-jitter", "0.5",
                 "--groups-across-classes"])
    assert code == 0
    return run


def test_synth_writes_ucf_layout_with_groups(tiny_dataset):
    classes = sorted(p.name for p in tiny_dataset.iterdir() if p.is_dir())
    assert classes == ["Bounce", "Grow", "SlideLeft", "SlideRight"]
    for cls in classes:
        files = sorted((tiny_dataset / cls).iterdir())
        assert len(files) == 6
        assert {parse_group(f.name) for f in files} == {"g01", "g02", "g03"}
        assert all(f.name.startswith(f"v_{cls}_g") for f in files)
        with av.open(str(files[0])) as container:   # real, decodable video
            assert container.streams.video[0].codec_context.width == 96
    rows = (tiny_dataset / "manifest.csv").read_text().splitlines()
    assert len(rows) == 1 + 24 and rows[0].startswith("path,class,group,fps,frames,seconds")


def test_train_writes_a_complete_run_folder(trained_run, tiny_dataset):
    for name in ("model.safetensors", "config.json", "split.json", "history.csv",
                 "report.json", "confusion_matrix.png", "curves.png"):
        assert (trained_run / name).is_file(), name
    history = (trained_run / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds,lr" and len(history) == 3
    split = json.loads((trained_run / "split.json").read_text())
    groups = {part: {e["group"] for e in split[part]} for part in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    assert not (groups["val"] & groups["test"])
    # --groups-across-classes: a group number is on one side in every class, and each class
    # still has one group of its three in each part
    numbers = {part: {g.split("/")[1] for g in groups[part]} for part in groups}
    assert [len(numbers[p]) for p in ("train", "val", "test")] == [1, 1, 1]
    assert [len(groups[p]) for p in ("train", "val", "test")] == [4, 4, 4]
    assert sum(len(split[p]) for p in ("train", "val", "test")) == 24
    report = json.loads((trained_run / "report.json").read_text())
    assert report["num_clips"] == len(split["test"])
    assert sum(map(sum, report["confusion_matrix"])) == len(split["test"])
    config = json.loads((trained_run / "config.json").read_text())
    # layers: a flag beats the config file (epochs), which beats the defaults (lr, split)
    assert config["train"]["epochs"] == 2 and config["train"]["lr"] == 0.002
    assert config["train"]["batch_size"] == 4 and config["train"]["patience"] == 15
    assert config["split"] == {"test_fraction": 0.25, "val_fraction": 0.3, "seed": 27,
                               "drop_small_classes": False, "across_classes": True}
    assert config["model"]["lstm_units"] == 32
    assert config["train"]["hue_jitter"] == 0.5 and config["train"]["scale_jitter"] == 0


def test_a_hue_jitter_past_half_the_circle_is_one_line(tmp_path):
    result = lrcn("train", tmp_path, "--hue-jitter", "0.7")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--hue-jitter: must be in [0, 0.5], got 0.7" in result.stderr.strip().splitlines()[-1]


def test_info_shows_classes_and_test_metrics(trained_run):
    result = lrcn("info", trained_run, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["classes"] == ["Bounce", "Grow", "SlideLeft", "SlideRight"]
    assert info["trainable_parameters"] == 73_060
    report = json.loads((trained_run / "report.json").read_text())
    assert info["info"]["test_metrics"]["accuracy"] == pytest.approx(report["accuracy"])
    assert 1.0 <= info["clip_seconds"] <= 2.0   # the tiny set's clips last 1-2 s
    assert "clip_seconds" not in info["info"]


def test_evaluate_on_another_folder(trained_run, tiny_dataset, tmp_path):
    out = tmp_path / "eval"
    result = lrcn("evaluate", trained_run, "--data", tiny_dataset, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["num_clips"] == 24
    assert sum(sum(row) for row in report["confusion_matrix"]) == 24
    with Image.open(out / "confusion_matrix.png") as image:   # a real, drawn PNG
        assert image.format == "PNG" and image.size[0] >= 400
        assert len(image.convert("L").getcolors(1 << 16)) > 20
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    # A folder with a class the model does not know, and one of its classes in another case:
    # the known ones are evaluated (the other case is the class), the other named and left out.
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_dataset / "Grow", mixed / "grow")
    shutil.copytree(tiny_dataset / "Bounce", mixed / "Bounce")
    shutil.copytree(tiny_dataset / "SlideLeft", mixed / "Swing")
    result = lrcn("evaluate", trained_run, "--data", mixed, "--out", tmp_path / "e2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"lrcn: note: {mixed}: left out, not classes the model knows: Swing" in result.stderr
    report = json.loads((tmp_path / "e2" / "report.json").read_text())
    support = {name: row["support"] for name, row in report["per_class"].items()}
    assert support == {"Bounce": 6, "Grow": 6, "SlideLeft": 0, "SlideRight": 0}
    unknown = tmp_path / "unknown"
    shutil.copytree(tiny_dataset / "SlideLeft", unknown / "Swing")
    result = lrcn("evaluate", trained_run, "--data", unknown, "--quiet")
    assert result.returncode == 2 and "class 'Swing' is not one the model knows" in result.stderr


def test_predict_json_and_annotated_h264_video(trained_run, tiny_dataset, tmp_path):
    video = sorted((tiny_dataset / "SlideLeft").iterdir())[0]
    out = tmp_path / "annotated.mp4"
    result = lrcn("predict", trained_run, video, "--json", "--annotate", out)
    assert result.returncode == 0, result.stderr
    [prediction] = json.loads(result.stdout)
    probabilities = prediction["probabilities"]
    assert set(probabilities) == {"Bounce", "Grow", "SlideLeft", "SlideRight"}
    assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert prediction["label"] == max(probabilities, key=probabilities.get)
    with av.open(str(out)) as container, av.open(str(video)) as source:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"       # what browsers play
        assert sum(1 for _ in container.decode(video=0)) == \
            sum(1 for _ in source.decode(video=0))
    text = lrcn("predict", trained_run, video)
    assert text.returncode == 0 and text.stdout.startswith(f"{video}: {prediction['label']}")
    gif = lrcn("predict", trained_run, video, "--annotate", tmp_path / "a.gif")
    assert gif.returncode == 2 and not (tmp_path / "a.gif").exists()
    assert f"{tmp_path / 'a.gif'}: cannot write .gif: videos are written as H.264 MP4" in gif.stderr
    assert gif.stdout == ""                                  # refused before any work
    gif = lrcn("stream", trained_run, video, "--annotate", tmp_path / "a.gif")
    assert gif.returncode == 2 and "cannot write .gif" in gif.stderr and gif.stdout == ""
    # --top-k: the k most probable classes, most probable first, the same numbers
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    top = lrcn("predict", trained_run, video, "--json", "--top-k", "2")
    assert top.returncode == 0, top.stderr
    [trimmed] = json.loads(top.stdout)
    assert list(trimmed["probabilities"]) == [name for name, _ in ranked[:2]]
    assert trimmed["probabilities"] == pytest.approx(dict(ranked[:2]), abs=1e-6)
    assert trimmed["probability"] == pytest.approx(ranked[0][1], abs=1e-6)
    lines = lrcn("predict", trained_run, video, "--top-k", "1").stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].split()[0] == ranked[0][0]


def test_predict_reports_a_bad_file_and_still_predicts_the_good_one(trained_run, tiny_dataset,
                                                                    tmp_path):
    good = sorted((tiny_dataset / "Grow").iterdir())[0]
    bad = tmp_path / "broken.mp4"
    bad.write_text("nope")
    result = lrcn("predict", trained_run, bad, good)
    assert result.returncode == 1
    assert result.stderr.strip() == f"{bad}: not a readable video (Invalid data found when " \
        "processing input)" or result.stderr.strip().startswith(f"{bad}: not a readable video")
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith(f"{good}: ")


def test_predict_on_a_folder_predicts_the_videos_in_it(trained_run, tiny_dataset, tmp_path):
    """A folder stands for its videos, in subfolders too, sorted; other files are not videos;
    a folder with none is one error that names it."""
    import shutil
    folder = tmp_path / "clips"
    for name in ("Grow", "Bounce"):
        (folder / name).mkdir(parents=True)
        shutil.copy(sorted((tiny_dataset / name).iterdir())[0], folder / name)
    (folder / "notes.txt").write_text("not a video")
    (tmp_path / "empty").mkdir()
    result = lrcn("predict", trained_run, folder, "--json")
    assert result.returncode == 0, result.stderr
    paths = [entry["path"] for entry in json.loads(result.stdout)]
    assert paths == [str(folder / name / sorted((tiny_dataset / name).iterdir())[0].name)
                     for name in ("Bounce", "Grow")]
    result = lrcn("predict", trained_run, tmp_path / "empty")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"{tmp_path / 'empty'}: is a folder with no video files in it"
    url = "https://example.com/x.mp4"          # was reported as https:/example.com/x.mp4
    result = lrcn("predict", trained_run, url)
    assert result.returncode == 2 and result.stderr.startswith(f"lrcn: error: {url}: is a URL")


def test_training_skips_and_lists_broken_files(tiny_dataset, tmp_path):
    import shutil
    data = tmp_path / "salted"
    shutil.copytree(tiny_dataset, data)
    (data / "Grow" / "v_Grow_g01_c09.avi").write_bytes(b"")
    (data / "Bounce" / "v_Bounce_g02_c09.avi").write_text("text, not video")
    result = lrcn("train", data, "--out", tmp_path / "run", "--epochs", "1", "--quiet",
                  "--no-evaluate")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unreadable videos:" in result.stderr
    assert f"{data / 'Grow' / 'v_Grow_g01_c09.avi'}: empty file (0 bytes)" in result.stderr
    assert f"{data / 'Bounce' / 'v_Bounce_g02_c09.avi'}: not a readable video" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["predict", "{tmp}/nothing.safetensors", "{tmp}/x.mp4"], "no such checkpoint"),
    (["predict", "{tmp}/fake.safetensors", "{tmp}/x.mp4"], "not an lrcn checkpoint"),
    (["info", "{tmp}/fake.safetensors"], "not an lrcn checkpoint"),
    (["train", "{tmp}/missing"], "no such data folder"),
    (["train", "{tmp}/data", "--classes", "A,Nope"], "unknown class 'Nope'"),
    (["train", "{tmp}/data"], "class folder has no video files"),
    (["evaluate", "{tmp}/nothing"], "no such checkpoint"),
    (["train", "{tmp}/data", "--config", "{tmp}/fake.safetensors"], "not a JSON config"),
])
def test_bad_input_gives_one_line_error_and_nonzero_exit(tmp_path, args, message):
    (tmp_path / "fake.safetensors").write_text("not a checkpoint")
    (tmp_path / "data" / "A").mkdir(parents=True)
    (tmp_path / "data" / "B").mkdir()
    args = [a.format(tmp=tmp_path) for a in args]
    result = lrcn(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrcn: error: ") and message in lines[0]


def test_a_reader_that_leaves_stops_it_quietly(trained_run):
    """`lrcn info RUN | head -0`: stdout's reader is gone before the first line (deterministic
    here: the pipe's read end is closed first). No 'Broken pipe' error, no exit 2."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "lrcn", "info", str(trained_run)],
                                stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == ""


def test_argument_validation():
    result = lrcn("train", "data", "--epochs", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr


# Flags that contradict each other, or a number out of its range: refused before any work (the
# paths do not exist, so a command that went on would fail differently), in one line naming
# the flags. (command line, the flags the error must name)
REFUSED = [
    (["train", "D", "--augment", "--no-augment"], ["--augment", "--no-augment"]),
    (["cv", "D", "--no-augment", "--augment"], ["--augment", "--no-augment"]),
    (["train", "--resume", "R", "--patience", "3"], ["--resume", "--patience"]),
    (["train", "--resume", "R", "--seed", "0"], ["--resume", "--seed"]),    # 0 is given too
    (["train", "--resume", "R", "--hue-jitter", "0"], ["--resume", "--hue-jitter"]),
    (["train", "--resume", "R", "--overwrite"], ["--resume", "--overwrite"]),
    (["train", "--resume", "R", "--groups-across-classes"], ["--resume", "--groups-across-classes"]),
    (["train", "--resume", "R", "--init-from", "R"], ["--resume", "--init-from"]),
    (["train", "D", "--init-from", "R", "--model", "convlstm"], ["--init-from", "--model"]),
    (["train", "D", "--init-from", "R", "--size", "32"], ["--init-from", "--size"]),
    (["train", "--resume", "R", "--model", "convlstm"], ["--resume", "--model"]),
    (["train", "--resume", "R", "--augment"], ["--resume", "--augment"]),
    (["train", "--resume", "R", "--cache", "C"], ["--resume", "--cache"]),
    (["train", "D", "--resume", "R"], ["--resume", "DATA"]),
    (["train", "D", "--split", "1", "--test-fraction", "0.1"], ["--split", "--test-fraction"]),
    (["train", "D", "--lists", "L"], ["--lists", "--split"]),
    (["check", "D", "--lists", "L"], ["--lists", "--split"]),
    (["cv", "D", "--test-fraction", "0.1"], ["--test-fraction"]),
    (["evaluate", "R", "--data", "D", "--split", "val"], ["--data", "--split"]),
    (["predict", "R", "V", "--timeline", "--views", "2"], ["--timeline", "--views"]),
    (["predict", "R", "V", "--timeline", "--top-k", "2"], ["--timeline", "--top-k"]),
    (["predict", "R", "V", "--top-k", "0"], ["--top-k", "must be at least 1"]),
    (["predict", "R", "V", "--out", "O"], ["--out", "--timeline"]),
    (["predict", "R", "V", "--span", "2"], ["--span", "--timeline"]),
    (["predict", "R", "V", "--stride", "1"], ["--stride", "--timeline"]),
    (["predict", "R", "V", "--smooth", "2"], ["--smooth", "--timeline"]),
    (["stream", "R", "V", "--max-lag", "-1"], ["--max-lag", "must be 0 or more"]),
    (["train", "D", "--l2", "-0.001"], ["--l2", "must be 0 or more"]),
    (["cv", "D", "--l2", "nan"], ["--l2"]),
    (["train", "D", "--seed", "-1"], ["--seed", "must be at least 0"]),
    (["compare", "D", "--seed", "-2"], ["--seed", "must be at least 0"]),
    (["synth", "O", "--seed", "-3"], ["--seed", "must be at least 0"]),
    (["train", "D", "--lstm-units", "0"], ["--lstm-units", "must be at least 1"]),
    (["serve", "R", "--port", "65536"], ["--port", "must be at most 65535"]),
    (["predict", "R", "V", "--reject-below", "1"], ["--reject-below", "[0, 1)"]),
]


@pytest.mark.parametrize("args, named", REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_contradictory_flags_and_numbers_out_of_range_are_refused(tmp_path, args, named,
                                                                  capsys, monkeypatch):
    # main() in this process: the parser and the rules are what is tested, and 28 interpreter
    # starts cost a minute (test_argument_validation runs a real process's refusal)
    monkeypatch.chdir(tmp_path)
    try:
        code = main([str(tmp_path / a) if a in ("D", "R", "V", "O", "L", "C") else a
                     for a in args])
    except SystemExit as exc:            # argparse's own refusals exit through its error()
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in err and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"lrcn {args[0]}: error: ")
    for flag in named:
        assert flag in line, line
    assert list(tmp_path.iterdir()) == []          # nothing started


def test_flags_that_go_together_are_not_refused(trained_run, tiny_dataset, tmp_path):
    """The rules refuse only what contradicts: a timeline with its window flags and --out, and
    predict's own flags without one, run."""
    video = sorted((tiny_dataset / "Bounce").iterdir())[0]
    timeline = lrcn("predict", trained_run, video, "--timeline", "--out", tmp_path / "t",
                    "--stride", "0.5", "--smooth", "1", "--reject-below", "0.5")
    assert timeline.returncode == 0, timeline.stderr
    assert (tmp_path / "t" / "timeline.json").is_file()
    clip = lrcn("predict", trained_run, video, "--views", "2", "--reject-below", "0.5",
                "--json")
    assert clip.returncode == 0, clip.stderr
    assert json.loads(clip.stdout)[0]["path"] == str(video)


def test_timelines_of_several_videos_go_on_past_a_bad_one(trained_run, tiny_dataset, tmp_path):
    """Several videos: one folder and one annotated video per file under --out and --annotate;
    a file that fails is reported and the next goes on, and the command exits 1."""
    good = [sorted((tiny_dataset / c).iterdir())[0] for c in ("Grow", "SlideLeft")]
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    result = lrcn("predict", trained_run, good[0], bad, good[1], "--timeline",
                  "--out", tmp_path / "out", "--annotate", tmp_path / "videos")
    assert result.returncode == 1
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"lrcn: error: {bad}: not a readable video")
    for video in good:
        folder = tmp_path / "out" / f"{video.stem}.timeline"
        assert json.loads((folder / "timeline.json").read_text())["windows"]
        annotated = tmp_path / "videos" / f"{video.stem}.annotated.mp4"
        with av.open(str(annotated)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
        assert f"annotated video: {annotated}" in result.stdout
    assert not (tmp_path / "out" / "broken.timeline").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        sorted(f"{v.stem}.timeline" for v in good)


def test_output_names_for_one_video_and_for_several():
    from lrcn.inference.outputs import annotated_path, timeline_folder
    assert annotated_path("out.mp4", "a/clip.avi", many=False) == Path("out.mp4")
    assert annotated_path("videos", "a/clip.avi", many=True) == \
        Path("videos/clip.annotated.mp4")
    assert timeline_folder("t", "a/clip.avi", many=False) == Path("t")
    assert timeline_folder("t", "a/clip.avi", many=True) == Path("t/clip.timeline")
    assert timeline_folder(None, "a/clip.avi", many=False) == Path("clip.timeline")
    assert timeline_folder(None, "a/clip.avi", many=True) == Path("clip.timeline")
    # named by stem alone, videos that shared one wrote the same files, one over the other
    from lrcn.inference.outputs import output_names
    assert output_names(["x/a.mp4", "y/b.mp4"]) == {"x/a.mp4": "a", "y/b.mp4": "b"}
    assert output_names(["x/a.mp4", "x/a.avi", "c.avi"]) == \
        {"x/a.mp4": "a.mp4", "x/a.avi": "a.avi", "c.avi": "c"}
    assert output_names([Path("x/a.mp4"), Path("y/a.mp4"), Path("y/a.avi")]) == \
        {"x/a.mp4": "x-a.mp4", "y/a.mp4": "y-a.mp4", "y/a.avi": "a.avi"}
    assert output_names(["/v/s/a.mp4", "/v/t/u/a.mp4"]) == {"/v/s/a.mp4": "s-a.mp4",
                                                             "/v/t/u/a.mp4": "t-u-a.mp4"}
    assert output_names(["x/A.mp4", "y/a.avi"]) == {"x/A.mp4": "A.mp4", "y/a.avi": "a.avi"}
    assert output_names(["/x/a.mp4", "/y/a.mp4", "/z/x-a.mp4.avi"]) == {
        "/x/a.mp4": "x-a.mp4-1", "/y/a.mp4": "y-a.mp4", "/z/x-a.mp4.avi": "x-a.mp4-2"}


def test_videos_that_share_a_stem_get_files_of_their_own(trained_run, tiny_dataset, tmp_path):
    """lrcn predict over x/a.mp4 and y/a.mp4 with --annotate and --timeline --out: every
    video's own files (each was written over the one before, and the command said nothing)."""
    import shutil
    videos = sorted((tiny_dataset / "Bounce").iterdir())[:2]
    for folder, video in zip("xy", videos):
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(video, tmp_path / "in" / folder / "a.avi")
    result = lrcn("predict", trained_run, tmp_path / "in", "--annotate", tmp_path / "ann")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == \
        ["x-a.avi.annotated.mp4", "y-a.avi.annotated.mp4"]
    result = lrcn("predict", trained_run, tmp_path / "in" / "x" / "a.avi",
                  tmp_path / "in" / "y" / "a.avi", "--timeline", "--out", tmp_path / "tl")
    assert result.returncode == 0, result.stderr
    assert len([p for p in (tmp_path / "tl").iterdir() if (p / "timeline.json").is_file()]) == 2


def test_a_batch_reports_each_failed_file_and_goes_on(tiny_dataset, tmp_path):
    from lrcn.errors import LrcnError
    from lrcn.inference.outputs import Batch
    from lrcn.media.video import open_video

    def frames(video):                       # real work on real files
        with open_video(video) as container:
            return sum(1 for _ in container.decode(video=0))

    good = [str(p) for p in sorted((tiny_dataset / "Grow").iterdir())[:2]]
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    reported = []
    batch = Batch([good[0], str(empty), str(tmp_path / "missing.avi"), good[1]],
                  report=lambda video, exc: reported.append((video, exc.reason)))
    done = list(batch.run(frames))
    assert [video for video, _ in done] == good and all(n > 10 for _, n in done)
    assert reported == [(str(empty), "empty file (0 bytes)"),
                        (str(tmp_path / "missing.avi"), "no such file")]
    assert [video for video, _ in batch.failed] == [str(empty), str(tmp_path / "missing.avi")]
    assert batch.many
    # an error that would be the same for every file stops the batch at once
    stop = Batch([str(empty), good[0]], report=lambda *a: reported.append(a),
                 fatal=lambda exc: True)
    with pytest.raises(LrcnError, match="empty file"):
        list(stop.run(frames))
    assert len(reported) == 2 and stop.failed == []
