"""The server's bounds: every resource a request can make `lrcn serve` spend has a limit here,
each one a serve option (README, "What keeps it standing"), and a request past one gets a 4xx
or 503 that names it.

- Uploads: how many may be received at once, and how long one may take (uploads.py).
- Decoding: pixels per frame and streams per file, checked when a file is opened, before a
  frame is decoded (media.video.decode_limits), in the decoder processes: the server process
  never opens an upload. The processes and their queue (--jobs, --queue) bound how many at once.
- The webcam socket: the size of a message, the JPEG's pixels (read from its frame header
  before decoding), how many sockets at once, and which web pages may open one (Origin).

`decode_task` is what the decoder processes run: a probe (a timeline's upload, before its job
is queued) or a clip's frames (/v1/predict), both under the decode limits.
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ErrorKind, LrcnError
from ..media.clip import read_clip_task
from ..media.video import DecodeLimits, decode_limits, open_video


@dataclass(frozen=True)
class Limits:
    max_uploads: int = 32             # uploads being received at once; more get 503
    upload_timeout: float = 120.0     # seconds for a whole upload body; slower get 408
    # Per frame, of an uploaded video or a webcam JPEG: 1080p. A timeline job's process peaks
    # at 0.6 GB on 1080p video (most of it the annotated video's encoder), at 1.1 GB on 4K.
    max_pixels: int = 1920 * 1080
    max_streams: int = 16             # streams of any kind in an uploaded file
    max_message_kb: int = 1024        # one WebSocket message (the page sends 160x120 JPEGs)
    max_cameras: int = 4              # webcam sockets open at once
    allow_origins: tuple[str, ...] = ()   # web pages (besides the server's own) that may
    #                                       open the webcam socket; "*" for any

    def decode(self) -> DecodeLimits:
        return DecodeLimits(self.max_pixels, self.max_streams)


# Demuxers' probe scores (FFmpeg's AVPROBE_SCORE_*): from 50 up, the container's signature was
# recognised (an extension alone scores 50, and uploads have none); 25 is a guess.
_RECOGNISED = 50


def _recognised_format(path: Path) -> str | None:
    """The container format FFmpeg recognises in a file it could not open (a truncated or
    damaged video), None for what is not a video at all (text, an image of noise). FFmpeg
    says which demuxer it picked only in its debug log, so the open is repeated with that log
    captured. Only in a decoder process, and only after a failed open: the log level is the
    process's."""
    import av
    import av.logging
    level = av.logging.get_level()
    av.logging.set_level(av.logging.DEBUG)
    try:
        with av.logging.Capture() as logs:
            try:
                av.open(str(path)).close()
            except av.error.FFmpegError:
                pass
    finally:
        av.logging.set_level(level)
    for _, name, message in logs:
        if message.startswith(f"Format {name} probed with size=") and "score=" in message:
            if int(message.rsplit("score=", 1)[1].split()[0]) >= _RECOGNISED:
                return name
    return None


def _failed(path: Path, reason: str, kind: ErrorKind) -> dict:
    """A task's error: the cause and its kind; a file that is not a readable video but whose
    container FFmpeg recognised is a damaged or truncated video (422), not 'not a video' (415)."""
    if kind == ErrorKind.NOT_VIDEO and "no video stream" not in reason:
        format_name = _recognised_format(path)
        if format_name is not None:
            return {"error": f"truncated or damaged video: its {format_name.split(',')[0]} "
                             f"container cannot be read ({reason})",
                    "kind": ErrorKind.BAD_INPUT.value}
    return {"error": reason, "kind": kind.value}


def decode_task(task: tuple[str, str, dict | None, dict]) -> dict:
    """For a decoder process: ("probe" or "clip", path, FrameConfig as a dict, Limits as a dict)
    -> a probe's facts ({"width", "height", "streams"}) or read_clip_task's answer, or
    {"error", "kind"}. Everything opened here is under the decode limits."""
    what, path, frames, limits = task
    with decode_limits(Limits(**limits).decode()):
        if what == "clip":
            answer = read_clip_task((path, frames))
            if "error" in answer:
                return _failed(Path(path), answer["error"], ErrorKind(answer["kind"]))
            return answer
        try:
            with open_video(path) as container:
                stream = container.streams.video[0]
                return {"width": stream.codec_context.width,
                        "height": stream.codec_context.height,
                        "streams": len(container.streams)}
        except LrcnError as exc:
            return _failed(Path(path), exc.reason, exc.kind)


def limits_dict(limits: Limits) -> dict:
    return {**asdict(limits), "allow_origins": list(limits.allow_origins)}


_SOF = {m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """A JPEG's (width, height) from its frame header (the first SOF marker, the one libjpeg
    uses), read without decoding; None when the data is not a JPEG with a frame header."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:                          # fill byte
            at += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:   # markers without a length
            at += 2
        elif marker in _SOF:
            if at + 9 > len(data):
                return None
            height = int.from_bytes(data[at + 5:at + 7], "big")
            width = int.from_bytes(data[at + 7:at + 9], "big")
            return width, height
        else:
            at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def camera_image_error(jpeg: bytes, max_pixels: int) -> str | None:
    """Why a webcam message's image is refused before decoding, or None."""
    size = jpeg_size(jpeg)
    if size is None:
        return "not a JPEG image"
    width, height = size
    if width * height > max_pixels or width == 0 or height == 0:
        return f"a JPEG of {width}x{height} pixels: the server takes at most {max_pixels} " \
               "pixels per frame (--max-pixels)"
    return None


def _is_local_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def origin_allowed(origin: str | None, host_header: str | None, config_host: str,
                   allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket from this Origin may open: a page of the server itself, or one set
    by --allow-origin. Browsers always send Origin on a WebSocket; a client that sends none is
    not a web page, so no page can use the visitor's browser through it (its token, if one is
    set, is still checked). The server's own origin is the Host the request was sent to, when
    that names the machine by address, 'localhost', or the --host the server was given: a Host
    of another name is a page that had its name point at this machine (DNS rebinding)."""
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    if "*" in allowed or origin in {a.rstrip("/").lower() for a in allowed}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not host_header:
        return False
    host = urlsplit(f"//{host_header.lower()}").hostname or ""
    return parts.netloc == host_header.lower() and (
        _is_local_name(host) or host == config_host.lower())


def host_allowed(host_header: str | None, config_host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Host names this server: an address, 'localhost', the --host it was
    given, or the host of an --allow-origin page. Any other name is a page that had its name
    point at this machine (DNS rebinding), whose same-origin reads carry no Origin to check."""
    host = urlsplit(f"//{(host_header or '').lower()}").hostname or ""
    if not host or _is_local_name(host) or host == config_host.lower() or "*" in allowed:
        return True
    return host in {urlsplit(a.lower()).hostname for a in allowed}


__all__ = ["Limits", "decode_task", "limits_dict", "jpeg_size", "camera_image_error",
           "origin_allowed", "host_allowed"]
