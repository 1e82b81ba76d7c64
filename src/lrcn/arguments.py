"""What the `lrcn` command line accepts: every command's options with their help, types and
ranges (argtypes.py), and which flags contradict each other (`refused`). cli.py does the rest:
one library call per command, and the printing."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from .config import SCHEDULES, Precision
from .argtypes import (device, fraction, hue_share, name_list, non_negative_float,
                       non_negative_int, port, positive_float, positive_int, size, split_number)

# The settings a run folder holds: `lrcn train --resume RUN` takes them from there.
_RUN_SETTINGS = ("data", "--config", "--classes", "--batch-size", "--lr", "--schedule",
                 "--patience", "--seed", "--threads", "--test-fraction", "--val-fraction",
                 "--split-seed", "--frames", "--size", "--model", "--augment", "--no-augment",
                 "--flip", "--hue-jitter", "--balance", "--batchnorm", "--lstm-units", "--l2",
                 "--device", "--precision", "--split", "--lists", "--out", "--cache",
                 "--init-from", "--overwrite", "--drop-small-classes", "--groups-across-classes")
# What --init-from takes from its checkpoint: the model and its input.
_MODEL_SETTINGS = ("--model", "--frames", "--size", "--batchnorm", "--lstm-units", "--l2")
# Flags that contradict each other, by command: (flag, flags it cannot go with, the message).
# Flags in these rules default to None or False, so that "given" (0 too) can be told from "not
# given". (--augment/--no-augment: argparse's mutually exclusive group.)
CONFLICTS = {
    "train": [("--resume", _RUN_SETTINGS, "--resume RUN takes its data and settings from the "
                                          "run folder (--epochs N: to N epochs in all): give "
                                          "no {other}"),
              ("--init-from", _MODEL_SETTINGS, "{flag} takes the model and frame settings from "
                                               "its checkpoint: give no {other}"),
              ("--split", ("--test-fraction",), "{flag} N tests on the official test list: "
                                                "{other} does not apply")],
    "evaluate": [("--data", ("--split",), "{other} names a part of the run's split; with "
                                          "{flag} every clip of DATA is evaluated")],
    "predict": [("--timeline", ("--views",), "{other} averages offsets of one clip; {flag} "
                                             "already slides its windows (use --stride)"),
                ("--timeline", ("--top-k",), "{other} trims a clip's classes; {flag} writes "
                                             "every class per window")],
}
# Flags a command would ignore: (flag, why).
UNUSED = {"cv": [("--test-fraction", "each fold tests on its held-out group")]}
# Flags that mean something only beside another: (flag, the flag it needs).
NEEDS = {
    "train": [("--lists", "--split")],
    "check": [("--lists", "--split")],
    "predict": [("--out", "--timeline"), ("--span", "--timeline"), ("--stride", "--timeline"),
                ("--smooth", "--timeline")],
}


def _given(args: argparse.Namespace, flag: str) -> bool:      # `is`: 0 is given, yet 0 == False
    return all(vars(args).get(flag.lstrip("-").replace("-", "_")) is not x for x in (None, False))


def refused(args: argparse.Namespace) -> str | None:
    """The one-line reason why the flags given cannot be honoured together (CONFLICTS, UNUSED,
    NEEDS), or None."""
    for flag, others, message in CONFLICTS.get(args.command, ()):
        if clash := next((o for o in others if _given(args, flag) and _given(args, o)), None):
            return message.format(flag=flag, other="DATA" if clash == "data" else clash)
    for flag, why in UNUSED.get(args.command, ()):
        if _given(args, flag):
            return f"{flag} does not apply: {why}"
    for flag, needed in NEEDS.get(args.command, ()):
        if _given(args, flag) and not _given(args, needed):
            return f"{flag} applies only with {needed}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrcn", description="Human action recognition in video with a CNN + LSTM (LRCN).")
    parser.add_argument("--version", action="version", version=f"lrcn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, cache: bool = True) -> None:
        p.add_argument("--workers", type=non_negative_int, default=None,
                       help="decoding processes (default: one per core; 0: in this process)")
        if cache:
            p.add_argument("--cache", type=Path, default=None,
                           help="frame cache folder (default: $LRCN_CACHE_DIR or ~/.cache/lrcn)")
            p.add_argument("--decode-timeout", type=positive_float, default=None, metavar="S",
                           help="a file whose decoding takes longer is reported as stalled and "
                                "skipped (default: $LRCN_DECODE_TIMEOUT or 120)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    def device_options(p: argparse.ArgumentParser, train: bool = False) -> None:
        # None in training: the config file's setting, else TrainConfig's default (auto).
        p.add_argument("--device", type=device, default=None if train else "auto",
                       help="where the model runs: auto (CUDA when there is a GPU), cpu, cuda, "
                            "cuda:N or mps (default auto)")
        # int8 is for inference only: the CNN quantized on ONNX Runtime (inference/graphs.py)
        p.add_argument("--precision", choices=[c.value for c in Precision]
                       + ([] if train else ["int8"]),
                       default=None if train else "fp32",
                       help="fp32 (default), or bf16/fp16 under autocast"
                            + ("" if train else ", or int8 (the CNN quantized by ONNX Runtime, "
                               "calibrated on the run's validation clips; CPU)"))

    def frame_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--frames", type=positive_int, help="frames per clip (default 20)")
        p.add_argument("--size", type=size, help="frame size, WIDTHxHEIGHT or SIZE (default 64)")

    def train_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--classes", type=name_list, default=None, help="a class subset, "
                       "comma-separated (default: the seed's four if present, else all)")
        p.add_argument("--config", default=None, help="JSON file with frames/model/split/train")
        p.add_argument("--epochs", type=positive_int)
        p.add_argument("--batch-size", type=positive_int)
        p.add_argument("--lr", type=positive_float)
        p.add_argument("--schedule", choices=SCHEDULES, help="the learning rate over the epochs: "
                       "constant (default) or cosine, falling from --lr to lr/epochs")
        p.add_argument("--patience", type=positive_int)
        p.add_argument("--seed", type=non_negative_int)
        p.add_argument("--threads", type=positive_int, help="PyTorch threads (default: all cores)")
        p.add_argument("--test-fraction", type=fraction)
        p.add_argument("--val-fraction", type=fraction)
        p.add_argument("--split-seed", type=int)
        frame_options(p)
        p.add_argument("--model", default=None, metavar="NAME",
                       help="the model: lrcn (the seed's, default), lrcn-bn, convlstm (the "
                            "tutorial's other), effnet-lstm (pretrained EfficientNet-Lite0, "
                            "frozen), effnet-lrcn (fine-tuned); `lrcn models` lists them")
        augment = p.add_mutually_exclusive_group()
        augment.add_argument("--augment", action="store_true", help="crop/scale jitter and "
                             "TSN temporal jitter while training (effnet-lstm: temporal only); "
                             "default off, but on for effnet-lrcn")
        augment.add_argument("--no-augment", action="store_true", help="no augmentation at all")
        p.add_argument("--flip", action="store_true", help="random horizontal flips (opt-in: "
                       "left-to-right actions become right-to-left ones)")
        p.add_argument("--hue-jitter", type=hue_share, help="turn each clip's colours by a "
                       "random share of the hue circle, up to this (0-0.5; default 0)")
        p.add_argument("--balance", action="store_true", help="weight the loss by inverse class "
                       "frequency (uneven classes)")
        p.add_argument("--batchnorm", action="store_true", help="BatchNorm after each Conv2D")
        p.add_argument("--lstm-units", type=positive_int, help="LSTM width (default 32)")
        p.add_argument("--l2", type=non_negative_float,
                       help="L2 factor on conv and LSTM weights (default 0)")
        device_options(p, train=True)

    def window_options(p: argparse.ArgumentParser) -> None:
        # None: WindowConfig's default (see _window_config); predict needs to know what was given
        p.add_argument("--span", type=positive_float, default=None,
                       help="seconds one window covers (default: the checkpoint's typical "
                            "training clip, so motion runs at the speed the model learned)")
        p.add_argument("--stride", type=positive_float, default=None,
                       help="seconds between windows (default: a quarter of the span)")
        p.add_argument("--smooth", type=positive_int, default=None,
                       help="windows averaged before labelling (default 3)")
        p.add_argument("--reject-below", type=fraction, default=None, metavar="P",
                       help="say 'unknown' when the most probable class is below P: a model "
                            "knows only its classes (default 0: always a class)")

    p = sub.add_parser("synth", help="write the built-in synthetic action data set")
    p.add_argument("out", help="folder to write (a folder per class)")
    p.add_argument("--classes", type=name_list, default=None,
                   help="comma-separated subset of: SlideRight,SlideLeft,Grow,Shrink,Bounce,Spin")
    p.add_argument("--groups", type=positive_int, default=8, help="groups per class (default 8)")
    p.add_argument("--clips-per-group", type=positive_int, default=4)
    p.add_argument("--size", type=size, default=(320, 240), help="WIDTHxHEIGHT (320x240)")
    p.add_argument("--min-seconds", type=positive_float, default=2.0)
    p.add_argument("--max-seconds", type=positive_float, default=10.0)
    p.add_argument("--seed", type=non_negative_int, default=0)
    common(p, cache=False)

    p = sub.add_parser("train", help="train on a folder of videos (a folder per class)")
    p.add_argument("data", nargs="?", default=None,
                   help="data set: a folder <root>/<Class>/*.avi, or a CSV/text list of "
                        "path,label lines")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN",
                   help="continue a run from its folder's last saved epoch, with its data and "
                        "settings; with --epochs N, train it on to N epochs in all (also a "
                        "finished run)")
    p.add_argument("--init-from", default=None, metavar="RUN_OR_CHECKPOINT",
                   help="fine-tune a trained model on DATA: its model and frame settings, all "
                        "its weights for the classes it knows, a new classifier row for each "
                        "new class")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out if there is one (otherwise refused)")
    p.add_argument("--nproc", type=positive_int, default=None, metavar="P",
                   help="train data-parallel in P processes on this machine (torchrun); for "
                        "several machines run torchrun yourself (README)")
    p.add_argument("--split", type=split_number, default=None,
                   help="use the official UCF101 split N (classInd.txt, trainlist0N.txt, "
                        "testlist0N.txt)")
    p.add_argument("--lists", type=Path, default=None, help="folder with the UCF101 split "
                   "lists (default: DATA or DATA/ucfTrainTestlist)")
    p.add_argument("--out", default=None, help="run folder (default runs/run-DATE-TIME)")
    p.add_argument("--drop-small-classes", action="store_true",
                   help="train without the classes that have too few readable groups to "
                        "appear in train, validation and test (default: refuse them)")
    p.add_argument("--groups-across-classes", action="store_true",
                   help="a group tag in several classes is one source (a session or video "
                        "cut into several actions): split it whole (default: per class)")
    train_options(p)
    p.add_argument("--no-evaluate", action="store_true",
                   help="do not evaluate on the test split after training")
    common(p)

    p = sub.add_parser("cv", help="leave-one-group-out cross-validation (UCF50's protocol)")
    p.add_argument("data", help="data set: a folder per class, or a path,label list")
    p.add_argument("--out", default=None, help="folder for the fold runs and cv.json "
                                               "(default runs/cv-DATE-TIME)")
    p.add_argument("--folds", type=name_list, default=None,
                   help="groups to hold out: 1,2,3, g01 or a list's group names (default: all)")
    train_options(p)
    common(p)

    p = sub.add_parser("compare", help="train and test several models on the same splits, "
                                       "repeated, and tabulate them")
    p.add_argument("data", help="data set: a folder per class, or a path,label list")
    p.add_argument("--models", type=name_list, default=["lrcn", "convlstm", "effnet-lstm"],
                   help="comma-separated model names (default lrcn,convlstm,effnet-lstm)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="splits per protocol (split seed, seed+1, ...; default 3)")
    p.add_argument("--protocol", choices=("group", "random", "both"), default="group",
                   help="group: clips of one group on one side (honest, default); random: the "
                        "tutorial's leaking split; both: side by side")
    p.add_argument("--out", default=None, help="folder for the runs and the table "
                                               "(default runs/compare-DATE-TIME)")
    p.add_argument("--classes", type=name_list, default=None)
    for flag, kind in (("--epochs", positive_int), ("--batch-size", positive_int),
                       ("--lr", positive_float), ("--patience", positive_int),
                       ("--seed", non_negative_int), ("--test-fraction", fraction),
                       ("--val-fraction", fraction), ("--split-seed", int)):
        p.add_argument(flag, type=kind, default=None)
    p.add_argument("--device", type=device, default=None, help="auto, cpu, cuda, cuda:N, mps")
    common(p)

    p = sub.add_parser("models", help="the models --model can name")

    p = sub.add_parser("check", help="scan a data set: counts, durations, unreadable and "
                                     "suspicious files")
    p.add_argument("data", help="a folder per class, or a path,label list")
    p.add_argument("--classes", type=name_list, default=None)
    p.add_argument("--split", type=split_number, default=None,
                   help="check the files of the official UCF101 split N")
    p.add_argument("--lists", type=Path, default=None, help="folder with the UCF101 lists")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", default=None,
                   help="JSON settings file (its frames section is used, as by train)")
    p.add_argument("--model", metavar="NAME", help="decode at this model's frames (as train does)")
    frame_options(p)
    common(p)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (the run's test split by default)")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--data", default=None, help="evaluate on every clip of this data folder")
    p.add_argument("--split", choices=("test", "val", "train"), default=None,
                   help="which part of the run's split (default test; not with --data)")
    p.add_argument("--out", default=None, help="folder for report.json and plots")
    p.add_argument("--shuffle-frames", action="store_true",
                   help="frame-order ablation: each clip's frames in a random order (reports "
                        "go to RUN/shuffled-frames unless --out)")
    p.add_argument("--views", type=positive_int, default=1, metavar="K",
                   help="multi-view testing: average K temporal offsets of each clip's frames "
                        "(default 1)")
    device_options(p)
    common(p)

    p = sub.add_parser("predict", help="classify videos")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("videos", nargs="+", help="video files, or folders of them")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="print only the K most probable classes (default: all)")
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
    p.add_argument("--views", type=positive_int, default=None, metavar="K",
                   help="average K temporal offsets of the clip's frames (not with --timeline; "
                        "default 1)")
    window_options(p)
    device_options(p)

    p = sub.add_parser("stream", help="classify a live source: webcam index, file, URL or - "
                                      "(stdin)")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("source", help="camera index (0), a video file, rtsp:// or http:// URL, "
                                  "or - for a pipe on stdin")
    p.add_argument("--annotate", default=None, help="write the annotated stream (H.264 MP4)")
    p.add_argument("--realtime", action="store_true",
                   help="pace a file or a pipe like a camera, skipping frames when behind "
                        "(cameras and URLs always are; files and pipes are otherwise read as "
                        "fast as they decode)")
    p.add_argument("--max-lag", type=non_negative_float, default=1.0,
                   help="seconds behind real time before frames are skipped (default 1)")
    p.add_argument("--backend", choices=("torch", "onnx"), default=None)
    window_options(p)
    device_options(p)

    p = sub.add_parser("import-keras", help="convert a Keras LRCN (.h5 or .keras) to lrcn")
    p.add_argument("model", help="the Keras model file")
    p.add_argument("--classes", type=name_list, default=None,
                   help="class names in the model's output order (required unless the file "
                        "holds them)")
    p.add_argument("--out", default=None, help="checkpoint to write (default MODEL.safetensors)")
    p.add_argument("--channel-order", choices=("bgr", "rgb"), default="bgr",
                   help="channel order the model was trained on (the tutorial's OpenCV: bgr)")
    p.add_argument("--interpolation", choices=("bilinear", "area"), default="bilinear",
                   help="resize filter the model was trained with (tutorial: bilinear)")

    p = sub.add_parser("export", help="export a checkpoint (ONNX, uint8 frames in)")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="int8: the CNN quantized by ONNX Runtime's static quantization, "
                        "calibrated on the run's validation clips")
    p.add_argument("--out", default=None,
                   help="file to write (default CHECKPOINT.onnx, CHECKPOINT.int8.onnx)")

    p = sub.add_parser("info", help="a checkpoint's classes, settings and test metrics")
    p.add_argument("checkpoint", help="run folder or checkpoint file")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("serve", help="a web page and a REST API over a trained model")
    p.add_argument("checkpoint", help="run folder, checkpoint or exported .onnx file")
    serve_options(p, device_options, window_options)

    p = sub.add_parser("studio", help="the studio: make a data set from videos and a webcam, "
                                      "train, evaluate and serve, in the browser")
    p.add_argument("workspace", help="the workspace folder (made if missing): data/, runs/")
    p.add_argument("--from", dest="from_data", default=None, metavar="DATA",
                   help="start from an existing data folder (<DATA>/<Class>/<videos>): its "
                        "files are linked (or copied) into WORKSPACE/data")
    serve_options(p, device_options, window_options)

    p = sub.add_parser("demo", help="synthesise data, train, evaluate and predict, end to end")
    p.add_argument("--out", default="lrcn-demo", help="demo folder (default ./lrcn-demo)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="a whole repeat of the demo: another data set, split and training "
                        "seed (default 0)")
    common(p, cache=False)
    for p in [parser, *sub.choices.values()]:
        _one_line_errors(p)
    return parser


def serve_options(p: argparse.ArgumentParser, device_options, window_options) -> None:
    """`lrcn serve`'s and `lrcn studio`'s server options (with build_parser's device and
    window options)."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--max-upload-mb", type=positive_float, default=200.0,
                   help="larger uploads get 413, as soon as the limit is passed (default 200)")
    p.add_argument("--jobs", type=positive_int, default=2,
                   help="decoder processes and timeline jobs at once (default 2)")
    p.add_argument("--queue", type=non_negative_int, default=16,
                   help="requests that may wait beyond --jobs; more get 503 (default 16)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on the API (default "
                        "$LRCN_TOKEN; none)")
    p.add_argument("--decode-timeout", type=positive_float, default=None, metavar="S",
                   help="a clip's decode (or a probe) that takes longer fails its request "
                        "(default 120)")
    p.add_argument("--job-stall-timeout", type=positive_float, default=120.0, metavar="S",
                   help="a timeline job that decodes and scores nothing for this long fails "
                        "(model loading not counted; default 120)")
    p.add_argument("--views", type=positive_int, default=1, metavar="K",
                   help="/v1/predict averages K temporal offsets of the clip's frames, as "
                        "predict --views (default 1)")
    p.add_argument("--max-uploads", type=positive_int, default=32, metavar="N",
                   help="uploads received at once; more get 503 (default 32)")
    p.add_argument("--upload-timeout", type=positive_float, default=120.0, metavar="S",
                   help="an upload that takes longer gets 408 (default 120)")
    p.add_argument("--max-pixels", type=positive_int, default=1920 * 1080, metavar="N",
                   help="pixels per frame of an uploaded video or a webcam JPEG; larger get "
                        "422 before decoding (default 2073600: 1920x1080)")
    p.add_argument("--max-streams", type=positive_int, default=16, metavar="N",
                   help="streams in an uploaded file; more get 422 (default 16)")
    p.add_argument("--max-message-kb", type=positive_int, default=1024, metavar="KB",
                   help="a larger webcam socket message closes the socket (default 1024)")
    p.add_argument("--max-cameras", type=positive_int, default=4, metavar="N",
                   help="webcam sockets open at once; more get 503 (default 4)")
    p.add_argument("--keep-jobs", type=positive_int, default=64, metavar="N",
                   help="finished timeline jobs kept for an hour, oldest out first (default 64)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                   help="another web page (scheme://host:port, or '*') that may send requests "
                        "and open the webcam socket; repeatable")
    device_options(p)
    window_options(p)


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse prints its usage before an error; lrcn's errors are one line (--help: usage)."""
    def error(message: str):
        parser.exit(2, f"{parser.prog}: error: {message}\n")
    parser.error = error


__all__ = ["build_parser", "refused", "CONFLICTS", "UNUSED", "NEEDS"]
