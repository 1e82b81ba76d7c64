"""The `lrcn` command line: it parses, calls one library function per command, and prints.
Settings come in layers (config.resolve_settings): dataclass defaults, then an optional JSON
file (`--config`), then the flags given; the resolved settings are written into the run folder
and the checkpoint. Errors of the user's input (LrcnError, OSError) become one line and exit 2.

Why this module is long: the argument parser of thirteen commands, with a help text for every
option, is half of it; split up, the options that commands share would be defined apart from
the commands that use them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import Precision
from .errors import LrcnError


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum, with a message naming what was wrong."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _split_number(text: str) -> int:
    value = _positive_int(text)
    if value > 99:
        raise argparse.ArgumentTypeError(f"split lists are numbered 1, 2, 3, ...: {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _size(text: str) -> tuple[int, int]:
    """'64' or '64x48' (width x height) -> (width, height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or SIZE, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or SIZE, got {text!r}")
    return parts[0], parts[1]


def _device(text: str) -> str:
    """The spelling of a device; whether this machine has it is checked when it is used."""
    from .devices import check_device_name
    try:
        return check_device_name(text)
    except LrcnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _class_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated class names")
    return names


# --- subcommands -------------------------------------------------------------------------------

def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import SynthConfig, make_dataset
    width, height = args.size
    try:
        config = SynthConfig(classes=tuple(args.classes) if args.classes else SynthConfig.classes,
                             groups=args.groups, clips_per_group=args.clips_per_group,
                             width=width, height=height, seed=args.seed,
                             min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    except ValueError as exc:
        raise LrcnError(str(exc)) from None
    start = time.perf_counter()
    root = make_dataset(args.out, config, workers=args.workers, progress=not args.quiet)
    count = len(config.classes) * config.groups * config.clips_per_group
    print(f"wrote {count} clips in {len(config.classes)} classes to {root} "
          f"({time.perf_counter() - start:.0f} s); list: {root / 'manifest.csv'}")
    return 0


def _train_settings(args: argparse.Namespace):
    from .config import load_config_file, resolve_settings
    from .models.registry import DEFAULT_MODEL, get_spec
    width, height = args.size if args.size else (None, None)
    file = load_config_file(args.config)
    spec = get_spec(args.model or file.get("model", {}).get("name") or DEFAULT_MODEL)
    # --augment: what the model can take (a frozen CNN's cached features: temporal only)
    augment = {"scale_jitter": 0.2 if args.augment and spec.pixel_augment else None,
               "temporal_jitter": True if args.augment else None}
    if args.no_augment:
        augment = {"scale_jitter": 0.0, "temporal_jitter": False}
    return resolve_settings(
        file, defaults=spec.defaults,
        frames={"num_frames": args.frames, "height": height, "width": width},
        split={"test_fraction": args.test_fraction, "val_fraction": args.val_fraction,
               "seed": args.split_seed},
        train={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               "patience": args.patience, "seed": args.seed, "num_threads": args.threads,
               "device": args.device, "precision": args.precision, **augment,
               "flip": args.flip or None, "balance": args.balance or None},
        model={"name": spec.name, "batchnorm": args.batchnorm or None,
               "lstm_units": args.lstm_units, "l2": args.l2})


def _frame_settings(args: argparse.Namespace):
    """`lrcn check`: the frame settings that `lrcn train` would use with the same options."""
    from .config import FrameConfig, layered, load_config_file
    width, height = args.size if args.size else (None, None)
    return layered(FrameConfig, load_config_file(args.config).get("frames", {}),
                   {"num_frames": args.frames, "height": height, "width": width})


def _default_run_dir() -> Path:
    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


def cmd_train(args: argparse.Namespace) -> int:
    from .training.evaluate import format_report
    from .training.runs import train_and_evaluate
    from .training.resume import resume_settings
    if args.nproc and args.nproc > 1:
        return _launch(args)
    start = time.perf_counter()
    if args.resume:
        if args.data:
            raise LrcnError("--resume RUN takes its data and settings from the run folder: "
                            "give no DATA")
        kwargs = resume_settings(args.resume)
        run_dir = kwargs.pop("run_dir")
        result = train_and_evaluate(kwargs.pop("data_root"), run_dir, **kwargs,
                                    workers=args.workers, progress=not args.quiet,
                                    evaluate_test=not args.no_evaluate)
    else:
        if not args.data:
            raise LrcnError("lrcn train needs DATA (or --resume RUN)")
        settings = _train_settings(args)
        run_dir = Path(args.out) if args.out else _default_run_dir()
        result = train_and_evaluate(args.data, run_dir, classes=args.classes,
                                    frames=settings.frames, model_options=settings.model,
                                    split=settings.split, config=settings.train,
                                    cache_dir=args.cache, workers=args.workers,
                                    progress=not args.quiet, ucf_split=args.split,
                                    lists=args.lists, evaluate_test=not args.no_evaluate)
    training = result.training
    if training.rank != 0:
        return 0                       # rank 0 speaks for the run
    print(f"trained {training.epochs_run} epochs in {time.perf_counter() - start:.0f} s; "
          f"best epoch {training.best_epoch}; checkpoint: {training.checkpoint}")
    if result.report is not None:
        print(format_report(result.report))
        written = [run_dir / "report.json", run_dir / "confusion_matrix.png",
                   run_dir / "reliability.png", run_dir / "curves.png"]
        print("wrote " + ", ".join(str(p) for p in written if p.exists()))
    return 0


def _launch(args: argparse.Namespace) -> int:
    """`lrcn train --nproc P ...`: the same command under torchrun on this machine."""
    import subprocess
    from .distributed import launched
    if launched():
        raise LrcnError("--nproc is for starting processes; under torchrun, leave it out")
    rest, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(args.nproc), "-m", "lrcn", *rest]
    print("lrcn: " + " ".join(command[1:]), file=sys.stderr, flush=True)
    return subprocess.run(command).returncode


def cmd_cv(args: argparse.Namespace) -> int:
    from .training.crossval import cross_validate, format_summary
    settings = _train_settings(args)
    out = Path(args.out) if args.out else Path("runs") / time.strftime("cv-%Y%m%d-%H%M%S")
    summary = cross_validate(args.data, out, classes=args.classes, folds=args.folds,
                             frames=settings.frames, model_options=settings.model,
                             split=settings.split, config=settings.train, cache_dir=args.cache,
                             workers=args.workers, progress=not args.quiet)
    print(format_summary(summary))
    print(f"wrote {out / 'cv.json'}, {out / 'cv.csv'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .training.compare import compare, markdown
    from .config import SplitConfig, layered
    out = Path(args.out) if args.out else Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    split = layered(SplitConfig, {}, {"test_fraction": args.test_fraction,
                                      "val_fraction": args.val_fraction,
                                      "seed": args.split_seed})
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
             "patience": args.patience, "seed": args.seed, "device": args.device}
    rows = compare(args.data, out, args.models, repeats=args.repeats, protocol=args.protocol,
                   classes=args.classes, split=split, train=train, cache_dir=args.cache,
                   workers=args.workers, progress=False,
                   log=(lambda *a, **k: None) if args.quiet else print)
    print(markdown(rows))
    print(f"wrote {out / 'compare.json'}, {out / 'compare.csv'}, {out / 'compare.md'}, "
          f"{out / 'compare.png'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import MODELS
    for spec in MODELS.values():
        print(f"{spec.name:<12} {spec.description}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, format_check
    report = check_dataset(args.data, args.classes, frames=_frame_settings(args),
                           ucf_split=args.split, lists=args.lists, cache_dir=args.cache,
                           workers=args.workers, progress=not args.quiet,
                           decode_timeout=args.decode_timeout)
    print(json.dumps(report, indent=1) if args.json else format_check(report))
    return 1 if any(p["kind"] in ("unreadable", "missing") for p in report["problems"]) else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .training.evaluate import evaluate_run, format_report
    from .training.train import report_skipped
    evaluation = evaluate_run(args.checkpoint, args.data, args.out, part=args.split,
                              cache_dir=args.cache, workers=args.workers,
                              progress=not args.quiet, device=args.device,
                              precision=args.precision, shuffle_frames=args.shuffle_frames,
                              views=args.views)
    report_skipped([(s["path"], s["cause"]) for s in evaluation.report["skipped"]])
    print(format_report(evaluation.report))
    print("wrote " + ", ".join(str(p) for p in evaluation.written))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference.predict import Predictor, annotate, format_prediction
    predictor = Predictor.load(args.checkpoint, args.backend or "auto", args.device,
                               args.precision, args.reject_below, args.views)
    if args.timeline:
        if args.views > 1:
            raise LrcnError("--views averages offsets of one clip; a timeline already slides "
                            "its windows (use --stride)")
        return _predict_timelines(predictor.engine, args)
    results = predictor.predict_files(args.videos)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        for result in results:
            print(format_prediction(result), file=sys.stderr if result.error else sys.stdout)
    if args.annotate:
        target = Path(args.annotate)
        for result in (r for r in results if not r.error):
            out = target if len(args.videos) == 1 else \
                target / f"{Path(result.path).stem}.annotated.mp4"
            annotate(result.path, result, out)
            print(f"annotated video: {out}", file=sys.stderr if args.json else sys.stdout)
    return 1 if any(r.error for r in results) else 0


def _window_config(args: argparse.Namespace):
    from .inference.windows import WindowConfig
    return WindowConfig(span=args.span, stride=args.stride, smooth=args.smooth,
                        reject_below=args.reject_below)


def _predict_timelines(engine, args: argparse.Namespace) -> int:
    from .inference.timeline import format_timeline, timeline_outputs
    config = _window_config(args)
    failed = False
    for video in args.videos:
        folder = Path(args.out) if args.out and len(args.videos) == 1 else \
            Path(args.out or ".") / f"{Path(video).stem}.timeline"
        annotated = None
        if args.annotate:
            annotated = Path(args.annotate) if len(args.videos) == 1 else \
                Path(args.annotate) / f"{Path(video).stem}.annotated.mp4"
        try:
            timeline, paths = timeline_outputs(engine, video, config, folder, annotated)
        except LrcnError as exc:
            if not engine.splits:
                raise          # the same for every video: say it once
            print(f"lrcn: error: {exc}", file=sys.stderr)
            failed = True
            continue
        if args.json:
            print(paths["json"].read_text())
        else:
            print(format_timeline(timeline))
            print(f"timeline: {paths['json']}, {paths['segments']}, {paths['windows']}, "
                  f"{paths['plot']}")
        if annotated is not None:
            print(f"annotated video: {annotated}", file=sys.stderr if args.json else sys.stdout)
    return 1 if failed else 0


def cmd_stream(args: argparse.Namespace) -> int:
    from .inference.engine import load_engine
    from .inference.stream import run_stream
    run_stream(load_engine(args.checkpoint, args.backend or "auto", args.device,
                           args.precision), args.source,
               _window_config(args), annotate=args.annotate,
               realtime=True if args.realtime else None, max_lag=args.max_lag)
    return 0


def cmd_import_keras(args: argparse.Namespace) -> int:
    from .models.keras_import import import_keras_to_checkpoint
    from .models.base import count_trainable
    out, model, frames, names = import_keras_to_checkpoint(
        args.model, args.out, args.classes, args.channel_order, args.interpolation)
    print(f"imported {args.model}: {count_trainable(model):,} trainable parameters, classes "
          f"{', '.join(names)}, frames {frames.num_frames}x{frames.height}x{frames.width} "
          f"{frames.channel_order.upper()} ({frames.interpolation} resize)")
    print(f"checkpoint: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .models.checkpoint import load_checkpoint, resolve_checkpoint_path
    from .inference.export import export_onnx
    path = resolve_checkpoint_path(args.checkpoint)
    checkpoint = load_checkpoint(path)
    out = export_onnx(checkpoint, Path(args.out) if args.out else path.with_suffix(".onnx"))
    frames = checkpoint.frame_config
    print(f"ONNX model: {out} (input 'frames' uint8 (batch, {frames.num_frames}, "
          f"{frames.height}, {frames.width}, 3), {frames.channel_order.upper()}, scaled inside; "
          f"output 'logits' (batch, {len(checkpoint.class_names)}), to divide by the "
          f"metadata's temperature before a softmax)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .models.checkpoint import summary
    data = summary(args.checkpoint)
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print(f"checkpoint: {data['checkpoint']}")
    print(f"classes ({len(data['classes'])}): {', '.join(data['classes'])}")
    print(f"model: {data['model_name']} {json.dumps(data['model'])}")
    print(f"trainable parameters: {data['trainable_parameters']:,}")
    print(f"input normalisation: {data['normalisation']}")
    print(f"calibration temperature: {data['temperature']:.3f}"
          + ("" if data["temperature"] != 1.0 else " (none fitted)"))
    print(f"frames: {json.dumps(data['frames'])}")
    print(f"training clips span: {data['clip_seconds']:g} s (windows of long videos and "
          "streams cover this)" if data["clip_seconds"] else
          "training clips span: not recorded (windows default to 6 s)")
    metrics = data["info"].get("test_metrics")
    if metrics:
        print("test metrics: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in metrics.items()))
    else:
        print("test metrics: none recorded (run `lrcn evaluate`)")
    rest = {k: v for k, v in data["info"].items() if k != "test_metrics"}
    if rest:
        print(f"training: {json.dumps(rest)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .models.checkpoint import resolve_checkpoint_path
    from .server.app import ServeConfig, run_server
    from .inference.engine import is_onnx_file
    target = args.checkpoint if is_onnx_file(args.checkpoint) else \
        str(resolve_checkpoint_path(args.checkpoint))
    if not Path(target).is_file():
        raise LrcnError("no such model file", target)
    run_server(ServeConfig(checkpoint=target, host=args.host, port=args.port,
                           max_upload_mb=args.max_upload_mb, jobs=args.jobs, queue=args.queue,
                           token=args.token or os.environ.get("LRCN_TOKEN") or None,
                           device=args.device, precision=args.precision, views=args.views,
                           decode_timeout=args.decode_timeout,
                           window=_window_config(args)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .training.demo import run_demo
    return run_demo(Path(args.out), workers=args.workers, quiet=args.quiet)


# --- parser ------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrcn", description="Human action recognition in video with a CNN + LSTM (LRCN).")
    parser.add_argument("--version", action="version", version=f"lrcn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, cache: bool = True) -> None:
        p.add_argument("--workers", type=_non_negative_int, default=None,
                       help="decoding processes (default: one per core; 0: in this process)")
        if cache:
            p.add_argument("--cache", type=Path, default=None,
                           help="frame cache folder (default: $LRCN_CACHE_DIR or ~/.cache/lrcn)")
            p.add_argument("--decode-timeout", type=_positive_float, default=None, metavar="S",
                           help="a file whose decoding takes longer is reported as stalled and "
                                "skipped (default: $LRCN_DECODE_TIMEOUT or 120)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    def device_options(p: argparse.ArgumentParser, train: bool = False) -> None:
        # None in training: the config file's setting, else TrainConfig's default (auto).
        p.add_argument("--device", type=_device, default=None if train else "auto",
                       help="where the model runs: auto (CUDA when there is a GPU), cpu, cuda, "
                            "cuda:N or mps (default auto)")
        p.add_argument("--precision", choices=[c.value for c in Precision],
                       default=None if train else "fp32",
                       help="fp32 (default), or bf16/fp16 under autocast")

    def frame_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--frames", type=_positive_int, help="frames per clip (default 20)")
        p.add_argument("--size", type=_size, help="frame size, WIDTHxHEIGHT or SIZE (default 64)")

    def train_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--classes", type=_class_list, default=None,
                       help="comma-separated class subset (default: the seed's four if present, "
                            "else all)")
        p.add_argument("--config", default=None, help="JSON file with frames/model/split/train")
        p.add_argument("--epochs", type=_positive_int)
        p.add_argument("--batch-size", type=_positive_int)
        p.add_argument("--lr", type=_positive_float)
        p.add_argument("--patience", type=_positive_int)
        p.add_argument("--seed", type=int)
        p.add_argument("--threads", type=_positive_int, help="PyTorch threads (default: all cores)")
        p.add_argument("--test-fraction", type=_fraction)
        p.add_argument("--val-fraction", type=_fraction)
        p.add_argument("--split-seed", type=int)
        frame_options(p)
        p.add_argument("--model", default=None, metavar="NAME",
                       help="the model: lrcn (the seed's, default), lrcn-bn, convlstm (the "
                            "tutorial's other), effnet-lstm (pretrained EfficientNet-Lite0, "
                            "frozen), effnet-lrcn (fine-tuned); `lrcn models` lists them")
        p.add_argument("--augment", action="store_true",
                       help="crop/scale jitter and TSN temporal jitter while training "
                            "(effnet-lstm: temporal only); default off, but on for effnet-lrcn")
        p.add_argument("--no-augment", action="store_true", help="no augmentation at all")
        p.add_argument("--flip", action="store_true",
                       help="random horizontal flips (opt-in: left-to-right actions become "
                            "right-to-left ones)")
        p.add_argument("--balance", action="store_true",
                       help="weight the loss by inverse class frequency (uneven classes)")
        p.add_argument("--batchnorm", action="store_true", help="BatchNorm after each Conv2D")
        p.add_argument("--lstm-units", type=_positive_int, help="LSTM width (default 32)")
        p.add_argument("--l2", type=float, help="L2 factor on conv and LSTM weights (default 0)")
        device_options(p, train=True)

    def window_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--span", type=_positive_float, default=0.0,
                       help="seconds one window covers (default: the checkpoint's typical "
                            "training clip, so motion runs at the speed the model learned)")
        p.add_argument("--stride", type=_positive_float, default=0.0,
                       help="seconds between windows (default: a quarter of the span)")
        p.add_argument("--smooth", type=_positive_int, default=3,
                       help="windows averaged before labelling (default 3)")
        p.add_argument("--reject-below", type=_fraction, default=0.0, metavar="P",
                       help="say 'unknown' when the most probable class is below P: a model "
                            "knows only its classes (default 0: always a class)")

    p = sub.add_parser("synth", help="write the built-in synthetic action data set")
    p.add_argument("out", help="folder to write (a folder per class)")
    p.add_argument("--classes", type=_class_list, default=None,
                   help="comma-separated subset of: SlideRight,SlideLeft,Grow,Shrink,Bounce,Spin")
    p.add_argument("--groups", type=_positive_int, default=8, help="groups per class (default 8)")
    p.add_argument("--clips-per-group", type=_positive_int, default=4)
    p.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT (320x240)")
    p.add_argument("--min-seconds", type=_positive_float, default=2.0)
    p.add_argument("--max-seconds", type=_positive_float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    common(p, cache=False)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("train", help="train on a folder of videos (a folder per class)")
    p.add_argument("data", nargs="?", default=None,
                   help="data set: a folder <root>/<Class>/*.avi, or a CSV/text list of "
                        "path,label lines")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN",
                   help="continue an interrupted run from its folder's last saved epoch, "
                        "with its data and settings")
    p.add_argument("--nproc", type=_positive_int, default=None, metavar="P",
                   help="train data-parallel in P processes on this machine (torchrun); for "
                        "several machines run torchrun yourself (README)")
    p.add_argument("--split", type=_split_number, default=None,
                   help="use the official UCF101 split N (classInd.txt, trainlist0N.txt, "
                        "testlist0N.txt)")
    p.add_argument("--lists", type=Path, default=None,
                   help="folder with the UCF101 split lists (default: DATA or "
                        "DATA/ucfTrainTestlist)")
    p.add_argument("--out", default=None, help="run folder (default runs/run-DATE-TIME)")
    train_options(p)
    p.add_argument("--no-evaluate", action="store_true",
                   help="do not evaluate on the test split after training")
    common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="leave-one-group-out cross-validation (UCF50's protocol)")
    p.add_argument("data", help="data set: a folder per class, or a path,label list")
    p.add_argument("--out", default=None, help="folder for the fold runs and cv.json "
                                               "(default runs/cv-DATE-TIME)")
    p.add_argument("--folds", type=_class_list, default=None,
                   help="groups to hold out, e.g. 1,2,3 or g01,g02 (default: every group)")
    train_options(p)
    common(p)
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("compare", help="train and test several models on the same splits, "
                                       "repeated, and tabulate them")
    p.add_argument("data", help="data set: a folder per class, or a path,label list")
    p.add_argument("--models", type=_class_list, default=["lrcn", "convlstm", "effnet-lstm"],
                   help="comma-separated model names (default lrcn,convlstm,effnet-lstm)")
    p.add_argument("--repeats", type=_positive_int, default=3,
                   help="splits per protocol (split seed, seed+1, ...; default 3)")
    p.add_argument("--protocol", choices=("group", "random", "both"), default="group",
                   help="group: clips of one group on one side (honest, default); random: the "
                        "tutorial's leaking split; both: side by side")
    p.add_argument("--out", default=None, help="folder for the runs and the table "
                                               "(default runs/compare-DATE-TIME)")
    p.add_argument("--classes", type=_class_list, default=None)
    for flag, kind in (("--epochs", _positive_int), ("--batch-size", _positive_int),
                       ("--lr", _positive_float), ("--patience", _positive_int),
                       ("--seed", int), ("--test-fraction", _fraction),
                       ("--val-fraction", _fraction), ("--split-seed", int)):
        p.add_argument(flag, type=kind, default=None)
    p.add_argument("--device", type=_device, default=None, help="auto, cpu, cuda, cuda:N, mps")
    common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("models", help="the models --model can name")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("check", help="scan a data set: counts, durations, unreadable and "
                                     "suspicious files")
    p.add_argument("data", help="a folder per class, or a path,label list")
    p.add_argument("--classes", type=_class_list, default=None)
    p.add_argument("--split", type=_split_number, default=None,
                   help="check the files of the official UCF101 split N")
    p.add_argument("--lists", type=Path, default=None, help="folder with the UCF101 lists")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", default=None,
                   help="JSON settings file (its frames section is used, as by train)")
    frame_options(p)
    common(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (the run's test split by default)")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--data", default=None, help="evaluate on every clip of this data folder")
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="which part of the run's split (default test)")
    p.add_argument("--out", default=None, help="folder for report.json and plots")
    p.add_argument("--shuffle-frames", action="store_true",
                   help="frame-order ablation: each clip's frames in a random order (reports "
                        "go to RUN/shuffled-frames unless --out)")
    p.add_argument("--views", type=_positive_int, default=1, metavar="K",
                   help="multi-view testing: average K temporal offsets of each clip's frames "
                        "(default 1)")
    device_options(p)
    common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify videos")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--backend", choices=("torch", "onnx"), default=None,
                   help="onnx (ONNX Runtime, the default when installed) or torch")
    p.add_argument("--annotate", default=None,
                   help="write the video with the label drawn on it (H.264 MP4); with several "
                        "videos, a folder")
    p.add_argument("--timeline", action="store_true",
                   help="long videos: slide a window over the video and write a timeline of "
                        "segments (JSON, CSV, PNG)")
    p.add_argument("--out", default=None,
                   help="with --timeline: the folder for its files (default ./NAME.timeline)")
    p.add_argument("--views", type=_positive_int, default=1, metavar="K",
                   help="average K temporal offsets of the clip's frames (not with --timeline; "
                        "default 1)")
    window_options(p)
    device_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("stream", help="classify a live source: webcam index, file, URL or - "
                                      "(stdin)")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("source", help="camera index (0), a video file, rtsp:// or http:// URL, "
                                  "or - for a pipe on stdin")
    p.add_argument("--annotate", default=None, help="write the annotated stream (H.264 MP4)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a file like a camera (live sources always are)")
    p.add_argument("--max-lag", type=float, default=1.0,
                   help="seconds behind real time before frames are skipped (default 1)")
    p.add_argument("--backend", choices=("torch", "onnx"), default=None)
    window_options(p)
    device_options(p)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("import-keras", help="convert a Keras LRCN (.h5 or .keras) to lrcn")
    p.add_argument("model", help="the Keras model file")
    p.add_argument("--classes", type=_class_list, default=None,
                   help="class names in the model's output order (required unless the file "
                        "holds them)")
    p.add_argument("--out", default=None, help="checkpoint to write (default MODEL.safetensors)")
    p.add_argument("--channel-order", choices=("bgr", "rgb"), default="bgr",
                   help="channel order the model was trained on (the tutorial's OpenCV frames: "
                        "bgr)")
    p.add_argument("--interpolation", choices=("bilinear", "area"), default="bilinear",
                   help="resize filter the model was trained with (tutorial: bilinear)")
    p.set_defaults(func=cmd_import_keras)

    p = sub.add_parser("export", help="export a checkpoint (ONNX, uint8 frames in)")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", default=None, help="file to write (default CHECKPOINT.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="a checkpoint's classes, settings and test metrics")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="a web page and a REST API over a trained model")
    p.add_argument("checkpoint", help="run folder, checkpoint or exported .onnx file")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_int_at_least(0), default=8000)
    p.add_argument("--max-upload-mb", type=_positive_float, default=200.0,
                   help="larger uploads get 413, as soon as the limit is passed (default 200)")
    p.add_argument("--jobs", type=_positive_int, default=2,
                   help="decoder processes and timeline jobs at once (default 2)")
    p.add_argument("--queue", type=_non_negative_int, default=16,
                   help="requests that may wait beyond --jobs; more get 503 (default 16)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on the API (default "
                        "$LRCN_TOKEN; none)")
    p.add_argument("--decode-timeout", type=_positive_float, default=None, metavar="S",
                   help="a decode that takes longer fails its request (default 120)")
    p.add_argument("--views", type=_positive_int, default=1, metavar="K",
                   help="/v1/predict averages K temporal offsets of the clip's frames, as "
                        "predict --views (default 1)")
    device_options(p)
    window_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="synthesise data, train, evaluate and predict, end to end")
    p.add_argument("--out", default="lrcn-demo", help="demo folder (default ./lrcn-demo)")
    common(p, cache=False)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except LrcnError as exc:
        print(f"lrcn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lrcn: interrupted (finished work is kept: cache entries and the best checkpoint)",
              file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permission denied, ...: one line, not a traceback
        print(f"lrcn: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
