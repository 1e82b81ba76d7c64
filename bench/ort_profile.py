"""Where ONNX Runtime spends a model's CNN time: the per-node profile of the engine's per-frame
graph (the one `lrcn predict` runs), in fp32 and, for a run folder, in int8.

    python bench/ort_profile.py CHECKPOINT_OR_RUN [--frames 1280] [--runs 10] [--top 12]

A checkpoint made here for a quick look: `--model effnet-lstm` (or lrcn, ...) instead of a
checkpoint builds an untrained one (effnet with its pretrained backbone). Prints the median time
per batch of random frames and the share of each node (by op type and name) of ONNX Runtime's
kernel time. This is how issue 24's graph rewrites were found: a Pad node before every effnet
convolution, and a cast, a division and a transpose before the seed model's first.
"""
from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lrcn.config import FrameConfig, ModelConfig
from lrcn.inference.graphs import engine_graphs
from lrcn.inference.sessions import session_options
from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.models.registry import build_model, get_spec


def untrained(name: str, folder: Path, clip_seconds: float = 5.0):
    """A checkpoint of model `name` with 4 classes at its own frame settings, untrained (effnet
    with its pretrained backbone: its speed is a trained one's), saved in `folder`."""
    spec = get_spec(name)
    frames = FrameConfig(**spec.frames)
    config = ModelConfig(name=name, num_classes=4, num_frames=frames.num_frames,
                         height=frames.height, width=frames.width, **spec.model)
    model = build_model(config, pretrained=name.startswith("effnet"))
    return load_checkpoint(save_checkpoint(folder / f"{name}.safetensors", model, frames,
                                           list("abcd"), clip_seconds=clip_seconds))


def profile(graph, frames: np.ndarray, runs: int, folder: Path) -> tuple[float, collections.Counter]:
    options = session_options()          # as lrcn runs it (no spinning; int8's exact products)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "ort")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, {"frames": frames})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"frames": frames})
        times.append(time.perf_counter() - start)
    nodes: collections.Counter = collections.Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            nodes[(event["args"].get("op_name"), name)] += event["dur"]
    return float(np.median(times)), nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint file or run folder")
    parser.add_argument("--model", help="profile an untrained model of this name instead")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per batch (default 1280 for 64x64 frames, else 48)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lrcn-ort-profile-"))
    checkpoint = untrained(args.model, folder) if args.model else load_checkpoint(args.checkpoint)
    shape = (checkpoint.frame_config.height, checkpoint.frame_config.width, 3)
    count = args.frames or (1280 if shape[:2] == (64, 64) else 48)
    frames = np.random.default_rng(0).integers(0, 256, (count, *shape), dtype=np.uint8)
    precisions = [False] + ([True] if args.checkpoint and Path(args.checkpoint).is_dir() else [])
    for int8 in precisions:
        cnn, _ = engine_graphs(checkpoint, int8=int8)
        seconds, nodes = profile(cnn, frames, args.runs, folder)
        total = sum(nodes.values())
        print(f"{'int8' if int8 else 'fp32'}: {seconds * 1000:.1f} ms per {count} frames "
              f"({seconds * 1000 / count:.3f} ms per frame)")
        by_op: collections.Counter = collections.Counter()
        for (op, _), value in nodes.items():
            by_op[op] += value
        print("  by op type: " + ", ".join(f"{op} {value / total:.1%}"
                                          for op, value in by_op.most_common(8)))
        for (op, name), value in nodes.most_common(args.top):
            print(f"  {value / total:6.1%}  {op:<18} {name}")


if __name__ == "__main__":
    main()
