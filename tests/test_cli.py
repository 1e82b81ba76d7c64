"""The command line end to end on real (small, synthetic) video files, and its errors."""
from __future__ import annotations

import json
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
                 "--config", str(settings), "--quiet", "--workers", "2"])
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
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds" and len(history) == 3
    split = json.loads((trained_run / "split.json").read_text())
    groups = {part: {e["group"] for e in split[part]} for part in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])
    assert not (groups["val"] & groups["test"])
    assert sum(len(split[p]) for p in ("train", "val", "test")) == 24
    report = json.loads((trained_run / "report.json").read_text())
    assert report["num_clips"] == len(split["test"])
    assert sum(map(sum, report["confusion_matrix"])) == len(split["test"])
    config = json.loads((trained_run / "config.json").read_text())
    # layers: a flag beats the config file (epochs), which beats the defaults (lr, split)
    assert config["train"]["epochs"] == 2 and config["train"]["lr"] == 0.002
    assert config["train"]["batch_size"] == 4 and config["train"]["patience"] == 15
    assert config["split"] == {"test_fraction": 0.25, "val_fraction": 0.3, "seed": 27}
    assert config["model"]["lstm_units"] == 32


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


def test_training_skips_and_lists_broken_files(tiny_dataset, tmp_path):
    import shutil
    data = tmp_path / "salted"
    shutil.copytree(tiny_dataset, data)
    (data / "Grow" / "v_Grow_g01_c09.avi").write_bytes(b"")
    (data / "Bounce" / "v_Bounce_g02_c09.avi").write_text("text, not video")
    result = lrcn("train", data, "--out", tmp_path / "run", "--epochs", "1", "--quiet",
                  "--no-evaluate")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 unreadable video(s):" in result.stderr
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


def test_argument_validation():
    result = lrcn("train", "data", "--epochs", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr
