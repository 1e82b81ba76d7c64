"""Decoding: exact frames on several codecs and containers, short clips, lying headers,
rotation, and bad files."""
from __future__ import annotations

import re

import av
import numpy as np
import pytest

from conftest import (CODECS, REALCLIPS, decoded_index, indexed_frame, remux, write_h264,
                      write_indexed_video, write_video)
from lrcn.media.clip import read_clip, read_clip_task
from lrcn.config import FrameConfig
from lrcn.errors import LrcnError
from lrcn.media.sampling import sample_indices


def full_decode_reference(path, frames: FrameConfig) -> list[np.ndarray]:
    """Every frame of a plain sequential decode, converted exactly as lrcn converts."""
    from av.video.reformatter import VideoReformatter
    reformatter = VideoReformatter()
    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out.append(reformatter.reformat(
                frame, width=frames.width, height=frames.height, format="rgb24",
                interpolation=frames.interpolation.upper()).to_ndarray())
    return out


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("count", [7, 20, 53])
def test_frames_are_exactly_those_of_a_full_decode(tmp_path, codec, count):
    path = write_indexed_video(tmp_path / f"clip{CODECS[codec][3]}", count, codec)
    clip = read_clip(path)
    reference = full_decode_reference(path, FrameConfig())
    assert clip.num_frames == len(reference) == count
    assert clip.indices == tuple(sample_indices(count, 20))
    assert clip.frames.shape == (20, 64, 64, 3) and clip.frames.dtype == np.uint8
    for got, index in zip(clip.frames, clip.indices):
        np.testing.assert_array_equal(got, reference[index])
        assert decoded_index(got) == index


def test_rgb_and_bgr_channel_orders(tmp_path):
    path = write_video(tmp_path / "c.avi", [indexed_frame(i, 64, 64) for i in range(20)],
                       codec="mjpeg_avi")
    rgb = read_clip(path, FrameConfig(channel_order="rgb")).frames
    bgr = read_clip(path, FrameConfig(channel_order="bgr")).frames
    corner = rgb[0, :8, :8].reshape(-1, 3).mean(0)
    assert corner[0] > 200 and corner[2] < 60       # red is channel 0 in RGB
    np.testing.assert_array_equal(rgb[..., ::-1], bgr)


def _patch_avi_frame_count(path, factor):
    """Make the AVI header claim `factor` times the real frame count (as some real UCF files
    do), in both the main header (avih) and the stream header (strh)."""
    data = bytearray(path.read_bytes())
    avih = data.index(b"avih")
    total = int.from_bytes(data[avih + 24:avih + 28], "little")
    data[avih + 24:avih + 28] = (total * factor).to_bytes(4, "little")
    strh = data.index(b"strh")
    length = int.from_bytes(data[strh + 40:strh + 44], "little")
    data[strh + 40:strh + 44] = (length * factor).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return length


def test_a_lying_frame_count_does_not_shift_the_frames(tmp_path):
    path = write_indexed_video(tmp_path / "liar.avi", 31, "xvid_avi")
    real = _patch_avi_frame_count(path, 2)
    assert real == 31
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 62     # the header now lies
    clip = read_clip(path)
    assert clip.num_frames == 31
    assert clip.indices == tuple(sample_indices(31, 20))
    assert [decoded_index(f) for f in clip.frames] == list(clip.indices)


def test_a_raw_stream_without_frame_count(tmp_path):
    # An MPEG-4 elementary stream (.m4v) has no container header, hence no count or duration.
    source = write_indexed_video(tmp_path / "src.avi", 26, "xvid_avi")
    raw = remux(source, tmp_path / "raw.m4v", "m4v")
    clip = read_clip(raw)
    assert clip.num_frames == 26
    assert [decoded_index(f) for f in clip.frames] == list(sample_indices(26, 20))


def test_short_clip_is_padded_by_repeating_frames(tmp_path):
    path = write_indexed_video(tmp_path / "short.mp4", 6, "h264_mp4")
    clip = read_clip(path)
    assert clip.num_frames == 6
    assert [decoded_index(f) for f in clip.frames] == sample_indices(6, 20)
    assert clip.frames.shape[0] == 20


def test_rotation_metadata_is_honoured(tmp_path):
    frames = [indexed_frame(i, 96, 48) for i in range(20)]
    path = write_video(tmp_path / "phone.mp4", frames, codec="h264_mp4", rotation=-90)
    clip = read_clip(path, FrameConfig(height=64, width=64))
    plain = read_clip(write_video(tmp_path / "plain.mp4", frames, codec="h264_mp4"))
    # The red corner is top-left when stored; rotated -90 (clockwise) for display it is top-right.
    red = lambda img: img[..., 0].astype(int) - img[..., 2].astype(int) > 100
    assert red(plain.frames[0])[:8, :8].all()
    assert red(clip.frames[0])[:8, -8:].all() and not red(clip.frames[0])[:8, :8].any()


@pytest.mark.parametrize("make, cause, kind", [
    (lambda p: None, "no such file", "not_found"),
    (lambda p: p.write_bytes(b""), "empty file", "bad_input"),
    (lambda p: p.write_text("this is not a video\n" * 50), "not a readable video", "not_video"),
    (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)),
     "not a readable video|no video", "not_video"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, make, cause, kind):
    path = tmp_path / "bad.avi"
    make(path)
    with pytest.raises(LrcnError) as info:
        read_clip(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert re.search(cause, message)
    # the kind says what went wrong (the server's HTTP status follows it), the reason is the
    # cause without the path: what a worker process sends back
    assert info.value.kind.value == kind and message == f"{path}: {info.value.reason}"
    assert read_clip_task((str(path), {})) == {"error": info.value.reason, "kind": kind}


def test_audio_only_file_is_refused(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    with pytest.raises(LrcnError, match="no video stream"):
        read_clip(path)


def test_truncated_file_gives_its_good_frames_or_an_error(tmp_path):
    path = write_indexed_video(tmp_path / "cut.avi", 60, "xvid_avi", width=160, height=120)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.7)])
    for threads in (0, 1):   # 1: the worker path, whose B-frame skipping must give way
        try:
            clip = read_clip(path, threads=threads)
        except LrcnError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert 20 <= clip.num_frames < 60
            assert [decoded_index(f) for f in clip.frames] == list(clip.indices)


@pytest.mark.skipif(not REALCLIPS.is_dir(), reason="../shared/realclips not present")
def test_real_ucf_clips_match_a_full_decode():
    from lrcn.media.fastdecode import decode_mpeg4_skipping
    files = sorted(REALCLIPS.glob("*/*.avi"))
    packed = [p for p in files if _b_frames(p)]
    files = sorted(set(files[::4] + packed[::2]))    # a spread of classes, and packed B-frames
    assert files and packed
    for path in files:
        reference = full_decode_reference(path, FrameConfig())
        # threads=1 is the worker processes' path, where unkept B-frames are not decoded.
        for clip in (read_clip(path), read_clip(path, threads=1)):
            assert clip.num_frames == len(reference), path
            for got, index in zip(clip.frames, clip.indices):
                np.testing.assert_array_equal(got, reference[index], err_msg=str(path))
    for path in packed[::2]:   # the skipping decode took these files, not the fallback
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = "SLICE", 1
            assert decode_mpeg4_skipping(container, stream, {5}, lambda f: f.pict_type) is not None


def _b_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(int(f.pict_type) == 3 for f in container.decode(video=0))


@pytest.mark.parametrize("count", [7, 20, 95])
def test_xvid_b_frames_are_skipped_exactly_on_one_thread(tmp_path, count):
    """Worker processes (threads=1) decode XviD without the B-frames they do not keep."""
    from lrcn.media.fastdecode import decode_mpeg4_skipping
    path = write_indexed_video(tmp_path / "b.avi", count, "xvid_avi")
    assert _b_frames(path) > count // 3
    reference = full_decode_reference(path, FrameConfig())
    clip = read_clip(path, threads=1)
    assert clip.num_frames == count and clip.indices == tuple(sample_indices(count, 20))
    for got, index in zip(clip.frames, clip.indices):
        np.testing.assert_array_equal(got, reference[index])
        assert decoded_index(got) == index
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        keep = set(range(1, count, 3))
        result = decode_mpeg4_skipping(container, stream, keep, lambda f: int(f.pict_type))
    assert result is not None and result[0] == count     # no fallback; every frame counted
    assert sorted(result[1]) == sorted(keep)
    assert 3 in result[1].values()                       # wanted B-frames are decoded


def test_long_video_is_read_by_keyframe_seeking_with_the_same_frames(tmp_path):
    path = write_h264(tmp_path / "long.mp4", 3000, keyint=25)
    seeked = read_clip(path)
    whole = read_clip(path, seek=False)
    assert seeked.seeked and not whole.seeked
    assert seeked.num_frames == whole.num_frames == 3000
    assert seeked.indices == whole.indices == tuple(sample_indices(3000, 20))
    assert np.array_equal(seeked.frames, whole.frames)
    assert [decoded_index(f) for f in seeked.frames] == [i % 256 for i in seeked.indices]


@pytest.mark.parametrize("codec", ["h264_mp4", "hevc_mp4", "mpeg2_ts", "mpeg4_mp4"])
def test_unwanted_non_reference_frames_are_skipped_and_the_rest_are_exact(tmp_path, codec):
    from lrcn.media.fastdecode import decode_skipping
    path = write_indexed_video(tmp_path / f"b{CODECS[codec][3]}", 120, codec)

    def decoded(wanted_pts):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return pts, [f.pts for f in decode_skipping(stream.codec_context,
                                                        container.demux(stream),
                                                        wanted_pts(pts))]

    pts, every = decoded(set)                                  # every frame wanted:
    assert every == pts                                        # all decoded, in order
    _, fewer = decoded(lambda pts: set())
    assert len(fewer) < 0.9 * len(pts)                         # B-frames were not decoded
    _, some = decoded(lambda pts: set(pts[1::7]))
    assert set(pts[1::7]) <= set(some)                         # wanted ones never skipped
    reference = full_decode_reference(path, FrameConfig())
    for threads in (1, 0):
        clip = read_clip(path, threads=threads)
        assert clip.num_frames == 120
        for got, index in zip(clip.frames, clip.indices):
            np.testing.assert_array_equal(got, reference[index])


def test_variable_frame_rate_is_sampled_evenly_in_time(tmp_path):
    # 4 s at 10 fps, then 4 s at 40 fps: index sampling would take 16 of 20 frames from the
    # second half; time sampling takes 10 from each.
    times = [100 * i for i in range(40)] + [4000 + 25 * i for i in range(160)]
    clip = read_clip(write_h264(tmp_path / "phone.mp4", 200, times_ms=times))
    assert clip.timing == "time" and clip.num_frames == 200
    expected = [int(((i + 0.5) * 8000 / 20) // 100) if (i + 0.5) * 400 < 4000 else
                40 + int(((i + 0.5) * 400 - 4000) // 25) for i in range(20)]
    assert list(clip.indices) == expected
    assert [decoded_index(f) for f in clip.frames] == expected
    steady = read_clip(write_h264(tmp_path / "steady.mp4", 200))
    assert steady.timing == "index" and list(steady.indices) == sample_indices(200, 20)


def test_a_one_pixel_video_gives_frames(tmp_path):
    path = tmp_path / "dot.avi"
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "bgr24"  # AVI's raw order
        for i in range(30):
            image = np.array([[[200, 40, 10]]], np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    clip = read_clip(path)
    assert clip.frames.shape == (20, 64, 64, 3) and clip.num_frames == 30
    assert np.abs(clip.frames.reshape(-1, 3).mean(0) - [200, 40, 10]).max() < 3
