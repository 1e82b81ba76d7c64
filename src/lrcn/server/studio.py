"""The studio: make a data set from long videos and a webcam, train on it, read the evaluation
and serve the new model, in the browser (web/studio.html) and over /v1/studio/... .

Everything is kept in a Workspace (workspace.py) in the standard layout, so the CLI works on
the same data and runs. Training runs as a job in a process of its own (as timeline jobs do:
a cancel kills it, and the server's event loop never waits for it); the process writes
progress.json as it goes, and the runs' history.csv gives the curves. When a run is trained
and evaluated it becomes the served model (Server.use_model). The routes sit under /v1/, so
the server's token and limits apply to them as to the rest of the API: an uploaded video is
probed and cut in a decoder process of the studio's under the decode limits (workspace.
source_task; the server process never opens it), a recording's JPEGs are checked by their
headers (count and pixels) before one is decoded.
"""
from __future__ import annotations

import json
import shutil
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from ..data.workers import WorkerPool
from ..errors import ErrorKind, LrcnError
from .limits import camera_image_error
from .trainjobs import DEFAULT_MODEL, Busy, Trainer, history
from .workspace import RUN_NAME, Workspace, check_class, plain_file, source_task

MAX_RECORD_FRAMES = 300            # one recorded clip: 30 s at 10 frames/s at most
PLOTS = ("confusion_matrix.png", "curves.png", "reliability.png")
# A probe or a cut in the studio's decoder process that takes longer is stopped (its process
# replaced). A cut decodes the source up to its last segment and encodes every segment: ten
# minutes of 1080p video take a few minutes on 2 cores, so only a stalled decoder comes near.
SOURCE_TASK_SECONDS = 900.0


def run_view(workspace: Workspace, run: Path) -> dict:
    """A run's evaluation for the page: the report's figures, the curves, and the mistakes,
    each with a link to its clip when the clip is still in the workspace."""
    view = {"name": run.name, "history": history(run),
            "plots": [p for p in PLOTS if (run / p).exists()],
            "checkpoint": (run / "model.safetensors").exists(),
            "onnx": (run / "model.onnx").exists()}
    path = run / "report.json"
    if not path.exists():
        return view
    report = json.loads(path.read_text())
    mistakes = []
    for p in report.get("predictions", []):
        if p["true"] == p["predicted"]:
            continue
        clip = Path(p["path"])
        link = None
        try:
            workspace.clip(clip.parent.name, clip.name)
            link = f"/v1/studio/clips/{clip.parent.name}/{clip.name}"
        except LrcnError:
            pass
        mistakes.append({"clip": clip.name, "true": p["true"], "predicted": p["predicted"],
                         "probability": p["probability"], "link": link})
    view.update({k: report.get(k) for k in (
        "accuracy", "macro_f1", "group_accuracy", "num_clips", "classes", "per_class",
        "confusion_matrix", "calibration", "model")})
    view["calibration"] = {k: v for k, v in (report.get("calibration") or {}).items()
                           if k != "bins"}
    view["mistakes"] = mistakes
    return view


def _export(run: Path) -> None:
    from ..inference.export import export_onnx
    from ..models.checkpoint import load_checkpoint
    export_onnx(load_checkpoint(run / "model.safetensors"), run / "model.onnx")


def read_jpegs(path: Path, max_pixels: int) -> list[bytes]:
    """A recording's body: frames, each a 4-byte big-endian length and a JPEG -> the JPEGs,
    checked before any is decoded: how many (MAX_RECORD_FRAMES) and each one's size from its
    header (limits.camera_image_error, as the webcam socket's; --max-pixels)."""
    data = path.read_bytes()
    jpegs, at = [], 0
    while at < len(data):
        if at + 4 > len(data):
            raise LrcnError("truncated recording (a frame's length is cut off)")
        (size,) = struct.unpack(">I", data[at:at + 4])
        jpeg = data[at + 4:at + 4 + size]
        at += 4 + size
        if len(jpeg) != size:
            raise LrcnError("truncated recording (a frame is cut off)")
        jpegs.append(jpeg)
        if len(jpegs) > MAX_RECORD_FRAMES:
            raise LrcnError(f"more than {MAX_RECORD_FRAMES} frames in one recording")
    if len(jpegs) < 2:
        raise LrcnError("a recording needs at least 2 frames")
    for number, jpeg in enumerate(jpegs, 1):
        refused = camera_image_error(jpeg, max_pixels)
        if refused is not None:
            raise LrcnError(f"frame {number} of the recording: {refused}")
    return jpegs


def decode_jpegs(jpegs: list[bytes]) -> Iterator:
    """read_jpegs' frames decoded one at a time -> RGB arrays of one size (the first's)."""
    import cv2
    import numpy as np
    first = None
    for number, jpeg in enumerate(jpegs, 1):
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise LrcnError(f"frame {number} of the recording is not a JPEG image")
        if first is None:
            first = image.shape
        elif image.shape != first:
            image = cv2.resize(image, first[1::-1])
        yield image[:, :, ::-1]


def served_checkpoint(workspace: Workspace, device: str, precision: str) -> str | None:
    """The checkpoint of the run the workspace served last, if it still loads as the server
    would load it (inference.engine.load_engine); else None, with a one-line warning: the studio
    then starts with no model, and the user trains or serves another run in the page."""
    from ..inference.engine import load_engine
    served = workspace.served_run()
    checkpoint = served / "model.safetensors" if served else None
    if checkpoint is None or not checkpoint.is_file():
        return None
    try:
        load_engine(str(checkpoint), device=device, precision=precision)
    except LrcnError as exc:
        print(f"lrcn studio: warning: the served run {served.name} does not load "
              f"({exc.reason}); starting with no model", file=sys.stderr, flush=True)
        return None
    return str(checkpoint)


class SourceDecoder:
    """The studio's decoder process (workspace.source_task), started on first use: a crash or
    stall there costs one upload or cut, never the server."""

    def __init__(self, limits, timeout: float):
        self.limits, self.timeout = tuple(limits), timeout
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()

    async def run(self, *task) -> dict:
        import asyncio
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(source_task, 1, timeout=self.timeout)
            future = self._pool.submit((*task, self.limits))
        answer = await asyncio.wrap_future(future)   # LrcnError: stalled (TIMEOUT), crashed
        if "error" in answer:
            raise LrcnError(answer["error"], kind=ErrorKind(answer["kind"]))
        return answer

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def run_path(folder: Path, name: str) -> Path:
    """A run's file, if it is there as a plain file (a running or failed run may lack it)."""
    path = folder / name
    if not plain_file(path):
        raise LrcnError(f"run {folder.name} has no {name}", kind=ErrorKind.NOT_FOUND)
    return path


def studio_router(server, workspace: Workspace, receive_upload, upload_error) -> APIRouter:
    """The studio's routes over `server` (app.Server: the model, limits, work folder).
    `receive_upload(request, target, limit)` streams a request's file to disk (app.py's);
    `upload_error(exc)` is the response to an upload over the limit."""
    router = APIRouter(prefix="/v1/studio", tags=["studio"])
    trainer = Trainer(workspace, lambda run: server.use_model(str(run / "model.safetensors"),
                                                                on_served=workspace.set_served,
                                                                run=run),
                      server.config.jobs, server.config.device)
    server.closers.append(trainer.close)
    sources = SourceDecoder(server.config.limits.decode(),
                            max(SOURCE_TASK_SECONDS, server.timeout))
    server.closers.append(sources.close)

    async def upload(request: Request) -> Path:
        folder = Path(tempfile.mkdtemp(dir=server.work))
        target = folder / "upload"
        try:
            size = await receive_upload(request, target, server.limit)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise upload_error(exc) from exc
        if size == 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise LrcnError("empty upload (0 bytes)")
        return target

    def done_with(target: Path) -> None:
        shutil.rmtree(target.parent, ignore_errors=True)

    @router.get("", summary="The workspace: clips per class and group, sources, runs, the job")
    async def overview():
        summary = await run_in_threadpool(workspace.summary)
        # the run served now (None when the one served last did not load at start)
        served = Path(server.checkpoint).parent.name if server.checkpoint else None
        return {**summary, "served": served, "sources": workspace.list_sources(),
                "job": trainer.view(), "workspace": workspace.root.name}

    @router.get("/check", summary="`lrcn check` on the workspace's data: the warnings")
    async def check():
        from ..data.check import check_dataset
        from ..config import FrameConfig
        if not workspace.classes():
            return {"classes": [], "problems": [], "clips": 0, "readable": 0}
        report = await run_in_threadpool(
            check_dataset, workspace.data, workspace.classes(), FrameConfig(),
            cache_dir=workspace.cache, workers=0, progress=False,
            decode_timeout=server.timeout)
        for problem in report["problems"]:      # the workspace's paths, not the server's
            problem["path"] = Path(problem["path"]).name if problem["path"] else None
        report["data"] = "data"
        return report

    @router.post("/sessions", summary="Start a webcam recording session (a group of its own)")
    async def session():
        count = sum(g.get("kind") == "session" for g in workspace.state()["groups"].values())
        group = await run_in_threadpool(workspace.new_group, "session",
                                        f"webcam session {count + 1}")
        return {"group": group}

    @router.post("/record", summary="Save a recorded clip: frames as length-prefixed JPEGs")
    async def record(request: Request, cls: str, group: str, fps: float = 10.0):
        check_class(cls)
        if not 1 <= fps <= 60:
            raise LrcnError("fps must be 1 to 60")
        target = await upload(request)
        try:
            jpegs = await run_in_threadpool(read_jpegs, target,
                                            server.config.limits.max_pixels)
            path = await run_in_threadpool(workspace.add_frames, cls, group,
                                           decode_jpegs(jpegs), fps)
        finally:
            done_with(target)
        return {"class": cls, "name": path.name, "group": group, "frames": len(jpegs)}

    @router.post("/sources", status_code=201, summary="Upload a long video to cut clips from")
    async def add_source(request: Request, name: str = "video"):
        target = await upload(request)
        try:
            probe = await sources.run("probe", str(target))
            return await run_in_threadpool(workspace.add_source, target, name, probe)
        finally:
            done_with(target)

    @router.get("/sources/{source_id}/video", summary="The source video (range requests)")
    async def source_video(source_id: str):
        return FileResponse(workspace.source_video(source_id), media_type="video/mp4")

    @router.post("/sources/{source_id}/segments",
                 summary="Cut segments [{start, end, class}] into clips of the source's group")
    async def cut(source_id: str, request: Request):
        try:
            body = await request.json()
            segments = body["segments"]
        except (ValueError, KeyError, TypeError):
            raise LrcnError('expected JSON {"segments": [{"start": s, "end": s, '
                            '"class": name}, ...]}') from None
        if not isinstance(segments, list) or len(segments) > 500:
            raise LrcnError("segments must be a list of at most 500")
        video, wanted, scratch = await run_in_threadpool(workspace.plan_cut, source_id,
                                                         segments)
        try:
            cut = await sources.run("cut", str(video), [w[:2] for w in wanted], str(scratch))
            paths = await run_in_threadpool(workspace.add_cut, source_id, wanted, scratch,
                                            cut["written"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return {"clips": [{"class": p.parent.name, "name": p.name} for p in paths]}

    @router.get("/clips/{cls}/{name}", summary="A clip's video file")
    async def clip_file(cls: str, name: str):
        path = workspace.clip(cls, name)
        media = "video/mp4" if path.suffix.lower() == ".mp4" else "application/octet-stream"
        return FileResponse(path, media_type=media)

    @router.delete("/clips/{cls}/{name}")
    async def delete_clip(cls: str, name: str):
        await run_in_threadpool(workspace.delete, cls, name)
        return {"deleted": name}

    @router.post("/clips/{cls}/{name}/relabel", summary='Move a clip to {"class": name}')
    async def relabel(cls: str, name: str, request: Request):
        try:
            new = (await request.json())["class"]
        except (ValueError, KeyError, TypeError):
            raise LrcnError('expected JSON {"class": name}') from None
        path = await run_in_threadpool(workspace.relabel, cls, name, new)
        return {"class": path.parent.name, "name": path.name}

    @router.post("/train", status_code=202, summary="Train on the workspace (a job)")
    async def train(request: Request):
        try:
            body = await request.json() if await request.body() else {}
            model = str(body.get("model") or DEFAULT_MODEL)
            epochs = int(body.get("epochs") or 20)
        except (ValueError, TypeError, AttributeError):
            raise LrcnError('expected JSON {"model": name, "epochs": n}') from None
        try:
            job = await run_in_threadpool(trainer.start, model, epochs)
        except Busy as exc:
            raise HTTPException(409, str(exc)) from None
        return JSONResponse({"run": job.run.name, "state": job.state}, status_code=202)

    @router.get("/train", summary="The training job: phase, progress, history")
    async def train_status():
        view = trainer.view()
        if view is None:
            raise HTTPException(404, "no training job")
        return view

    @router.delete("/train", summary="Cancel the training job")
    async def train_cancel():
        cancelled = await run_in_threadpool(trainer.cancel)
        return {"cancelled": cancelled}

    @router.get("/runs/{run}", summary="A run's evaluation")
    async def run_report(run: str):
        return await run_in_threadpool(run_view, workspace, workspace.run(run))

    @router.get("/runs/{run}/{name}", summary="A run's plots, checkpoint or ONNX export")
    async def run_file(run: str, name: str):
        folder = workspace.run(run)
        if name in PLOTS:
            return FileResponse(run_path(folder, name), media_type="image/png")
        if name == "model.safetensors":
            return FileResponse(run_path(folder, name), media_type="application/octet-stream",
                                filename=f"{folder.name}.safetensors")
        if name == "model.onnx":
            if not (folder / name).exists():
                run_path(folder, "model.safetensors")          # nothing to export: 404
                await run_in_threadpool(_export, folder)
            return FileResponse(run_path(folder, name), media_type="application/octet-stream",
                                filename=f"{folder.name}.onnx")
        raise HTTPException(404, f"no file {name[:40]!r} (one of {', '.join(PLOTS)}, "
                                 "model.safetensors, model.onnx)")

    @router.post("/runs/{run}/serve", summary="Serve this run's model")
    async def serve_run(run: str):
        folder = workspace.run(run)
        if not RUN_NAME.fullmatch(folder.name) or not (folder / "model.safetensors").exists():
            raise LrcnError(f"run {run!r} has no model", kind=ErrorKind.NOT_FOUND)
        await run_in_threadpool(server.use_model, str(folder / "model.safetensors"),
                                on_served=workspace.set_served, run=folder)
        return {"served": folder.name}

    return router


__all__ = ["studio_router", "read_jpegs", "decode_jpegs", "served_checkpoint", "DEFAULT_MODEL"]
