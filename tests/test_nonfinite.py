"""No run ends in NaN and no bad number gets a traceback (issue 22, items 6-8): a diverging run
stops with one line naming the epoch; NaN or infinite weights in a checkpoint, a training
state or an ONNX file are refused when loaded; ONNX files whose shapes contradict their
metadata, config values of the wrong type, non-finite flags and clip sizes no machine holds
are one-line errors; a torchrun collective that times out is one line per rank; and a run
made with --no-evaluate is resumed without evaluating. Everything runs the real CLI on a tiny
generated data set (3 classes x 3 clips of 32x32, a 4-frame model of 1,015 parameters)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import free_port
from lrcn.cli import main
from lrcn.errors import LrcnError

SMALL = {"model": {"conv_filters": [4, 8], "pool_sizes": [4, 4],
                   "dropout_after": [False, False], "lstm_units": 4},
         "frames": {"num_frames": 4, "height": 32, "width": 32}}


def lrcn(*args, env=None, timeout=300):
    """The CLI as a user runs it: a process of its own (exit status and stderr are the point)."""
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line(stderr: str) -> str:
    """The one error line of a refused command (no traceback, nothing else)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.strip().splitlines() if "error:" in line]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from lrcn.data.synth import SynthConfig, make_dataset
    root = tmp_path_factory.mktemp("finite") / "data"
    make_dataset(root, SynthConfig(classes=("SlideRight", "SlideLeft", "Grow"), groups=3,
                                   clips_per_group=1, width=32, height=32, min_seconds=1.0,
                                   max_seconds=1.5, seed=2), workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def settings(data) -> Path:
    path = data.parent / "small.json"
    path.write_text(json.dumps(SMALL))
    return path


@pytest.fixture(scope="module")
def run(data, settings) -> Path:
    """A good 2-epoch run, made with --no-evaluate (tests copy it before changing it)."""
    out = data.parent / "run"
    assert main(["train", str(data), "--out", str(out), "--config", str(settings), "--epochs",
                 "2", "--no-evaluate", "--quiet", "--workers", "1"]) == 0
    return out


@pytest.fixture
def video(data) -> Path:
    return sorted(data.glob("*/*.avi"))[0]


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


def _history_rows(run: Path) -> list[str]:
    return (run / "history.csv").read_text().strip().splitlines()[1:]


def test_a_diverging_run_stops_at_once_naming_the_epoch(data, settings, tmp_path):
    out = tmp_path / "run"
    result = lrcn("train", data, "--out", out, "--config", settings, "--lr", "1e30",
                  "--epochs", "3", "--quiet", "--workers", "1")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("lrcn: error: training diverged at epoch 1: the ")
    assert "try a lower learning rate (--lr, now 1e+30)" in line
    assert "no checkpoint was written" in line
    assert "epoch   1" not in result.stdout          # no epoch was logged as a result
    assert not (out / "state.safetensors").exists()  # nor saved as a state to resume


def test_a_resumed_run_that_diverges_keeps_the_last_good_checkpoint(run, tmp_path):
    """A damaged state whose weights are finite but huge (what flipped exponent bits make)
    resumes into NaN: the loss check stops it; the checkpoint and history stay as they were."""
    copy = shutil.copytree(run, tmp_path / "run")
    tensors, metadata = _tensors(copy / "state.safetensors")
    for key in tensors:
        if key.startswith("model.") and tensors[key].is_floating_point():
            tensors[key] = tensors[key] * 1e30
    save_file(tensors, str(copy / "state.safetensors"), metadata=metadata)
    config = json.loads((copy / "config.json").read_text())
    config["train"]["epochs"] = 3                    # one epoch left to run
    (copy / "config.json").write_text(json.dumps(config))
    checkpoint = (copy / "model.safetensors").read_bytes()
    result = lrcn("train", "--resume", copy, "--quiet", "--workers", "1")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("lrcn: error: training diverged at epoch 3: ")
    assert "lower learning rate" in line and "the checkpoint keeps epoch" in line
    assert (copy / "model.safetensors").read_bytes() == checkpoint
    assert len(_history_rows(copy)) == 2
    assert main(["info", str(copy)]) == 0            # the last good checkpoint loads


def test_a_training_state_with_nan_is_refused(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    tensors, metadata = _tensors(copy / "state.safetensors")
    name = next(k for k in sorted(tensors) if k.startswith("model."))
    tensors[name].view(-1)[3] = float("nan")
    save_file(tensors, str(copy / "state.safetensors"), metadata=metadata)
    config = json.loads((copy / "config.json").read_text())
    config["train"]["epochs"] = 3
    (copy / "config.json").write_text(json.dumps(config))
    result = lrcn("train", "--resume", copy, "--quiet", "--workers", "1")
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        f"lrcn: error: {copy / 'state.safetensors'}: the training state is damaged: tensor "
        f"{name} holds NaN or infinite values; delete it to start the run again")
    assert len(_history_rows(copy)) == 2


@pytest.fixture(scope="module")
def nan_checkpoint(run) -> Path:
    tensors, metadata = _tensors(run / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name].view(-1)[0] = float("inf")
    path = run.parent / "nan.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize("command", [["predict"], ["predict", "--json"], ["serve"]],
                         ids=" ".join)
def test_non_finite_weights_are_refused_at_load(nan_checkpoint, video, command):
    """Before: predict crashed ("cannot convert float NaN to integer"), predict --json printed
    NaN (invalid JSON) and serve answered every request with 500. Now each refuses the file."""
    args = [*command[:1], nan_checkpoint, *([video] if command[0] == "predict" else []),
            *command[1:]]
    if command[0] == "serve":
        args += ["--port", free_port()]
    result = lrcn(*args, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert one_line(result.stderr) == (
        f"lrcn: error: {nan_checkpoint}: checkpoint weights are damaged: tensor "
        f"{sorted(_tensors(nan_checkpoint)[0])[0]} holds NaN or infinite values (a diverged "
        "training run, or a corrupted file)")


@pytest.fixture(scope="module")
def onnx_file(run) -> Path:
    out = run.parent / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    return out


def _edited_onnx(source: Path, target: Path, edit) -> Path:
    import onnx
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(target))
    return target


def _narrow_input(model) -> None:
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 16   # height 32 -> 16


def _five_classes(model) -> None:
    for entry in model.metadata_props:
        if entry.key == "classes":
            entry.value = json.dumps(["A", "B", "C", "D", "E"])


def _nan_weight(model) -> None:
    import numpy as np
    from onnx import numpy_helper
    tensor = next(t for t in model.graph.initializer if t.name == "model.cnn.0.bias")
    array = numpy_helper.to_array(tensor).copy()
    array.flat[0] = np.nan        # refused when the file is loaded, before any answer
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


@pytest.mark.parametrize("edit, cause", [
    (_narrow_input, "the ONNX model's input shape ['batch', 4, 16, 32, 3] does not match its "
                    "frame settings ['batch', 4, 32, 32, 3]"),
    (_five_classes, "the ONNX model's output shape ['batch', 3] does not match its 5 class "
                    "names"),
    (_nan_weight, "the ONNX model's weights are damaged: model.cnn.0.bias holds NaN or "
                  "infinite values"),
], ids=["input shape", "five names for three outputs", "nan weight"])
def test_onnx_files_that_contradict_themselves_are_refused(onnx_file, video, tmp_path, capsys,
                                                          edit, cause):
    bad = _edited_onnx(onnx_file, tmp_path / "bad.onnx", edit)
    assert main(["predict", str(bad), str(video)]) == 2
    assert capsys.readouterr().err == f"lrcn: error: {bad}: {cause}\n"
    assert main(["predict", str(onnx_file), str(video), "--json"]) == 0   # the file as made
    assert len(json.loads(capsys.readouterr().out)[0]["probabilities"]) == 3


@pytest.mark.parametrize("section, value, cause", [
    ("train", {"batch_size": 2.5}, "bad train setting: batch_size: expected a whole number, "
                                   "got 2.5"),
    ("model", {"conv_filters": "abc"}, "bad model setting: conv_filters: expected a list, got "
                                       "'abc'"),
    ("model", {"batchnorm": "yes"}, "bad model setting: batchnorm: expected true or false, got "
                                    "'yes'"),
    ("train", {"lr": -1}, "bad train setting: lr must be a positive finite number, not -1.0"),
    ("frames", {"num_frames": 100000, "height": 4096, "width": 4096},
     "bad frames setting: a clip of 100000x4096x4096 frames would take 4687.5 GiB, over the "
     "1 GiB a clip may take"),
], ids=["batch_size 2.5", "conv_filters abc", "batchnorm yes", "lr -1", "huge frames"])
def test_config_values_of_the_wrong_type_name_the_file_and_the_field(data, tmp_path, capsys,
                                                                     section, value, cause):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({section: value}))
    assert main(["train", str(data), "--config", str(config), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 2
    assert capsys.readouterr().err == f"lrcn: error: {config}: {cause}\n"
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_whose_settings_have_the_wrong_type_is_refused(run, video, tmp_path,
                                                                    capsys):
    tensors, metadata = _tensors(run / "model.safetensors")
    header = json.loads(metadata["lrcn"])
    header["model"]["conv_filters"] = "abc"
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={**metadata, "lrcn": json.dumps(header)})
    assert main(["predict", str(bad), str(video)]) == 2
    assert capsys.readouterr().err == (f"lrcn: error: {bad}: checkpoint settings are damaged "
                                       "(conv_filters: expected a list, got 'abc')\n")


def test_a_frame_size_no_machine_holds_is_refused_before_decoding(data, capsys):
    """Before: every file was decoded and failed with "Unable to allocate 4.58 TiB"."""
    started = time.perf_counter()
    assert main(["check", str(data), "--frames", "100000", "--size", "4096", "--quiet",
                 "--workers", "0"]) == 2
    assert capsys.readouterr().err == (
        "lrcn: error: bad FrameConfig setting: a clip of 100000x4096x4096 frames would take "
        "4687.5 GiB, over the 1 GiB a clip may take\n")
    assert main(["check", str(data), "--size", "8192x64", "--quiet"]) == 2
    assert "larger than 4096 pixels a side" in capsys.readouterr().err
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("args", [
    ["train", "D", "--lr", "nan"], ["train", "D", "--lr", "inf"], ["train", "D", "--l2", "nan"],
    ["predict", "C", "v.mp4", "--span", "inf"], ["stream", "C", "0", "--max-lag", "nan"],
    ["serve", "C", "--max-upload-mb", "inf"], ["synth", "out", "--max-seconds", "inf"],
    ["train", "D", "--decode-timeout", "nan"],
], ids=" ".join)
def test_float_flags_must_be_finite(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lrcn {args[0]}: error: argument {args[-2]}: ")
    assert f"expected a finite number, got '{args[-1]}'" in err and err.count("\n") == 1


def test_float_settings_of_the_python_api_must_be_finite():
    from lrcn.config import TrainConfig
    from lrcn.data.synth import SynthConfig
    from lrcn.inference.windows import WindowConfig
    from lrcn.training.job import make_job
    for bad in (lambda: TrainConfig(lr=float("inf")), lambda: WindowConfig(span=float("nan")),
                lambda: SynthConfig(max_seconds=float("inf"))):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(LrcnError) as error:
        make_job("data", "out", train={"lr": float("nan")})
    assert str(error.value) == "bad TrainConfig setting: lr: expected a finite number, got nan"


def test_resume_of_a_run_made_with_no_evaluate_does_not_evaluate(run, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    assert json.loads((copy / "config.json").read_text())["evaluate"] is False
    # the run is finished: --epochs trains it on (a plain --resume is refused), and the
    # extended run still does not evaluate
    assert main(["train", "--resume", str(copy), "--epochs", "3", "--quiet",
                 "--workers", "1"]) == 0
    assert len((copy / "history.csv").read_text().splitlines()) == 4     # header + 3 epochs
    assert not (copy / "report.json").exists()
    assert "test_metrics" not in json.loads(_tensors(copy / "model.safetensors")[1]["lrcn"])[
        "info"]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_rank_that_stops_answering_is_one_line_on_the_others(data, settings, tmp_path):
    """Rank 1 is stopped (SIGSTOP) mid-run: rank 0's gradient averaging times out after
    $LRCN_DIST_TIMEOUT and it says so in one line, not a traceback per rank."""
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "lrcn", "train", str(data), "--out", str(out), "--config", str(settings),
         "--epochs", "500", "--patience", "500", "--no-evaluate", "--quiet", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LRCN_DIST_TIMEOUT": "3"})
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while not (out / "history.csv").exists() or len(_history_rows(out)) < 1:
            assert launcher.poll() is None and time.monotonic() < deadline, \
                launcher.communicate()
            time.sleep(0.05)
        ranks = _children(launcher.pid)
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGSTOP)
        while Path(f"/proc/{ranks[0]}").exists() and \
                "zombie" not in Path(f"/proc/{ranks[0]}/status").read_text().lower():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for pid in ranks[1:]:
            os.kill(pid, signal.SIGKILL)      # torchrun's SIGTERM waits on a stopped process
        _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert "[rank0]: Traceback" not in stderr and "[rank0]:" not in stderr, stderr[-3000:]
    [line] = [line for line in stderr.splitlines() if line.startswith("lrcn: error:")]
    assert line.startswith("lrcn: error: rank 0: another training process did not answer "
                           "within 3 s ($LRCN_DIST_TIMEOUT): it stalled or died (")
