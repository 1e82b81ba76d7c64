"""Inference engines: what runs a trained LRCN on decoded frames, for predict, evaluate,
timelines and streams. A model is run split where it splits, into per-frame CNN features and the
LSTM over a sequence of them: long videos need the split (each frame's features are computed
once and shared by every window that covers it, see windows.py); whole clips go through both.

- OrtEngine runs on ONNX Runtime (the default when it imports): from a checkpoint (both halves
  exported, then cached), or from an exported .onnx file (the whole classifier). On 2 cores it
  measured about 2x eager PyTorch at batch 64, 0.6-0.7x its latency for one clip. On the CPU a
  batch is spread over one-thread runs, one thread per core (from_checkpoint says why).
- TorchEngine runs the same model on PyTorch: the fallback, and the reference.
The two give the same numbers (within 1e-5, tested). Frames go in as uint8 (N, H, W, 3), as
decoded, and are converted inside the engine. Engines return logits; the checkpoint's
temperature and the one softmax (calibrate.softmax) make probabilities of them. Torch is not
imported for an exported .onnx file, nor for a checkpoint whose graphs are cached.
"""
from __future__ import annotations

import enum
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .calibrate import softmax
from ..config import FrameConfig, from_dict
from ..errors import ErrorKind, LrcnError
from .export import ONNX_FORMAT, ONNX_FORMAT_VERSION, check_onnx_file
from .graphs import cached_engine_graphs, engine_graphs
from .sessions import expected_ort_failures, ort_device, ort_errors, ort_has_cuda, ort_session, \
    usable_cores

if TYPE_CHECKING:
    from ..models.checkpoint import Checkpoint

FRAMES_PER_CALL = 160       # CNN frames per engine call (8 clips)
# Pixels per run of the CNN's one-thread session (OrtEngine on the CPU). On 2 cores, two runs at
# once, effnet (160 x 128) was fastest at 4-8 frames a run (1.82 ms a frame; 1.86 at 16), the
# seed model (64 x 64) at 64-80 (0.038 ms; 0.039 at 32, 0.043 at 16): about 10 and 50 frames.
PIXELS_PER_RUN = 200_000
# `--precision int8`: the CNN quantized by ONNX Runtime (graphs.py); not a training precision
INT8 = "int8"


class Backend(str, enum.Enum):
    """What runs the model: `--backend`'s choices and an engine's `backend`."""
    AUTO = "auto"       # ONNX Runtime when it can run the model here, else PyTorch
    ONNX = "onnx"       # ONNX Runtime
    TORCH = "torch"     # PyTorch

    def __str__(self) -> str:       # the value, in messages and f-strings, on every Python
        return self.value

    @classmethod
    def parse(cls, value: "str | Backend") -> "Backend":
        try:
            return cls(value)
        except ValueError:
            raise LrcnError(f"unknown backend {value!r} (auto, onnx or torch)",
                            kind=ErrorKind.SETTING) from None


def is_onnx_file(path: str | os.PathLike) -> bool:
    """Whether `path` names an exported ONNX model (else a checkpoint or a run folder): the one
    place that decides which kind of model file a path is."""
    return str(path).lower().endswith(".onnx")     # as export's onnx_target names them


class Engine:
    """features(uint8 frames) -> per-frame features; sequence_logits(features) -> logits;
    logits(uint8 clips) -> logits. `temperature` is the calibration to divide the logits by
    before the softmax (calibrate.softmax)."""
    backend: Backend
    names: list[str]
    frame_config: FrameConfig
    clip_seconds: float = 0.0   # the training clips' typical span, for windows (0: unknown)
    splits: bool = True         # runs the CNN and the LSTM separately (timelines, streams)
    temperature: float = 1.0    # calibration (calibrate.py), fitted after training
    precision: str = "fp32"     # fp32, bf16/fp16 (TorchEngine) or int8 (OrtEngine)
    fallback_reason: str | None = None   # why PyTorch runs where ONNX Runtime was expected
    source: Path | None = None  # the exported .onnx file it was loaded from, if any
    frames_per_call: int = FRAMES_PER_CALL   # `logits` runs the CNN on this many at a time

    def features(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 frames -> (N, F) float32 CNN features."""
        raise NotImplementedError

    def sequence_logits(self, features: np.ndarray) -> np.ndarray:
        """(B, T, F) float32 features -> (B, classes) float32 logits."""
        raise NotImplementedError

    def parallel_features(self) -> tuple[Callable[[np.ndarray], np.ndarray], int, int]:
        """`features` for several threads at once, how many threads it pays to run and the
        frames per call that suit one, for a caller with work of its own to overlap (a
        timeline's decoding); (features, 1, ...): none."""
        return self.features, 1, FRAMES_PER_CALL

    def logits(self, clips: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 clips -> (classes,) or (B, classes) logits."""
        single = clips.ndim == 4
        batch = clips[None] if single else clips
        logits = self.check_logits(self._clip_logits(batch))
        return logits[0] if single else logits

    def check_logits(self, logits: np.ndarray) -> np.ndarray:
        """`logits` when they are one finite number per class name; else an LrcnError, so that
        no NaN reaches a printed probability, a JSON answer or an annotated video. (Files are
        checked when they are loaded; this catches what gets past: an output whose size the
        file does not declare, overflow in fp16.)"""
        if logits.shape[-1] != len(self.names):
            raise LrcnError(f"the model gives {logits.shape[-1]} outputs for "
                            f"{len(self.names)} class names")
        if not np.isfinite(logits).all():
            raise LrcnError("the model's outputs are NaN or infinite (damaged weights, or an "
                            "overflow in reduced precision)")
        return logits

    def probabilities(self, clips: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) or (B, T, H, W, 3) uint8 clips -> calibrated probabilities: `logits`
        through the temperature and the one softmax."""
        return softmax(self.logits(clips), self.temperature)

    def _clip_logits(self, batch: np.ndarray) -> np.ndarray:
        b, t = batch.shape[:2]
        frames = batch.reshape(b * t, *batch.shape[2:])
        # The CNN in slices of frames_per_call: memory stays bounded (the first layer's output
        # is 256 KB per frame), whatever the batch (OrtEngine's runs on threads bound it).
        step = self.frames_per_call
        feats = np.concatenate([self.features(frames[i:i + step])
                                for i in range(0, len(frames), step)])
        return self.sequence_logits(feats.reshape(b, t, -1))


class TorchEngine(Engine):
    """The model on PyTorch, on any device (`devices.resolve_device`), in fp32 or under
    autocast in bf16/fp16. Arrays in and out are NumPy on the host."""
    backend = Backend.TORCH

    def __init__(self, checkpoint: Checkpoint, model=None, device="cpu",
                 precision: str = "fp32"):
        import torch
        from ..devices import check_precision
        from ..models.base import FrameFeatures, SequenceLogits
        self._torch = torch
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self.model = (model or checkpoint.build_model()).eval().to(self.device)
        self.names = checkpoint.class_names
        self.frame_config = checkpoint.frame_config
        self.clip_seconds = checkpoint.clip_seconds
        self._features = FrameFeatures(self.model)
        self._sequence_module = SequenceLogits(self.model)
        self.temperature = checkpoint.temperature

    def _run(self, module, array: np.ndarray) -> np.ndarray:
        from ..devices import autocast
        torch = self._torch
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = module(torch.from_numpy(array).to(self.device))
        return out.float().cpu().numpy()

    def features(self, frames: np.ndarray) -> np.ndarray:
        return self._run(self._features, np.ascontiguousarray(frames))

    def sequence_logits(self, features: np.ndarray) -> np.ndarray:
        return self._run(self._sequence_module,
                         np.ascontiguousarray(features, dtype=np.float32))


class OrtEngine(Engine):
    backend = Backend.ONNX

    def __init__(self, names: list[str], frame_config: FrameConfig, clip_seconds: float = 0.0,
                 cnn=None, lstm=None, clip=None, clip_takes_float: bool = False,
                 clip_gives_probabilities: bool = False, temperature: float = 1.0,
                 precision: str = "fp32", source: Path | None = None, workers: int = 1):
        """Sessions for the two halves (`cnn`, `lstm`), or for the whole classifier (`clip`,
        from a file: it cannot be split, so it predicts clips only; files from before format
        2 take float frames, from before format 3 give probabilities)."""
        self.names, self.frame_config, self.clip_seconds = names, frame_config, clip_seconds
        self._cnn, self._lstm, self._clip = cnn, lstm, clip
        self._clip_takes_float = clip_takes_float
        self._clip_gives_probabilities = clip_gives_probabilities
        self.splits = cnn is not None and lstm is not None
        self.temperature, self.precision, self.source = temperature, precision, source
        # On the CPU, `cnn` runs on one thread, from `workers` threads at once (features).
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, "lrcn-cnn") if workers > 1 else None
        self._per_run = max(1, PIXELS_PER_RUN // (frame_config.height * frame_config.width))
        if self._pool is not None:
            # Runs bound memory (one per thread at a time): a batch goes at once, so threads meet
            # once, not every 160 frames (seed model, batch 64: 1.15x clips/s; 1.45x when noisy)
            self.frames_per_call = sys.maxsize

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, threads: int = 0,
                        cuda: int | None = None, int8: bool = False,
                        graphs: tuple[str, str] | None = None) -> "OrtEngine":
        """Both halves, exported once per checkpoint file and then read from the graph
        cache (graphs.py); `int8`: the CNN quantized, calibrated on the run's clips. On the CPU
        the CNN's session has one thread and is run from `threads` threads at once (0: one per
        usable core; the LSTM's session keeps ONNX Runtime's threads): its runs need no
        barrier between cores, as one session's threads do at every layer, and are of the
        size measured fastest (PIXELS_PER_RUN). In fresh processes, old and new alternated,
        the seed model's CNN ran 1.1x faster so than on one two-thread session, effnet's
        1.10x at batches of 32 and 1.23x at 160."""
        cnn, lstm = graphs or engine_graphs(checkpoint, int8=int8)
        workers = 1 if cuda is not None else threads or usable_cores()
        return cls(checkpoint.class_names, checkpoint.frame_config, checkpoint.clip_seconds,
                   cnn=ort_session(cnn, 1 if cuda is None else 0, cuda),
                   lstm=ort_session(lstm, 0, cuda), temperature=checkpoint.temperature,
                   precision=INT8 if int8 else "fp32", workers=workers)

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int = 0,
                  cuda: int | None = None) -> "OrtEngine":
        """An exported .onnx file: the model, its classes and its preprocessing settings. Its
        one session keeps ONNX Runtime's threads: it can split a batch only by whole clips,
        and one clip on one thread took 1.6-1.9x as long (effnet-lstm, 2 cores)."""
        path = Path(path)
        if not path.is_file():
            raise LrcnError("no such ONNX model file", path, ErrorKind.NOT_FOUND)
        try:
            errors = ort_errors()
        except ImportError:
            raise LrcnError("an ONNX model needs ONNX Runtime (pip install onnxruntime)",
                            path, ErrorKind.SETTING) from None
        try:
            session = ort_session(str(path), threads, cuda)
        except errors as exc:
            raise LrcnError(f"not a loadable ONNX model ({str(exc).splitlines()[0]})",
                            path) from None
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("lrcn_format") != ONNX_FORMAT:
            raise LrcnError("an ONNX model without lrcn metadata (export it with "
                            "`lrcn export`)", path)
        version = int(meta.get("lrcn_format_version", "1"))
        if version > ONNX_FORMAT_VERSION:
            raise LrcnError(f"ONNX format version {version} is newer than this lrcn reads "
                            f"({ONNX_FORMAT_VERSION}): upgrade lrcn", path)
        inputs = session.get_inputs()
        if [i.name for i in inputs] != ["frames"]:
            raise LrcnError("the ONNX model does not take lrcn's 'frames' input", path)
        try:
            names = [str(n) for n in json.loads(meta["classes"])]
            frames = from_dict(FrameConfig, json.loads(meta["frames"]))
            info = json.loads(meta.get("info", "{}"))
            clip_seconds = float(meta.get("clip_seconds", info.get("clip_seconds", 0.0)))
            temperature = float(meta.get("temperature", 1.0))
            precision = str(meta.get("precision", "fp32"))
            if not (0 < temperature < np.inf and 0 <= clip_seconds < np.inf):
                raise ValueError(f"temperature {temperature}, clip_seconds {clip_seconds}")
        except (KeyError, TypeError, ValueError) as exc:
            raise LrcnError(f"damaged lrcn metadata in the ONNX model ({exc})", path) from None
        check_onnx_file(session, frames, names, path)
        return cls(names, frames, clip_seconds, clip=session,
                   clip_takes_float=inputs[0].type == "tensor(float)",
                   clip_gives_probabilities=version < 3, temperature=temperature,
                   precision=precision, source=path)

    @property
    def metadata(self) -> dict[str, str]:
        """An exported file's lrcn metadata (export.py's); {} for a checkpoint's sessions."""
        return dict(self._clip.get_modelmeta().custom_metadata_map) if self._clip else {}

    def features(self, frames: np.ndarray) -> np.ndarray:
        self._need_split()
        if self._pool is None:      # a GPU or one core: one run
            return self._cnn_run(np.ascontiguousarray(frames, dtype=np.uint8))
        return self._runs(frames, self._workers)

    def parallel_features(self) -> tuple[Callable[[np.ndarray], np.ndarray], int, int]:
        if self._pool is None:
            return super().parallel_features()
        return self._runs, self._workers, self._per_run

    def _runs(self, frames: np.ndarray, threads: int = 1) -> np.ndarray:
        """Frames through the CNN in equal runs of about _per_run, a whole number of them for
        each of `threads` of the pool (1: one after another in this thread)."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        runs = min(len(frames), threads * math.ceil(len(frames) / (threads * self._per_run)))
        if runs < 2:
            return self._cnn_run(frames)
        parts = np.array_split(frames, runs)
        ran = self._pool.map(self._cnn_run, parts) if threads > 1 else map(self._cnn_run, parts)
        return np.concatenate(list(ran))

    def _cnn_run(self, frames: np.ndarray) -> np.ndarray:
        return self._cnn.run(None, {"frames": frames})[0]

    def sequence_logits(self, features: np.ndarray) -> np.ndarray:
        self._need_split()
        return self._lstm.run(None, {"features": np.ascontiguousarray(features,
                                                                      dtype=np.float32)})[0]

    def _clip_logits(self, batch: np.ndarray) -> np.ndarray:
        if self._clip is None:
            return super()._clip_logits(batch)
        if self._clip_takes_float:   # a file from before format 2
            batch = batch.astype(np.float32) / np.float32(255)
        else:
            batch = np.ascontiguousarray(batch, dtype=np.uint8)
        out = self._clip.run(None, {"frames": batch})[0]
        if self._clip_gives_probabilities:
            # A file from before format 3 outputs probabilities p = softmax(z). log p =
            # z - logsumexp(z) is z shifted by one constant for every class, which softmax(. / T)
            # ignores: a valid logit. p can underflow to 0 in float32 for a class far behind; the floor
            # (the smallest normal float32, log = -87.3) keeps its log finite.
            out = np.log(np.maximum(out, np.finfo(np.float32).tiny))
        return out

    def _need_split(self) -> None:
        if not self.splits:
            raise LrcnError("an exported ONNX file holds the whole classifier, which cannot "
                            "be split into per-frame features and the LSTM: long videos and "
                            "streams need the checkpoint", kind=ErrorKind.SETTING)


def make_engine(checkpoint: Checkpoint, backend: Backend | str = Backend.AUTO,
                device: str = "auto", precision: str = "fp32", warn=sys.stderr) -> Engine:
    """The engine for a checkpoint on `device` ("auto": CUDA when there is one).

    Backend.AUTO: ONNX Runtime when it is installed, the export works and it can run on the
    device (its CUDA provider for a GPU), else PyTorch, saying why on `warn` when ONNX Runtime
    was expected (the results are the same; only the speed differs), and recording it in the
    engine's `fallback_reason`. bf16/fp16 run on PyTorch (the ONNX graphs are fp32); int8 on
    ONNX Runtime on the CPU only, with no fallback (graphs.py).
    Backend.ONNX or TORCH: that one, or an LrcnError."""
    from ..devices import check_precision, resolve_device
    backend = Backend.parse(backend)
    target = resolve_device(device)
    if precision == INT8:
        if backend is Backend.TORCH or target.type != "cpu":
            raise LrcnError("--precision int8 runs on ONNX Runtime on the CPU, not on "
                            f"{'PyTorch' if backend is Backend.TORCH else target}",
                            kind=ErrorKind.SETTING)
        return OrtEngine.from_checkpoint(checkpoint, int8=True)
    check_precision(precision, also=(INT8,))
    if backend is Backend.TORCH:
        return TorchEngine(checkpoint, device=target, precision=precision)
    cause = None
    if precision != "fp32":
        cause = f"{precision} runs under PyTorch's autocast"
    elif target.type == "cuda" and not ort_has_cuda():
        cause = "ONNX Runtime has no CUDA provider here (pip install onnxruntime-gpu)"
    elif target.type not in ("cpu", "cuda"):
        cause = f"ONNX Runtime does not run on {target.type}"
    else:
        try:
            return OrtEngine.from_checkpoint(
                checkpoint, cuda=target.index or 0 if target.type == "cuda" else None)
        except ImportError as exc:
            cause = f"ONNX Runtime is not installed ({exc.name or exc})"
        except expected_ort_failures() as exc:   # an exporter or runtime that cannot take it
            cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    if backend is Backend.ONNX:
        raise LrcnError(f"--backend onnx failed: {cause}", kind=ErrorKind.SETTING)
    if warn is not None and target.type == "cpu" and precision == "fp32":
        print(f"lrcn: note: running on PyTorch, not ONNX Runtime ({cause}); the results are "
              "the same, only slower", file=warn)
    engine = TorchEngine(checkpoint, device=target, precision=precision)
    engine.fallback_reason = cause
    return engine


def load_engine(path: str | os.PathLike, backend: Backend | str = Backend.AUTO,
                device: str = "auto", precision: str = "fp32") -> Engine:
    """An engine for a checkpoint file, a run folder or an exported .onnx file."""
    backend = Backend.parse(backend)
    if is_onnx_file(path):
        if backend is Backend.TORCH or precision not in ("fp32", INT8):
            raise LrcnError("an ONNX model runs on ONNX Runtime only, in its own precision; "
                            "for --backend torch or --precision bf16/fp16, pass the checkpoint",
                            path, ErrorKind.SETTING)
        engine = OrtEngine.from_file(path, cuda=ort_device(device))
        if precision == INT8 and engine.precision != INT8:
            raise LrcnError("--precision int8: this ONNX file is not an int8 export (`lrcn "
                            "export RUN --quantize int8` makes one)", path, ErrorKind.SETTING)
        return engine
    from ..devices import surely_no_cuda
    from ..models.checkpoint import load_checkpoint
    if backend is not Backend.TORCH and precision in ("fp32", INT8) and \
            (device == "cpu" or device == "auto" and surely_no_cuda()):
        # Graphs cached: built from its settings, no torch import (1-2 s of a one-clip predict)
        checkpoint = load_checkpoint(path, weights=False)
        try:
            graphs = cached_engine_graphs(checkpoint, int8=precision == INT8)
            if graphs:
                return OrtEngine.from_checkpoint(checkpoint, int8=precision == INT8, graphs=graphs)
        except expected_ort_failures():
            pass
    return make_engine(load_checkpoint(path), backend, device, precision)


__all__ = ["Backend", "Engine", "TorchEngine", "OrtEngine", "make_engine", "load_engine",
           "ort_session", "ort_errors", "is_onnx_file", "INT8"]
