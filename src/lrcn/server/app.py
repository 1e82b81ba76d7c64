"""`lrcn serve`: a web page and a REST API over one trained model (FastAPI on uvicorn).

- POST /v1/predict: a clip (multipart or raw body) -> label and probabilities, decoded by the
  same `read_clip` as `lrcn predict`, in a pool of `--jobs` decoder processes (a stalled or
  crashing decoder costs its request, never the server) behind a queue of `--queue` requests;
  past it, 503 with Retry-After. A video much longer than the model's window gets a hint that
  a timeline is what labels it over time.
- POST /v1/timeline: a long video -> 202 and a job (jobs.py), polled at GET /v1/jobs/{id},
  with the timeline PNG and the annotated H.264 video served with range requests.
- WS /v1/stream: a browser's camera, one JPEG per grid step, labelled as it comes.
- GET /v1/model, /healthz, /metrics (Prometheus), /docs and /redoc (OpenAPI, served with no
  network: pages.py, as are the one JSON shape of every error and the icon), and the page at /.
Uploads are received by uploads.py (streamed to a temporary folder, within the size, count and
time limits) before a decoder slot is taken; every temporary file is removed after its request,
also when the client goes away, and at shutdown. The bounds on everything a request can spend
are in limits.py. Bad input gets 400, 408, 413, 415 or 422 with a one-line JSON error; the
status of a failed decode follows from the error's kind (STATUS_OF_KIND).

Every route classifies through inference/predict.py (frames -> logits -> temperature and one
softmax -> a Prediction), as `lrcn predict` and `lrcn stream` do.

Why this module is long: the routes and the state they share (the model, the decoder pool,
the jobs, the metrics) belong together; uploads live in uploads.py, the bounds in limits.py,
the job processes in jobs.py and the page in web/.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import signal
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..data.cache import default_decode_timeout
from ..config import to_dict
from ..inference.engine import is_onnx_file, load_engine
from ..inference.predict import Predictor
from ..inference.stream import CameraWindow
from ..errors import ErrorKind, LrcnError
from .jobs import MEDIA_TYPES, JobFile, JobRunner
from .limits import (Limits, camera_image_error, decode_task, host_allowed, limits_dict,
                     origin_allowed)
from .pages import WEB, base_app
from .pages import error_response as _error
from .uploads import UploadRefused, Uploads
from ..media.plots import class_colours
from ..media.video import image_to_model_frame
from ..inference.windows import DEFAULT_SPAN, WindowConfig
from ..data.workers import WorkerPool

# The routes that take ?token= (GET) besides the WebSocket: files that the pages show in a
# <video> or <img> element or offer as download links, none of which can send headers: a
# finished job's files, and the studio's source videos, clips and run files.
TOKEN_IN_QUERY = re.compile(r"/v1/jobs/[^/]+/[^/]+|/v1/studio/(sources/[^/]+/video"
                            r"|clips/[^/]+/[^/]+|runs/[^/]+/[^/]+)")
# /v1/predict on a video longer than this many of the model's windows answers with a hint.
LONG_VIDEO_WINDOWS = 2.0
# The HTTP status of a request that failed with an LrcnError of each kind: what is not a video
# lrcn can read is 415; a damaged video, a bad value, or a decoder that stalled (TIMEOUT) or
# crashed (FAILED: the only work that fails here is decoding the client's file) is 422; a
# missing job 404. (Exceptions that are not LrcnErrors are bugs: 500.)
STATUS_OF_KIND = {ErrorKind.NOT_VIDEO: 415, ErrorKind.BAD_INPUT: 422, ErrorKind.TIMEOUT: 422,
                  ErrorKind.SETTING: 422, ErrorKind.NOT_FOUND: 404, ErrorKind.FAILED: 422}


@dataclass(frozen=True)
class ServeConfig:
    checkpoint: str | None                # None: no model yet (a studio before its first run)
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 200.0
    jobs: int = 2
    queue: int = 16
    token: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    views: int = 1                        # /v1/predict: the mean over this many offsets
    decode_timeout: float | None = None   # a clip's decode; None: $LRCN_DECODE_TIMEOUT or 120
    job_stall_timeout: float = 120.0      # a timeline job decoding with no progress this long
    keep_seconds: float = 3600.0          # finished timeline jobs are removed after this
    keep_jobs: int = 64                   # and all but this many newest finished ones
    shutdown_grace: float = 20.0          # SIGTERM: running work gets this long to finish
    window: WindowConfig = WindowConfig()
    limits: Limits = field(default_factory=Limits)
    studio: str | None = None             # a studio workspace (studio.py) at /studio


class Server:
    """The model, the decoder pool, the job runner and the limits, shared by the routes."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.checkpoint = self.engine = self.predictor = None
        self.names: list[str] = []
        self.model_info: dict = {"classes": [], "model": None,
                                 "max_upload_mb": config.max_upload_mb,
                                 "token_required": bool(config.token)}
        self.closers: list = []             # the studio's trainer, stopped before the pool
        if config.checkpoint:
            self.use_model(config.checkpoint)
        self.timeout = config.decode_timeout or default_decode_timeout()
        self.work = Path(tempfile.mkdtemp(prefix="lrcn-serve-"))
        limits = config.limits
        self.uploads = Uploads(config.max_upload_mb, limits.max_uploads, limits.upload_timeout)
        self.limit = self.uploads.limit     # bytes (the studio's uploads name it)
        self.active = 0                     # decodes and probes in the pool or waiting for it
        self.cameras = 0                    # webcam sockets open
        self.pool: WorkerPool | None = None
        self.runner: JobRunner | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter("lrcn_requests", "HTTP requests", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("lrcn_request_seconds", "Request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.decode_failures = Counter("lrcn_decode_failures", "Uploads that did not decode",
                                       registry=self.registry)
        Gauge("lrcn_queue_depth", "Decodes and probes in the pool or waiting, plus waiting "
              "timeline jobs", registry=self.registry).set_function(
            lambda: self.active + (self.runner.waiting() if self.runner else 0))

    def use_model(self, checkpoint: str, on_served=None, run=None) -> None:
        """Serve `checkpoint` from now on (at start, or a run the studio trained): requests
        that began keep the model they began with; new ones and new timeline jobs get this."""
        engine = load_engine(checkpoint, device=self.config.device,
                             precision=self.config.precision)
        predictor = Predictor(engine, self.config.window.reject_below, self.config.views)
        self.checkpoint = checkpoint
        self.engine, self.predictor, self.names = engine, predictor, list(engine.names)
        self.model_info = self._model_info()
        if getattr(self, "runner", None) is not None:
            self.runner.checkpoint = checkpoint
        if on_served is not None:
            on_served(run)

    def no_model(self) -> JSONResponse | None:
        if self.engine is not None:
            return None
        return _error(409, "no model yet: train one in the studio (/studio) first")

    def start(self) -> None:
        self.pool = WorkerPool(decode_task, self.config.jobs, timeout=self.timeout)
        self.runner = JobRunner(self.checkpoint, self.config.device,
                                self.config.precision,
                                to_dict(self.config.window), self.work / "jobs",
                                self.config.jobs, self.config.job_stall_timeout,
                                self.config.keep_seconds,
                                tuple(self.config.limits.decode()), self.config.keep_jobs)

    def stop(self) -> None:
        for close in self.closers:
            close()
        if self.runner is not None:
            self.runner.close(self.config.shutdown_grace)
        if self.pool is not None:
            self.pool.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def authorised(self, request_or_socket, query_allowed: bool = False) -> bool:
        """The token from the Authorization header; from ?token= only where a browser cannot
        send headers (`query_allowed`: the <video> element's route and the WebSocket)."""
        token = self.config.token
        if not token:
            return True
        header = request_or_socket.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else \
            request_or_socket.query_params.get("token", "") if query_allowed else ""
        return secrets.compare_digest(given.encode(), token.encode())

    async def decode(self, what: str, path: Path) -> dict:
        """A probe or a clip's frames from a decoder process (limits.decode_task): its answer,
        or UploadRefused when the pool and its queue (--jobs + --queue) are full."""
        config = self.config
        if self.active >= config.jobs + config.queue:
            raise UploadRefused(503, f"busy: {self.active} decodes running or waiting, the most "
                                     f"at once (--jobs {config.jobs} + --queue {config.queue}); "
                                     "try again shortly", {"Retry-After": "2"})
        self.active += 1
        try:
            frames = to_dict(self.predictor.decode_frames) if what == "clip" else None
            future = self.pool.submit((what, str(path), frames, limits_dict(config.limits)))
            try:
                result = await asyncio.wrap_future(future)
            except LrcnError as exc:     # the decoder stalled (TIMEOUT) or crashed (FAILED)
                return {"error": exc.reason, "kind": exc.kind.value}
        finally:
            self.active -= 1
        return result

    def decode_failed(self, error: LrcnError) -> JSONResponse:
        """An upload that did not decode: counted, and the status of its kind (415: not a
        video we can read; 422: a damaged video, or a decoder that stalled or crashed), with
        the cause (never the server's path of the upload)."""
        self.decode_failures.inc()
        return _error(STATUS_OF_KIND[error.kind], error.reason)

    def camera_refused(self, socket: WebSocket) -> JSONResponse | None:
        """Why a webcam socket may not open (an HTTP answer to its handshake), or None: a web
        page of another origin (limits.origin_allowed), or --max-cameras sockets open."""
        limits = self.config.limits
        if not origin_allowed(socket.headers.get("origin"), socket.headers.get("host"),
                              self.config.host, limits.allow_origins):
            return _error(403, f"a page from {socket.headers.get('origin')[:100]!r} may not "
                               "open the camera socket (allow it with --allow-origin)")
        if self.cameras >= limits.max_cameras:
            return _error(503, f"busy: {self.cameras} camera sockets open, the most at once "
                               f"(--max-cameras {limits.max_cameras})", {"Retry-After": "5"})
        return None

    def _model_info(self) -> dict:
        """GET /v1/model's answer, made once at start (the model does not change)."""
        frames = self.engine.frame_config
        span = self.engine.clip_seconds or DEFAULT_SPAN
        info = {"classes": self.names, "colours": class_colours(self.names),
                "frames": to_dict(frames),
                "clip_seconds": self.engine.clip_seconds, "frame_spacing_s": span / frames.num_frames,
                "backend": str(self.engine.backend), "views": self.config.views,
                "max_upload_mb": self.config.max_upload_mb,
                "limits": {k: v for k, v in limits_dict(self.config.limits).items()
                           if k != "allow_origins"},
                "token_required": bool(self.config.token)}
        checkpoint = Path(self.checkpoint)
        info["run"] = checkpoint.parent.name
        if not is_onnx_file(checkpoint):
            from ..models.checkpoint import summary
            about = summary(checkpoint, weights=False)    # the engine has checked them
            info["test_metrics"] = about["info"].get("test_metrics")
            info.update({"model": about["model_name"], "normalisation": about["normalisation"],
                         "trainable_parameters": about["trainable_parameters"],
                         "temperature": about["temperature"]})
        return info

    async def predict(self, path: Path) -> JSONResponse:
        started = time.perf_counter()
        result = await self.decode("clip", path)
        if "error" in result:
            return self.decode_failed(LrcnError(result["error"],
                                                kind=ErrorKind(result["kind"])))
        prediction = await run_in_threadpool(self.predictor.predict_frames, result["frames"])
        prediction.warning = result.get("truncated")    # cut short: answered, with a warning
        answer = prediction.as_dict()
        del answer["path"]                   # the server's temporary file: not the client's
        duration = result["num_frames"] / result["fps"] if result["fps"] else 0.0
        span = self.engine.clip_seconds or DEFAULT_SPAN
        hint = {"hint": f"one label for all {duration:.0f} s of the video, from frames spread "
                        f"over it; the model's window is {span:.1f} s: POST /v1/timeline labels "
                        "it over time"} if duration > LONG_VIDEO_WINDOWS * span else {}
        return JSONResponse({
            **answer, **hint,
            "frames": result["indices"], "decoded_frames": result["num_frames"],
            "fps": result["fps"], "duration": round(duration, 3), "timing": result["timing"],
            "seconds": round(time.perf_counter() - started, 4)})

    def job_view(self, job, base: str) -> dict:
        view = {"id": job.id, "state": job.state, "progress": job.progress(),
                "created": job.created}
        if job.error:
            view["error"] = job.error
        if job.state == "done":
            data = json.loads((job.folder / "timeline.json").read_text())
            view["result"] = {**data, "links": {
                "json": f"{base}/timeline.json", "segments_csv": f"{base}/segments.csv",
                "windows_csv": f"{base}/windows.csv", "png": f"{base}/timeline.png",
                "video": f"{base}/video.mp4"}}
        return view


def create_app(config: ServeConfig) -> FastAPI:
    server = Server(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = base_app(title="lrcn", version="1", lifespan=lifespan,
                   description="Human action recognition in video: a clip's label, a long "
                               "video's timeline, a live camera.")
    app.state.server = server

    def cross_site(request: Request) -> str | None:
        """Why a request is refused as another web page's (None: it is not). A page's browser
        sends the visitor's requests with no token to stop them when none is set: a POST from
        another Origin (a form, or JSON sent as text/plain) is refused, and so is any request
        under a Host that is not this server's (DNS rebinding)."""
        limits, headers = config.limits, request.headers
        if not config.token and not host_allowed(headers.get("host"), config.host,
                                                 limits.allow_origins):
            return (f"requests to this server by the name {headers.get('host', '')[:100]!r} "
                    "are refused (use its address, or allow a page with --allow-origin)")
        if request.method not in ("GET", "HEAD", "OPTIONS") and not origin_allowed(
                headers.get("origin"), headers.get("host"), config.host, limits.allow_origins):
            return (f"a page from {headers.get('origin', '')[:100]!r} may not send requests "
                    "to this server (allow it with --allow-origin)")
        return None

    @app.exception_handler(LrcnError)
    async def lrcn_error(request: Request, exc: LrcnError):
        return _error(STATUS_OF_KIND[exc.kind], exc.reason)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if refusal := cross_site(request):
            server.requests.labels("cross-site", "403").inc()
            return _error(403, refusal)
        if path.startswith(("/v1/", "/metrics")) and not server.authorised(
                request, query_allowed=request.method in ("GET", "HEAD")
                and bool(TOKEN_IN_QUERY.fullmatch(path))):
            response = _error(401, "missing or wrong token (Authorization: Bearer TOKEN)",
                              {"WWW-Authenticate": "Bearer"})
        else:
            started = time.perf_counter()
            response = await call_next(request)
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "other")
            server.latency.labels(endpoint).observe(time.perf_counter() - started)
            server.requests.labels(endpoint, str(response.status_code)).inc()
            return response
        server.requests.labels("unauthorised", "401").inc()
        return response

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    if config.studio:
        from .studio import studio_router
        from .workspace import Workspace
        async def receive_upload(request: Request, target: Path, limit: int) -> int:
            return (await server.uploads.receive(request, target))[0]   # within the bounds

        app.include_router(studio_router(server, Workspace(config.studio), receive_upload,
                                         _upload_refused))

        @app.get("/studio", include_in_schema=False)
        async def studio_page():
            return FileResponse(WEB / "studio.html")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(generate_latest(server.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/model")
    async def model():
        return server.model_info

    @app.post("/v1/predict", status_code=200,
              summary="Classify a clip (multipart file or raw body)")
    async def predict(request: Request):
        if server.no_model():
            return server.no_model()
        folder = Path(tempfile.mkdtemp(dir=server.work))
        try:
            size, _ = await server.uploads.receive(request, folder / "upload")
            if size == 0:
                return _error(422, "empty upload (0 bytes): send a video file")
            return await server.predict(folder / "upload")
        except UploadRefused as refused:
            return _error(refused.status, refused.message, refused.headers)
        except ClientDisconnect:
            return Response(status_code=499)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @app.post("/v1/timeline", status_code=202,
              summary="Start a timeline job for a long video; poll /v1/jobs/{id}")
    async def timeline(request: Request):
        if server.no_model():
            return server.no_model()
        job_id, folder = server.runner.new_folder()
        try:
            return await _start_job(request, job_id, folder)
        except UploadRefused as refused:
            shutil.rmtree(folder, ignore_errors=True)
            return _error(refused.status, refused.message, refused.headers)
        except ClientDisconnect:
            shutil.rmtree(folder, ignore_errors=True)
            return Response(status_code=499)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    async def _start_job(request: Request, job_id: str, folder: Path) -> JSONResponse:
        """Receive, probe in a decoder process (what is not a video, or is past the decode
        limits, is refused at once; what does not decode fails the job, with the cause), and
        queue; past --jobs + --queue jobs running or waiting, 503 (checked before and after
        the upload)."""
        most = config.jobs + config.queue
        busy = UploadRefused(503, f"busy: {most} timeline jobs running or waiting, the most at "
                                  f"once (--jobs {config.jobs} + --queue {config.queue}); try "
                                  "again later", {"Retry-After": "10"})
        if server.runner.unfinished() >= most:
            raise busy
        size, name = await server.uploads.receive(request, folder / "upload")
        if size == 0:
            raise UploadRefused(422, "empty upload (0 bytes): send a video file")
        probe = await server.decode("probe", folder / "upload")
        if "error" in probe:
            shutil.rmtree(folder, ignore_errors=True)
            return server.decode_failed(LrcnError(probe["error"], kind=ErrorKind(probe["kind"])))
        if server.runner.unfinished() >= most:
            raise busy
        server.runner.add(job_id, folder, folder / "upload", name)
        return JSONResponse({"id": job_id, "state": "queued", "status": f"/v1/jobs/{job_id}"},
                            status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})

    def find_job(job_id: str):
        job = server.runner.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id[:40]!r} (finished jobs expire after "
                                     f"{config.keep_seconds:g} s; the newest {config.keep_jobs} are kept)")
        return job

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str):
        job = find_job(job_id)
        return server.job_view(job, f"/v1/jobs/{job.id}")

    @app.delete("/v1/jobs/{job_id}")
    async def job_delete(job_id: str):
        job = find_job(job_id)
        state = job.state
        server.runner.remove(job.id)
        return {"id": job.id, "removed": True,
                "cancelled": state in ("queued", "running")}

    @app.get("/v1/jobs/{job_id}/{name}",
             summary="A finished job's file: JSON, CSV, PNG, the annotated video")
    async def job_file(job_id: str, name: JobFile):
        job = find_job(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job.id} is {job.state}, not done")
        return FileResponse(job.folder / name, media_type=MEDIA_TYPES[name])   # ranges too

    @app.websocket("/v1/stream")
    async def stream(socket: WebSocket):
        if not server.authorised(socket, query_allowed=True):
            await socket.close(code=4401, reason="missing or wrong token")
            return
        refused = server.camera_refused(socket)
        if refused is not None:
            await socket.send_denial_response(refused)
            return
        server.cameras += 1
        try:
            await socket.accept()
            if server.engine is None:
                await socket.send_json({"error": "no model yet: train one in the studio "
                                                 "first"})
                await socket.close()
                return
            await _camera_session(server, socket)
        finally:
            server.cameras -= 1

    return app


def _camera_reply(window: CameraWindow, jpeg: bytes, max_pixels: int) -> dict:
    """One JPEG -> the socket's reply. Blocking (decoding and the model): run in the thread
    pool. The JPEG's size is read from its header first: one past --max-pixels is refused
    before libjpeg allocates it. The JPEG becomes the model's frame as the checkpoint says
    (size, interpolation, channel order), through the swscale call of decoded video."""
    import cv2
    refused = camera_image_error(jpeg, max_pixels)
    if refused is not None:
        return {"error": refused}
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return {"error": "not a JPEG image"}
    shown = window.add(image_to_model_frame(image, window.engine.frame_config, channels="bgr"))
    if shown is None:
        return {"warming": window.filled, "of": window.size}
    return {"label": shown.label, "probability": shown.probability,
            "probabilities": shown.probabilities}


async def _camera_session(server: Server, socket: WebSocket) -> None:
    """Each binary message: an 8-byte big-endian float (the client's clock, ms) and a JPEG,
    sent once per grid step (GET /v1/model's frame_spacing_s), labelled as `lrcn stream`
    labels (stream.CameraWindow). The JPEG is decoded and classified in the thread pool, never
    in the event loop, one message at a time per socket (so --max-cameras bounds the decodes
    at once). A message past --max-message-kb is refused by uvicorn (close code 1009)."""
    engine = server.engine
    if not engine.splits:
        await socket.send_json({"error": "this model file cannot be split into per-frame "
                                         "features and the LSTM: serve the checkpoint"})
        await socket.close()
        return
    window = CameraWindow(engine, server.config.window.smooth,
                          server.config.window.reject_below)
    max_pixels = server.config.limits.max_pixels
    try:
        while True:
            message = await socket.receive_bytes()
            if len(message) < 9:
                await socket.send_json({"error": "expected 8 bytes of time, then a JPEG"})
                continue
            (client_ms,) = struct.unpack(">d", message[:8])
            reply = await run_in_threadpool(_camera_reply, window, message[8:], max_pixels)
            await socket.send_json({**reply, "t": client_ms})
    except WebSocketDisconnect:
        return


def _upload_refused(exc: Exception) -> Exception:
    """The studio's uploads: past a bound, its status and cause (as /v1/predict's); a client
    gone, 499."""
    if isinstance(exc, UploadRefused):
        return HTTPException(exc.status, exc.message, exc.headers or None)
    if isinstance(exc, ClientDisconnect):
        return HTTPException(499, "client disconnected")
    return exc


def run_server(config: ServeConfig) -> None:
    import uvicorn
    app = create_app(config)
    where = f"the studio on {config.studio}, at /studio; " if config.studio else ""
    print(f"lrcn serve: {where}{config.checkpoint or 'no model yet'} on "
          f"http://{config.host}:{config.port}/ "
          f"(API at /v1, docs at /docs; Ctrl-C or SIGTERM stops)", flush=True)
    # uvicorn stops gracefully on SIGTERM and Ctrl-C, then raises the signal again for the
    # handler that was there before it: this one, so that a requested stop exits with 0.
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopped.append(number))
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                timeout_graceful_shutdown=int(config.shutdown_grace),
                ws_max_size=config.limits.max_message_kb * 1024)
    if stopped:
        print(f"lrcn serve: stopped ({signal.Signals(stopped[0]).name})", flush=True)


__all__ = ["ServeConfig", "STATUS_OF_KIND", "create_app", "run_server"]
