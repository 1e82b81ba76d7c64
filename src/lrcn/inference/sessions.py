"""ONNX Runtime sessions with lrcn's options, and what ONNX Runtime can do here (int8's exact
products on x86 CPUs without VNNI, and the graphs they need). ONNX Runtime is imported only when
a session is made, so that lrcn imports without it."""
from __future__ import annotations

import functools
import itertools
import math
import os
import platform
import sys
from pathlib import Path

from ..errors import ErrorKind, LrcnError


def ort_session(model: bytes | str, threads: int = 0, cuda: int | None = None):
    """An ONNX Runtime session with lrcn's options: on CUDA device `cuda` when that is given
    and ONNX Runtime has its CUDA provider (onnxruntime-gpu), else on the CPU."""
    import onnxruntime as ort
    options = session_options(threads)
    exact = int8_products_saturate()
    providers: list = ["CPUExecutionProvider"]
    if cuda is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda}))
    try:
        return ort.InferenceSession(model, options, providers=providers)
    except ort_errors() as exc:
        # an int8 file exported before lrcn gave each node its own weights (convlstm's, until
        # 2026-12-03): the exact products' rewrite refuses a weight that several nodes read
        if not exact or "replace the existing tensor" not in str(exc):
            raise
    return ort.InferenceSession(unshared_graph(model), options, providers=providers)


def session_options(threads: int = 0):
    """lrcn's ONNX Runtime session options (ort_session; bench/ort_profile.py adds profiling)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # ORT's workers spin after each run by default, stealing the cores from whatever runs
    # next in this process (decoding, PyTorch, the next ORT call's own setup): measured as
    # a 2x slowdown of batch inference fed from the frame cache on 2 cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if int8_products_saturate():
        # ONNX Runtime's exact uint8 x uint8 products in place of its uint8 x int8 ones, whose
        # pairs of products are summed in 16 bits and saturate on such CPUs: effnet's int8
        # features fell to a cosine of 0.973 to fp32's (worst frame 0.930) on an AVX2 EPYC,
        # against 0.996 (0.990) now, as a VNNI CPU computes them. fp32 graphs are unaffected.
        options.add_session_config_entry("session.x64quantprecision", "1")
        # not ort_session's first try at an old shared-weight file as an error line: it is met
        options.log_severity_level = 4
    return options


def unshare_weights(graph) -> bool:
    """Give each node that reads a quantized weight its own copy of it (its DequantizeLinear
    and that node's initializers): convlstm's recurrent convolution is one weight read at every
    time step, and ONNX Runtime's exact-products rewrite (int8_products_saturate)
    refuses a graph whose int8 weight several nodes share ("Attempt to replace the existing
    tensor"). True if anything was copied."""
    import onnx
    initializers = {w.name: w for w in graph.initializer}
    nodes = list(graph.node)
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            readers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}
    taken = set(initializers) | {n.name for n in nodes} | {o for n in nodes for o in n.output}
    claimed: set[str] = set()

    def fresh(name: str) -> str:
        new = next(f"{name}_{k}" for k in itertools.count(1) if f"{name}_{k}" not in taken)
        taken.add(new)
        return new

    def own(node) -> None:
        """The node's initializers made its own: copied where another node claimed them."""
        for k, name in enumerate(node.input):
            if name in initializers and name in claimed:
                copy = onnx.TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = node.input[k] = fresh(name)
                graph.initializer.append(copy)
            claimed.add(node.input[k])

    before: dict[int, list] = {}          # twins to put before their reader
    for node in nodes:
        if node.op_type != "DequantizeLinear" or node.input[0] not in initializers:
            continue
        own(node)
        users = readers.get(node.output[0], [])
        # its first reader keeps it, unless the graph outputs it too (a reader of its own)
        for i in users[0 if node.output[0] in outputs else 1:]:
            twin = onnx.NodeProto()
            twin.CopyFrom(node)
            twin.name, twin.output[0] = fresh(node.name or "DequantizeLinear"), \
                fresh(node.output[0])
            own(twin)
            nodes[i].input[:] = [twin.output[0] if n == node.output[0] else n
                                 for n in nodes[i].input]
            before.setdefault(i, []).append(twin)
    changed = bool(before) or len(graph.initializer) > len(initializers)
    if changed:
        ordered = []
        for i, node in enumerate(nodes):
            for n in before.get(i, []) + [node]:
                ordered.append(onnx.NodeProto())     # copies: the field's own are cleared next
                ordered[-1].CopyFrom(n)
        del graph.node[:]
        graph.node.extend(ordered)
    return changed


def unshared_graph(model: bytes | str) -> bytes:
    """An int8 graph (bytes or a file) with no quantized weight shared (unshare_weights): for
    int8 files exported before lrcn unshared them."""
    import onnx
    graph = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    unshare_weights(graph.graph)
    return graph.SerializeToString()


@functools.lru_cache(maxsize=1)
def int8_products_saturate() -> bool:
    """Whether ONNX Runtime's int8 kernels can saturate on this CPU (cpu_saturates), unless
    $LRCN_INT8_EXACT says: 1 for the exact products (ort_session), 0 for the fast ones (for a
    CPU with AVX-VNNI that its flags do not show: an old Linux kernel, Windows, macOS)."""
    forced = os.environ.get("LRCN_INT8_EXACT", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return cpu_saturates()


def cpu_saturates(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether ONNX Runtime's int8 kernels can saturate on this CPU: an x86 one without VNNI or
    AMX, where they multiply uint8 by int8 with vpmaddubsw, which sums each pair of products
    in 16 bits (255 x -128 x 2 does not fit). Elsewhere (VNNI, AMX, ARM) the sums are exact.
    From Linux's CPU flags where they can be read, else NumPy's view of the CPU (which knows
    AVX-512 VNNI, not AVX-VNNI: such a CPU is then taken as saturating, the safe side)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    exact = {"avx512_vnni", "avx_vnni", "amx_int8"}
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return not exact & set(line.split(":", 1)[1].split())
    except (OSError, ValueError):
        pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:                                                    # NumPy 1
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return True
    return not features.get("AVX512VNNI", False)


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may run on, at least 1: its affinity where the OS says (under
    taskset or a container's cpuset), capped by a CPU quota (`docker --cpus 2` on a large
    host gives all the host's cores to the affinity, and two cores' time)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cpu_quota(cgroup: Path) -> float | None:
    """Cores' worth of CPU time the cgroup allows (cgroup v2's cpu.max, else v1's CFS
    quota), or None where there is no quota or no such file. The root's files are a
    container's own limits, as the container sees them."""
    try:
        v2 = cgroup / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
        else:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1") or float(period) <= 0:
            return None
        return float(quota) / float(period)
    except (OSError, ValueError):
        return None


def ort_has_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def ort_errors() -> tuple[type[Exception], ...]:
    """The exception types ONNX Runtime raises (InvalidProtobuf, Fail, NotImplemented, ...: all
    direct subclasses of Exception, defined by its C++ binding)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    return tuple(value for value in vars(state).values()
                 if isinstance(value, type) and issubclass(value, Exception))


def ort_device(device: str) -> int | None:
    """The CUDA device for ONNX Runtime alone (no PyTorch needed): None for the CPU."""
    from ..devices import check_device_name
    name = check_device_name(device)
    if name == "cpu" or (name == "auto" and not ort_has_cuda()):
        return None
    if name == "mps":
        raise LrcnError("--device mps: ONNX Runtime does not run on MPS; pass the checkpoint",
                        kind=ErrorKind.SETTING)
    if not ort_has_cuda():
        raise LrcnError(f"--device {name}: this ONNX Runtime has no CUDA provider (pip install "
                        "onnxruntime-gpu), or pass the checkpoint to run on PyTorch",
                       kind=ErrorKind.SETTING)
    return int(name.split(":")[1]) if ":" in name else 0


def expected_ort_failures() -> tuple[type[BaseException], ...]:
    """What goes wrong, without a bug in lrcn, when a checkpoint is put on ONNX Runtime: it is
    not installed, the exporter cannot take the model, or ORT cannot load or run the graph.
    Anything else is a bug, and surfaces. (Only an export raises the exporter's error, and
    only with torch imported: without it, this imports no torch.)"""
    failures: list[type[BaseException]] = [ImportError]
    if "torch" in sys.modules:
        from torch.onnx import OnnxExporterError
        failures.append(OnnxExporterError)
    try:
        failures += ort_errors()
    except ImportError:
        pass
    return tuple(failures)


__all__ = ["ort_session", "session_options", "unshare_weights", "unshared_graph",
           "int8_products_saturate", "cpu_saturates", "ort_has_cuda", "ort_errors",
           "usable_cores", "ort_device", "expected_ort_failures"]
