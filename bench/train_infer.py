"""Training and inference speed of the seed model, from the real frame cache, beside the seed's
Keras (the anchor) in the same run.

    python bench/train_infer.py --batch 4 [--rounds 3] [--anchor ~/keras-anchor/bin/python]

Data: synthetic videos (or --data DIR) decoded once into lrcn's uint8 frame cache; every timing
reads batches through the same loader (loader.clip_batches) that `lrcn train` uses.
- train: clips/s of `run_epoch` (the training loop's own function) at --batch.
- infer: clips/s at batch 64 through `Predictor` (the engine `lrcn predict` and `lrcn evaluate`
  use), cache reads included; eager PyTorch is printed beside it.
- one clip: median latency of `Predictor.probabilities` on one decoded clip (predict's model
  path, frames already decoded).
- breakdown: one training step split into data, CNN forward, LSTM + loss forward, backward and
  optimizer, in milliseconds.
With --anchor, the seed's tf.keras benchmark (../shared/anchors/seed_keras_bench.py) runs in
that interpreter before each round, and medians and ratios are printed. The last line is
`lrcn train_clips_per_s=X infer_clips_per_s=Y one_clip_ms=Z`.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lrcn.data.cache import prepare
from lrcn.models.checkpoint import save_checkpoint
from lrcn.config import FrameConfig, ModelConfig
from lrcn.data.dataset import discover
from lrcn.devices import keep_freed_memory, resolve_device
from lrcn.data.loader import clip_batches
from lrcn.models.lrcn import LRCN
from lrcn.models.base import clips_to_input
from lrcn.inference.predict import Predictor
from lrcn.data.synth import SynthConfig, make_dataset
from lrcn.training.steps import CHUNK_CLIPS, make_optimizer, run_epoch

ANCHOR = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "seed_keras_bench.py"


def cached_clips(data: Path | None, work: Path):
    if data is None:
        data = work / "data"
        if not data.exists():
            make_dataset(data, SynthConfig(groups=4, clips_per_group=3, min_seconds=2,
                                           max_seconds=4, seed=5), workers=2, progress=False)
    names, samples = discover(data)
    clips, failures = prepare(samples, FrameConfig(), cache_dir=work / "cache", progress=False)
    return names, clips


DEVICE = torch.device("cpu")


def loader(clips, names, batch, shuffle=False, device=None):
    return clip_batches(clips, names, batch, device or DEVICE, shuffle=shuffle)


def time_train(clips, names, batch: int, seconds: float) -> float:
    keep_freed_memory()      # as training's fit() does on the CPU
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=len(names))).to(DEVICE)
    optimizer = make_optimizer(model, 1e-3)
    data = loader(clips, names, batch, shuffle=True)
    run_epoch(model, data, optimizer)  # warm-up epoch
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_epoch(model, data, optimizer)
        seen += len(clips)
    return seen / (time.perf_counter() - start)


def time_infer(predictor, clips, names, seconds: float) -> float:
    data = loader(clips, names, 64, device="cpu")   # the engines take host arrays
    for x, _ in data:
        predictor.probabilities(x.numpy())
        break
    seen, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for x, _ in data:
            predictor.probabilities(x.numpy())
            seen += len(x)
    return seen / (time.perf_counter() - start)


def time_one_clip(predictor, clip: np.ndarray, repeat: int = 60) -> float:
    for _ in range(5):
        predictor.probabilities(clip)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        predictor.probabilities(clip)
        runs.append(time.perf_counter() - start)
    return 1000 * statistics.median(runs)


def step_breakdown(clips, names, batch: int, steps: int = 30) -> dict[str, float]:
    """Milliseconds per training step in each stage (same maths as train_step, timed apart)."""
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=len(names))).train().to(DEVICE)
    optimizer = make_optimizer(model, 1e-3)
    data = loader(clips, names, batch, shuffle=True)
    parts = dict.fromkeys(("data", "cnn_forward", "lstm_loss_forward", "backward", "optimizer"),
                          0.0)
    done = 0
    while done < steps:
        it = iter(data)
        while done < steps:
            t0 = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            optimizer.zero_grad(set_to_none=True)
            t1 = time.perf_counter()
            for start in range(0, len(y), CHUNK_CLIPS):
                part = slice(start, start + CHUNK_CLIPS)
                c0 = time.perf_counter()
                inp = clips_to_input(x[part])
                b, t = inp.shape[:2]
                feats = model.frame_features(inp.flatten(0, 1))
                c1 = time.perf_counter()
                logits = model.sequence_logits(feats.view(b, t, -1))
                loss = torch.nn.functional.cross_entropy(logits, y[part], reduction="sum")
                c2 = time.perf_counter()
                (loss / len(y)).backward()
                c3 = time.perf_counter()
                parts["cnn_forward"] += c1 - c0
                parts["lstm_loss_forward"] += c2 - c1
                parts["backward"] += c3 - c2
            t2 = time.perf_counter()
            optimizer.step()
            t3 = time.perf_counter()
            parts["data"] += t1 - t0
            parts["optimizer"] += t3 - t2
            done += 1
    return {k: 1000 * v / steps for k, v in parts.items()}


def run_anchor(python: str, batch: int) -> dict[str, float] | None:
    out = subprocess.run([python, str(ANCHOR), "--batch", str(batch)], capture_output=True,
                         text=True)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    found = dict(re.findall(r"(train|infer|predict_one_clip)\w*?(?:\(batch=\d+\))?=([\d.]+)",
                            line))
    if not found:
        print(f"anchor failed: {out.stderr.strip().splitlines()[-1:] or line}")
        return None
    print(f"  anchor: {line}")
    return {"train": float(found["train"]), "infer": float(found["infer"]),
            "one_clip_ms": float(found["predict_one_clip"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-bench")
    parser.add_argument("--anchor", default=None, help="python of an env with tensorflow")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N, mps")
    args = parser.parse_args()
    global DEVICE
    DEVICE = resolve_device(args.device)
    names, clips = cached_clips(args.data, args.work)
    print(f"{len(clips)} cached clips, {len(names)} classes; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {DEVICE}")

    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    path = save_checkpoint(folder / "m.safetensors", LRCN(ModelConfig(num_classes=len(names))),
                           FrameConfig(), names)
    fast = Predictor.load(path, device=args.device)
    eager = Predictor.load(path, "torch", device=args.device)
    clip = np.load(clips[0].frames_path)

    results: dict[str, list[float]] = {k: [] for k in
                                       ("train", "infer", "one_clip_ms", "eager_infer",
                                        "eager_one_clip_ms")}
    anchor: dict[str, list[float]] = {"train": [], "infer": [], "one_clip_ms": []}
    for r in range(1, args.rounds + 1):
        print(f"round {r}/{args.rounds}")
        if args.anchor:
            got = run_anchor(args.anchor, args.batch)
            for k, v in (got or {}).items():
                anchor[k].append(v)
        results["train"].append(time_train(clips, names, args.batch, args.seconds))
        results["infer"].append(time_infer(fast, clips, names, args.seconds / 2))
        results["eager_infer"].append(time_infer(eager, clips, names, args.seconds / 2))
        results["one_clip_ms"].append(time_one_clip(fast, clip))
        results["eager_one_clip_ms"].append(time_one_clip(eager, clip))
        print("  lrcn: " + "  ".join(f"{k}={v[-1]:.1f}" for k, v in results.items()))

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians over {args.rounds} rounds (batch {args.batch} for training, 64 for "
          f"inference; engine {fast.engine.backend}):")
    print(f"  train      {med['train']:8.1f} clips/s")
    print(f"  infer      {med['infer']:8.1f} clips/s   (eager PyTorch {med['eager_infer']:.1f})")
    print(f"  one clip   {med['one_clip_ms']:8.2f} ms        (eager PyTorch "
          f"{med['eager_one_clip_ms']:.2f} ms)")
    if anchor["train"]:
        am = {k: statistics.median(v) for k, v in anchor.items()}
        print(f"  keras anchor medians: train {am['train']:.1f} clips/s, infer "
              f"{am['infer']:.1f} clips/s, one clip {am['one_clip_ms']:.1f} ms")
        print(f"  ratios lrcn/keras: train {med['train'] / am['train']:.2f}x, infer "
              f"{med['infer'] / am['infer']:.2f}x, one-clip latency "
              f"1/{am['one_clip_ms'] / med['one_clip_ms']:.1f}")

    breakdown = step_breakdown(clips, names, args.batch)
    total = sum(breakdown.values())
    print(f"\none training step at batch {args.batch} ({total:.1f} ms):")
    for k, v in breakdown.items():
        print(f"  {k:<18} {v:7.2f} ms  {100 * v / total:5.1f}%")
    print(f"lrcn train_clips_per_s={med['train']:.1f} infer_clips_per_s={med['infer']:.1f} "
          f"one_clip_ms={med['one_clip_ms']:.2f}")


if __name__ == "__main__":
    main()
