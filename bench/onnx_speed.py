"""Inference speed of the seed model on ONNX Runtime beside PyTorch, side by side in one run.

    python bench/onnx_speed.py [--repeat 7]

Prints clips/s at batch 64 and the latency of one clip (median of --repeat runs) for both, with
the same weights and the same uint8 input (as `lrcn predict` feeds them), and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.config import FrameConfig, ModelConfig
from lrcn.inference.export import export_onnx
from lrcn.models.lrcn import LRCN
from lrcn.inference.predict import Predictor


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    path = save_checkpoint(folder / "m.safetensors", LRCN(ModelConfig()), FrameConfig(),
                           ["a", "b", "c", "d"])
    export_onnx(load_checkpoint(path), folder / "m.onnx")
    backends = {"pytorch": Predictor.load(path, "torch"),
                "onnxruntime": Predictor.load(folder / "m.onnx")}
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (64, 20, 64, 64, 3), dtype=np.uint8)
    results = {}
    for name, predictor in backends.items():
        t_batch = timed(lambda: predictor.probabilities(batch), args.repeat)
        t_one = timed(lambda: predictor.probabilities(batch[0]), args.repeat * 3)
        results[name] = (64 / t_batch, 1000 * t_one)
        print(f"{name:>12}: {results[name][0]:7.1f} clips/s at batch 64, "
              f"{results[name][1]:6.2f} ms for one clip (threads: {torch.get_num_threads()})")
    (pt_rate, pt_ms), (ort_rate, ort_ms) = results["pytorch"], results["onnxruntime"]
    print(f"onnxruntime/pytorch: throughput {ort_rate / pt_rate:.2f}x, "
          f"one-clip latency {ort_ms / pt_ms:.2f}x")


if __name__ == "__main__":
    main()
