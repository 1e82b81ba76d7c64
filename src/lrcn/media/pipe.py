"""A video on a pipe (`lrcn stream RUN -`): what FFmpeg cannot read from one is refused up front
with the fix. An MP4 whose index (the moov box) follows its media data needs a seek to the end
that a pipe cannot do; FFmpeg then fails later, with "Invalid data found when processing
input" and no hint. Only the top-level box headers at the start are looked at, and given back
to the reader unchanged.
"""
from __future__ import annotations

from ..errors import ErrorKind, LrcnError

# What a pipe needs to carry an MP4, for the message when it is not that.
PIPE_MP4_FIX = ("make it streamable (ffmpeg -i IN -c copy -movflags +faststart OUT.mp4), send "
                "a fragmented MP4 (-movflags frag_keyframe+empty_moov) or MPEG-TS (-f mpegts), "
                "or pass the file's path instead of a pipe")

# What a named pipe is good for, for the message where a file is needed.
PIPE_USE = ("`lrcn stream CHECKPOINT PIPE` reads one as it comes; predict, a timeline and "
            "evaluate need a file")


class _Replayed:
    """A pipe whose first bytes were read to look at them: read() gives them again first."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n is None or n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data


def _read_exact(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def checked_pipe(stream, name: str = "-", limit: int = 1 << 20) -> _Replayed:
    """`stream` (a pipe) ready for PyAV, refused in one line when it is an MP4 whose index
    (the moov box) comes after its media data (mdat): a pipe cannot seek to the end for it,
    and FFmpeg would fail later with "Invalid data". Only the top-level box headers are read
    (at most `limit` bytes, then it is let through); a fragmented MP4 or a faststart one has
    its moov first."""
    head = _read_exact(stream, 8)
    if head[4:8] != b"ftyp":
        return _Replayed(head, stream)
    offset = 0
    while len(head) < limit:
        box = head[offset:offset + 8]
        if len(box) < 8:
            more = _read_exact(stream, offset + 8 - len(head))
            head += more
            if not more:
                break
            continue
        size, kind = int.from_bytes(box[:4], "big"), box[4:8]
        if kind == b"moov":
            break
        if kind == b"mdat":
            raise LrcnError("an MP4 with its index (moov) at the end cannot be read from a "
                            f"pipe: {PIPE_MP4_FIX}", name, ErrorKind.NOT_VIDEO)
        if size < 8:            # 0 (to the end) or 1 (a 64-bit size): not a header box
            break
        offset += size
        if offset > len(head):
            head += _read_exact(stream, offset - len(head))
    return _Replayed(head, stream)


__all__ = ["PIPE_MP4_FIX", "checked_pipe"]
