"""Shared helpers: real video files made in the tests, small and fast.

`write_indexed_video` paints frame i with its index in binary, so a test can tell which frame
came back, even through a lossy codec."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

# Under pytest-xdist (`-n 2`), each worker and the processes its tests start run torch's kernels
# on one thread: two workers of two threads each were four busy threads on two cores, and the
# suite was no faster than one worker. Set before any test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(config, items):
    """The slow tests first, where a run selects them (`-m "slow or not slow"`): with `-n 2
    --dist loadfile` the demo's file starts at once on one worker while the other takes the
    rest, instead of running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)   # a stable sort


def pytest_terminal_summary(terminalreporter):
    """Say why the demo test did not run, where pyproject.toml's `-m 'not slow'` left it out
    (`pytest tests/test_demo.py` otherwise says only "1 deselected")."""
    deselected = terminalreporter.stats.get("deselected", [])
    if any(getattr(item, "get_closest_marker", lambda _: None)("slow") for item in deselected):
        terminalreporter.write_line("the demo's end-to-end test (marked slow) is outside the "
                                    "default run: add -m slow to run it")


REALCLIPS = Path(__file__).resolve().parents[2] / "shared" / "realclips" / "ucf"
if not REALCLIPS.is_dir():  # CI clones main beside shared/, sessions work in a checkout
    REALCLIPS = Path(os.environ.get("LRCN_REALCLIPS", "/work/shared/realclips/ucf"))

# (container format, codec, pixel format, suffix)
CODECS = {
    "xvid_avi": ("avi", "mpeg4", "yuv420p", ".avi"),
    "h264_mp4": ("mp4", "libx264", "yuv420p", ".mp4"),
    "vp9_webm": ("webm", "libvpx-vp9", "yuv420p", ".webm"),
    "mjpeg_avi": ("avi", "mjpeg", "yuvj420p", ".avi"),
    # With B-frames: the decoders whose unwanted non-reference frames lrcn skips.
    "hevc_mp4": ("mp4", "libx265", "yuv420p", ".mp4"),
    "mpeg2_ts": ("mpegts", "mpeg2video", "yuv420p", ".ts"),
    "mpeg4_mp4": ("mp4", "mpeg4", "yuv420p", ".mp4"),
}

def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers and torchrun)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lrcn_server(args: list, tmp: Path, logs: Path) -> tuple[subprocess.Popen, str, Path]:
    """`lrcn ARGS --port P` (serve or studio) started as a user starts it, its temporary files
    in `tmp`, its output in a log in the folder `logs`; (the process, its URL, the log) once
    /healthz answers."""
    import httpx      # here: the decoding tests' small environments have no HTTP client
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = logs / f"{args[0]}-{port}.log"
    process = subprocess.Popen([sys.executable, "-m", "lrcn", *map(str, args),
                                "--port", str(port)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env={**os.environ, "TMPDIR": str(tmp)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url, log
        except httpx.HTTPError:
            time.sleep(0.2)
        assert process.poll() is None, log.read_text()
    process.kill()
    raise AssertionError(f"{args[0]} did not start: {log.read_text()}")


def stop_lrcn_server(process: subprocess.Popen) -> int:
    """SIGTERM, as a service manager stops it; its exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


BITS = 8  # frame index as 8 black/white stripes: survives any codec and any resize


def indexed_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame `index`: its index in binary as vertical stripes in the lower half, and a red
    top-left corner that tells RGB from BGR and shows orientation."""
    image = np.full((height, width, 3), 128, np.uint8)
    for bit in range(BITS):
        if (index >> bit) & 1:
            image[height // 2:, bit * width // BITS:(bit + 1) * width // BITS] = 255
        else:
            image[height // 2:, bit * width // BITS:(bit + 1) * width // BITS] = 0
    image[: height // 4, : width // 4] = (255, 0, 0)
    return image


def write_video(path: Path, frames, fps: float = 25, codec: str = "xvid_avi",
                options: dict | None = None, rotation: int | None = None,
                container_options: dict | None = None) -> Path:
    """`options`: the encoder's; `container_options`: the muxer's (e.g. {"movflags":
    "faststart"}: the MP4's index before its frames, as streaming sites write them)."""
    fmt, codec_name, pix_fmt, _ = CODECS[codec]
    frames = list(frames)
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", format=fmt, options=container_options or {}) as out:
        stream = out.add_stream(codec_name, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec_name == "mpeg4":
            if fmt == "avi":
                stream.codec_context.codec_tag = "XVID"
            stream.options = {"bf": "2", "qscale": "2", **(options or {})}
        elif codec_name == "mpeg2video":
            stream.options = {"bf": "2", "qscale": "2", **(options or {})}
        elif codec_name == "libx265":
            stream.options = {"crf": "8", "preset": "ultrafast",
                              "x265-params": "bframes=3:log-level=error", **(options or {})}
        elif codec_name == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast", "bf": "2", **(options or {})}
        elif codec_name == "libvpx-vp9":
            stream.options = {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    if rotation is not None:
        set_mp4_rotation(path, rotation)
    return path


# The display matrix of an MP4 track (tkhd, 16.16 fixed point; w in 2.30) for a rotation, as
# FFmpeg writes it (and PyAV 18's set_display_rotation); u, v and the translations are zero.
_MATRICES = {-90: (0, 1, -1, 0), 90: (0, -1, 1, 0), 180: (-1, 0, 0, -1), -180: (-1, 0, 0, -1)}


def set_mp4_rotation(path: Path, degrees: int) -> None:
    """Give an MP4's video track a rotation, by its track header's matrix: works with every
    PyAV (set_display_rotation is PyAV 18+)."""
    import struct
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0, "a version-0 track header"
    matrix = at + 4 + 4 + 20 + 8 + 8            # version/flags, times..duration, reserved, layer..
    a, b, c, d = _MATRICES[degrees]
    data[matrix:matrix + 36] = struct.pack(">9i", a << 16, b << 16, 0, c << 16, d << 16, 0,
                                           0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def remux(source: Path, target: Path, fmt: str) -> Path:
    """Copy a video's packets into another container format (no re-encoding)."""
    with av.open(str(source)) as src, av.open(str(target), "w", format=fmt) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return target


def write_h264(path, count, keyint=25, times_ms=None, size=(64, 48)):
    """An H.264 MP4 with B-frames; frame i shows index i % 256; optional per-frame times."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast", "bf": "2", "g": str(keyint)}
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(indexed_frame(i % 256, *size), "rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_indexed_video(path: Path, count: int, codec: str = "xvid_avi", width: int = 64,
                        height: int = 48, fps: float = 25) -> Path:
    return write_video(path, (indexed_frame(i, width, height) for i in range(count)), fps, codec)


def decoded_index(frame: np.ndarray) -> int:
    """Which frame of an indexed video this (resized) frame is."""
    h, w = frame.shape[:2]
    row = frame[3 * h // 4, :, 1].astype(int)
    return sum(1 << bit for bit in range(BITS)
               if row[int((bit + 0.5) * w / BITS)] > 128)


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """Module and session fixtures are set up before the per-test cache below: they get this
    one (frames, and the engine's ONNX graphs), never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LRCN_CACHE_DIR", str(tmp_path_factory.mktemp("session-cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own frame cache, never the user's."""
    monkeypatch.setenv("LRCN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic data set in UCF layout (4 classes incl. a time-reversed pair)."""
    from lrcn.data.synth import SynthConfig, make_dataset
    root = tmp_path_factory.mktemp("tiny") / "data"
    make_dataset(root, SynthConfig(classes=("SlideRight", "SlideLeft", "Grow", "Bounce"),
                                   groups=3, clips_per_group=2, width=96, height=72,
                                   min_seconds=1.0, max_seconds=2.0, seed=1),
                 workers=2, progress=False)
    return root
