"""Small files that ask a decoder for a great deal: what an attacker would upload to
`lrcn serve`. Each is made in well under a second, a few KB to a few hundred KB, by PyAV and
OpenCV, or by rewriting a header field of a tiny real file. Used by tests/test_serve_limits.py
and bench/abuse.py."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def many_streams_mkv(path: Path, streams: int = 1000) -> Path:
    """An MKV with `streams` video streams of the same 3 tiny H.264 frames (as `ffmpeg -map 0:v`
    repeated): FFmpeg opens a decoder for every stream when it probes the file (about 0.8 MB
    each, 1.7 MB of file for 1000)."""
    with av.open(str(path), "w", format="matroska") as out:
        added = []
        for _ in range(streams):
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.options = {"preset": "ultrafast"}
            added.append(stream)
        packets = []
        for i in range(3):
            image = np.full((48, 64, 3), 40 * i, np.uint8)
            packets += added[0].encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
        packets += added[0].encode()
        for stream in added:
            for packet in packets:
                copy = av.Packet(bytes(packet))
                copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
                copy.stream = stream
                out.mux(copy)
    return path


class _Bits:
    """Reads and writes the bits of an H.264 RBSP (exp-Golomb codes)."""

    def __init__(self, data: bytes):
        self.bits = "".join(f"{b:08b}" for b in data)
        self.at = 0

    def u(self, n: int) -> int:
        value = int(self.bits[self.at:self.at + n], 2)
        self.at += n
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.at + zeros] == "0":
            zeros += 1
        value = int(self.bits[self.at + zeros:self.at + 2 * zeros + 1], 2) - 1
        self.at += 2 * zeros + 1
        return value


def _ue(value: int) -> str:
    code = f"{value + 1:b}"
    return "0" * (len(code) - 1) + code


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _resized_sps(nal: bytes, width: int, height: int) -> bytes:
    """A baseline-profile SPS NAL (header byte included) stating width x height (multiples of
    16), the rest of it as it was."""
    rbsp = _unescape(nal[1:])
    bits = _Bits(rbsp)
    profile = bits.u(8)
    assert profile == 66, "expects x264's baseline profile (no chroma or scaling fields)"
    bits.u(16)                       # constraint flags, level
    bits.ue()                        # seq_parameter_set_id
    bits.ue()                        # log2_max_frame_num_minus4
    if bits.ue() == 0:               # pic_order_cnt_type
        bits.ue()
    bits.ue()                        # max_num_ref_frames
    bits.u(1)                        # gaps_in_frame_num_value_allowed_flag
    head = bits.bits[:bits.at]
    bits.ue()
    bits.ue()                        # the old size in macroblocks
    tail = bits.bits[bits.at:].rstrip("0")[:-1]     # without the RBSP stop bit and padding
    body = head + _ue(width // 16 - 1) + _ue(height // 16 - 1) + tail + "1"
    body += "0" * (-len(body) % 8)
    return nal[:1] + _escape(int(body, 2).to_bytes(len(body) // 8, "big"))


def huge_h264(path: Path, width: int = 16000, height: int = 16000, frames: int = 2) -> Path:
    """A raw H.264 stream of `frames` frames whose SPS states width x height: 2 tiny frames of
    64x48, encoded, with the picture size in the SPS rewritten. A decoder allocates every frame
    at the stated size (16000x16000: 384 MB each) and conceals what the slices do not cover, as
    it would for a real file of that size; the file is about 1 KB."""
    raw = path.with_suffix(".small.h264")
    with av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast", "profile": "baseline",
                          "x264-params": "repeat-headers=1"}
        for i in range(frames):
            image = np.full((48, 64, 3), 60 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = raw.read_bytes()
    raw.unlink()
    nals = data.split(b"\x00\x00\x01")
    rewritten = [_resized_sps(nal.rstrip(b"\x00"), width, height) + b"\x00"
                 if nal and nal[0] & 0x1F == 7 else nal for nal in nals]
    path.write_bytes(b"\x00\x00\x01".join(rewritten))
    return path


def huge_jpeg(width: int = 16000, height: int = 16000) -> bytes:
    """A JPEG whose frame header (SOF) states width x height: a 16x16 JPEG with the two fields
    rewritten. libjpeg allocates the stated size (16000x16000x3: 768 MB) before it finds the
    data short; the message is under 1 KB."""
    import cv2
    jpeg = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 7] = height.to_bytes(2, "big")
    jpeg[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(jpeg)


__all__ = ["many_streams_mkv", "huge_h264", "huge_jpeg"]
