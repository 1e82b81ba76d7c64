"""One training step and one epoch of the seed tutorial's `model.fit`, on any device and in
any number of processes: what train.py's loop and the benches run.

The step is Keras's: Adam with Keras's epsilon, cross-entropy averaged over the batch. The CPU
fast paths are here (chunked steps that keep activations in cache); so is what a GPU and data
parallelism need (no host syncs between steps, DDP's averaging made the whole batch's mean).
"""
from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from ..config import TrainConfig
from ..console import progress as console_progress
from ..devices import autocast
from ..distributed import World, sum_over_ranks
from ..errors import ErrorKind, LrcnError
from ..models.base import ChunkMasks, ClipClassifier, clips_to_input


# Clips per forward/backward pass inside a training step on one CPU thread (and in each of
# several data-parallel processes). The CNN's activations for
# a few clips stay in the CPU's caches; for a whole batch of 32 they do not (conv1's output alone
# is 160 MB), and the step runs at two thirds of the speed (bench/train_infer.py). Gradients are
# summed over the chunks, so the step is the same maths as one pass over the batch. A GPU wants
# the opposite: the whole batch in one pass.
CHUNK_CLIPS = 2

# With more than one thread, a CPU step's chunks are of 4 clips, and run at once in worker
# threads that share out the threads (_chunks_in_threads; 2 cores: two workers of one
# thread). PyTorch's own threads meet at a barrier after every operation, which waits for the
# slower core; on a VM whose cores are shared, steps on two PyTorch threads varied 3x from
# round to round. A batch of 4 is one pass on all threads.
# Measured 2026-12-02 on 2 cores (bench/train_infer.py's time_train, fresh processes, old and
# new alternated three times, medians): batch 32 151 against 124 clips/s, batch 8 125 against
# 103, batch 4 126 against 115 (the old: chunks of 2 in turn, on both threads). Chunks of 2
# or 8 in threads were slower than 4 (124 and 104 where 4 made 134).
THREAD_CHUNK_CLIPS = 4


def make_optimizer(model: ClipClassifier, lr: float) -> torch.optim.Optimizer:
    """Adam with Keras's epsilon (1e-7; PyTorch's default is 1e-8). The fused kernel updates all
    ten parameter tensors in one call: 0.2 ms instead of 1 ms per step, which matters at batch 4."""
    params = model.param_groups(lr)
    try:
        return torch.optim.Adam(params, lr=lr, eps=1e-7, fused=True)
    except (RuntimeError, TypeError):  # a torch (or device) without fused Adam
        return torch.optim.Adam(params, lr=lr, eps=1e-7)


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based) of `config.epochs`: config.lr throughout, or
    under the cosine schedule config.lr at epoch 1 falling along half a cosine to lr/epochs at
    the last (not 0: the last epoch still learns), and thereafter. A run extended by
    resuming has a config of the new length: it goes on along the longer curve, from a rate
    that may be higher than its last (a warm restart)."""
    if config.schedule == "constant" or config.epochs == 1:
        return config.lr
    done = (min(epoch, config.epochs) - 1) / (config.epochs - 1)       # 0 .. 1
    floor = config.lr / config.epochs
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * done))


def _chunk(model: ClipClassifier, size: int, chunk_clips: int | None) -> int:
    if model.config.batchnorm:
        return size        # batch normalisation makes the clips of a batch interact
    if chunk_clips is None:
        chunk_clips = CHUNK_CLIPS if next(model.parameters()).device.type == "cpu" else size
    return chunk_clips


def train_step(model: ClipClassifier, optimizer: torch.optim.Optimizer, clips: torch.Tensor,
               labels: torch.Tensor, chunk_clips: int | None = None, precision: str = "fp32",
               scaler=None, divisor: float | None = None, net=None,
               class_weights: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of uint8 clips on the model's device. Returns (summed
    data loss, correct count) as tensors on the device: reading them is left to the caller,
    once per epoch, so that a GPU never waits for the host between steps.

    The loss is the batch mean, as in Keras; it is computed and back-propagated chunk by
    chunk (each chunk's summed loss divided by the batch size), which gives the same gradients
    as the whole batch at once because clips do not interact in the model. `precision`
    bf16/fp16 runs the forward pass under autocast; fp16 scales the loss (`scaler`).

    Data-parallel: `net` is the DistributedDataParallel wrapper, which averages gradients over
    the processes during the last chunk's backward pass; `divisor` (loader.Batch) makes that
    average the whole global batch's mean, and 0 marks a stand-in batch whose loss counts
    for nothing (the process still takes part in the averaging).

    `class_weights` (--balance) weights each clip's loss by its class's weight; the figure
    returned stays the unweighted loss, comparable with validation's.

    On a CPU with several threads (and one process) the chunks run at once in worker threads
    (THREAD_CHUNK_CLIPS); with `chunk_clips` given, chunks of that size.
    """
    model.train()
    net = net or model
    size = len(labels)
    weight = 1.0
    if divisor is not None:
        weight = 0.0 if divisor == 0 else 1.0
        divisor = divisor or 1.0
    else:
        divisor = size
    optimizer.zero_grad(set_to_none=True)
    threads = _step_threads(model, net, clips, scaler)
    chunk = _chunk(model, size, chunk_clips) if threads == 1 else \
        chunk_clips or THREAD_CHUNK_CLIPS
    if threads > 1 and size > chunk:
        parts = [slice(start, start + chunk) for start in range(0, size, chunk)]
        total, correct = _chunks_in_threads(model, clips, labels, parts, threads, precision,
                                            weight / divisor, class_weights)
    else:
        total, correct = _chunks_in_turn(model, net, clips, labels, chunk, precision, scaler,
                                         weight / divisor, class_weights)
    if model.config.l2:
        penalty = model.regularization_loss()
        (scaler.scale(penalty) if scaler is not None else penalty).backward()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total, correct


def _totals(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # The loss summed in float64, as Python floats summed it before (MPS has no float64).
    return (torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64,
                        device=device), torch.zeros((), dtype=torch.long, device=device))


def _losses(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss as reported, summed loss to back-propagate) of a chunk."""
    loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
    objective = loss if class_weights is None else nn.functional.cross_entropy(
        logits.float(), labels, weight=class_weights, reduction="sum")
    return loss, objective


def _chunks_in_turn(model, net, clips, labels, chunk_clips: int, precision: str, scaler,
                    scale: float, class_weights) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward passes of the chunks one after another, gradients accumulated
    in the parameters' .grad (a GPU: one chunk, the whole batch)."""
    starts = list(range(0, len(labels), chunk_clips))
    total, correct = _totals(clips.device)
    for start in starts:
        part = slice(start, start + chunk_clips)
        # Gradients are averaged over the processes once, with the last chunk.
        sync = contextlib.nullcontext() if start == starts[-1] or net is model else \
            net.no_sync()
        with sync:
            with autocast(clips.device, precision):
                logits = net(clips_to_input(clips[part]))
            loss, objective = _losses(logits, labels[part], class_weights)
            scaled = objective * scale
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if scale:
            total += loss.detach()
            correct += (logits.detach().argmax(1) == labels[part]).sum()
    return total, correct


def _step_threads(model: ClipClassifier, net, clips: torch.Tensor, scaler) -> int:
    """How many threads run a step's chunks at once: PyTorch's thread count on the CPU, for
    one process (a data-parallel step keeps DDP's one backward pass per chunk) with clips that
    do not interact (no batch normalisation)."""
    if clips.device.type != "cpu" or net is not model or scaler is not None \
            or model.config.batchnorm:
        return 1
    return torch.get_num_threads()


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(workers: int, each: int) -> ThreadPoolExecutor:
    """`workers` threads that run PyTorch on `each` threads apiece, kept for the process. A
    thread's OpenMP thread count is its own. PyTorch sets it at the thread's first call, from
    the process's count, which torch.set_num_threads also sets: so each worker makes a first
    call, then sets its count, and this thread's count is set again once all have."""
    pool = _pools.get((workers, each))
    if pool is None:
        pool, started = ThreadPoolExecutor(workers, thread_name_prefix="lrcn-train"), \
            threading.Barrier(workers)
        threads = torch.get_num_threads()

        def set_threads(_):
            torch.get_num_threads()
            torch.set_num_threads(each)
            started.wait()       # every task on a thread of its own

        try:
            list(pool.map(set_threads, range(workers)))
        except BaseException:
            pool.shutdown(wait=False)
            raise
        finally:
            torch.set_num_threads(threads)
        _pools[(workers, each)] = pool
    return pool


def _chunks_in_threads(model, clips, labels, parts: list[slice], threads: int, precision: str,
                       scale: float, class_weights) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward passes of the chunks in worker threads, as many as there are
    chunks up to `threads`, which share out the threads (16 threads and 8 chunks: 8 workers
    on 2 threads each). Worker k takes chunks k, k + workers, ...; it sums its chunks'
    gradients in order, and the workers' sums are added in worker order: the same sums
    whatever the timing. Dropout masks are the ones the chunks draw in turn (ChunkMasks)."""
    workers = min(threads, len(parts))
    params = [p for p in model.parameters() if p.requires_grad]
    masks = ChunkMasks([len(labels[part]) for part in parts])

    def run(first: int):
        grads, (total, correct) = [None] * len(params), _totals(clips.device)
        for index in range(first, len(parts), workers):
            part = parts[index]
            with masks.chunk(index), autocast(clips.device, precision):
                logits = model(clips_to_input(clips[part]))
            loss, objective = _losses(logits, labels[part], class_weights)
            chunk = torch.autograd.grad(objective * scale, params, allow_unused=True)
            grads = [_add(a, b) for a, b in zip(grads, chunk)]
            if scale:
                total += loss.detach()
                correct += (logits.detach().argmax(1) == labels[part]).sum()
        return grads, total, correct

    results = list(_pool(workers, threads // workers).map(run, range(workers)))
    for i, param in enumerate(params):
        grad = None
        for grads, _, _ in results:
            grad = _add(grad, grads[i])
        if grad is not None and grad.stride() != param.stride():
            # backward() lays .grad out as the parameter; autograd.grad returns a conv
            # weight's in oneDNN's channels-last strides, which fused Adam misreads
            grad = torch.empty_like(param).copy_(grad)
        param.grad = grad        # None where no chunk reached it, as backward() leaves it
    return sum(r[1] for r in results), sum(r[2] for r in results)


def _add(total: torch.Tensor | None, grad: torch.Tensor | None) -> torch.Tensor | None:
    if total is None:
        return grad
    return total if grad is None else total + grad


@torch.no_grad()
def eval_batch(model: ClipClassifier, clips: torch.Tensor, labels: torch.Tensor,
               chunk_clips: int = 8, precision: str = "fp32"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation loss (summed) and correct count, as tensors. In chunks on the CPU: a whole
    batch of 64 clips would hold 330 MB of first-layer activations at once, and the peak
    memory of training would depend on the batch instead of staying flat."""
    model.eval()
    if clips.device.type != "cpu":
        chunk_clips = max(chunk_clips, len(labels))
    with autocast(clips.device, precision):
        logits = torch.cat([model(clips_to_input(clips[i:i + chunk_clips]))
                            for i in range(0, len(labels), chunk_clips)]).float()
    loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
    return loss, (logits.argmax(1) == labels).sum()


def run_epoch(model: ClipClassifier, loader, optimizer=None, desc: str = "", progress: bool = False,
              precision: str = "fp32", scaler=None, net=None,
              world: World = World(), class_weights: torch.Tensor | None = None
              ) -> tuple[float, float]:
    """One pass over a loader of (uint8 clips, labels) batches; trains when given an optimizer.
    Returns (mean loss, accuracy), the loss being the data loss without the L2 term, as Keras
    reports it; with several processes, over all of their clips."""
    total_loss, correct, seen = 0.0, 0, 0
    bar = console_progress(loader, desc=desc, unit="batch", leave=False, enabled=progress)
    for step, batch in enumerate(bar):
        clips, labels = batch
        divisor = getattr(batch, "divisor", None) if world.distributed else None
        if optimizer is not None:
            loss, right = train_step(model, optimizer, clips, labels, precision=precision,
                                     scaler=scaler, divisor=divisor, net=net,
                                     class_weights=class_weights)
        elif divisor == 0:
            continue                     # a stand-in: this process got none of the batch
        else:
            loss, right = eval_batch(model, clips, labels, precision=precision)
        total_loss = total_loss + loss
        correct = correct + right
        seen += len(labels) if divisor != 0 else 0
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(total_loss) / max(seen, 1):.4f}",
                            acc=f"{int(correct) / max(seen, 1):.3f}")
    total_loss, correct, seen = sum_over_ranks([float(total_loss), float(correct), seen], world)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def check_finite(epoch: int, losses: dict[str, float], model: ClipClassifier, lr: float,
                 best_epoch: int) -> None:
    """Stop a run whose training diverged, after epoch `epoch`: a loss (`losses`, the
    figures the run watches) or a weight that is NaN or infinite. Every later epoch would be
    NaN too, and early stopping never sees an improvement. The one-line LrcnError (FAILED)
    says so before this epoch's state or history is written, so the run folder keeps the last
    good epoch's state and the best checkpoint so far. With several processes the figures
    and the weights are the same on every rank, so all of them stop here."""
    names = {"loss": "training loss", "val_loss": "validation loss"}
    bad = next((f"the {names.get(k, k)} is {v}" for k, v in losses.items()
                if not math.isfinite(v)), None)
    if bad is None:
        weight = next((name for name, p in model.named_parameters()
                       if not bool(torch.isfinite(p.detach()).all())), None)
        bad = weight and f"the weights of {weight} are not finite"
    if bad:
        kept = f"the checkpoint keeps epoch {best_epoch}, the best before" if best_epoch else \
            "no checkpoint was written"
        raise LrcnError(f"training diverged at epoch {epoch}: {bad}; try a lower learning "
                        f"rate (--lr, now {lr:g}); {kept}", kind=ErrorKind.FAILED)


__all__ = ["CHUNK_CLIPS", "make_optimizer", "train_step", "eval_batch", "run_epoch",
           "check_finite"]
