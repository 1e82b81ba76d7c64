"""The Python API (lrcn.load, lrcn.train, ...) on real videos made here: a tiny synthetic data
set, a model trained on it for two epochs, and its predictions on a file, on the file's
decoded frames (an array, an iterable, a cv2.VideoCapture) and over a longer video."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import lrcn
from lrcn import ErrorKind, LrcnError
from lrcn.media.clip import read_clip

CLASSES = ["SlideRight", "SlideLeft", "Grow", "Bounce"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run, data folder, cache folder): lrcn.synth then lrcn.train, 2 epochs."""
    root = tmp_path_factory.mktemp("api")
    data = lrcn.synth(root / "data", classes=CLASSES, groups=3, clips_per_group=2, width=96,
                      height=72, min_seconds=1.0, max_seconds=2.0, seed=1, workers=2,
                      progress=False)
    run = lrcn.train(data, out=root / "run", epochs=2, lr=0.005, cache=root / "cache",
                     workers=2, progress=False, log=None)
    return run, data, root / "cache"


@pytest.fixture(scope="module")
def clf(trained):
    return trained[0].classifier(backend="torch")


@pytest.fixture(scope="module")
def test_clip(trained):
    return trained[0].split["test"][0].path


def decoded(path: Path) -> np.ndarray:
    """Every frame of a file, full size, RGB, in decoding order."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_import_lrcn_imports_nothing_heavy():
    code = ("import json, sys, lrcn; heavy = ['torch', 'av', 'cv2', 'onnxruntime', 'numpy'];"
            "print(json.dumps([[m for m in heavy if m in sys.modules], lrcn.__version__,"
            " sorted(lrcn.__all__), dir(lrcn)]))")
    loaded, version, public, listed = json.loads(subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == []
    assert version == lrcn.__version__ == "0.1.0"
    assert set(public) <= set(listed)
    assert {"load", "train", "synth", "check", "compare", "Classifier", "Run"} <= set(public)
    assert all(getattr(lrcn, name) is not None for name in public)
    with pytest.raises(AttributeError):
        lrcn.no_such_name


def test_synth_and_train_make_a_run(trained):
    run, data, _ = trained
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == sorted(CLASSES)
    assert (data / "manifest.csv").exists()
    report = run.report
    assert 0 <= report["accuracy"] <= 1
    assert report["num_clips"] == len(run.split["test"]) > 0
    assert report == json.loads((run.folder / "report.json").read_text())
    assert run.checkpoint == run.folder / "model.safetensors"
    assert [row["epoch"] for row in run.history] == [1.0, 2.0]
    # settings as `lrcn train` resolves them: the seed model's defaults under the keywords
    settings = run.settings
    assert settings["model"]["name"] == "lrcn" and settings["train"]["epochs"] == 2
    assert settings["train"]["lr"] == 0.005 and settings["train"]["batch_size"] == 4
    groups = {part: {(s.class_name, s.group) for s in clips}
              for part, clips in run.split.items()}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    reopened = lrcn.Run(run.folder)
    assert reopened.report == report and reopened.checkpoint == run.checkpoint


def test_a_checkpoint_a_run_folder_and_an_exported_onnx_agree(trained, clf, test_clip):
    run = trained[0]
    onnx = run.export(run.folder / "exported.onnx")
    assert onnx.exists()
    expected = clf.predict(test_clip)
    assert set(expected.probabilities) == set(CLASSES) == set(clf.classes)
    assert clf.frame_config.num_frames == 20
    for source in (run.folder, run.checkpoint, onnx):
        got = lrcn.load(source).predict(test_clip)
        assert got.label == expected.label, source
        for name, p in expected.probabilities.items():
            assert got.probabilities[name] == pytest.approx(p, abs=1e-4), source


def test_frames_an_array_and_a_capture_classify_like_the_file(clf, test_clip):
    from lrcn.api import model_frames
    from lrcn.media.clip import read_clip
    by_path = clf.predict(test_clip)
    rgb = decoded(test_clip)
    # Not bit-identical to the file: a decoded frame is converted from YUV at the model's
    # size, an RGB image (converted at full size first) is only resized, so chroma rounds
    # differently by a few levels.
    file_frames = read_clip(test_clip, clf.frame_config).frames.astype(int)
    array_frames = model_frames(rgb, clf.frame_config)[0].astype(int)
    assert array_frames.shape == file_frames.shape
    assert np.abs(array_frames - file_frames).mean() < 2.0
    results = {"array": clf.predict(rgb),
               "bgr array": clf.predict(np.ascontiguousarray(rgb[..., ::-1]), channels="bgr"),
               "iterable": clf.predict(iter(list(rgb))),
               "capture": clf.predict(cv2.VideoCapture(str(test_clip)))}
    for how, got in results.items():
        assert got.label == by_path.label, how
        for name, p in by_path.probabilities.items():
            assert got.probabilities[name] == pytest.approx(p, abs=0.01), how
    # the same frames by another route: the same numbers
    assert results["iterable"].probabilities == results["array"].probabilities
    assert results["array"].path == "<array>" and results["capture"].path == "<cv2.VideoCapture>"
    three = clf.predict(rgb, views=3)
    assert three.label == clf.predict(test_clip, views=3).label


def colour_frames(count: int) -> np.ndarray:
    """Frame j is one flat grey level 10 * j + 5: which frame came back is read off its pixel."""
    return np.stack([np.full((48, 64, 3), 10 * j + 5, np.uint8) for j in range(count)])


@pytest.mark.parametrize("count,expected", [
    (5, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]),   # padded by repeats
    (20, list(range(20))),
    (24, [0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 21, 22, 23]),
])
def test_frames_are_sampled_as_read_clip_samples_a_file(clf, count, expected):
    from lrcn.api import model_frames
    for video in (colour_frames(count), iter(list(colour_frames(count)))):
        frames, _ = model_frames(video, clf.frame_config)
        assert frames.shape == (20, 64, 64, 3)
        assert [(int(f[0, 0, 0]) - 5) // 10 for f in frames] == expected


def test_top_k_and_reject_below(trained, clf, test_clip):
    full = clf.predict(test_clip)
    top = clf.predict(test_clip, top_k=2)
    ranked = sorted(full.probabilities.items(), key=lambda kv: -kv[1])
    assert list(top.probabilities.items()) == ranked[:2]
    assert top.label == full.label == ranked[0][0]
    assert clf.predict(test_clip, top_k=10).probabilities == dict(ranked)
    doubtful = lrcn.load(trained[0].folder, reject_below=max(full.probabilities.values())
                         + 1e-3).predict(test_clip)
    assert doubtful.label == "unknown"


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    from lrcn.data.synth import make_long_video
    video = tmp_path_factory.mktemp("long") / "long.mp4"
    make_long_video(video, [("SlideRight", 2), ("Bounce", 2)], seed=3, width=96, height=72,
                    min_seconds=1.0, max_seconds=2.0)
    return video


def test_timeline_of_a_longer_video(trained, clf, long_video, tmp_path):
    video = long_video
    timeline = clf.timeline(video, stride=0.5, out=tmp_path / "tl",
                            annotate=tmp_path / "labelled.mp4")
    assert timeline.files == {"json": tmp_path / "tl" / "timeline.json",
                              "segments": tmp_path / "tl" / "segments.csv",
                              "windows": tmp_path / "tl" / "windows.csv",
                              "plot": tmp_path / "tl" / "timeline.png",
                              "video": tmp_path / "labelled.mp4"}
    assert all(path.is_file() and path.stat().st_size > 0 for path in timeline.files.values())
    duration = timeline.facts["duration"]
    assert duration > 4
    segments = timeline.segments
    assert segments[0].start == 0 and segments[-1].end == pytest.approx(duration)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(segments, segments[1:]))
    assert sum(s.windows for s in segments) == len(timeline.windows) > 4
    saved = json.loads((tmp_path / "tl" / "timeline.json").read_text())
    assert len(saved["windows"]) == len(timeline.windows)
    assert (tmp_path / "tl" / "timeline.png").stat().st_size > 0
    assert len(decoded(tmp_path / "labelled.mp4")) == timeline.facts["frames"]
    with pytest.raises(LrcnError) as error:
        clf.timeline(colour_frames(20))
    assert error.value.kind is ErrorKind.SETTING
    with pytest.raises(LrcnError) as error, open(video, "rb") as opened:
        clf.timeline(opened)                  # an open file: a timeline opens its video twice
    assert error.value.kind is ErrorKind.SETTING
    assert "needs a video file's path, not BufferedReader" in str(error.value)
    assert "write the bytes to a file first" in str(error.value)


def test_timeline_defaults_are_window_configs_and_out_none_writes_nothing(
        clf, long_video, tmp_path, monkeypatch):
    from lrcn.inference.timeline import timeline_for_video
    from lrcn.inference.windows import WindowConfig
    monkeypatch.chdir(tmp_path)
    before = sorted(long_video.parent.iterdir())
    timeline = clf.timeline(long_video)             # span, stride, smooth, out: left out
    assert timeline.files == {}
    assert list(tmp_path.iterdir()) == [] and sorted(long_video.parent.iterdir()) == before
    explicit = timeline_for_video(clf.engine, long_video,
                                  WindowConfig(reject_below=clf.reject_below))
    defaults = WindowConfig()
    assert timeline.facts["smoothing"] == defaults.smooth == 3
    step, stride = defaults.resolve(clf.engine.clip_seconds, clf.frame_config.num_frames)
    assert timeline.facts["span"] == pytest.approx(explicit.facts["span"])
    assert timeline.facts["stride"] == explicit.facts["stride"] == pytest.approx(stride * step)
    assert [(w.start, w.end) for w in timeline.windows] == \
        [(w.start, w.end) for w in explicit.windows]
    np.testing.assert_allclose(timeline.smoothed, explicit.smoothed, atol=1e-6)
    assert [(s.label, s.start, s.end) for s in timeline.segments] == \
        [(s.label, s.start, s.end) for s in explicit.segments]
    # a setting given is used: a longer stride gives fewer windows
    assert len(clf.timeline(long_video, stride=2 * explicit.facts["stride"]).windows) < \
        len(explicit.windows)


def test_predict_many_reports_a_bad_file_and_goes_on(clf, test_clip, tmp_path):
    missing = tmp_path / "missing.avi"
    results = clf.predict_many([missing, test_clip, colour_frames(3)])
    assert results[0].error == f"{missing}: no such file" and results[0].label is None
    assert results[0].error_kind == "not_found"
    assert results[0].as_dict() == {"path": str(missing), "error": f"{missing}: no such file",
                                    "error_kind": "not_found"}
    assert results[1].error_kind is None and "error_kind" not in results[1].as_dict()
    assert results[1].label == clf.predict(test_clip).label
    assert results[2].path == "<array>"


def test_bad_inputs_are_one_line_errors(clf, trained, tmp_path):
    afile, adir = tmp_path / "notes.txt", tmp_path / "made.onnx"
    cases = [(lambda: clf.predict(np.zeros((20, 64, 64, 3), np.float32)), ErrorKind.SETTING,
              "not float32 (20, 64, 64, 3)"),
             (lambda: clf.predict(np.zeros((64, 64, 3), np.uint8)), ErrorKind.SETTING,
              "(T, H, W, 3) uint8"),
             (lambda: clf.predict([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)]),
              ErrorKind.SETTING, "frame 1: "),
             (lambda: clf.predict([]), ErrorKind.SETTING, "no frames"),
             (lambda: clf.predict(42), ErrorKind.SETTING, "not int"),
             (lambda: clf.predict(colour_frames(3), channels="yuv"), ErrorKind.SETTING,
              "channels"),
             (lambda: clf.predict(colour_frames(3), views=0), ErrorKind.SETTING, "views"),
             (lambda: clf.predict(colour_frames(3), top_k=0), ErrorKind.SETTING, "top_k"),
             (lambda: clf.predict(cv2.VideoCapture(str(tmp_path / "none.avi"))),
              ErrorKind.NOT_FOUND, "not open"),
             (lambda: lrcn.load(trained[0].folder, reject_below=1.5), ErrorKind.SETTING,
              "reject_below"),
             (lambda: lrcn.synth(tmp_path / "s", classes=["Juggle"]), ErrorKind.SETTING,
              "Juggle"),
             (lambda: lrcn.train(trained[1], model="resnet", out=tmp_path / "r"), None,
              "unknown model 'resnet'"),
             # found by a notebook user: each was a TypeError, IndexError or KeyError
             (lambda: clf.predict(np.zeros((3, 0, 0, 3), np.uint8)), ErrorKind.SETTING,
              "T, H, W >= 1"),
             (lambda: clf.predict([np.zeros((0, 4, 3), np.uint8)]), ErrorKind.SETTING,
              "frame 0: "),
             (lambda: clf.predict_many("clip.avi"), ErrorKind.SETTING, "not one path"),
             (lambda: clf.predict_many(tmp_path), ErrorKind.SETTING, "not one path"),
             (lambda: clf.timeline(tmp_path / "v.mp4", smooth=2.5), ErrorKind.SETTING,
              "smooth must be a whole number"),
             (lambda: clf.timeline(tmp_path / "v.mp4", span="2"), ErrorKind.SETTING,
              "span must be a number"),
             (lambda: lrcn.load(trained[0].folder, reject_below=None), ErrorKind.SETTING,
              "reject_below must be a number"),
             (lambda: lrcn.load(None), ErrorKind.SETTING, "not NoneType"),
             (lambda: lrcn.load(trained[0].folder, precision="int4"), ErrorKind.SETTING,
              "int8"),
             (lambda: lrcn.Run(tmp_path / "nope"), ErrorKind.NOT_FOUND, "no such run folder"),
             (lambda: trained[0].evaluate(split="bogus"), ErrorKind.SETTING,
              "unknown split part 'bogus'"),
             (lambda: trained[0].evaluate(views=0), ErrorKind.SETTING, "views must be"),
             (lambda: trained[0].evaluate(views=1.5), ErrorKind.SETTING, "views must be"),
             (lambda: trained[0].evaluate(data=trained[1], split="val"), ErrorKind.SETTING,
              "with a data folder every clip"),
             (lambda: lrcn.train(trained[1], size=64.0, out=tmp_path / "r"), ErrorKind.SETTING,
              "size must be"),
             (lambda: lrcn.train(trained[1], size=(64,), out=tmp_path / "r"),
              ErrorKind.SETTING, "size must be"),
             (lambda: lrcn.compare(trained[1], repeats=0, out=tmp_path / "c"),
              ErrorKind.SETTING, "repeats must be"),
             (lambda: trained[0].evaluate(out=afile), ErrorKind.SETTING, "is a file"),
             (lambda: lrcn.synth(afile), ErrorKind.SETTING, "is a file"),
             (lambda: trained[0].export(adir), ErrorKind.SETTING, "is a folder"),
             (lambda: trained[0].export(tmp_path / "m.txt"), ErrorKind.SETTING,
              "an ONNX export is named .onnx, not .txt"),
             (lambda: trained[0].export(tmp_path / "m", quantize="int8"), ErrorKind.SETTING,
              "not without a suffix")]
    afile.write_text("mine")
    adir.mkdir()
    for call, kind, words in cases:
        with pytest.raises(LrcnError) as error:
            call()
        message = str(error.value)
        assert words in message and "\n" not in message, message
        assert kind is None or error.value.kind is kind, message
    assert afile.read_text() == "mine" and not (tmp_path / "c").exists()
    assert not (tmp_path / "m.txt").exists() and not (tmp_path / "m").exists()
    assert len(clf.predict(colour_frames(3), top_k=np.int64(2)).probabilities) == 2  # NumPy
    for call, named in [(lambda: clf.predict(tmp_path / "missing.avi"), "missing.avi"),
                        (lambda: lrcn.load(tmp_path / "nothing"), "nothing"),
                        (lambda: lrcn.load(tmp_path / "nothing.onnx"), "nothing.onnx")]:
        with pytest.raises(LrcnError) as error:
            call()
        assert error.value.path.endswith(named) and str(error.value).startswith(
            str(tmp_path)), str(error.value)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained run's classifier as an exported .onnx file (whole: it cannot be split)."""
    return lrcn.load(trained[0].export(tmp_path_factory.mktemp("onnx") / "model.onnx"))


def _cli(*argv: str):
    """`lrcn ARGV`'s command, called as main() calls it, so that its LrcnError is seen."""
    from lrcn.arguments import build_parser
    from lrcn.cli import COMMANDS
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    return COMMANDS[args.command](args)


def _stream(onnx, clip, tmp):
    from lrcn.inference.stream import run_stream
    from lrcn.inference.windows import WindowConfig
    return run_stream(onnx.engine, str(clip), WindowConfig())


def _camera(onnx, clip, tmp):
    from lrcn.inference.stream import CameraWindow
    return CameraWindow(onnx.engine, 3)


def _views(onnx, clip, tmp):
    from lrcn.inference.predict import Predictor
    return Predictor(onnx.engine, views=0)


def _top_k(onnx, clip, tmp):
    from lrcn.inference.predict import prediction_of
    return prediction_of(["a", "b"], np.array([0.4, 0.6]), top_k=0)


# Each refusal's kind: a file that is not there is NOT_FOUND wherever it is named; what cannot
# be done with the settings given (an ONNX file that cannot be split, a device ONNX Runtime
# cannot use, a value out of range) is SETTING.
@pytest.mark.parametrize("call, kind", [
    (lambda onnx, clip, tmp: read_clip(tmp / "missing.avi", onnx.frame_config),
     ErrorKind.NOT_FOUND),
    (lambda onnx, clip, tmp: lrcn.load(tmp / "run"), ErrorKind.NOT_FOUND),
    (lambda onnx, clip, tmp: lrcn.load(tmp / "model.onnx"), ErrorKind.NOT_FOUND),
    (lambda onnx, clip, tmp: _cli("serve", str(tmp / "model.onnx")), ErrorKind.NOT_FOUND),
    (lambda onnx, clip, tmp: lrcn.load(tmp / "model.onnx", device="mps"), ErrorKind.SETTING),
    (lambda onnx, clip, tmp: onnx.timeline(clip), ErrorKind.SETTING),
    (_stream, ErrorKind.SETTING),
    (_camera, ErrorKind.SETTING),
    (lambda onnx, clip, tmp: onnx.engine.features(np.zeros((1, 64, 64, 3), np.uint8)),
     ErrorKind.SETTING),
    (_views, ErrorKind.SETTING),
    (_top_k, ErrorKind.SETTING),
    (lambda onnx, clip, tmp: _cli("synth", str(tmp / "s"), "--classes", "Juggle"),
     ErrorKind.SETTING),
    (lambda onnx, clip, tmp: _cli("train"), ErrorKind.SETTING)],
    ids=["video", "run folder", "onnx", "serve", "onnx on mps", "onnx timeline",
         "onnx stream", "onnx camera", "onnx features", "views 0", "top_k 0", "synth class",
         "train without data"])
def test_error_kinds(exported, test_clip, tmp_path, call, kind):
    with pytest.raises(LrcnError) as error:
        call(exported, test_clip, tmp_path)
    assert error.value.kind is kind, str(error.value)
    assert list(tmp_path.iterdir()) == []             # a refusal leaves nothing behind


def test_check_scans_the_data_set(trained):
    _, data, cache = trained
    report = lrcn.check(data, cache=cache, workers=0, progress=False)
    assert sorted(row["class"] for row in report["classes"]) == sorted(CLASSES)
    assert report["clips"] == report["readable"] == 4 * 3 * 2
    assert all(row["groups"] == 3 for row in report["classes"])
    assert not [p for p in report["problems"] if p["kind"] in ("unreadable", "missing")]


def test_evaluating_another_part_keeps_the_run_s_test_report(trained, tmp_path):
    """evaluate(split="val") wrote its report over the run's test report (report.json and
    the plots), and said nowhere which clips it covered."""
    import shutil
    run = lrcn.Run(shutil.copytree(trained[0].folder, tmp_path / "run"))
    before = (run.folder / "report.json").read_bytes()
    report = run.evaluate(split="val", cache=trained[2], workers=2, progress=False)
    assert report["evaluated"] == "the run's val split"
    assert report["num_clips"] == len(run.split["val"])
    saved = json.loads((run.folder / "eval-val" / "report.json").read_text())
    assert saved["num_clips"] == report["num_clips"]
    assert (run.folder / "eval-val" / "confusion_matrix.png").is_file()
    assert (run.folder / "report.json").read_bytes() == before
    assert run.report["num_clips"] == len(run.split["test"])


def test_an_annotated_video_never_replaces_the_video_it_reads(clf, trained, long_video,
                                                              tmp_path):
    """annotate= naming the input wrote the annotated re-encode over the user's video."""
    import shutil
    video = shutil.copy(long_video, tmp_path / "mine.mp4")
    original = video.read_bytes()
    with pytest.raises(LrcnError) as error:
        clf.timeline(video, annotate=video)
    assert error.value.kind is ErrorKind.SETTING and "is the video being read" in str(error.value)
    for args in (["--timeline"], []):        # the CLI, with and without a timeline
        spelled = os.path.join(tmp_path, ".", "mine.mp4")      # not the same string
        done = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(trained[0].folder),
                               str(video), "--annotate", spelled, *args],
                              capture_output=True, text=True)
        assert done.returncode == 2 and "is the video being read" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert video.read_bytes() == original


def test_compare_into_a_folder_that_holds_a_comparison_is_refused(trained, tmp_path):
    """A second lrcn.compare into the same out= trained its runs again in place and replaced
    the table with one of other models, leaving the first models' runs beside it."""
    for held in ("compare.json", "group"):
        out = tmp_path / held
        (out / held).parent.mkdir(parents=True, exist_ok=True)
        (out / held).write_text("{}") if held.endswith(".json") else (out / held).mkdir()
        with pytest.raises(LrcnError) as error:
            lrcn.compare(trained[1], models="lrcn", repeats=1, epochs=1, out=out, log=None)
        assert error.value.kind is ErrorKind.SETTING
        assert f"already holds a comparison ({held})" in str(error.value)
        assert sorted(p.name for p in out.iterdir()) == [held]
