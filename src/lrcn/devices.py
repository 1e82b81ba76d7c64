"""Where the model runs (`--device`) and in what precision (`--precision`), for every command
that runs it. One code path for all devices: the model, its batches and its dropout masks are
put on the device chosen here, and autocast gives the lower precisions.

torch is imported when a device is resolved, not with this module, so that the command line's
parser can name the choices without loading PyTorch.
"""
from __future__ import annotations

import contextlib
import re

from .config import Precision
from .errors import ErrorKind, LrcnError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = tuple(p.value for p in Precision)


def check_device_name(name: str) -> str:
    """The spelling of a device name (not whether the machine has it)."""
    if name in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise LrcnError(f"unknown device {name!r} ({DEVICE_CHOICES})", kind=ErrorKind.SETTING)


def surely_no_cuda() -> bool:
    """Whether 'auto' is surely the CPU, known without importing torch (which takes 1-2 s of a
    short command such as `lrcn predict` on one clip): a CPU build of torch, a Mac, or Linux
    without NVIDIA's driver (no /proc/driver/nvidia, no /dev/nvidia*, no WSL GPU /dev/dxg).
    False when unsure (a ROCm build, Windows): then torch is asked."""
    import glob
    import os
    import sys
    from importlib import metadata
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return True          # no torch: no CUDA that lrcn could use
    if version.endswith("+cpu") or sys.platform == "darwin":
        return True
    if not sys.platform.startswith("linux") or "rocm" in version:
        return False
    return not (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/dxg")
                or glob.glob("/dev/nvidia*"))


def resolve_device(name: str = "auto"):
    """'auto' is CUDA when there is a CUDA device (the first), else the CPU. A device that this
    machine does not have is an LrcnError (one line, exit 2), never a silent CPU run."""
    import torch
    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LrcnError("--device mps: this machine has no Apple GPU (MPS) that PyTorch "
                            "can use", kind=ErrorKind.SETTING)
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise LrcnError(f"--device {name}: this machine has no CUDA GPU that PyTorch can use "
                        f"(torch {torch.__version__}, CUDA build: "
                        f"{'yes' if torch.version.cuda else 'no'})", kind=ErrorKind.SETTING)
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise LrcnError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})",
                        kind=ErrorKind.SETTING)
    return torch.device(f"cuda:{index}")


def check_precision(precision: str, also: tuple[str, ...] = ()) -> Precision:
    """The training precision `precision`, else a SETTING error that lists them with `also`
    (what the caller takes besides: inference's int8)."""
    try:
        return Precision(precision)
    except ValueError:
        raise LrcnError(f"unknown precision {precision!r} ({', '.join(PRECISIONS + also)})",
                        kind=ErrorKind.SETTING) from None


_tf32_off = False     # no_tf32 has run: fp32 is full fp32 for the rest of the process


def no_tf32() -> None:
    """Full fp32 matrix products and convolutions on CUDA, for the rest of the process: PyTorch
    would otherwise run convolutions in TF32 (cuDNN's default), about 1e-3 off, and a model
    trained or run there would not predict what it predicts on a CPU. Process-wide flags, so
    set once (the first fp32 model on a GPU), never per call: the server runs models from
    several threads, and flags saved and restored per call would race. (Two threads that both
    get here first set the same values.)"""
    global _tf32_off
    if _tf32_off:
        return
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    _tf32_off = True


def autocast(device, precision: str = Precision.FP32):
    """The precision of the maths on `device`. fp32 (the default, the tutorial's) is full fp32
    (no TF32: no_tf32, once per process). bf16 and fp16 are torch's autocast (matrix products
    and convolutions in the low precision, reductions and the loss in fp32)."""
    import torch
    precision = check_precision(precision)
    if precision is Precision.FP32:
        if device.type == "cuda":
            no_tf32()
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_fp32() -> contextlib.AbstractContextManager:
    """Full fp32 matrix products and convolutions inside a block, the flags restored after it:
    for reference computations in tests and parity checks (one thread), which must not run in
    TF32 on an Ampere or newer GPU, where PyTorch's and Keras's defaults may differ by ~1e-3.
    Models use autocast, which sets the flags once (no_tf32). When no_tf32 first runs inside
    the block (the process's first fp32 model on a GPU), nothing is restored: what no_tf32
    set holds for the rest of the process, or later fp32 models would run in TF32."""
    import torch

    @contextlib.contextmanager
    def scope():
        matmul = torch.backends.cuda.matmul.allow_tf32
        cudnn = torch.backends.cudnn.allow_tf32
        precision = torch.get_float32_matmul_precision()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        already_off = _tf32_off
        try:
            yield
        finally:
            if already_off or not _tf32_off:
                torch.backends.cuda.matmul.allow_tf32 = matmul
                torch.backends.cudnn.allow_tf32 = cudnn
                torch.set_float32_matmul_precision(precision)
    return scope()


_KEPT = False


def keep_freed_memory() -> None:
    """On Linux with glibc, once per process: freed blocks of up to 32 MB stay in the heap for
    the next allocation instead of going back to the system. A CPU training step allocates
    and frees the same tensors every chunk (the first convolution's output alone is 10 MB);
    glibc's adaptive thresholds sometimes settle on mapping them afresh each time, and every
    new page then faults on first touch: about a quarter of each step, in some processes and
    not others (bench/freed_memory.py). PyTorch's CPU tuning guide recommends jemalloc or
    tcmalloc for the same reason; this needs neither. The cost is that memory freed by
    training is kept by the process until it ends."""
    global _KEPT
    if _KEPT:
        return
    _KEPT = True
    import ctypes
    import ctypes.util
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):     # musl and others: their own allocators
        return
    # M_MMAP_THRESHOLD (-3) at glibc's maximum; setting it fixes M_TRIM_THRESHOLD's (-1)
    # adaptation too, so that is raised with it (alone it makes things worse: every block
    # over 128 kB is then mapped).
    mallopt(-3, 32 << 20)
    mallopt(-1, 512 << 20)


__all__ = ["DEVICE_CHOICES", "PRECISIONS", "Precision", "check_device_name", "resolve_device",
           "surely_no_cuda",
           "check_precision", "no_tf32", "autocast", "full_fp32", "keep_freed_memory"]
