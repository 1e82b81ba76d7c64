"""`lrcn train --model effnet-lstm` end to end on a synthetic set of about 500 clips, cold
caches: decoding, the frozen backbone's features, 70-epoch training with early stopping,
calibration and the test evaluation, as a user runs it. Then the same again with warm caches
(what a second run on the same data costs), and the seed model for scale.

    python bench/effnet_train.py [--groups 21] [--clips-per-group 4] [--device auto]

6 classes x 21 groups x 4 clips = 504 clips (320x240, 2-10 s; made once under --work). Last
line: `lrcn_effnet clips=N cold_s=A warm_s=B seed_cold_s=C accuracy=D`
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_train(data: Path, run: Path, cache: Path, model: str, device: str) -> float:
    env = {**os.environ, "LRCN_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lrcn", "train", str(data), "--model", model,
                             "--out", str(run), "--quiet", "--device", device],
                            env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"lrcn train failed:\n{result.stderr[-3000:]}")
    for line in result.stdout.splitlines():
        if line.startswith(("data:", "frame cache:", "features:", "model:", "calibration:",
                            "trained", "accuracy")):
            print("   ", line)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=21)
    parser.add_argument("--clips-per-group", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrcn-effnet")
    args = parser.parse_args()
    from lrcn.data.synth import SynthConfig, make_dataset
    data = args.work / f"data-{args.groups}x{args.clips_per_group}"
    if not (data / "manifest.csv").exists():
        make_dataset(data, SynthConfig(groups=args.groups, clips_per_group=args.clips_per_group),
                     progress=False)
    from lrcn.data.dataset import discover
    clips = len(discover(data)[1])          # the synthetic set mixes .avi and .mp4 files
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    print(f"{clips} clips, {os.cpu_count()} cores")
    print("effnet-lstm, cold caches:")
    cold = timed_train(data, args.work / "run-cold", cache, "effnet-lstm", args.device)
    print(f"  {cold:.0f} s")
    print("effnet-lstm, warm caches (frames and features):")
    warm = timed_train(data, args.work / "run-warm", cache, "effnet-lstm", args.device)
    print(f"  {warm:.0f} s")
    shutil.rmtree(cache, ignore_errors=True)
    print("lrcn (the seed model), cold cache:")
    seed = timed_train(data, args.work / "run-seed", cache, "lrcn", args.device)
    print(f"  {seed:.0f} s")
    report = json.loads((args.work / "run-cold" / "report.json").read_text())
    print(f"lrcn_effnet clips={clips} cold_s={cold:.0f} warm_s={warm:.0f} seed_cold_s={seed:.0f} "
          f"accuracy={report['accuracy']:.3f}")


if __name__ == "__main__":
    main()
