"""lrcn's own training loop and engine on a GPU (or any device), reading from the real frame
cache, for the GPU goals of the tracker (issue 12).

    python bench/gpu.py [--device auto] [--clips 6676] [--decode 240] [--seconds 5]

Data: `--decode` synthetic videos (lrcn synth, 320x240) are decoded into lrcn's frame cache by
its worker processes (`--workers`, default one per core), and the cached clips are repeated up
to `--clips` (6,676 is UCF50's size; at 64x64 that is 1.6 GB of uint8 frames), so the loader
holds as much as it would for UCF50. Everything is timed through lrcn's own code:
- train_clips_per_s(batch=B): `train.run_epoch` with Adam on `loader.clip_batches` (the frames
  resident on the device when they fit), fp32 (or --precision), after a warm-up, over at least
  --seconds;
- epoch_s(clips=N): one whole training epoch over the N clips at batch 32;
- infer_clips_per_s(batch=64): the engine `lrcn predict` and `lrcn evaluate` use on the device
  (`engine.make_engine`), fed from the same store;
- one_clip_ms: the median latency of that engine on one decoded clip.
The last line is
`lrcn_gpu train_clips_per_s(batch=4)=A train_clips_per_s(batch=32)=B train_clips_per_s(batch=256)=C
infer_clips_per_s(batch=64)=D one_clip_ms=E epoch_s(clips=N)=F` (one line), and the ratios to
the Keras 3.15 / JAX anchor figures the tracker quotes for an H100 are printed above it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lrcn.data.cache import prepare
from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.config import FrameConfig, ModelConfig
from lrcn.data.dataset import discover
from lrcn.devices import resolve_device
from lrcn.inference.engine import make_engine
from lrcn.data.loader import ClipBatches, FrameStore
from lrcn.models.lrcn import LRCN
from lrcn.data.synth import SynthConfig, make_dataset
from lrcn.training.steps import make_optimizer, run_epoch

# The tracker's anchor: the seed model in Keras 3.15 on JAX (XLA), one H100 (issue 12).
KERAS_H100 = {"train4": 612.0, "train32": 1483.0, "train256": 2809.0, "infer64": 7935.0,
              "one_clip_ms": 4.4}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cached_clips(work: Path, count: int, workers: int):
    data = work / "data"
    per_class = max(1, count // 6)
    if not (data / "manifest.csv").exists():
        make_dataset(data, SynthConfig(groups=per_class, clips_per_group=1, min_seconds=2,
                                       max_seconds=6, seed=11), workers=workers, progress=False)
    names, samples = discover(data)
    start = time.perf_counter()
    clips, failures = prepare(samples, FrameConfig(), cache_dir=work / "cache",
                              workers=workers, progress=False)
    print(f"{len(clips)} clips in the frame cache ({time.perf_counter() - start:.1f} s, "
          f"{workers} workers; {len(failures)} unreadable)")
    return names, clips


def time_train(store: FrameStore, labels, names, batch: int, seconds: float,
               precision: str) -> float:
    device = store.device
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=len(names))).to(device)
    model.seed_dropout(0)
    optimizer = make_optimizer(model, 1e-3)
    batches = ClipBatches(store, labels, batch, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    steps = max(1, len(batches))
    # Warm-up (cuDNN picks its algorithms), then whole epochs or a share of one.
    run_epoch(model, _first(batches, min(steps, 20)), optimizer, precision=precision)
    synchronize(device)
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_epoch(model, _first(batches, min(steps, 400)), optimizer, precision=precision)
        synchronize(device)
        seen += min(min(steps, 400) * batch, store.count)
    return seen / (time.perf_counter() - start)


def _first(batches: ClipBatches, steps: int):
    """The first `steps` batches of a shuffled epoch."""
    for i, item in enumerate(batches):
        if i >= steps:
            return
        yield item


def time_epoch(store: FrameStore, labels, names, precision: str) -> float:
    device = store.device
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=len(names))).to(device)
    optimizer = make_optimizer(model, 1e-3)
    batches = ClipBatches(store, labels, 32, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    run_epoch(model, _first(batches, 10), optimizer, precision=precision)
    synchronize(device)
    start = time.perf_counter()
    run_epoch(model, batches, optimizer, precision=precision)
    synchronize(device)
    return time.perf_counter() - start


def time_infer(engine, store: FrameStore, seconds: float) -> float:
    host = store.tensor.cpu().numpy() if store.resident else store.array
    batches = [np.ascontiguousarray(host[i:i + 64]) for i in range(0, min(store.count, 2048), 64)]
    engine.probabilities(batches[0])
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in batches:
            engine.probabilities(batch)
            seen += len(batch)
    return seen / (time.perf_counter() - start)


def time_one_clip(engine, clip: np.ndarray, repeat: int = 200) -> float:
    for _ in range(10):
        engine.probabilities(clip)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        engine.probabilities(clip)
        runs.append(time.perf_counter() - start)
    return 1000 * statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--clips", type=int, default=6676, help="clips in the store (UCF50)")
    parser.add_argument("--decode", type=int, default=240, help="videos decoded for real")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=5.0, help="per training figure")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-gpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, precision {args.precision}")

    names, decoded = cached_clips(args.work, args.decode, args.workers)
    clips = [decoded[i % len(decoded)] for i in range(args.clips)]
    index = {n: i for i, n in enumerate(names)}
    labels = [index[c.sample.class_name] for c in clips]
    start = time.perf_counter()
    store = FrameStore(clips, device)
    print(f"{store.count} clips {'on the device' if store.resident else 'memory-mapped'} "
          f"({np.prod(store.shape) / 1e9:.2f} GB) in {time.perf_counter() - start:.1f} s")

    train = {b: time_train(store, labels, names, b, args.seconds, args.precision)
             for b in (4, 32, 256)}
    for b, rate in train.items():
        print(f"train batch {b:3d}: {rate:9.0f} clips/s")
    epoch = time_epoch(store, labels, names, args.precision)
    print(f"one epoch of {store.count} clips at batch 32: {epoch:.2f} s")

    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    path = save_checkpoint(folder / "m.safetensors", LRCN(ModelConfig(num_classes=len(names))),
                           FrameConfig(), names)
    engine = make_engine(load_checkpoint(path), device=args.device, precision=args.precision)
    infer = time_infer(engine, store, args.seconds)
    one = time_one_clip(engine, np.load(decoded[0].frames_path))
    print(f"inference ({engine.backend}) at batch 64: {infer:.0f} clips/s; one clip "
          f"{one:.2f} ms")
    if device.type == "cuda":
        k = KERAS_H100
        print(f"against the tracker's Keras/JAX H100 figures: train {train[4] / k['train4']:.1f}x "
              f"(batch 4), {train[32] / k['train32']:.1f}x (32), {train[256] / k['train256']:.1f}x "
              f"(256); inference {infer / k['infer64']:.1f}x; one clip {one:.2f} vs "
              f"{k['one_clip_ms']} ms")
    print(f"lrcn_gpu train_clips_per_s(batch=4)={train[4]:.0f} "
          f"train_clips_per_s(batch=32)={train[32]:.0f} "
          f"train_clips_per_s(batch=256)={train[256]:.0f} infer_clips_per_s(batch=64)={infer:.0f} "
          f"one_clip_ms={one:.2f} epoch_s(clips={store.count})={epoch:.2f}")


if __name__ == "__main__":
    main()
