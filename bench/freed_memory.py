"""What `devices.keep_freed_memory` does for a CPU training step: the seed model's step timed in
fresh processes, with and without it, alternated (it is set once per process, so each figure
is its own process).

    python bench/freed_memory.py [--rounds 6] [--batch 4] [--threads 1]

Each process times `train_step` (the training loop's own step, CHUNK_CLIPS clips per pass) on
random uint8 clips for --steps steps after a warm-up and prints its median clips/s; the bench
prints every process's figure, the medians of both, and their ratio. Without the setting,
glibc's adaptive thresholds put some processes in a mode where the step's large tensors are
mapped afresh on every allocation (their pages fault on first touch): the figures are then
bimodal. Last line: `lrcn_freed_memory batch=B kept=K default=D ratio=R` (clips/s).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

STEP = """
import sys, time, torch
if sys.argv[1] == "kept":
    from lrcn.devices import keep_freed_memory
    keep_freed_memory()
from lrcn.config import ModelConfig
from lrcn.models.lrcn import LRCN
from lrcn.training.steps import make_optimizer, train_step
batch, steps = int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = LRCN(ModelConfig(num_classes=6))
optimizer = make_optimizer(model, 1e-3)
clips = torch.randint(0, 256, (batch, 20, 64, 64, 3), dtype=torch.uint8)
labels = torch.randint(0, 6, (batch,))
for _ in range(5):
    train_step(model, optimizer, clips, labels)
times = []
for _ in range(steps):
    start = time.perf_counter()
    train_step(model, optimizer, clips, labels)
    times.append(time.perf_counter() - start)
print(batch / sorted(times)[len(times) // 2])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    figures: dict[str, list[float]] = {"kept": [], "default": []}
    for round_ in range(1, args.rounds + 1):
        for mode in figures:
            out = subprocess.run([sys.executable, "-c", STEP, mode, str(args.batch),
                                  str(args.steps)], env=env, capture_output=True, text=True,
                                 check=True).stdout
            figures[mode].append(float(out))
        print(f"round {round_}: kept {figures['kept'][-1]:.1f} clips/s, default "
              f"{figures['default'][-1]:.1f}")
    kept, default = (statistics.median(figures[m]) for m in ("kept", "default"))
    print(f"medians: kept {kept:.1f} clips/s, default {default:.1f} ({kept / default:.2f}x); "
          f"default min {min(figures['default']):.1f}, max {max(figures['default']):.1f}")
    print(f"lrcn_freed_memory batch={args.batch} kept={kept:.1f} default={default:.1f} "
          f"ratio={kept / default:.2f}")


if __name__ == "__main__":
    main()
