"""Training in 1, 2 and 4 processes (torchrun, gloo on CPUs / NCCL on GPUs): the cache fill and
the training throughput of `lrcn train` itself, on whatever machine it runs on.

    python bench/scale.py [--clips 96] [--processes 1 2 4] [--workers-total N] [--epochs 4]

Makes a synthetic set (lrcn synth, 320x240, 2-4 s), then for each number of processes P runs
`torchrun --standalone --nproc-per-node P -m lrcn train` on it with a cold frame cache, each
process decoding with N/P worker processes (N: --workers-total, default one per core), so
that every run has the same decoders in all. The cache-fill rate is what `lrcn train` logs
("frame cache: ... clips/s"); the training rate is the training clips over the median epoch
time in history.csv (validation included). Scaling efficiency from 1 to 2 processes means
something only where there are cores to scale into. Last line:
`lrcn_scale fill_clips_per_s(P=1)=.. ... train_clips_per_s(P=1)=.. ... fill_efficiency(4 vs 1)=..`
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--workers-total", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-scale")
    args = parser.parse_args()
    from lrcn.data.synth import SynthConfig, make_dataset
    data = args.work / "data"
    if not (data / "manifest.csv").exists():
        make_dataset(data, SynthConfig(groups=max(2, args.clips // 12), clips_per_group=2,
                                       min_seconds=2, max_seconds=4, seed=9),
                     workers=args.workers_total, progress=False)
    print(f"{args.clips} clips at {data}; {os.cpu_count()} cores; device {args.device}")
    fill, train = {}, {}
    for p in args.processes:
        run, cache = args.work / f"run-{p}", args.work / f"cache-{p}"
        subprocess.run(["rm", "-rf", str(run), str(cache)], check=True)
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
             str(p), "-m", "lrcn", "train", str(data), "--out", str(run), "--cache", str(cache),
             "--workers", str(max(1, args.workers_total // p)), "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--patience", "100", "--device",
             args.device, "--no-evaluate", "--quiet"], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-3000:])
            raise SystemExit(f"{p} processes failed")
        found = re.search(r"frame cache: (\d+) clips ready in ([\d.]+) s \(([\d.]+) clips/s",
                          result.stdout)
        fill[p] = float(found.group(3))
        clips = json.loads((run / "split.json").read_text())["train"]
        seconds = [float(line.split(",")[5]) for line in
                   (run / "history.csv").read_text().strip().splitlines()[1:]]
        train[p] = len(clips) / statistics.median(seconds)
        print(f"processes={p}: cache fill {fill[p]:.1f} clips/s, training "
              f"{train[p]:.1f} clips/s ({len(clips)} training clips, median epoch "
              f"{statistics.median(seconds):.2f} s), {time.perf_counter() - start:.0f} s in all")
    first, last = args.processes[0], args.processes[-1]
    print("lrcn_scale " + " ".join(f"fill_clips_per_s(P={p})={fill[p]:.1f}" for p in fill) + " "
          + " ".join(f"train_clips_per_s(P={p})={train[p]:.1f}" for p in train)
          + f" fill_efficiency({last} vs {first})={fill[last] / fill[first]:.2f}"
          + f" train_speedup({last} vs {first})={train[last] / train[first]:.2f}")


if __name__ == "__main__":
    main()
