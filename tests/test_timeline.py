"""Long videos and streams on real video files: feature reuse gives the same windows as running
each window from scratch, segments, outputs, audio kept, and `lrcn stream` on a file and a pipe.
(Recovering known classes and boundaries with a trained model is in test_demo.py.)"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import VideoReformatter

from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.media.clip import read_clip
from lrcn.config import FrameConfig, ModelConfig
from lrcn.inference.engine import make_engine
from lrcn.inference.sessions import usable_cores
from lrcn.models.lrcn import LRCN
from lrcn.inference.predict import Predictor, annotate
from lrcn.media.sampling import sample_indices
from lrcn.inference.stream import run_stream
from lrcn.inference.timeline import annotate_timeline, build_timeline, score_video, timeline_for_video, \
    write_timeline
from lrcn.media.video import to_model_frame
from lrcn.inference.windows import TrailingAverage, Window, WindowConfig, smooth

from conftest import indexed_frame, remux, write_h264, write_video


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(4)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "m.safetensors", LRCN(ModelConfig(num_classes=3)),
                           FrameConfig(), ["a", "b", "c"], clip_seconds=2.0)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """12 s at 25 fps: every frame distinct (moving bars + frame index stripe)."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    frames = []
    for i in range(300):
        image = indexed_frame(i, 96, 72)
        image[:, (i * 3) % 96] = (255, 0, 0)
        frames.append(image)
    return write_video(path, frames, fps=25, codec="h264_mp4")


def all_small_frames(path, frames=FrameConfig()):
    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        return [to_model_frame(f, frames, reformatter) for f in container.decode(video=0)]


# 12 s and windows of 2 s: 120 grid instants 0.1 s apart, window k starting at instant k * m.
# A stride of 0.5 s is m = 5 steps (the last window starts at instant 100: 21 windows), 0.3 s is
# m = 3 (the last at 99: 34), 1.7 s is m = 17 (the last at 85: 6).
@pytest.mark.parametrize("stride, windows_expected", [(0.0, 21), (0.3, 34), (1.7, 6)])
def test_feature_reuse_equals_each_window_from_scratch(checkpoint, long_video, stride,
                                                       windows_expected):
    engine = make_engine(load_checkpoint(checkpoint))
    config = WindowConfig(stride=stride, batch=7)  # odd batch: windows complete mid-batch
    windows, facts = score_video(engine, long_video, config, clip_seconds=2.0)
    step = facts["grid_step"]
    assert facts["span"] == pytest.approx(2.0) and facts["frames"] == 300
    frames = all_small_frames(long_video)
    assert len(windows) == windows_expected
    for window in windows:
        first = round(window.start / step)
        # the frame on screen at each grid instant (j + 0.5) * step
        picks = [int((first + t + 0.5) * step * 25 + 1e-9) for t in range(20)]
        scratch = engine.probabilities(np.stack([frames[i] for i in picks]))
        np.testing.assert_allclose(window.probabilities, scratch, atol=1e-5)
        # the check can fail: the same window one frame late is measurably different
        late = engine.probabilities(np.stack([frames[i + 1] for i in picks]))
        assert np.abs(late - scratch).max() > 1e-4
        assert window.end - window.start == pytest.approx(2.0)


@pytest.mark.skipif(usable_cores() < 2, reason="one usable core: no CNN threads")
def test_a_long_file_runs_its_cnn_in_threads_with_the_same_windows(checkpoint, long_video):
    """A file over two windows long has its CNN batches run in the timeline's threads while
    frames are decoded (ONNX Runtime, one-thread runs of one session): the windows are the
    ones the engine gives one batch at a time, in order."""
    from lrcn.media.video import FrameSource
    from lrcn.inference.windows import WindowScorer
    engine = make_engine(load_checkpoint(checkpoint))
    assert engine.backend == "onnx"
    config = WindowConfig(stride=0.3, batch=5)      # many batches, in flight at once
    threads = set()
    windows, facts = score_video(engine, long_video, config, clip_seconds=2.0, progress=lambda t:
                                 threads.update(th.name for th in threading.enumerate()))
    assert any(name.startswith("lrcn-timeline") for name in threads)
    step, stride = config.resolve(2.0, engine.frame_config.num_frames)
    serial = WindowScorer(engine, step, stride, batch=5, keep_early=False)  # no executor
    expected = []
    with FrameSource.open(long_video) as source:
        for item in source.frames():
            expected += serial.push(item.frame, item.time)
        expected += serial.finish(source.end_time)
    assert len(windows) == len(expected) == 34
    for got, want in zip(windows, expected):
        assert (got.start, got.end) == (want.start, want.end)
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)


def test_a_video_shorter_than_a_window_gets_one_window(checkpoint, tmp_path):
    engine = make_engine(load_checkpoint(checkpoint))
    video = write_video(tmp_path / "short.avi", [indexed_frame(i, 64, 48) for i in range(30)],
                        fps=25)
    windows, facts = score_video(engine, video, WindowConfig(), clip_seconds=4.0)
    assert len(windows) == 1 and windows[0].end == pytest.approx(1.2)
    assert windows[0].probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_a_file_shorter_than_its_header_says_gets_the_window_of_its_frames(checkpoint, tmp_path):
    """A file whose header states it is over two windows long is read without keeping the
    frames before the first window (they are needed only for a video shorter than one
    window). One cut short (a download that stopped: the header states 8 s, 1 s decodes) is
    then shorter than a window after all: it gets the same window as when those frames are
    kept, read again by read_clip."""
    from lrcn.media.fastdecode import header_seconds
    from lrcn.media.video import FrameSource
    from lrcn.inference.windows import WindowScorer
    engine = make_engine(load_checkpoint(checkpoint))
    from lrcn.media.writer import VideoWriter
    whole = tmp_path / "whole.mp4"               # H.264, the header (moov) first
    noise = np.random.default_rng(0)
    with VideoWriter(whole, 96, 72, 25) as out:
        for i in range(200):          # half noise: the frames' bytes, not the header's, count
            frame = indexed_frame(i % 256, 96, 72).copy()
            frame[36:] = noise.integers(0, 256, (36, 96, 3))
            out.write(frame)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:len(data) // 4])
    config = WindowConfig(span=2.0, smooth=1)
    with FrameSource.open(cut) as source:
        assert header_seconds(source.container, source.stream) == pytest.approx(8.0)
        step, stride = config.resolve(2.0, engine.frame_config.num_frames)
        kept = WindowScorer(engine, step, stride, keep_early=True)   # the frames kept
        for item in source.frames():
            kept.push(item.frame, item.time)
        expected = kept.finish(source.end_time)
    assert len(expected) == 1 and expected[0].end < 2.0
    windows, facts = score_video(engine, cut, config)
    assert len(windows) == 1 and facts["duration"] == pytest.approx(expected[0].end)
    assert windows[0].start == 0.0 and windows[0].end == pytest.approx(expected[0].end)
    np.testing.assert_allclose(windows[0].probabilities, expected[0].probabilities, atol=1e-6)
    # ... and it is said to be cut short, as predict and stream say it (the CLI's warning line)
    assert facts["warning"].startswith("header claims 200 frames, 46 decoded")
    assert timeline_for_video(engine, cut, config).warning == facts["warning"]
    # the whole file is long: its windows do not depend on keeping the early frames
    windows, facts = score_video(engine, whole, config)
    assert len(windows) > 1 and windows[0].end == pytest.approx(2.0)
    assert "warning" not in facts


def test_segments_merge_windows_and_split_time_between_them():
    eye = np.eye(3)
    labels = [0, 0, 0, 1, 1, 2, 2, 2]
    windows = [Window(i * 1.0, i * 1.0 + 4.0, eye[k] * 0.8 + 0.2 / 3) for i, k in
               enumerate(labels)]
    timeline = build_timeline(["a", "b", "c"], windows, {"duration": 11.5, "video": "v"}, 1)
    assert [s.label for s in timeline.segments] == ["a", "b", "c"]
    # window i speaks for [i + 1.5, i + 2.5): boundaries halfway between window centres
    assert [(s.start, s.end) for s in timeline.segments] == [(0.0, 4.5), (4.5, 6.5),
                                                             (6.5, 11.5)]
    assert timeline.segments[0].confidence == pytest.approx(0.8 + 0.2 / 3)
    assert timeline.label_at(5.0)[0] == "b" and timeline.label_at(11.0)[0] == "c"
    # a one-window blip is smoothed away by a centred average of 3
    probs = np.stack([eye[k] for k in [0, 0, 1, 0, 0]])
    assert smooth(probs, 3).argmax(1).tolist() == [0, 0, 0, 0, 0]
    # a stream has no future: its average is of the windows so far (TrailingAverage)
    trailing = TrailingAverage(2)
    assert [trailing.add(p) for p in probs][2].tolist() == [0.5, 0.5, 0.0]


def test_timeline_files_and_annotated_video_with_audio(checkpoint, tmp_path):
    video = tmp_path / "talk.mp4"
    _video_with_audio(video, seconds=6)
    engine = make_engine(load_checkpoint(checkpoint))
    timeline = timeline_for_video(engine, video, WindowConfig(), clip_seconds=2.0)
    paths = write_timeline(timeline, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["classes"] == ["a", "b", "c"] and data["segments"]
    assert data["segments"][0]["start"] == 0 and data["segments"][-1]["end"] == pytest.approx(6)
    rows = list(csv.DictReader(paths["segments"].open()))
    assert [r["label"] for r in rows] == [s["label"] for s in data["segments"]]
    windows = list(csv.DictReader(paths["windows"].open()))
    assert len(windows) == len(data["windows"]) and set(windows[0]) >= {"start", "a", "b"}
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = annotate_timeline(video, timeline, tmp_path / "annotated.mp4")
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio, "the audio track was dropped"
        audio_seconds = float(container.streams.audio[0].duration *
                              container.streams.audio[0].time_base)
        assert audio_seconds == pytest.approx(6, abs=0.2)
        assert sum(1 for _ in container.decode(video=0)) == 150


def _video_with_audio(path, seconds: int, fps: int = 25):
    with av.open(str(path), "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 96, 72, "yuv420p"
        v.options = {"preset": "ultrafast"}
        a = out.add_stream("aac", rate=44100)
        a.layout = "mono"
        for i in range(seconds * fps):
            for p in v.encode(av.VideoFrame.from_ndarray(indexed_frame(i, 96, 72), "rgb24")):
                out.mux(p)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(44100 * seconds) / 44100))
        for start in range(0, len(tone), 1024):
            chunk = tone[start:start + 1024].astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            frame.time_base = Fraction(1, 44100)
            for p in a.encode(frame):
                out.mux(p)
        for s in (v, a):
            for p in s.encode():
                out.mux(p)
    return path


def lrcn(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, stdin=stdin, timeout=300)


def test_cli_timeline(checkpoint, long_video, tmp_path):
    result = lrcn("predict", checkpoint, long_video, "--timeline", "--out", tmp_path / "t",
                  "--stride", "0.5", "--smooth", "1")
    assert result.returncode == 0, result.stderr
    assert "windows of 2.00 s every 0.50 s" in result.stdout
    data = json.loads((tmp_path / "t" / "timeline.json").read_text())
    assert len(data["windows"]) == 21   # 12 s: windows of 2 s starting 0, 0.5, ..., 10 s
    assert (tmp_path / "t" / "timeline.png").exists()
    bad = lrcn("predict", checkpoint, tmp_path / "missing.mp4", "--timeline")
    assert bad.returncode == 2 and "missing.mp4: no such file" in bad.stderr   # bad input
    assert "Traceback" not in bad.stderr


def test_stream_from_a_file_and_from_a_pipe(checkpoint, long_video, tmp_path):
    result = lrcn("stream", checkpoint, long_video, "--annotate", tmp_path / "live.mp4")
    assert result.returncode == 0, result.stderr
    changes = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert changes and changes[0].startswith("[00:00:02.000]")  # first window ends at 2 s
    assert "end of stream: 300 frames (12.0 s)" in result.stdout
    with av.open(str(tmp_path / "live.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 300
    # a pipe: an MPEG-TS stream on stdin, as from `ffmpeg ... -f mpegts -` or a camera tool
    ts = remux(long_video, tmp_path / "cam.ts", "mpegts")
    with ts.open("rb") as stdin:
        piped = lrcn("stream", checkpoint, "-", stdin=stdin)
    assert piped.returncode == 0, piped.stderr
    assert "end of stream: 300 frames" in piped.stdout
    assert [line for line in piped.stdout.splitlines() if line.startswith("[")] == changes


def test_a_stream_stopped_with_ctrl_c_keeps_its_video_and_exits_130(checkpoint, long_video,
                                                                    tmp_path):
    """Ctrl-C ends a camera's stream: the summary and the annotated video so far are written,
    and the status is Ctrl-C's 130, as for every command (it was 0, which the README's table
    of exit codes contradicted)."""
    import signal
    process = subprocess.Popen([sys.executable, "-m", "lrcn", "stream", str(checkpoint),
                                str(long_video), "--realtime", "--annotate",
                                str(tmp_path / "live.mp4")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().startswith("streaming ")    # it is reading the video
    time.sleep(2.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "stopped by Ctrl-C: " in out and "Traceback" not in err
    with av.open(str(tmp_path / "live.mp4")) as container:
        assert 0 < sum(1 for _ in container.decode(video=0)) < 300


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_is_streamed_and_refused_in_one_line_where_a_file_is_needed(
        checkpoint, long_video, tmp_path):
    """`lrcn stream CKPT PIPE` reads a named pipe as it comes, as it reads stdin. predict
    needs a file (it may read one twice): it says so, where it said "empty file (0 bytes)"."""
    ts = remux(long_video, tmp_path / "cam.ts", "mpegts")
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as out:       # waits for the reader, as a camera tool would
            out.write(ts.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    streamed = lrcn("stream", checkpoint, fifo)
    writer.join(timeout=60)
    assert streamed.returncode == 0, streamed.stderr
    assert "end of stream: 300 frames" in streamed.stdout
    for command in (("predict", checkpoint, fifo), ("predict", checkpoint, fifo, "--timeline")):
        refused = lrcn(*command)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert f"{fifo}: is a named pipe, not a file" in line
        assert "lrcn stream CHECKPOINT PIPE" in line


def test_a_pipe_is_read_as_fast_as_it_comes_and_an_unstreamable_mp4_is_told_the_fix(
        checkpoint, long_video, tmp_path, monkeypatch):
    """A pipe is not a camera: the 12 s video, piped as MPEG-TS, is not paced to 12 s. An MP4
    with its moov at the end (the way most writers leave it, long_video too) cannot be read
    from a pipe: refused in one line that names the fixes."""
    import io
    import types
    ts = remux(long_video, tmp_path / "cam.ts", "mpegts")
    engine = make_engine(load_checkpoint(checkpoint))
    with ts.open("rb") as pipe:
        monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=pipe))
        started = time.perf_counter()
        result = run_stream(engine, "-", WindowConfig(), out=io.StringIO())
        seconds = time.perf_counter() - started
    assert result.frames == 300 and result.skipped == 0
    assert seconds < 11.9, seconds          # paced, the last frame (11.96 s) comes after 11.96 s
    with long_video.open("rb") as stdin:
        piped = lrcn("stream", checkpoint, "-", stdin=stdin)
    assert piped.returncode == 2 and "Traceback" not in piped.stderr
    [line] = piped.stderr.strip().splitlines()
    assert line.startswith("lrcn: error: -: an MP4 with its index (moov) at the end")
    for fix in ("-movflags +faststart", "frag_keyframe+empty_moov", "-f mpegts",
                "pass the file's path"):
        assert fix in line


def test_stream_skips_frames_when_behind_and_says_so(checkpoint, tmp_path):
    video = write_video(tmp_path / "cam.avi", [indexed_frame(i, 64, 48) for i in range(75)])
    engine = make_engine(load_checkpoint(checkpoint))
    import io
    printed = io.StringIO()
    # max_lag below zero: always "behind", so every CNN frame after the first is skipped
    result = run_stream(engine, str(video), WindowConfig(), 1.0, realtime=True, max_lag=-1,
                        out=printed)
    assert result.frames == 75 and result.skipped > 0 and result.windows > 0
    assert f"{result.skipped} frames skipped to keep up" in printed.getvalue()


def test_stream_errors_are_one_line(checkpoint, tmp_path):
    result = lrcn("stream", checkpoint, tmp_path / "nope.mp4")
    assert result.returncode == 2 and "nope.mp4: no such file, camera or URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def phone_video(tmp_path_factory):
    """Variable frame rate, as phones record: 4 s at 10 fps, then 4 s at 40 fps (8 s)."""
    times = [100 * i for i in range(40)] + [4000 + 25 * i for i in range(160)]
    return write_h264(tmp_path_factory.mktemp("vfr") / "phone.mp4", 200, times_ms=times,
                      size=(96, 72))


@pytest.mark.parametrize("span", [8.0, 20.0])   # the whole video; longer than the video
def test_windows_see_the_frames_read_clip_sees_on_variable_frame_rate_video(
        checkpoint, phone_video, span):
    """A window over the whole video is a clip: the timeline and the stream take the frames
    read_clip takes, by time, not by index / average rate."""
    engine = make_engine(load_checkpoint(checkpoint))
    clip = read_clip(phone_video)
    assert clip.timing == "time"
    expected = engine.probabilities(clip.frames)
    # the check can fail: index sampling (what a constant rate would give) sees other frames
    frames = all_small_frames(phone_video)
    by_index = engine.probabilities(np.stack([frames[i] for i in sample_indices(200, 20)]))
    assert list(clip.indices) != sample_indices(200, 20)
    assert np.abs(by_index - expected).max() > 1e-4

    config = WindowConfig(span=span, stride=8.0, smooth=1)
    windows, facts = score_video(engine, phone_video, config)
    assert facts["duration"] == pytest.approx(8.0) and len(windows) == 1
    assert (windows[0].start, windows[0].end) == (0.0, pytest.approx(8.0))
    np.testing.assert_allclose(windows[0].probabilities, expected, atol=1e-5, rtol=0)

    import io
    streamed = []
    result = run_stream(engine, str(phone_video), config, on_window=streamed.append,
                        out=io.StringIO())
    assert result.frames == 200 and result.seconds == pytest.approx(8.0)
    assert len(streamed) == 1
    np.testing.assert_allclose(streamed[0].probabilities, expected, atol=1e-5, rtol=0)


def test_every_annotated_video_keeps_the_audio(checkpoint, tmp_path):
    """predict --annotate, the timeline's and the stream's annotated videos: one writer."""
    video = _video_with_audio(tmp_path / "talk.mp4", seconds=4)
    predictor = Predictor(make_engine(load_checkpoint(checkpoint)))
    outputs = [annotate(video, predictor.predict_file(video), tmp_path / "clip.mp4")]
    import io
    run_stream(predictor.engine, str(video), WindowConfig(), annotate=tmp_path / "live.mp4",
               out=io.StringIO())
    outputs.append(tmp_path / "live.mp4")
    for out in outputs:
        with av.open(str(out)) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert container.streams.audio, f"{out.name}: the audio track was dropped"
            audio = container.streams.audio[0]
            assert float(audio.duration * audio.time_base) == pytest.approx(4, abs=0.2)
            assert sum(1 for _ in container.decode(video=0)) == 100


def test_reject_below_says_unknown_for_clips_timelines_and_streams(checkpoint, long_video,
                                                                    tmp_path):
    """A model knows only its classes: below the threshold, "unknown" (this untrained model
    gives each of its 3 classes about a third)."""
    clip = lrcn("predict", checkpoint, long_video, "--json", "--reject-below", "0.9")
    [result] = json.loads(clip.stdout)
    assert result["label"] == "unknown" and result["probability"] < 0.9
    assert set(result["probabilities"]) == {"a", "b", "c"}
    plain = json.loads(lrcn("predict", checkpoint, long_video, "--json").stdout)[0]
    expected = Predictor.load(checkpoint).predict_file(long_video)   # the same engine: auto
    assert plain["label"] == expected.label == max(expected.probabilities,
                                                   key=expected.probabilities.get)
    assert plain["probability"] == pytest.approx(expected.probability, abs=1e-5)
    assert plain["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)
    assert plain["probabilities"] == result["probabilities"]
    timeline = lrcn("predict", checkpoint, long_video, "--timeline", "--out", tmp_path / "t",
                    "--reject-below", "0.9")
    assert timeline.returncode == 0, timeline.stderr
    data = json.loads((tmp_path / "t" / "timeline.json").read_text())
    assert [s["label"] for s in data["segments"]] == ["unknown"]
    assert data["facts"]["reject_below"] == 0.9
    stream = lrcn("stream", checkpoint, long_video, "--reject-below", "0.9")
    changes = [line for line in stream.stdout.splitlines() if line.startswith("[")]
    assert changes and all(" unknown (" in line for line in changes)
    bad = lrcn("predict", checkpoint, long_video, "--reject-below", "1.5")
    assert bad.returncode == 2 and "must be in [0, 1)" in bad.stderr


def test_top_k_keeps_the_most_probable_classes_in_order(checkpoint, long_video):
    predictor = Predictor.load(checkpoint)
    every = predictor.predict_file(long_video)
    assert list(every.probabilities) == ["a", "b", "c"]          # the classes' order
    best = predictor.predict_file(long_video, top_k=2)
    ranked = sorted(every.probabilities, key=every.probabilities.get, reverse=True)
    assert list(best.probabilities) == ranked[:2]
    assert best.probabilities == {k: every.probabilities[k] for k in ranked[:2]}
    assert best.label == every.label == ranked[0]
    assert best.probability == every.probability == every.probabilities[ranked[0]]
