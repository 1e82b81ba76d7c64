"""How close lrcn comes to this CPU's limit, every figure a ratio taken side by side in one run.

    python bench/cpu_limit.py [--quick] [--run RUN] [--realdata ../shared/realdata/ucf101-mp4]

- sgemm: the best single-precision matrix multiply on this machine now: numpy's OpenBLAS (in
  a subprocess with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset: some environments pin an
  older kernel with them) and torch.mm; the best of the two.
- the seed model: inference (ONNX Runtime, lrcn's engine, batch 64) and training
  (run_epoch, batch 32) throughput from the frame cache, times the FLOPs of one clip counted by
  torch.utils.flop_counter (forward; forward and backward for training; the LSTM, which it does
  not count, added by formula) -> GFLOP/s -> the share of sgemm's.
- int8 against fp32 on a seed-model run: `--run RUN` (a trained one, e.g. `lrcn demo`'s
  lrcn-demo/run), else one trained here on a small synthetic set for a few epochs (barely
  trained: its accuracy drop says little). Clips/s of the CNN + LSTM at batch 64,
  interleaved, and test accuracy with each on the run's test split; with --realdata also
  effnet-lstm trained on that folder (the same split for both precisions; the last line's
  int8 figures are then effnet's).
- effnet-lstm's timeline (`lrcn predict --timeline`'s code path) on the longest real UCF clip
  of ../shared/realclips and on two minutes of those clips as one H.264 video (else on a
  synthetic video), as a multiple of real time: the first timeline in the process (as a
  command runs it; the last line's figure, on the longest video) and the median of three more;
  with --realdata the same in int8 with the run trained there (after fp32's in the same
  process, so none of its runs is a first one; the last line keeps fp32's); then effnet's
  backbone in int8 against fp32 (ms per frame at batch 32, interleaved; calibrated
  on frames of real clips), its speed without a trained run.
Last line: `lrcn_cpu sgemm_gflops=S infer_efficiency=I train_efficiency=T int8_speedup=Q
int8_accuracy_drop=D effnet_timeline_x=R` (efficiencies as fractions; the drop in points).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_profile import untrained  # noqa: E402
from train_infer import cached_clips, time_train  # noqa: E402  (the same measures)

import lrcn  # noqa: E402
from lrcn.config import ModelConfig  # noqa: E402
from lrcn.inference.engine import make_engine  # noqa: E402
from lrcn.models.checkpoint import load_checkpoint  # noqa: E402
from lrcn.models.lrcn import LRCN  # noqa: E402
from lrcn.models.registry import get_spec  # noqa: E402
from lrcn.training.evaluate import predict_cached  # noqa: E402
from lrcn.data.cache import prepare  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
SGEMM = """
import sys, time, numpy as np
n = int(sys.argv[1]); a = np.random.rand(n, n).astype(np.float32); b = a.copy()
a @ b; best = 1e9
for _ in range(int(sys.argv[2])):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(2 * n ** 3 / best / 1e9)
"""


def sgemm(n: int, repeat: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    numpy_gflops = float(subprocess.run([sys.executable, "-c", SGEMM, str(n), str(repeat)],
                                        env=env, capture_output=True, text=True,
                                        check=True).stdout)
    a = torch.rand(n, n)
    torch.mm(a, a)
    best = 1e9
    for _ in range(repeat):
        start = time.perf_counter()
        torch.mm(a, a)
        best = min(best, time.perf_counter() - start)
    return {"numpy": numpy_gflops, "torch": 2 * n ** 3 / best / 1e9}


def seed_flops(classes: int) -> tuple[float, float]:
    """(inference, training) FLOPs per clip of the seed model: counted convolutions and
    matrix products, plus the LSTM by formula (8 * units * (inputs + units) per step forward,
    three times that for forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    model = LRCN(ModelConfig(num_classes=classes))
    clips = torch.rand(2, 20, 64, 64, 3)
    lstm = model.lstm
    lstm_flops = 20 * 8 * lstm.hidden_size * (lstm.input_size + lstm.hidden_size)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(clips)
    infer = counter.get_total_flops() / 2 + lstm_flops
    model.train()
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(clips), torch.zeros(2, dtype=torch.long)).backward()
    return infer, counter.get_total_flops() / 2 + 3 * lstm_flops


def clips_per_s(engine, batch: np.ndarray, seconds: float) -> float:
    engine.logits(batch)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        engine.logits(batch)
        n += len(batch)
    return n / (time.perf_counter() - start)


def int8_against_fp32(run: Path, seconds: float, rounds: int) -> dict[str, float]:
    """Throughput (interleaved rounds, best of each) and test accuracy, fp32 and int8."""
    checkpoint = load_checkpoint(run)
    engines = {p: make_engine(checkpoint, device="cpu", precision=p) for p in ("fp32", "int8")}
    test = lrcn.Run(run).split["test"]
    clips, _ = prepare(test, checkpoint.frame_config, progress=False)
    labels = np.array([checkpoint.class_names.index(c.sample.class_name) for c in clips])
    batch = np.stack([np.load(c.frames_path) for c in clips[:16]] * 4)[:64]
    speed = {p: 0.0 for p in engines}
    for _ in range(rounds):
        for p, engine in engines.items():
            speed[p] = max(speed[p], clips_per_s(engine, batch, seconds))
    accuracy = {p: float((predict_cached(e, clips).argmax(1) == labels).mean())
                for p, e in engines.items()}
    return {"fp32_clips_s": speed["fp32"], "int8_clips_s": speed["int8"],
            "fp32_acc": accuracy["fp32"], "int8_acc": accuracy["int8"], "clips": len(clips)}


def long_real_video(work: Path, seconds: float = 120.0) -> Path | None:
    """About `seconds` of real footage as one 320x240 25 fps H.264 MP4: the UCF clips of
    ../shared/realclips one after another (re-encoded, as a phone or camera would give it);
    None without them. A long video is what a timeline is for: on one 12 s clip the first
    batches' start-up and the frames kept before the first window is complete weigh as much
    as the video."""
    import av
    from lrcn.media.writer import VideoWriter
    clips = sorted((SHARED / "realclips" / "ucf").glob("*/*.avi"))
    if not clips:
        return None
    path, frames = work / "real-long.mp4", 0
    with VideoWriter(path, 320, 240, 25) as out:
        for clip in clips:
            with av.open(str(clip)) as container:
                for frame in container.decode(video=0):
                    if (frame.width, frame.height) == (320, 240):
                        out.write(frame.to_ndarray(format="rgb24"))
                        frames += 1
            if frames >= seconds * 25:
                break
    return path


def effnet_timeline(work: Path, run: Path | None = None) -> list[tuple[str, float, float]]:
    """x real time of effnet-lstm's timeline (an untrained head: the speed is the same), on
    the longest real UCF clip of ../shared/realclips (else a synthetic video) and on two
    minutes of real footage (long_real_video): (video, first timeline in the process, as
    `lrcn predict --timeline` runs it, the median of the next three). With `run` (a trained
    effnet-lstm run, which int8's calibration needs), that run's timeline in int8 instead."""
    from lrcn.inference.timeline import timeline_for_video
    from lrcn.inference.windows import WindowConfig
    checkpoint = load_checkpoint(run) if run else \
        untrained("effnet-lstm", work, clip_seconds=5.5)
    real = sorted((SHARED / "realclips" / "ucf").glob("*/*.avi"), key=lambda p: p.stat().st_size)
    if real:
        videos = [real[-1], long_real_video(work)]
    else:
        # (a data set needs two classes; the Spin clip is the video)
        video = lrcn.synth(work / "v", classes=["Spin", "Bounce"], groups=1, clips_per_group=1,
                           min_seconds=10, max_seconds=10, progress=False)
        videos = [next((Path(video) / "Spin").glob("*.*"))]
    engine = make_engine(checkpoint, device="cpu",            # exports (and caches) here
                         precision="int8" if run else "fp32")
    results = []
    for video in videos:
        speeds = []
        for _ in range(4):
            start = time.perf_counter()
            timeline = timeline_for_video(engine, video, WindowConfig(), 5.5)   # span fixed
            speeds.append(timeline.facts["duration"] / (time.perf_counter() - start))
        results.append((f"{video.name} ({timeline.facts['duration']:.0f} s)", speeds[0],
                        float(np.median(speeds[1:]))))
    return results


def effnet_int8_backbone(work: Path, seconds: float, rounds: int) -> tuple[float, float]:
    """ms per frame of effnet's backbone graph in fp32 and in int8 (calibrated on frames of
    the real UCF clips when present, else synthetic ones), interleaved, at batch 32: the int8
    speed without a trained run (its accuracy needs one: --realdata)."""
    from lrcn.inference.export import feature_graph
    from lrcn.inference.engine import ort_session
    from lrcn.inference.graphs import quantize_graph
    from lrcn.media.clip import read_clip
    checkpoint = load_checkpoint(work / "effnet-lstm.safetensors")   # effnet_timeline's
    real = sorted((SHARED / "realclips" / "ucf").glob("*/*.avi"))[::7][:4]
    if not real:
        real = sorted(Path(lrcn.synth(work / "cal", groups=1, clips_per_group=1,
                                      progress=False)).rglob("*.avi"))[:4]
    frames = np.concatenate([read_clip(p, checkpoint.frame_config).frames for p in real])
    fp32, spec = feature_graph(checkpoint), get_spec("effnet-lstm")
    sessions = {"fp32": ort_session(fp32),
                "int8": ort_session(quantize_graph(fp32, (frames[i:i + 20] for i in
                                                          range(0, len(frames), 20)),
                                                   ops=spec.int8_ops, keep_fp32=spec.int8_fp32))}
    batch = np.ascontiguousarray(np.resize(frames, (32, *frames.shape[1:])))
    best = {k: 1e9 for k in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            session.run(None, {"frames": batch})
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                session.run(None, {"frames": batch})
                n += len(batch)
            best[name] = min(best[name], (time.perf_counter() - start) / n * 1000)
    return best["fp32"], best["int8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (a few minutes)")
    parser.add_argument("--run", type=Path, default=None,
                        help="a trained seed-model run for int8 against fp32 (default: train one)")
    parser.add_argument("--realdata", type=Path, default=None,
                        help="also effnet-lstm's int8 accuracy on this folder (slow: trains)")
    args = parser.parse_args()
    seconds, rounds = (2.0, 2) if args.quick else (6.0, 3)
    work = Path(tempfile.mkdtemp(prefix="lrcn-cpu-limit-"))
    os.environ.setdefault("LRCN_CACHE_DIR", str(work / "cache"))

    gemm = sgemm(2048 if args.quick else 4096, 5 if args.quick else 10)
    best = max(gemm.values())
    print(f"sgemm: numpy/OpenBLAS {gemm['numpy']:.0f} GFLOP/s, torch.mm {gemm['torch']:.0f}; "
          f"best {best:.0f}")

    names, clips = cached_clips(None, work)
    infer_flops, train_flops = seed_flops(len(names))
    run = lrcn.Run(args.run) if args.run else \
        lrcn.train(work / "data", out=work / "run", epochs=4 if args.quick else 20,
                   batch_size=8, progress=False, evaluate=False)
    # inference: the fp32 engine's clips/s, measured interleaved with int8's (below)
    q = int8_against_fp32(run.folder, seconds, rounds)
    infer = q["fp32_clips_s"]
    train = time_train(clips, names, 32, seconds)
    infer_gflops, train_gflops = infer * infer_flops / 1e9, train * train_flops / 1e9
    print(f"seed model: {infer_flops / 1e6:.0f} MFLOP per clip inference, "
          f"{train_flops / 1e6:.0f} training")
    print(f"inference: {infer:.0f} clips/s = {infer_gflops:.0f} GFLOP/s "
          f"({infer_gflops / best:.1%} of sgemm)")
    print(f"training (batch 32): {train:.0f} clips/s = {train_gflops:.0f} GFLOP/s "
          f"({train_gflops / best:.1%} of sgemm)")

    speedup = q["int8_clips_s"] / q["fp32_clips_s"]
    drop = 100 * (q["fp32_acc"] - q["int8_acc"])
    print(f"int8, seed model: {q['int8_clips_s']:.0f} clips/s against fp32 "
          f"{q['fp32_clips_s']:.0f} ({speedup:.2f}x); test accuracy {q['int8_acc']:.3f} "
          f"against {q['fp32_acc']:.3f} on {q['clips']} synthetic clips")
    if args.realdata:
        # drop_small_classes: ../shared/realdata has a class of one clip, which no split can
        # test (lrcn train refuses it and says so)
        real = lrcn.train(args.realdata, model="effnet-lstm", out=work / "real",
                          drop_small_classes=True, progress=False, evaluate=False)
        r = int8_against_fp32(real.folder, seconds, rounds)
        drop = 100 * (r["fp32_acc"] - r["int8_acc"])
        speedup = r["int8_clips_s"] / r["fp32_clips_s"]
        print(f"int8, effnet-lstm on {args.realdata}: {r['int8_clips_s']:.1f} clips/s against "
              f"fp32 {r['fp32_clips_s']:.1f} ({speedup:.2f}x); test accuracy "
              f"{r['int8_acc']:.3f} against {r['fp32_acc']:.3f} on {r['clips']} clips")

    for video, first, then in effnet_timeline(work):
        print(f"effnet-lstm timeline on {video}: {first:.1f}x real time the first time in "
              f"the process, {then:.1f}x after")
    timeline_x = first      # the longest video's, as a command runs it
    if args.realdata:       # int8 needs a trained run to calibrate on
        for video, first8, then8 in effnet_timeline(work, real.folder):
            print(f"effnet-lstm timeline in int8 on {video}: {first8:.1f}x real time its first "
                  f"time (after fp32's in this process), {then8:.1f}x after")
    fp32_ms, int8_ms = effnet_int8_backbone(work, seconds, rounds)   # the untrained one's
    print(f"int8, effnet backbone (speed only): {int8_ms:.2f} ms per frame against fp32 "
          f"{fp32_ms:.2f} ({fp32_ms / int8_ms:.2f}x)")
    print(f"lrcn_cpu sgemm_gflops={best:.0f} infer_efficiency={infer_gflops / best:.3f} "
          f"train_efficiency={train_gflops / best:.3f} int8_speedup={speedup:.2f} "
          f"int8_accuracy_drop={drop:.1f} effnet_timeline_x={timeline_x:.1f}")


if __name__ == "__main__":
    main()
