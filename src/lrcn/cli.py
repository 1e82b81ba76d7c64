"""The `lrcn` command line: the arguments in (arguments.py parses them and refuses flags that
contradict each other), one library call per command, the output written. Settings come in
layers (registry.settings_for): dataclass defaults, the model's own, an optional JSON file
(`--config`), then the flags given; the resolved settings are written into the run folder and
the checkpoint. Errors of the user's input (LrcnError, OSError, a bad flag) are one line, exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from .arguments import build_parser, refused
from .errors import (EXIT_BAD_INPUT, EXIT_INTERNAL, ErrorKind, LrcnError,
                     batch_exit_code)

# --- subcommands -------------------------------------------------------------------------------

def cmd_synth(args: argparse.Namespace) -> int:
    from .console import plural
    from .data.synth import SynthConfig, make_dataset
    width, height = args.size
    try:
        config = SynthConfig(classes=tuple(args.classes) if args.classes else SynthConfig.classes,
                             groups=args.groups, clips_per_group=args.clips_per_group,
                             width=width, height=height, seed=args.seed,
                             min_seconds=args.min_seconds, max_seconds=args.max_seconds)
    except ValueError as exc:
        raise LrcnError(str(exc), kind=ErrorKind.SETTING) from None
    start = time.perf_counter()
    root = make_dataset(args.out, config, workers=args.workers, progress=not args.quiet)
    count = len(config.classes) * config.groups * config.clips_per_group
    print(f"wrote {plural(count, 'clip')} in "
          f"{plural(len(config.classes), 'class', 'classes')} to {root} "
          f"({time.perf_counter() - start:.0f} s); list: {root / 'manifest.csv'}")
    return 0


def _training_job(args: argparse.Namespace, out: Path):
    """`lrcn train` and `lrcn cv`: the TrainingJob their flags and config file describe."""
    from .config import load_config_file
    from .training.job import make_job
    width, height = args.size if args.size else (None, None)
    return make_job(
        args.data, out, model=args.model, config=load_config_file(args.config),
        augment=True if args.augment else False if args.no_augment else None,
        frames={"num_frames": args.frames, "height": height, "width": width},
        split={"test_fraction": args.test_fraction, "val_fraction": args.val_fraction,
               "seed": args.split_seed,
               "drop_small_classes": getattr(args, "drop_small_classes", None) or None,
               "across_classes": getattr(args, "groups_across_classes", None) or None},
        train={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               "schedule": args.schedule, "patience": args.patience, "seed": args.seed,
               "num_threads": args.threads,
               "device": args.device, "precision": args.precision,
               "flip": args.flip or None, "hue_jitter": args.hue_jitter,
               "balance": args.balance or None},
        model_options={"batchnorm": args.batchnorm or None, "lstm_units": args.lstm_units,
                       "l2": args.l2},
        classes=args.classes, cache_dir=args.cache, ucf_split=getattr(args, "split", None),
        lists=getattr(args, "lists", None), workers=args.workers, progress=not args.quiet,
        decode_timeout=args.decode_timeout, init_from=getattr(args, "init_from", None))


def _out(args: argparse.Namespace, kind: str) -> Path:
    from .training.job import default_out
    return Path(args.out) if args.out else default_out(kind)


def _run_job(args: argparse.Namespace):
    """`lrcn train`'s job: a run folder's to resume (--epochs: to that many in all), or a new
    one, in a folder that holds no run unless --overwrite."""
    from .training.job import claim_run_folder, job_from_run
    if args.resume:
        return job_from_run(args.resume, args.workers, not args.quiet, args.decode_timeout,
                            epochs=args.epochs)
    job = _training_job(args, _out(args, "run"))      # settings first: refused before removing
    claim_run_folder(job.out, args.overwrite)
    return job


def cmd_train(args: argparse.Namespace) -> int:
    from .training.evaluate import format_report
    from .training.runs import train_and_evaluate
    from .training.train import format_training
    if args.nproc and args.nproc > 1:
        from .distributed import launch, torchrun_command
        command = torchrun_command(args.argv, args.nproc)
        print("lrcn: " + " ".join(command[1:]), file=sys.stderr, flush=True)
        return launch(command)
    if not args.data and not args.resume:
        raise LrcnError("lrcn train needs DATA (or --resume RUN)", kind=ErrorKind.SETTING)
    start = time.perf_counter()
    job = _run_job(args)
    _model_hint(args, job)
    result = train_and_evaluate(job, evaluate_test=not args.no_evaluate)
    training = result.training
    if training.rank != 0:
        return 0                       # rank 0 speaks for the run
    print(format_training(training, time.perf_counter() - start))
    if result.report is not None:
        print(format_report(result.report))
        written = [job.out / "report.json", job.out / "confusion_matrix.png",
                   job.out / "reliability.png", job.out / "curves.png"]
        print("wrote " + ", ".join(str(p) for p in written if p.exists()))
    return 0


def _model_hint(args: argparse.Namespace, job) -> None:
    """One line when the model was left to its default (no --model, --config or --init-from)
    and the data is not the synthetic set: the default is the seed's model, weak on real
    footage. On stdout, with the run's other notes (stderr is for errors and warnings); under
    torchrun from rank 0 only."""
    from .distributed import launched_rank
    from .training.job import seed_model_hint
    chosen = args.resume or args.model or args.config or args.init_from
    hint = None if chosen or launched_rank() != 0 else seed_model_hint(job)
    if hint:
        print(hint)


def cmd_cv(args: argparse.Namespace) -> int:
    from .training.crossval import cross_validate, format_summary
    job = _training_job(args, _out(args, "cv"))
    print(format_summary(cross_validate(job, folds=args.folds)))
    print(f"wrote {job.out / 'cv.json'}, {job.out / 'cv.csv'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .config import SplitConfig, layered
    from .training.compare import CompareTraining, compare, markdown
    out = _out(args, "compare")
    split = layered(SplitConfig, {}, {"test_fraction": args.test_fraction,
                                      "val_fraction": args.val_fraction,
                                      "seed": args.split_seed})
    train = CompareTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            patience=args.patience, seed=args.seed, device=args.device)
    rows = compare(args.data, out, args.models, repeats=args.repeats, protocol=args.protocol,
                   classes=args.classes, split=split, train=train, cache_dir=args.cache,
                   workers=args.workers, progress=False,
                   log=(lambda *a, **k: None) if args.quiet else print,
                   decode_timeout=args.decode_timeout)
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
    from .config import load_config_file
    from .data.check import BAD_FILE_KINDS, check_dataset, format_check
    from .models.registry import settings_for
    width, height = args.size if args.size else (None, None)
    # the frame settings that `lrcn train` would use with the same options (and --model)
    frames = settings_for(args.model, load_config_file(args.config), frames={
        "num_frames": args.frames, "height": height, "width": width}).frames
    report = check_dataset(args.data, args.classes, frames=frames, ucf_split=args.split,
                           lists=args.lists, cache_dir=args.cache, workers=args.workers,
                           progress=not args.quiet,
                           decode_timeout=args.decode_timeout)
    print(json.dumps(report, indent=1) if args.json else format_check(report))
    return 1 if any(p["kind"] in BAD_FILE_KINDS for p in report["problems"]) else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .data.check import report_truncated
    from .training.evaluate import evaluate_run, format_report
    from .training.train import report_skipped
    evaluation = evaluate_run(args.checkpoint, args.data, args.out, part=args.split or "test",
                              cache_dir=args.cache, workers=args.workers,
                              progress=not args.quiet, device=args.device,
                              precision=args.precision, shuffle_frames=args.shuffle_frames,
                              views=args.views or 1, decode_timeout=args.decode_timeout)
    report_skipped([(s["path"], s["cause"]) for s in evaluation.report["skipped"]])
    report_truncated([(s["path"], s["cause"]) for s in evaluation.report["truncated"]])
    print(format_report(evaluation.report))
    print("wrote " + ", ".join(str(p) for p in evaluation.written))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .api import load
    from .inference.outputs import annotated_path, output_names
    from .inference.predict import annotate, format_prediction
    from .data.dataset import expand_videos
    from .media.writer import check_annotated_target
    args.videos = expand_videos(args.videos)      # a folder: the videos in it
    if args.annotate and len(args.videos) == 1:   # one video: --annotate names its file
        check_annotated_target(args.annotate, args.videos[0])
    classifier = load(args.checkpoint, backend=args.backend or "auto", device=args.device,
                      precision=args.precision, reject_below=args.reject_below or 0.0)
    if args.timeline:
        return _predict_timelines(classifier, args)
    results = classifier.predict_many(args.videos, top_k=args.top_k, views=args.views or 1)
    for result in (r for r in results if r.warning):
        print(f"lrcn: warning: {result.path}: {result.warning}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        for result in results:
            print(format_prediction(result), file=sys.stderr if result.error else sys.stdout)
    names = output_names(args.videos)   # distinct, where two videos share a stem
    for result in (r for r in results if not r.error and args.annotate):
        out = annotated_path(args.annotate, result.path, len(args.videos) > 1, names[result.path])
        annotate(result.path, result, out)
        print(f"annotated video: {out}", file=sys.stderr if args.json else sys.stdout)
    return batch_exit_code(sum(1 for r in results if r.error), len(results))


def _window_config(args: argparse.Namespace):
    """The window settings given (None: WindowConfig's default)."""
    from .inference.windows import WindowConfig
    given = {"span": args.span, "stride": args.stride, "smooth": args.smooth,
             "reject_below": args.reject_below}
    return WindowConfig(**{k: v for k, v in given.items() if v is not None})


def _predict_timelines(classifier, args: argparse.Namespace) -> int:
    from .inference.outputs import Batch, annotated_path, output_names, timeline_folder
    from .inference.timeline import format_timeline
    # a model that cannot run split fails the same way on every video: said once
    batch = Batch(args.videos, fatal=lambda exc: not classifier.engine.splits,
                  report=lambda video, exc: print(f"lrcn: error: {exc}", file=sys.stderr))
    names = output_names(args.videos)   # distinct, where two videos share a stem
    annotated = (lambda video: annotated_path(args.annotate, video, batch.many,
                                              names[str(video)]) if args.annotate else None)
    for video, timeline in batch.run(lambda video: classifier.timeline(
            video, span=args.span, stride=args.stride, smooth=args.smooth, annotate=annotated(
                video), out=timeline_folder(args.out, video, batch.many, names[str(video)]))):
        files = timeline.files
        if timeline.warning:
            print(f"lrcn: warning: {video}: {timeline.warning}", file=sys.stderr)
        if args.json:
            print(files["json"].read_text())
        else:
            print(format_timeline(timeline))
            print(f"timeline: {files['json']}, {files['segments']}, {files['windows']}, "
                  f"{files['plot']}")
        if args.annotate:
            print(f"annotated video: {files['video']}",
                  file=sys.stderr if args.json else sys.stdout)
    return batch_exit_code(len(batch.failed), len(args.videos))


def cmd_stream(args: argparse.Namespace) -> int:
    from .inference.engine import load_engine
    from .inference.stream import run_stream
    from .media.writer import check_annotated_target
    if args.annotate:
        check_annotated_target(args.annotate, args.source)
    result = run_stream(load_engine(args.checkpoint, args.backend or "auto", args.device,
                                    args.precision), args.source,
                        _window_config(args), annotate=args.annotate,
                        realtime=True if args.realtime else None, max_lag=args.max_lag)
    if result.warning:
        print(f"lrcn: warning: {args.source}: {result.warning}", file=sys.stderr)
    return 130 if result.interrupted else 0     # Ctrl-C's status, as every command's


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
    from .inference.export import export_onnx, onnx_target
    from .inference.graphs import int8_clip_graph
    path = resolve_checkpoint_path(args.checkpoint)
    checkpoint = load_checkpoint(path)
    suffix = ".int8.onnx" if args.quantize else ".onnx"
    out = onnx_target(args.out or path.with_suffix(suffix))     # before int8's calibration
    out = export_onnx(checkpoint, out, int8_clip_graph(checkpoint) if args.quantize else None,
                      args.quantize or "fp32")
    frames = checkpoint.frame_config
    print(f"ONNX model{' (int8)' if args.quantize else ''}: {out} (input 'frames' uint8 "
          f"(batch, {frames.num_frames}, "
          f"{frames.height}, {frames.width}, 3), {frames.channel_order.upper()}, scaled inside; "
          f"output 'logits' (batch, {len(checkpoint.class_names)}), to divide by the "
          f"metadata's temperature before a softmax)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .inference.info import model_summary
    from .models.checkpoint import format_summary
    data = model_summary(args.checkpoint)
    print(json.dumps(data, indent=1) if args.json else format_summary(data))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .models.checkpoint import resolve_checkpoint_path
    from .server.app import run_server
    from .inference.engine import is_onnx_file
    target = args.checkpoint if is_onnx_file(args.checkpoint) else \
        str(resolve_checkpoint_path(args.checkpoint))
    if not Path(target).is_file():
        raise LrcnError("no such model file", target, ErrorKind.NOT_FOUND)
    run_server(_serve_config(args, target))
    return 0


def _serve_config(args: argparse.Namespace, checkpoint: str | None, studio: str | None = None):
    from .server.app import ServeConfig
    from .server.limits import Limits
    limits = Limits(max_uploads=args.max_uploads, upload_timeout=args.upload_timeout,
                    max_pixels=args.max_pixels, max_streams=args.max_streams,
                    max_message_kb=args.max_message_kb, max_cameras=args.max_cameras,
                    allow_origins=tuple(args.allow_origin))
    return ServeConfig(checkpoint=checkpoint, host=args.host, port=args.port,
                       max_upload_mb=args.max_upload_mb, jobs=args.jobs, queue=args.queue,
                       token=args.token or os.environ.get("LRCN_TOKEN") or None,
                       device=args.device, precision=args.precision, views=args.views,
                       decode_timeout=args.decode_timeout,
                       job_stall_timeout=args.job_stall_timeout, keep_jobs=args.keep_jobs,
                       window=_window_config(args), limits=limits, studio=studio)


def cmd_studio(args: argparse.Namespace) -> int:
    """The server with the studio over WORKSPACE, serving the run it served last."""
    from .server.app import run_server
    from .server.studio import served_checkpoint
    from .server.workspace import Workspace
    workspace = Workspace(args.workspace)
    if args.from_data:
        count = workspace.import_data(args.from_data)
        print(f"lrcn studio: {count} clips from {args.from_data} in {workspace.data}")
    checkpoint = served_checkpoint(workspace, args.device, args.precision)
    run_server(_serve_config(args, checkpoint, str(workspace.root)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .training.demo import run_demo
    return run_demo(Path(args.out), workers=args.workers, quiet=args.quiet, seed=args.seed)


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "cv": cmd_cv, "compare": cmd_compare,
            "models": cmd_models, "check": cmd_check, "evaluate": cmd_evaluate,
            "predict": cmd_predict, "stream": cmd_stream, "import-keras": cmd_import_keras,
            "export": cmd_export, "info": cmd_info, "serve": cmd_serve, "demo": cmd_demo,
            "studio": cmd_studio}


# What a Ctrl-C leaves of the commands that decode into the cache or train.
_KEPT_ON_INTERRUPT = {"check": "cache entries", **dict.fromkeys(
    ("train", "cv", "compare", "demo", "studio"), "cache entries and the best checkpoint")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    problem = refused(args)
    if problem:
        print(f"lrcn {args.command}: error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return COMMANDS[args.command](args)
    except LrcnError as exc:
        print(f"lrcn: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        kept = _KEPT_ON_INTERRUPT.get(args.command)
        print(f"lrcn: interrupted{f' (finished work is kept: {kept})' if kept else ''}",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader left (`| head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no error at exit
        return 141
    except OSError as exc:  # disk full, permission denied, ...: one line, not a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"lrcn: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:       # a bug: its traceback, and an exit code no input error gives
        import traceback
        traceback.print_exc()
        print("lrcn: internal error (a bug in lrcn; the traceback above says where)",
              file=sys.stderr)
        return EXIT_INTERNAL
