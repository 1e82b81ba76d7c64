"""What lrcn writes for people to look at, on real files made here: the H.264 writer
(media.writer), annotated videos (media.annotate) and the PNG plots (media.plots)."""
from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from lrcn.errors import LrcnError
from lrcn.media.annotate import Label, annotate_video, draw_label
from lrcn.media.plots import (plot_compare, plot_confusion, plot_curves, plot_reliability,
                              plot_timeline)
from lrcn.media.writer import VideoWriter

from conftest import decoded_index, indexed_frame


def decode_all(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def textured_frame(index: int, width: int, height: int) -> np.ndarray:
    """An indexed frame (the index survives the codec) over a smooth gradient, so that both a
    dropped or reordered frame and a shifted or darkened picture show."""
    image = indexed_frame(index, width, height)
    ramp = np.linspace(40, 215, width, dtype=np.float32)[None, :, None]
    top = height // 2
    image[height // 4:top] = np.broadcast_to(ramp, (top - height // 4, width, 3)).astype(np.uint8)
    return image


def source_with_audio(path, seconds: float, width: int, height: int, fps: int = 25,
                      audio_codec: str = "aac", fmt: str = "mp4"):
    """A video of textured indexed frames with a 440 Hz tone: AAC in MP4 (copied by the writer)
    or PCM in AVI (re-encoded to AAC)."""
    vcodec = "libx264" if fmt == "mp4" else "mpeg4"
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream(vcodec, rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "12"} if vcodec == "libx264" else {"qscale": "2"}
        a = out.add_stream(audio_codec, rate=16000)
        a.layout = "mono"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(textured_frame(i, width, height), "rgb24")
            for p in v.encode(frame):
                out.mux(p)
        samples = int(16000 * seconds)
        tone = 0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)
        sample_format = "fltp" if audio_codec == "aac" else "s16"
        for start in range(0, samples, 1024):
            chunk = tone[start:start + 1024]
            chunk = chunk.astype(np.float32) if sample_format == "fltp" else \
                (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(chunk[None], format=sample_format, layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
            for p in a.encode(frame):
                out.mux(p)
        for s in (v, a):
            for p in s.encode():
                out.mux(p)
    return path


def audio_seconds(container) -> float:
    stream = container.streams.audio[0]
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return sum(f.samples for f in container.decode(audio=0)) / stream.codec_context.sample_rate


# --- writer ------------------------------------------------------------------------------------

def test_writer_makes_browser_h264_that_decodes_to_the_same_frames(tmp_path):
    frames = [textured_frame(i, 63, 47) for i in range(30)]      # odd size: padded to even
    out = tmp_path / "sub" / "out.mp4"
    with VideoWriter(out, 63, 47, fps=12.5, crf=18) as writer:
        for image in frames:
            writer.write(image)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]   # no partial file left
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(12.5)
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")       # +faststart: plays while loading
    decoded = decode_all(out)
    assert len(decoded) == 30
    assert all(image.shape == (48, 64, 3) for image in decoded)
    assert [decoded_index(image[:47, :63]) for image in decoded] == list(range(30))
    errors = [np.abs(d[:47, :63].astype(int) - f).mean() for d, f in zip(decoded, frames)]
    assert max(errors) < 4, errors
    assert all(np.all(d[47:, :] < 30) and np.all(d[:, 63:] < 30) for d in decoded)  # black pad


def test_writer_leaves_nothing_when_writing_fails(tmp_path):
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 32, 32, fps=25) as writer:
            writer.write(indexed_frame(0, 32, 32))
            raise RuntimeError("the caller failed half-way")
    assert list(tmp_path.iterdir()) == []


# --- annotate ----------------------------------------------------------------------------------

SHOWN = Label("Running", 0.72, {"Running": 0.72, "Walking": 0.2, "Jumping": 0.08})


@pytest.mark.parametrize("fmt, audio_codec", [("mp4", "aac"), ("avi", "pcm_s16le")])
def test_annotate_video_draws_the_label_where_it_says_and_keeps_the_audio(tmp_path, fmt,
                                                                          audio_codec):
    width, height = 320, 240
    source = source_with_audio(tmp_path / f"source.{fmt}", 2.0, width, height,
                               audio_codec=audio_codec, fmt=fmt)
    times = []

    def shown_at(t):           # the first second plain, the second one labelled
        times.append(t)
        return None if t < 1.0 else SHOWN

    out = annotate_video(source, tmp_path / "annotated.mp4", shown_at)
    assert times == pytest.approx([i / 25 for i in range(50)])
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio, "the audio track was dropped"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert audio_seconds(container) == pytest.approx(2.0, abs=0.15)
    before, after = decode_all(source), decode_all(out)
    assert len(after) == len(before) == 50
    assert [decoded_index(image) for image in after] == list(range(50))
    # draw_label's box at this size: scale 0.8, 4 lines of 22 px + 8: 96 px high, 264 wide
    box = (slice(0, 96), slice(0, 264))
    outside = np.ones((height, width), bool)
    outside[:110, :280] = False                  # the box and a margin for codec spill
    for i, (a, b) in enumerate(zip(before, after)):
        diff = np.abs(a.astype(int) - b.astype(int)).mean(axis=2)
        assert diff[outside].mean() < 3, i       # nothing drawn outside the box
        if i < 25:
            assert diff.mean() < 3, i            # no label: the source's frame
        else:
            assert diff[box].mean() > 25, i      # the box darkens its corner, text on it
            assert b[box].mean() < a[box].mean() - 20, i


def test_draw_label_shows_the_label_and_its_bars():
    base = np.full((240, 320, 3), 128, np.uint8)
    one = draw_label(base.copy(), SHOWN)
    other = draw_label(base.copy(), SHOWN._replace(label="Walking"))
    title = (slice(0, 26), slice(0, 264))        # the first line: label and confidence
    assert not np.array_equal(one[title], other[title])
    np.testing.assert_array_equal(one[30:], other[30:])     # the bars do not depend on it
    # the first bar (green) is as long as its probability: 72% of the bar's width
    row = one[2 * 22 - 5]
    green = np.where((row[:, 1] > 150) & (row[:, 0] < 120))[0]
    bar_x, bar_w = int(8 * 0.8), 264 - int(16 * 0.8)
    assert green.min() == pytest.approx(bar_x, abs=1)
    assert green.max() == pytest.approx(bar_x + 0.72 * bar_w, abs=2)
    image = base.copy()
    assert draw_label(image, SHOWN) is image            # drawn in place


def test_annotate_video_refuses_a_file_that_is_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(LrcnError) as error:
        annotate_video(bad, tmp_path / "out.mp4", lambda t: SHOWN)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


# --- plots -------------------------------------------------------------------------------------

def png(path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    return image[:, :, ::-1]                     # RGB


def colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, 3), axis=0))


def share(image: np.ndarray, rgb, tolerance: int = 30) -> float:
    """The fraction of pixels close to a colour."""
    return float((np.abs(image.astype(int) - rgb).max(axis=2) <= tolerance).mean())


def test_confusion_matrix_plot(tmp_path):
    names = ["Bounce", "Grow", "SlideLeft", "SlideRight"]
    matrix = np.array([[5, 1, 0, 0], [0, 6, 0, 0], [0, 0, 3, 3], [0, 0, 2, 4]])
    plot_confusion(matrix, names, tmp_path / "cm.png", accuracy=0.75)
    image = png(tmp_path / "cm.png")
    side = round(max(4.5, 0.6 * 4 + 2.5) * 110)
    assert image.shape == (side, side, 3)
    assert colours(image) > 50
    assert share(image, (8, 48, 107)) > 0.005    # the Blues map's darkest cells (6 of 6)
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]   # no temporary file left


def test_training_curves_plot(tmp_path):
    history = [{"epoch": e, "loss": 1.5 / e, "accuracy": 0.3 + 0.1 * e,
                "val_loss": 1.6 / e + (0.3 if e == 5 else 0), "val_accuracy": 0.25 + 0.1 * e,
                "seconds": 1.0} for e in range(1, 6)]
    plot_curves(history, tmp_path / "curves.png")
    image = png(tmp_path / "curves.png")
    assert image.shape == (440, 1100, 3)
    assert colours(image) > 50
    assert share(image, (31, 119, 180), 10) > 0.001     # the train lines (matplotlib's C0)
    assert share(image, (255, 127, 14), 10) > 0.001     # the validation lines (C1)
    # without a validation split there is no validation line
    no_val = [{**row, "val_loss": float("nan"), "val_accuracy": float("nan")} for row in history]
    plot_curves(no_val, tmp_path / "train_only.png")
    image = png(tmp_path / "train_only.png")
    assert share(image, (31, 119, 180), 10) > 0.001 and share(image, (255, 127, 14), 10) == 0
    plot_curves([], tmp_path / "none.png")                # no history, no plot
    assert not (tmp_path / "none.png").exists()


def test_reliability_plot(tmp_path):
    before = [{"confidence": c, "accuracy": c * 0.7, "count": 5} for c in (0.3, 0.5, 0.7, 0.9)]
    after = [{"confidence": c, "accuracy": c * 0.95, "count": 5} for c in (0.3, 0.5, 0.7)]
    after.append({"confidence": 0.0, "accuracy": 0.0, "count": 0})   # an empty bin: not drawn
    plot_reliability(before, after, 1.7, (0.12, 0.03), tmp_path / "rel.png")
    image = png(tmp_path / "rel.png")
    assert image.shape == (550, 550, 3)
    assert colours(image) > 50
    assert share(image, (31, 119, 180), 10) > 0.0005 and share(image, (255, 127, 14), 10) > 0.0005


def test_compare_plot(tmp_path):
    rows = [{"model": m, "protocol": p, "accuracy_mean": a, "accuracy_std": 0.05}
            for m, p, a in (("lrcn", "group", 0.6), ("convlstm", "group", 0.5),
                            ("lrcn", "random", 0.9), ("convlstm", "random", 0.8))]
    plot_compare(rows, tmp_path / "compare.png")
    image = png(tmp_path / "compare.png")
    assert image.shape == (440, round((1.6 * 2 + 2) * 110), 3)
    blue, orange = share(image, (31, 119, 180), 10), share(image, (255, 127, 14), 10)
    assert blue > 0.02 and orange > 0.02
    assert orange > blue          # the random split's bars are taller (0.9, 0.8 vs 0.6, 0.5)


def test_timeline_plot(tmp_path):
    from lrcn.inference.timeline import build_timeline
    from lrcn.inference.windows import Window
    eye = np.eye(3)
    windows = [Window(i * 0.5, i * 0.5 + 2, eye[0] if i < 8 else eye[2]) for i in range(16)]
    timeline = build_timeline(["walk", "run", "jump"], windows,
                              {"duration": 9.5, "video": "/somewhere/clip.mp4"}, 1)
    plot_timeline(timeline, tmp_path / "timeline.png")
    image = png(tmp_path / "timeline.png")
    assert image.shape == (440, 1320, 3)
    assert colours(image) > 50
    assert share(image, (31, 119, 180), 10) > 0.0005      # class 0's line (tab10's first)
    assert share(image, (44, 160, 44), 10) > 0.0005       # class 2's line (tab10's third)
