"""Refusals of settings in training and the models: each an LrcnError of the right kind
(callers decide by the kind: the CLI's exit code, the server's HTTP status), raised before any
decoding or training, and model options a model would silently ignore are refused."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lrcn
from lrcn.config import ModelConfig, TrainConfig
from lrcn.data.dataset import Sample
from lrcn.errors import ErrorKind, LrcnError


def _check(model: str, channel_order: str = "rgb", train: TrainConfig | None = None,
           size: int = 128, **options):
    from lrcn.models.registry import check_settings
    from lrcn.training.job import make_job
    job = make_job("data", "out", model=model, model_options=options,
                   frames={"height": size, "width": size})
    return check_settings(job.model_config(2), channel_order, train)


def _folds(wanted):
    from lrcn.training.crossval import folds_of
    return folds_of([Sample(Path(f"A/v_A_g0{g}_c01.avi"), "A", f"g0{g}") for g in (1, 2)],
                    wanted)


def _nproc(monkeypatch):
    from lrcn.distributed import torchrun_command
    monkeypatch.setenv("WORLD_SIZE", "2")       # as under torchrun
    return torchrun_command(["train", "D", "--nproc", "2"], 2)


def _job(**model):
    from lrcn.training.job import TrainingJob
    return TrainingJob("data", "out", model=model)


def _keras(tmp_path):
    from lrcn.models.keras_import import read_keras
    return read_keras(tmp_path / "missing.h5")


def _protocol():
    from lrcn.training.compare import protocols_of
    return protocols_of("leaky")


def _spec():
    from lrcn.models.registry import get_spec
    return get_spec("nope")


# (call, the kind, words of the message)
CASES = {
    "unknown model": (lambda tmp, mp: _spec(), ErrorKind.SETTING, "unknown model 'nope'"),
    "unknown protocol": (lambda tmp, mp: _protocol(), ErrorKind.SETTING, "'leaky'"),
    "derived model setting": (lambda tmp, mp: _job(num_classes=3), ErrorKind.SETTING,
                              "'num_classes' follows from the data"),
    "negative l2": (lambda tmp, mp: _job(l2=-1.0), ErrorKind.SETTING, "l2 must be 0 or more"),
    "no lstm units": (lambda tmp, mp: _job(lstm_units=0), ErrorKind.SETTING,
                      "lstm_units must be at least 1"),
    "dropout 1": (lambda tmp, mp: _job(dropout=1.0), ErrorKind.SETTING, "dropout"),
    "bgr for effnet": (lambda tmp, mp: _check("effnet-lstm", channel_order="bgr"),
                       ErrorKind.SETTING, "pretrained on RGB"),
    "flip cached features": (lambda tmp, mp: _check("effnet-lstm", train=TrainConfig(flip=True)),
                             ErrorKind.SETTING, "cannot crop, flip or recolour"),
    "frame too small": (lambda tmp, mp: _check("lrcn", size=16), ErrorKind.SETTING,
                        "too small for the pooling"),
    "convlstm lstm_units": (lambda tmp, mp: _check("convlstm", lstm_units=64),
                            ErrorKind.SETTING, "convlstm does not use the lstm_units setting"),
    "convlstm batchnorm": (lambda tmp, mp: _check("convlstm", batchnorm=True),
                           ErrorKind.SETTING, "convlstm does not use the batchnorm setting"),
    "effnet batchnorm": (lambda tmp, mp: _check("effnet-lrcn", batchnorm=True),
                         ErrorKind.SETTING, "effnet-lrcn does not use the batchnorm setting"),
    "convlstm l2": (lambda tmp, mp: _check("convlstm", l2=0.01), ErrorKind.SETTING,
                    "convlstm does not use the l2 setting (--l2); the models that do: lrcn, "
                    "lrcn-bn"),
    "no such fold": (lambda tmp, mp: _folds(["9"]), ErrorKind.SETTING, "no group g09"),
    "nproc under torchrun": (lambda tmp, mp: _nproc(mp), ErrorKind.SETTING, "--nproc"),
    "no Keras file": (lambda tmp, mp: _keras(tmp), ErrorKind.NOT_FOUND, "no such file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_have_their_kind(case, tmp_path, monkeypatch):
    call, kind, words = CASES[case]
    with pytest.raises(LrcnError) as error:
        call(tmp_path, monkeypatch)
    message = str(error.value)
    assert words in message and "\n" not in message, message
    assert error.value.kind is kind, (error.value.kind, message)


def test_options_a_model_uses_are_taken():
    """The other side of the refusals: what each model does use passes."""
    assert _check("lrcn", lstm_units=64, batchnorm=True, l2=0.01).name == "lrcn"
    assert _check("lrcn-bn", batchnorm=True, lstm_units=16).name == "lrcn-bn"
    assert _check("effnet-lstm", lstm_units=64).name == "effnet-lstm"
    assert _check("convlstm").name == "convlstm"
    # a config file's lists are the defaults' tuples, not a changed option
    assert _check("effnet-lrcn", conv_filters=[16, 32, 64, 64]).name == "effnet-lrcn"
    assert ModelConfig(l2=0.0, lstm_units=1).l2 == 0.0


def test_a_data_folder_that_is_not_there_is_not_found_with_its_path(tmp_path):
    """Training's data prep keeps the error's kind and path (it used to send rank 0's error to
    the other ranks as text: BAD_INPUT, no path)."""
    with pytest.raises(LrcnError) as error:
        lrcn.train(tmp_path / "nonexistent", out=tmp_path / "run", progress=False, log=None)
    assert error.value.kind is ErrorKind.NOT_FOUND
    assert error.value.path == str(tmp_path / "nonexistent")
    assert error.value.reason == "no such data folder"


def test_the_api_and_the_cli_refuse_an_option_the_model_does_not_use(tmp_path):
    """Before any decoding: the data folder is not even there."""
    with pytest.raises(LrcnError) as error:
        lrcn.train(tmp_path / "data", model="convlstm", lstm_units=64, out=tmp_path / "r",
                   progress=False, log=None)
    assert error.value.kind is ErrorKind.SETTING and "lstm_units" in str(error.value)
    with pytest.raises(LrcnError) as error:
        lrcn.train(tmp_path / "data", l2=-1, out=tmp_path / "r", progress=False, log=None)
    assert error.value.kind is ErrorKind.SETTING and "l2 must be 0 or more" in str(error.value)
    result = subprocess.run([sys.executable, "-m", "lrcn", "train", tmp_path / "data",
                             "--model", "effnet-lstm", "--batchnorm", "--out", tmp_path / "r"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lrcn: error: effnet-lstm does not use the batchnorm setting (--batchnorm); the models "
        "that do: lrcn"]
    assert not (tmp_path / "r").exists()
