"""Training on several processes and machines with PyTorch's own launcher:

    torchrun --nnodes N --nproc-per-node P -m lrcn train DATA ...     (or lrcn train --nproc P)

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup()` joins the process group (gloo on CPUs,
NCCL on GPUs, one GPU per process) with a timeout that is set, not PyTorch's default, so that
a rank that died or hangs makes the others fail with a message rather than wait for hours.
One process without torchrun is a world of one, and every helper here is then a no-op.
"""
from __future__ import annotations

import datetime
import gc
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

from .errors import ErrorKind, LrcnError

# Seconds a collective may wait for the slowest rank. The cache fill ends in one (ranks wait
# for each other's decoding), so it is generous; $LRCN_DIST_TIMEOUT sets another.
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def rank_seed(seed: int, rank: int) -> int:
    """Seed `seed` for process `rank`: rank 0 keeps it (so one process draws what a run
    without torchrun draws), the others get streams of their own, a large prime apart."""
    return seed + 1_000_003 * rank


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets the same)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it, known before the process group is set up
    (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def torchrun_command(argv: Sequence[str], nproc: int,
                     python: str = sys.executable) -> list[str]:
    """`lrcn train --nproc P ...` as the command that runs it under torchrun on this machine:
    `python -m torch.distributed.run --standalone --nproc-per-node P -m lrcn ...` with the same
    arguments (`argv`, without the `lrcn`) less --nproc, which each process must not see. An
    abbreviation argparse accepts (--npr 2, --npro=2) is --nproc too."""
    if launched():
        raise LrcnError("--nproc is for starting processes; under torchrun, leave it out",
                        kind=ErrorKind.SETTING)
    rest, skip = [], False
    for item in argv:
        flag = item.split("=", 1)[0]
        if skip:
            skip = False
        elif len(flag) > 3 and "--nproc".startswith(flag):
            skip = "=" not in item          # its value is the next item
        else:
            rest.append(item)
    return [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(nproc), "-m", "lrcn", *rest]


def launch(command: Sequence[str]) -> int:
    """Run torchrun_command's launcher in this process, so that a process that fails ends in one
    line here (its own one-line error is above it) instead of the launcher's traceback; the
    exit code is the failed process's when it is one of lrcn's (1, 2, 3), else 1."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    try:
        run(get_args_parser().parse_args(list(command[3:])))   # after python -m module
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        print(f"lrcn: error: training process {rank} stopped (exit code {failure.exitcode}); "
              "the others were stopped with it", file=sys.stderr)
        return failure.exitcode if failure.exitcode in (1, 2, 3) else 1
    except SignalException:
        print("lrcn: interrupted (finished work is kept: resume with --resume)", file=sys.stderr)
        return 130
    return 0


def setup(device_type: str) -> World:
    """Join the process group torchrun described (once); a World of one without torchrun."""
    if not launched():
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        timeout = float(os.environ.get("LRCN_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as exc:
            raise LrcnError(f"could not join the training group ({str(exc).splitlines()[0]})",
                            kind=ErrorKind.FAILED) from None
    return World(dist.get_rank(), dist.get_world_size(),
                 int(os.environ.get("LOCAL_RANK", "0")))


# What gloo, NCCL and c10d say when another process stopped answering or went away (their
# errors are plain RuntimeErrors, raised wherever a collective was waiting: DDP's gradient
# averaging in backward(), a broadcast, a barrier).
_GROUP_FAILURES = ("timed out", "timeout", "connection closed", "connection reset",
                   "broken pipe", "gloo", "nccl", "c10d")


def group_failure(exc: BaseException, world: World) -> LrcnError | None:
    """The one-line LrcnError for a collective that failed because another process of the run
    stalled past $LRCN_DIST_TIMEOUT or died (TIMEOUT or FAILED), or None for any other error
    (which is then not this module's to explain). torchrun stops the other processes."""
    if not world.distributed or not isinstance(exc, RuntimeError):
        return None
    first = (str(exc).splitlines() or [""])[0].strip()
    lowered = first.lower()
    if not (isinstance(exc, getattr(dist, "DistError", ())) or
            any(word in lowered for word in _GROUP_FAILURES)):
        return None
    timeout = float(os.environ.get("LRCN_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if "timed out" in lowered or "timeout" in lowered:
        return LrcnError(f"rank {world.rank}: another training process did not answer within "
                         f"{timeout:g} s ($LRCN_DIST_TIMEOUT): it stalled or died ({first})",
                         kind=ErrorKind.TIMEOUT)
    return LrcnError(f"rank {world.rank}: the training group failed; another process may have "
                     f"died ({first})", kind=ErrorKind.FAILED)


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's value on every rank (the split, computed once)."""
    if not world.distributed:
        return value
    box = [value if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, world: World) -> list[Any]:
    """Every rank's value, on every rank, in rank order."""
    if not world.distributed:
        return [value]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """Element-wise sums over the ranks (epoch losses, correct counts, clips seen), in float64
    so that the sums are those of one process."""
    if not world.distributed:
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def teardown(finished: bool = False) -> None:
    """Leave the process group. A run that `finished` waits for the others first, so that no
    process closes its connections while another still uses them. The garbage collection frees
    the DistributedDataParallel wrapper (its hooks make a reference cycle) and the gloo work it
    holds now, while the interpreter is whole: freed at interpreter exit instead, they aborted
    a process ("terminate called without an active exception", exit code -6) on torch 2.14."""
    if not dist.is_initialized():
        return
    if finished:
        try:
            dist.barrier()
        except RuntimeError:    # another process is gone: nothing left to wait for
            pass
    gc.collect()
    dist.destroy_process_group()


__all__ = ["World", "rank_seed", "launched", "launched_rank", "torchrun_command", "launch",
           "setup",
           "broadcast", "gather", "barrier", "sum_over_ranks", "teardown", "group_failure",
           "DEFAULT_TIMEOUT_S"]
