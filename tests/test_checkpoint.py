"""Checkpoints round-trip exactly, carry every setting, and never run code when loaded."""
import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lrcn.models.checkpoint import load_checkpoint, save_checkpoint, update_info
from lrcn.config import FrameConfig, ModelConfig, to_dict
from lrcn.errors import LrcnError
from lrcn.models.lrcn import LRCN


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path):
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=3, lstm_units=16, batchnorm=True)).eval()
    frames = FrameConfig(num_frames=20, channel_order="bgr", interpolation="bilinear")
    path = save_checkpoint(tmp_path / "m.safetensors", model, frames, ["a", "b", "c"],
                           {"epochs_run": 7}, clip_seconds=4.5)
    loaded = load_checkpoint(path)
    assert loaded.model_config == model.config and loaded.frame_config == frames
    assert loaded.class_names == ["a", "b", "c"] and loaded.info == {"epochs_run": 7}
    assert loaded.clip_seconds == 4.5
    clips = torch.rand(2, 20, 64, 64, 3)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(clips), model(clips))
    update_info(path, test_metrics={"accuracy": 0.5})
    again = load_checkpoint(path)
    assert again.info == {"epochs_run": 7, "test_metrics": {"accuracy": 0.5}}
    assert again.clip_seconds == 4.5
    assert not list(tmp_path.glob(".*"))      # no temporary files left behind


def test_the_input_shape_is_stored_once(tmp_path):
    model = LRCN(ModelConfig(num_classes=3, num_frames=12, height=64, width=96))
    frames = FrameConfig(num_frames=12, height=64, width=96)
    path = save_checkpoint(tmp_path / "m.safetensors", model, frames, ["a", "b", "c"])
    header = json.loads(safe_open(str(path), "pt").metadata()["lrcn"])
    assert header["frames"]["num_frames"] == 12 and "num_frames" not in header["model"]
    assert load_checkpoint(path).model_config == model.config
    with pytest.raises(ValueError, match="input num_frames differs"):
        save_checkpoint(tmp_path / "bad.safetensors", model, FrameConfig(height=64, width=96),
                        ["a", "b", "c"])


def _format_one(path, model, frames, classes, info):
    """A checkpoint as lrcn wrote them before format 2: the input shape both in the model and
    in the frame settings, the clip span among the info entries."""
    header = {"model": to_dict(model.config), "frames": to_dict(frames), "classes": classes,
              "info": info}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "lrcn-checkpoint", "version": "1",
                        "lrcn": json.dumps(header)})
    return path


def test_format_one_checkpoints_still_load_and_their_two_shapes_are_checked(tmp_path):
    torch.manual_seed(1)
    model = LRCN(ModelConfig(num_classes=3)).eval()
    old = _format_one(tmp_path / "old.safetensors", model, FrameConfig(), ["a", "b", "c"],
                      {"clip_seconds": 3.25, "best_epoch": 4})
    loaded = load_checkpoint(old)
    assert loaded.clip_seconds == 3.25 and loaded.info == {"best_epoch": 4}
    clips = torch.rand(1, 20, 64, 64, 3)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(clips), model(clips))
    bad = _format_one(tmp_path / "bad.safetensors", model, FrameConfig(num_frames=16),
                      ["a", "b", "c"], {})
    with pytest.raises(LrcnError, match="disagree: the model's input num_frames is 20, the "
                                        "frame settings' 16"):
        load_checkpoint(bad)


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


@pytest.mark.parametrize("make, cause", [
    (lambda p: p.write_bytes(pickle.dumps({"state_dict": Boom()})), "not an lrcn checkpoint"),
    (lambda p: torch.save({"weights": Boom()}, p), "not an lrcn checkpoint"),
    (lambda p: p.write_text("hello"), "not an lrcn checkpoint"),
    (lambda p: p.write_bytes(b""), "not an lrcn checkpoint"),
])
def test_malicious_or_foreign_files_are_refused(tmp_path, monkeypatch, make, cause):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    make(path)
    with pytest.raises(LrcnError, match=cause):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_or_tampered_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", LRCN(ModelConfig()), FrameConfig(),
                           ["a", "b", "c", "d"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(LrcnError, match="damaged|not an lrcn"):
        load_checkpoint(path)
    tampered = data.replace(b'"num_classes\\": 4', b'"num_classes\\": 5')
    assert tampered != data
    path.write_bytes(tampered)
    with pytest.raises(LrcnError, match="do not match|do not fit"):
        load_checkpoint(path)
