"""Settings in layers: dataclass defaults, then a config file, then the flags given."""
import json

import pytest

from lrcn.config import (FrameConfig, SplitConfig, TrainConfig, layered, load_config_file,
                         resolve_settings)
from lrcn.errors import LrcnError


def test_flags_beat_the_file_which_beats_the_defaults(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"frames": {"num_frames": 16, "height": 48},
                                "train": {"epochs": 30, "lr": 0.01, "batch_size": 8},
                                "split": {"seed": 5},
                                "model": {"lstm_units": 64, "num_classes": 9}}))
    settings = resolve_settings(load_config_file(path),
                                frames={"num_frames": None, "height": 72, "width": None},
                                train={"epochs": 3, "lr": None, "patience": None},
                                split={"seed": None}, model={"batchnorm": True, "l2": None})
    assert settings.frames == FrameConfig(num_frames=16, height=72, width=64)
    assert settings.train == TrainConfig(epochs=3, lr=0.01, batch_size=8)
    assert settings.split == SplitConfig(seed=5)
    # the class count follows from the data, never from a file
    assert settings.model == {"lstm_units": 64, "batchnorm": True}
    # nothing given: the defaults, which are the seed tutorial's
    plain = resolve_settings({})
    assert (plain.frames, plain.train, plain.split, plain.model) == \
        (FrameConfig(), TrainConfig(), SplitConfig(), {})


@pytest.mark.parametrize("text, cause", [
    ("{not json", "not a JSON config file"),
    ('{"optimiser": {}}', "a config file holds the sections frames, model, split, train"),
    ('{"train": 3}', "a config file holds the sections"),
])
def test_bad_config_files_are_named_with_the_cause(tmp_path, text, cause):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(LrcnError, match=cause) as caught:
        load_config_file(path)
    assert str(caught.value).startswith(str(path))
    with pytest.raises(LrcnError, match="no such config file"):
        load_config_file(tmp_path / "missing.json")


def test_unknown_or_bad_settings_are_refused_not_dropped():
    with pytest.raises(LrcnError, match="unknown TrainConfig setting 'epoch'"):
        layered(TrainConfig, {"epoch": 3}, {})
    with pytest.raises(LrcnError, match="bad TrainConfig setting: epochs, batch_size"):
        layered(TrainConfig, {}, {"epochs": 0})
    with pytest.raises(LrcnError, match="unknown ModelConfig setting 'lstm_unit'"):
        resolve_settings({"model": {"lstm_unit": 8}})


def test_precision_is_one_enum_whose_values_are_the_strings_configs_keep():
    from lrcn.config import Precision, to_dict
    from lrcn.devices import PRECISIONS, check_precision
    assert PRECISIONS == ("fp32", "bf16", "fp16") == tuple(p.value for p in Precision)
    config = TrainConfig(precision="bf16")
    assert config.precision is Precision.BF16 and f"{config.precision}" == "bf16"
    assert json.loads(json.dumps(to_dict(config)))["precision"] == "bf16"
    assert layered(TrainConfig, {"precision": "fp16"}, {}).precision is Precision.FP16
    with pytest.raises(LrcnError, match="bad TrainConfig setting: precision must be fp32, bf16"):
        layered(TrainConfig, {"precision": "fp8"}, {})
    assert check_precision("fp32") is Precision.FP32
    with pytest.raises(LrcnError, match="unknown precision 'tf32'") as refused:
        check_precision("tf32")
    assert refused.value.kind.value == "setting"
