"""`lrcn demo` on several seeds: how far its result depends on luck, and whether its data repeat.

    python bench/demo_seeds.py [--seeds 5] [--start 1] [--work /tmp/lrcn-demo-seeds]

For each seed START..START+N-1 (1..5 by default; `--start 0 --seeds 6` adds the default
demo), `lrcn demo --seed S` runs end to end in a fresh process (its own data set, split and
training seed; one frame cache shared by all, keyed by the files' contents), and the
test accuracy, the two time-reversed pairs' accuracy and a timeline check are read back: the
timeline is the demo test's (tests/test_demo.py), five known actions stitched into one video
the model never saw, and the share of its time labelled right is reported. Then the first
seed's data set is written a second time, with another worker count, and every file's SHA-256
is compared with the first: identical_data=1 when all are the same.

Last line:
`lrcn_demo_seeds accuracies=a1,...,aN min=M timeline_right_min=T identical_data=0|1`
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def timeline_right(run: Path, work: Path) -> float:
    """The share of a stitched five-action video's time that the run's timeline labels right
    (one window per training-clip span, no smoothing, as the demo test asks)."""
    from lrcn.data.synth import make_long_video
    from lrcn.models.checkpoint import load_checkpoint
    span = load_checkpoint(run).clip_seconds
    plan = [("SlideRight", 3), ("Grow", 3), ("Spin", 3), ("SlideLeft", 3), ("Shrink", 3)]
    video = work / "long.mp4"
    truth = make_long_video(video, plan, seed=2026, min_seconds=span, max_seconds=span)
    out = work / "timeline"
    subprocess.run([sys.executable, "-m", "lrcn", "predict", str(run), str(video), "--timeline",
                    "--out", str(out), "--stride", str(span), "--smooth", "1"], check=True,
                   capture_output=True)
    segments = json.loads((out / "timeline.json").read_text())["segments"]
    right = 0.0
    for true in truth:
        for seg in segments:
            if seg["label"] == true["label"]:
                right += max(0.0, min(seg["end"], true["end"]) - max(seg["start"], true["start"]))
    return right / truth[-1]["end"]


def pair_accuracy(report: dict) -> dict[str, float]:
    names, matrix = report["classes"], report["confusion_matrix"]
    pairs = {}
    for a, b in (("SlideLeft", "SlideRight"), ("Grow", "Shrink")):
        i, j = names.index(a), names.index(b)
        pairs[f"{a}/{b}"] = (matrix[i][i] + matrix[j][j]) / (sum(matrix[i]) + sum(matrix[j]))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--start", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("/tmp/lrcn-demo-seeds"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    accuracies, timelines = [], []
    seeds = range(args.start, args.start + args.seeds)
    for seed in seeds:
        out = args.work / f"seed{seed}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lrcn", "demo", "--out", str(out), "--seed",
                        str(seed), "--quiet"], check=True, capture_output=True)
        report = json.loads((out / "run" / "report.json").read_text())
        right = timeline_right(out / "run", out)
        accuracies.append(report["accuracy"])
        timelines.append(right)
        pairs = ", ".join(f"{k} {v:.3f}" for k, v in pair_accuracy(report).items())
        print(f"seed {seed}: test accuracy {report['accuracy']:.3f} on {report['num_clips']} "
              f"clips ({pairs}); timeline right {right:.3f}; "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    # the first seed's data set again, with another worker count: the same bytes?
    from lrcn.data.synth import make_dataset
    from lrcn.training.demo import demo_settings
    first = args.work / f"seed{seeds[0]}" / ("data" if seeds[0] == 0 else f"data-seed{seeds[0]}")
    again = make_dataset(args.work / "again", demo_settings(seeds[0])[0], workers=1,
                         progress=False)
    a, b = digests(first), digests(again)
    differ = sorted(k for k in a if a[k] != b.get(k)) + sorted(set(b) - set(a))
    print(f"data set of seed {seeds[0]} written twice (workers default, then 1): {len(a)} files, "
          f"{len(differ)} differ" + (f" ({', '.join(differ[:5])})" if differ else ""))
    print(f"lrcn_demo_seeds accuracies={','.join(f'{x:.3f}' for x in accuracies)} "
          f"min={min(accuracies):.3f} timeline_right_min={min(timelines):.3f} "
          f"identical_data={int(not differ)}")


if __name__ == "__main__":
    main()
