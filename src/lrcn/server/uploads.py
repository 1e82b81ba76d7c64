"""Receiving an upload: a raw body or the first file part of a multipart form, streamed to a
file (never read whole into memory), with the server's bounds on it: its size (413, as soon as
it is passed, or at once when Content-Length says so), the uploads received at once (503), and
the time one may take (408). A body that is not the multipart it says it is gets 400.

The decoder slots are taken only once the body is in: a client that sends slowly holds an
upload slot for at most --upload-timeout seconds and never a decoder (issue 22: 18 slow
uploads used to lock out every /v1/predict for as long as they stayed open).
"""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from starlette.requests import Request

CHUNK = 1 << 16


class UploadRefused(Exception):
    """An upload refused for a bound or a malformed body: the HTTP status and the cause."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Uploads:
    """The uploads being received: at most `max_open` at once, each within `timeout` seconds
    and `limit` bytes."""

    def __init__(self, limit_mb: float, max_open: int, timeout: float):
        self.limit_mb, self.max_open, self.timeout = limit_mb, max_open, timeout
        self.limit = int(limit_mb * 1024 * 1024)
        self.open = 0

    def too_large(self) -> UploadRefused:
        return UploadRefused(413, f"upload larger than {self.limit_mb:g} MB (--max-upload-mb)",
                             {"Connection": "close"})

    @contextlib.asynccontextmanager
    async def slot(self):
        if self.open >= self.max_open:
            raise UploadRefused(503, f"busy: {self.open} uploads are being received, the "
                                     f"most at once (--max-uploads {self.max_open}); try again "
                                     "shortly", {"Retry-After": "5"})
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1

    async def receive(self, request: Request, target: Path) -> tuple[int, str | None]:
        """Stream the request's video into `target` -> (bytes written, the file name the
        client gave in a multipart form, or None). Raises UploadRefused past a bound."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limit + 64 * 1024:
            raise self.too_large()     # refused before a byte is read (multipart adds a little)
        async with self.slot():
            try:
                return await asyncio.wait_for(self._receive(request, target), self.timeout)
            except asyncio.TimeoutError:
                raise UploadRefused(408, f"the upload took longer than {self.timeout:g} s "
                                         "(--upload-timeout)", {"Connection": "close"}) from None

    async def _receive(self, request: Request, target: Path) -> tuple[int, str | None]:
        content_type = request.headers.get("content-type", "")
        with open(target, "wb") as out:
            if content_type.startswith("multipart/form-data"):
                return await self._multipart(request, content_type, out)
            written = 0
            async for chunk in request.stream():
                written += len(chunk)
                if written > self.limit:
                    raise self.too_large()
                out.write(chunk)
            return written, None

    async def _multipart(self, request: Request, content_type: str, out) -> tuple[int, str | None]:
        from python_multipart import MultipartParser
        from python_multipart.exceptions import MultipartParseError
        from python_multipart.multipart import parse_options_header
        _, options = parse_options_header(content_type)
        boundary = options.get(b"boundary", b"")
        if not boundary:
            raise UploadRefused(400, "malformed multipart body: no boundary in its Content-Type")
        part = {"headers": b"", "field": b"", "file": False, "done": False, "seen": False}
        written, name = 0, None

        def on_header_field(data: bytes, start: int, end: int) -> None:
            part["field"] = data[start:end].lower()

        def on_header_value(data: bytes, start: int, end: int) -> None:
            if part["field"] == b"content-disposition":
                part["headers"] += data[start:end]

        def on_headers_finished() -> None:
            nonlocal name
            part["file"] = not part["done"] and b"filename=" in part["headers"]
            if part["file"]:
                part["seen"] = True
                _, disposition = parse_options_header(part["headers"])
                given = disposition.get(b"filename", b"").decode("utf-8", "replace")
                name = given.replace("\\", "/").rsplit("/", 1)[-1][:200] or None

        def on_part_data(data: bytes, start: int, end: int) -> None:
            nonlocal written
            if part["file"]:
                written += end - start
                if written > self.limit:
                    raise self.too_large()
                out.write(data[start:end])

        def on_part_end() -> None:
            part["done"] = part["done"] or part["file"]
            part["file"], part["headers"] = False, b""

        parser = MultipartParser(boundary, {
            "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
            "on_part_end": on_part_end})
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise UploadRefused(400, f"malformed multipart body ({str(exc).splitlines()[0]})"
                                ) from None
        if not part["seen"]:
            raise UploadRefused(400, "malformed multipart body: no file part (a part with a "
                                     "filename)")
        return written, name


__all__ = ["Uploads", "UploadRefused", "CHUNK"]
