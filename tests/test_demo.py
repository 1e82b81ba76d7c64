"""`lrcn demo` end to end, as a newcomer runs it: real synthetic videos, training, an honest
group-aware evaluation and an annotated prediction. Slow (a few minutes on 2 cores)."""
import json
import subprocess
import sys

import av
import pytest


# The bars sit below the worst runs measured, with a margin (issue 20). Measured 2026-12-02,
# seeds 0-5 of the demo in CI's two environments (Python 3.11/torch 2.13.0/PyAV 18.1.0 and Python
# 3.13/torch 2.14.1/PyAV 19.0.2), one torch thread as here (`OMP_NUM_THREADS=1 python
# bench/demo_seeds.py --start 0 --seeds 6`; README): test accuracy 0.973-1.000 (seed 0, the one
# this test runs: 0.987 and 0.973); the time-reversed pairs 0.960-1.000; the timeline's time
# right 0.865-0.999 (seed 0: 0.927 and 0.865). Bars: 7 points under the worst accuracy, 11
# under the worst pair, 11 under the worst timeline (wide: another machine's torch rounds
# differently, a draw of its own).
MIN_ACCURACY = 0.90
MIN_PAIR = 0.85
MIN_TIMELINE_RIGHT = 0.75
# Outside the default run (pyproject.toml): `python -m pytest -m slow` runs it alone, on the
# default threads, as a newcomer runs the demo; CI does. The bars above were measured on one
# thread; seed 0 on two threads gave 97.3% (README). The time limit guards against a hang, not
# a slow machine: beside the other test worker the demo took 811 s on 2026-12-03's machine.
DEMO_TIMEOUT = 1800


@pytest.mark.slow
def test_demo_reaches_90_percent_including_the_time_reversed_pairs(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "lrcn", "demo", "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=DEMO_TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "demo.json").read_text())
    report = json.loads((out / "run" / "report.json").read_text())
    assert summary["test_accuracy"] == report["accuracy"] >= MIN_ACCURACY
    names = report["classes"]
    matrix = report["confusion_matrix"]
    for a, b in (("SlideLeft", "SlideRight"), ("Grow", "Shrink")):
        i, j = names.index(a), names.index(b)
        pair_total = sum(matrix[i]) + sum(matrix[j])
        pair_correct = matrix[i][i] + matrix[j][j]
        assert pair_correct / pair_total >= MIN_PAIR, (a, b, matrix)
    with av.open(summary["annotated_video"]) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    for key in ("checkpoint", "report", "confusion_matrix", "curves", "history"):
        assert key.replace("_", " ") in result.stdout and summary[key] in result.stdout
    print(f"demo: {summary['seconds']} s, test accuracy {report['accuracy']:.3f}")
    _shuffled_frames_lose_the_time_reversed_pairs(out, report)
    _timeline_recovers_known_actions(out / "run", tmp_path)


def _shuffled_frames_lose_the_time_reversed_pairs(out, report):
    """The frame-order ablation: with each clip's frames shuffled, the pairs that differ only
    by the order of frames fall to chance or below (the LSTM uses order), and the run's own
    report and recorded test metrics are left as they were."""
    result = subprocess.run([sys.executable, "-m", "lrcn", "evaluate", str(out / "run"),
                             "--shuffle-frames", "--cache", str(out / "cache"), "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    shuffled = json.loads((out / "run" / "shuffled-frames" / "report.json").read_text())
    assert shuffled["frame_order"] == "shuffled (seed 0)"
    names, matrix = shuffled["classes"], shuffled["confusion_matrix"]
    for a, b in (("SlideLeft", "SlideRight"), ("Grow", "Shrink")):
        i, j = names.index(a), names.index(b)
        right = (matrix[i][i] + matrix[j][j]) / (sum(matrix[i]) + sum(matrix[j]))
        assert right <= 0.5, (a, b, matrix)          # chance between the two, or worse
    assert shuffled["accuracy"] < report["accuracy"] - 0.3
    assert json.loads((out / "run" / "report.json").read_text()) == report
    info = subprocess.run([sys.executable, "-m", "lrcn", "info", str(out / "run"), "--json"],
                          capture_output=True, text=True)
    assert json.loads(info.stdout)["info"]["test_metrics"]["accuracy"] == report["accuracy"]


def _timeline_recovers_known_actions(run, tmp_path):
    """A long recording the model never saw (a new scene), stitched from performances of
    known classes, each as long as the model's typical training clip: the timeline's
    segments give all but at most one part its class (by the majority of the part's time: the
    demo model confuses Spin and Bounce in some scenes, as it does some clips), at least
    MIN_TIMELINE_RIGHT of the time is labelled right, and a segment boundary lies within half
    a window of every true change of action."""
    from lrcn.models.checkpoint import load_checkpoint
    from lrcn.data.synth import make_long_video
    span = load_checkpoint(run).clip_seconds
    plan = [("SlideRight", 3), ("Grow", 3), ("Spin", 3), ("SlideLeft", 3), ("Shrink", 3)]
    video = tmp_path / "long.mp4"
    truth = make_long_video(video, plan, seed=2026, min_seconds=span, max_seconds=span)
    result = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(run), str(video),
                             "--timeline", "--out", str(tmp_path / "tl"), "--stride", str(span),
                             "--smooth", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    segments = json.loads((tmp_path / "tl" / "timeline.json").read_text())["segments"]
    right, parts_right = 0.0, 0
    for true in truth:
        overlap: dict[str, float] = {}
        for seg in segments:
            both = min(seg["end"], true["end"]) - max(seg["start"], true["start"])
            if both > 0:
                overlap[seg["label"]] = overlap.get(seg["label"], 0) + both
        parts_right += max(overlap, key=overlap.get) == true["label"]
        right += overlap.get(true["label"], 0)
    assert parts_right >= len(truth) - 1, result.stdout
    assert right / truth[-1]["end"] >= MIN_TIMELINE_RIGHT, result.stdout
    starts = [seg["start"] for seg in segments]
    for true in truth[1:]:
        assert min(abs(s - true["start"]) for s in starts) <= span / 2 + 0.1, (true, starts)


def test_the_demo_keeps_its_data_set_only_if_this_generator_wrote_it_with_its_settings(
        tmp_path, capsys):
    """A demo folder from another version of lrcn (older generator: no synth.json, or another
    version number) or of other settings is written again, with no file of the old one left;
    the same settings reuse it; a folder that is not synthetic data is refused in one line."""
    from lrcn.data.synth import SynthConfig
    from lrcn.errors import LrcnError
    from lrcn.training.demo import demo_data

    def files(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    tiny = SynthConfig(classes=("Grow", "Shrink"), groups=2, clips_per_group=1, width=48,
                       height=32, min_seconds=0.3, max_seconds=0.5)
    data = tmp_path / "data"
    demo_data(data, tiny, workers=0, quiet=True)
    first = files(data)
    assert "synth.json" in first and len(first) == 2 + 2 * 2
    stamp = (data / "manifest.csv").stat().st_mtime_ns
    capsys.readouterr()
    demo_data(data, tiny, workers=0, quiet=True)                   # the same: kept
    assert "already at" in capsys.readouterr().out
    assert (data / "manifest.csv").stat().st_mtime_ns == stamp
    other = SynthConfig(**{**tiny.__dict__, "groups": 3, "clips_per_group": 2, "seed": 1})
    demo_data(data, other, workers=0, quiet=True)                  # other settings: again
    assert "writing it again" in capsys.readouterr().out
    rows = (data / "manifest.csv").read_text().splitlines()[1:]
    assert files(data) == sorted(["manifest.csv", "synth.json"] + [r.split(",")[0] for r in rows])
    assert len(rows) == 2 * 3 * 2
    (data / "synth.json").unlink()                                 # as an older lrcn left it
    demo_data(data, other, workers=0, quiet=True)
    assert "writing it again" in capsys.readouterr().out and (data / "synth.json").is_file()
    record = json.loads((data / "synth.json").read_text())
    (data / "synth.json").write_text(json.dumps({**record, "generator": 1}))
    demo_data(data, other, workers=0, quiet=True)
    assert "writing it again" in capsys.readouterr().out
    foreign = tmp_path / "foreign"
    (foreign / "Dogs").mkdir(parents=True)
    (foreign / "manifest.csv").write_text("path,label\n")
    with pytest.raises(LrcnError, match="lrcn synth did not write") as refused:
        demo_data(foreign, tiny, workers=0, quiet=True)
    assert str(foreign) in str(refused.value) and (foreign / "Dogs").is_dir()
