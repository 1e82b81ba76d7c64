"""What the command line says, and how it ends: one exit-code rule (0 done, 1 some inputs
failed, 2 usage or bad input, 3 an internal error), progress bars only on a terminal and plain
lines in a log, a confusion matrix with headers, a readable `lrcn info`, plurals, and files
with the usual permissions."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
import torch

from lrcn.cli import main
from lrcn.config import FrameConfig, ModelConfig
from lrcn.models.checkpoint import save_checkpoint
from lrcn.models.lrcn import LRCN

from conftest import indexed_frame, write_video


def lrcn(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def model_and_video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(folder / "m.safetensors", LRCN(ModelConfig(num_classes=2)),
                                 FrameConfig(), ["a", "b"], clip_seconds=1.0)
    video = write_video(folder / "clip.avi", [indexed_frame(i, 64, 48) for i in range(30)])
    return checkpoint, video


def test_exit_codes_follow_one_rule(model_and_video, tmp_path, capsys):
    """predict: a bad or missing video alone is bad input (2), as is every video failing;
    some failing among several is 1; all good is 0. The real process for one of them; main()
    returns what the process exits with."""
    checkpoint, good = model_and_video
    missing = tmp_path / "missing.mp4"
    result = lrcn("predict", checkpoint, missing, "--backend", "torch")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"{missing}: no such file"
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    cases = [([good], 0), ([bad], 2), ([bad, missing], 2), ([bad, good], 1)]
    for videos, code in cases:
        assert main(["predict", str(checkpoint), *map(str, videos), "--backend",
                     "torch"]) == code, videos
        assert "Traceback" not in capsys.readouterr().err


def test_an_internal_error_exits_3_with_its_traceback(monkeypatch, capsys):
    """A bug (an exception that is not an input error) is told apart from bad input: its
    traceback, a line that says so, and exit 3."""
    import lrcn.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug")
    monkeypatch.setitem(cli.COMMANDS, "models", broken)
    assert main(["models"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("lrcn: internal error")


def test_a_damaged_split_json_is_named(model_and_video, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(model_and_video[0].read_bytes())
    (run / "split.json").write_text('{"root": "/x", "train": [')
    assert main(["evaluate", str(run)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lrcn: error: {run / 'split.json'}: damaged split.json (")
    (run / "config.json").write_text("{}")
    assert main(["train", "--resume", str(run)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "split.json: damaged split.json" in line and "config.json" not in line


SYNTH = ["synth", "{out}", "--classes", "Grow,Shrink", "--groups", "1", "--clips-per-group", "1",
         "--size", "32x24", "--min-seconds", "0.5", "--max-seconds", "0.5", "--workers", "1"]


def test_progress_is_plain_lines_in_a_log_and_a_bar_on_a_terminal(tmp_path):
    log = lrcn(*[a.format(out=tmp_path / "a") for a in SYNTH])
    assert log.returncode == 0, log.stderr
    assert "\r" not in log.stderr
    assert "synthesising: 2/2 groups (100%)" in log.stderr        # the closing line
    # on a terminal: tqdm redraws in place
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        result = subprocess.run([sys.executable, "-m", "lrcn",
                                 *[a.format(out=tmp_path / "b") for a in SYNTH]],
                                stdout=subprocess.PIPE, stderr=follower, timeout=300)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0
    assert b"\r" in seen and b"synthesising" in seen


def test_synth_that_cannot_write_says_so_in_one_line(tmp_path):
    """A class folder that cannot be made (a file holds its name; a full disk fails the same
    way): one line that names the folder, the count and the first cause; exit 2, no traceback
    (it listed every group, as a bug's traceback)."""
    out = tmp_path / "s"
    out.mkdir()
    (out / "Grow").write_text("not a folder")
    result = lrcn(*[a.format(out=out) for a in SYNTH])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    *progress, line = result.stderr.strip().splitlines()    # progress lines, then the error
    assert all(p.startswith("synthesising: ") for p in progress), progress
    assert line.startswith(f"lrcn: error: synthesis failed for 1 of 2 groups in {out}; "
                           "the first: Grow g01: FileExistsError: [Errno 17]"), line


def test_plain_progress_lines_come_every_interval(monkeypatch):
    import io
    import lrcn.console as console
    monkeypatch.setattr(console, "PROGRESS_EVERY", 0.0)
    out = io.StringIO()
    for _ in console.progress(range(3), desc="epoch 1/2", unit="batch", leave=False, file=out):
        pass
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "epoch 1/2: 1/3 batches (33%)", "epoch 1/2: 2/3 batches (67%)",
        "epoch 1/2: 3/3 batches (100%)"]
    assert console.plural(1, "epoch") == "1 epoch" and console.plural(2, "epoch") == "2 epochs"
    assert console.plural(2, "group") == "2 groups"
    assert console.plural(1, "class", "classes") == "1 class"


def test_the_confusion_matrix_has_headers():
    from lrcn.training.evaluate import format_confusion, format_report
    report = {"classes": ["Grow", "SlideLeft"], "accuracy": 0.5, "num_clips": 1,
              "group_accuracy": 1.0, "num_groups": 1, "macro_f1": 0.5,
              "per_class": {n: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
                            for n in ("Grow", "SlideLeft")},
              "confusion_matrix": [[1, 0], [0, 0]]}
    text = format_report(report)
    assert "on 1 clip (group-level 1.000 on 1 group)" in text
    lines = text.splitlines()
    header = lines.index("confusion matrix (rows: true, columns: predicted):") + 1
    assert lines[header].split() == ["Grow", "SlideLeft"]
    assert lines[header + 1].split() == ["Grow", "1", "0"]
    long = [f"AVeryLongClassNameNumber{i}" for i in range(6)]
    numbered = format_confusion(long, [[i] * 6 for i in range(6)], 28)
    assert numbered[0].endswith("by class number):") and numbered[1].split() == \
        [str(i) for i in range(6)]
    assert numbered[2].split()[:2] == ["0", long[0]] and max(map(len, numbered)) <= 100


def test_info_is_readable_and_shows_only_what_the_model_uses(tmp_path, capsys):
    from lrcn.models.registry import build_model
    frames = FrameConfig(height=128, width=160, channel_order="rgb")
    config = ModelConfig(name="effnet-lstm", num_classes=2, num_frames=20, height=128,
                         width=160, dropout=0.5)
    path = save_checkpoint(tmp_path / "e.safetensors", build_model(config), frames, ["a", "b"])
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert not text.lstrip().startswith("{")
    assert "model" in text and "effnet-lstm" in text and "lstm_units 32" in text
    assert "conv_filters" not in text and "pool_sizes" not in text
    assert "20 of 160x128, RGB" in text
    assert main(["info", str(path), "--json"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["model"]["lstm_units"] == 32 and "conv_filters" not in raw["model"]
    assert raw["model"]["dropout"] == 0.5


def test_files_are_written_with_the_usual_permissions(model_and_video):
    """safetensors creates its file 0600; a checkpoint gets the mode of any new file."""
    umask = os.umask(0)
    os.umask(umask)
    assert model_and_video[0].stat().st_mode & 0o777 == 0o666 & ~umask
