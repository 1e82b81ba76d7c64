"""effnet's int8 CNN against fp32: speed and closeness of the forms tried (issue 24).

    python bench/effnet_int8.py [--run EFFNET_RUN | --data ../shared/realdata/ucf101-mp4]

On an effnet-lstm run (given, or trained here on --data, about a minute), each form of the
backbone graph is calibrated as lrcn calibrates (the run's validation clips) and run on every
clip of the run's split: the features' cosine to fp32's (mean and worst clip), how many of the
run's answers change, the largest change of a probability, and ms per 160x128 frame on one
thread (batches of 20 frames, the forms interleaved, the median of the rounds). The forms:
- fp32;
- int8 with the depthwise convolutions in fp32, convolutions only (lrcn's before 2026-12-03);
- int8 everything but the stem (convolutions, ReLU6 and residual Adds);
- int8 with the first block in fp32 too (lrcn's: ModelSpec.int8_fp32).
On an x86 CPU without VNNI, `--fast-products` shows what ONNX Runtime's fast uint8 x int8 kernel
gives there (its pairs of products overflow 16 bits; lrcn asks for exact products instead).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import lrcn
from lrcn.data.cache import prepare
from lrcn.inference import graphs
from lrcn.inference.calibrate import softmax
from lrcn.inference.export import feature_graph, sequence_graph
from lrcn.inference import sessions as lrcn_sessions
from lrcn.inference.sessions import ort_session
from lrcn.models.checkpoint import load_checkpoint
from lrcn.models.registry import get_spec

SHARED = Path(__file__).resolve().parents[2] / "shared"
saturates = lrcn_sessions.int8_products_saturate()


def forms(checkpoint, calibration: np.ndarray) -> dict[str, bytes]:
    fp32 = feature_graph(checkpoint)

    def int8(ops: tuple[str, ...], keep: tuple[str, ...]) -> bytes:
        return graphs.quantize_graph(fp32, (calibration[i:i + 20]
                                            for i in range(0, len(calibration), 20)),
                                     ops=ops, keep_fp32=keep)
    spec = get_spec("effnet-lstm")
    return {"fp32": fp32,
            "int8, depthwise fp32 (before)": int8(("Conv",), ("_depthwise_conv",)),
            "int8, all but the stem": int8(spec.int8_ops, ()),
            "int8, first block fp32 (lrcn's)": int8(spec.int8_ops, spec.int8_fp32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an effnet-lstm run folder")
    parser.add_argument("--data", type=Path, default=SHARED / "realdata" / "ucf101-mp4",
                        help="without --run: train an effnet-lstm run on this folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fast-products", action="store_true",
                        help="on an x86 CPU without VNNI, ONNX Runtime's uint8 x int8 kernel, "
                        "whose sums overflow there, in place of the exact products lrcn asks for")
    args = parser.parse_args()
    if args.fast_products:
        lrcn_sessions.int8_products_saturate = lambda: False
    print("int8 products: " + ("ONNX Runtime's fast kernel, forced" if args.fast_products else
                               "exact (this CPU's fast kernel overflows)" if saturates else
                               "ONNX Runtime's fast kernel, exact on this CPU"))
    work = Path(tempfile.mkdtemp(prefix="lrcn-effnet-int8-"))
    os.environ.setdefault("LRCN_CACHE_DIR", str(work / "cache"))
    run = args.run or lrcn.train(args.data, model="effnet-lstm", out=work / "run",
                                 drop_small_classes=True, progress=False,
                                 evaluate=False).folder
    checkpoint = load_checkpoint(run)
    split = lrcn.Run(run).split
    clips, _ = prepare(split["train"] + split["val"] + split["test"], checkpoint.frame_config,
                       progress=False)
    frames = np.stack([np.load(c.frames_path) for c in clips])          # (clips, T, H, W, 3)
    calibration = graphs.calibration_clips(checkpoint)
    calibration = calibration.reshape(-1, *calibration.shape[2:])
    print(f"run {run}: {len(clips)} clips, calibrated on {len(calibration)} frames of its "
          "validation clips")
    graphs_by_form = forms(checkpoint, calibration)
    sequence = ort_session(sequence_graph(checkpoint), 2)
    results = {}
    for name, graph in graphs_by_form.items():
        cnn = ort_session(graph, 2)          # one session a form, not one a clip
        features = np.stack([cnn.run(None, {"frames": clip})[0] for clip in frames])
        logits = sequence.run(None, {"features": features})[0]
        results[name] = features, softmax(logits)
    sessions = {name: ort_session(graph, 1) for name, graph in graphs_by_form.items()}
    batch = np.ascontiguousarray(frames[0])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            s.run(None, {"frames": batch})
            start = time.perf_counter()
            for _ in range(3):
                s.run(None, {"frames": batch})
            times[name].append((time.perf_counter() - start) / (3 * len(batch)) * 1000)
    ref_features, ref_probs = results["fp32"]
    fp32_ms = float(np.median(times["fp32"]))
    for name, (features, probs) in results.items():
        cosine = (features * ref_features).sum(-1) / (
            np.linalg.norm(features, axis=-1) * np.linalg.norm(ref_features, axis=-1))
        per_clip = cosine.mean(1)
        ms = float(np.median(times[name]))
        changed = int((probs.argmax(1) != ref_probs.argmax(1)).sum())
        print(f"{name:34s} {ms:5.2f} ms/frame ({fp32_ms / ms:.2f}x fp32)  cosine "
              f"{per_clip.mean():.4f} (worst clip {per_clip.min():.4f})  answers changed "
              f"{changed}/{len(probs)}  largest |dp| {np.abs(probs - ref_probs).max():.3f}")


if __name__ == "__main__":
    main()
