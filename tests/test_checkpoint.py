"""Checkpoints round-trip exactly, carry every setting, and never run code when loaded."""
import pickle

import pytest
import torch

from lrcn.checkpoint import load_checkpoint, save_checkpoint, update_info
from lrcn.config import FrameConfig, ModelConfig
from lrcn.errors import LrcnError
from lrcn.model import LRCN


def test_round_trip_rebuilds_the_model_from_the_file_alone(tmp_path):
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=3, lstm_units=16, batchnorm=True)).eval()
    frames = FrameConfig(num_frames=20, channel_order="bgr", interpolation="bilinear")
    path = save_checkpoint(tmp_path / "m.safetensors", model, frames, ["a", "b", "c"],
                           {"clip_seconds": 4.5})
    loaded = load_checkpoint(path)
    assert loaded.model_config == model.config and loaded.frame_config == frames
    assert loaded.class_names == ["a", "b", "c"] and loaded.info == {"clip_seconds": 4.5}
    clips = torch.rand(2, 20, 64, 64, 3)
    with torch.no_grad():
        assert torch.equal(loaded.build_model()(clips), model(clips))
    update_info(path, test_metrics={"accuracy": 0.5})
    assert load_checkpoint(path).info == {"clip_seconds": 4.5, "test_metrics": {"accuracy": 0.5}}
    assert not list(tmp_path.glob(".*"))      # no temporary files left behind


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
