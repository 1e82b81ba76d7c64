"""What every `lrcn serve` app has around its routes: the API docs served without a network,
one JSON shape for every error, and the icon.

- /docs (Swagger UI) and /redoc load their scripts and styles from the `fastapi-offline`
  package, served by this server: FastAPI's own pages fetch them from a CDN, and show nothing
  on a machine without internet.
- Every error is `{"error": "one line"}`: ours (app.py), Starlette's 404 and 405 (an unknown
  path, a wrong method), FastAPI's validation errors and an unexpected exception (500).
- /favicon.ico: the page's icon (web/favicon.ico), also used by the docs pages.
"""
from __future__ import annotations

import sys
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

WEB = Path(__file__).parent / "web"


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The one shape of every error the server answers."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    """The first problem, with the parameter it is about: 'bad request: name: Input should be
    ...'. (The location's first part says where the parameter is: path, query or body.)"""
    errors = exc.errors()
    if not errors:
        return "bad request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())[1:])
    return f"bad request: {where + ': ' if where else ''}{first.get('msg', 'invalid input')}"


def base_app(**settings) -> FastAPI:
    """A FastAPI app (FastAPI's own settings: title, lifespan, ...) with the offline docs, the
    error shape and the icon."""
    from fastapi_offline import FastAPIOffline
    app = FastAPIOffline(favicon_url="/favicon.ico", **settings)

    # Starlette's HTTPException: its 404 and 405 too, and FastAPI's (a subclass).
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        headers = getattr(exc, "headers", None)
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":       # no such route
            message = f"not found: {request.url.path} (the API is under /v1, its docs at /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (allowed: " \
                      f"{(headers or {}).get('Allow', '?')})"
        return error_response(exc.status_code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, validation_message(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        print(f"lrcn serve: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return error_response(500, f"internal error ({type(exc).__name__})")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return FileResponse(WEB / "favicon.ico", media_type="image/x-icon")

    return app


__all__ = ["WEB", "base_app", "error_response", "validation_message"]
