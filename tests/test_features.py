"""data.features, called directly: a frozen backbone's per-frame features are computed once per
frame cache entry, stored where that entry and the backbone's key say, only missing entries are
computed again, and other weights or another input normalisation never reuse them. (That an
effnet-lstm run through the CLI computes them once and that they equal the backbone's is in
test_models.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lrcn.config import FrameConfig, ModelConfig
from lrcn.data.cache import prepare
from lrcn.data.dataset import Sample
from lrcn.data.features import cached_features, feature_paths
from lrcn.models import effnet
from lrcn.models.registry import build_model

from conftest import write_indexed_video

FRAMES = FrameConfig(num_frames=4, width=32, height=32)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    config = ModelConfig(name="effnet-lstm", num_classes=2, num_frames=FRAMES.num_frames,
                         height=FRAMES.height, width=FRAMES.width)
    return build_model(config, pretrained=True)


def clips_for(tmp_path, frames=FRAMES, count=5):
    samples = []
    for i in range(count):
        path = tmp_path / f"v_Walk_g{i + 1:02d}_c01.avi"
        if not path.exists():
            write_indexed_video(path, 12 + i)
        samples.append(Sample(path, "Walk", f"Walk/g{i + 1:02d}"))
    clips, failures = prepare(samples, frames, cache_dir=tmp_path / "cache", workers=0,
                              progress=False)
    assert not failures
    return clips


def computed(log: list[str]) -> int:
    """How many clips the log says were computed (0 when it says nothing)."""
    found = [int(line.split()[3]) for line in log if line.startswith("features: computed for")]
    assert len(found) <= 1
    return sum(found)


def test_features_are_computed_once_and_only_the_missing_again(model, tmp_path):
    clips = clips_for(tmp_path)
    model.train()                              # as in training: the call must not change it
    log: list[str] = []
    paths = cached_features(model, clips, CPU, progress=False, log=log.append)
    assert computed(log) == 5
    assert model.training and not model.backbone.training   # restored; the backbone stays eval
    # one entry per clip, beside the frame cache, named by the frame entry it comes from
    key = model.feature_key()
    for clip, path in zip(clips, paths):
        assert path == (tmp_path / "cache" / "features" / key / clip.frames_path.parent.name /
                        clip.frames_path.name)
        features = np.load(path)
        assert features.dtype == np.float32 and features.shape == (4, effnet.FEATURES)
    with torch.no_grad():
        frames = torch.from_numpy(np.load(clips[3].frames_path)).float() / 255
        expected = model.eval().frame_features(frames).numpy()
    np.testing.assert_allclose(np.load(paths[3]), expected, atol=1e-4)
    assert len({np.load(p).tobytes() for p in paths}) == 5          # each clip its own
    assert not list((tmp_path / "cache" / "features").rglob(".*"))   # no temporary file left

    stamps = [p.stat().st_mtime_ns for p in paths]
    log.clear()
    assert cached_features(model, clips, CPU, progress=False, log=log.append) == paths
    assert computed(log) == 0 and log == []
    assert [p.stat().st_mtime_ns for p in paths] == stamps         # nothing rewritten

    before = np.load(paths[1])
    paths[1].unlink()
    assert cached_features(model, clips, CPU, progress=False, log=log.append) == paths
    assert computed(log) == 1
    # the same features, to float32 rounding: computed alone now, in a batch of 5 before
    # (oneDNN's kernels and their sums' order depend on the batch's shape)
    np.testing.assert_allclose(np.load(paths[1]), before, atol=1e-4)
    assert [p.stat().st_mtime_ns for i, p in enumerate(paths) if i != 1] == \
        [s for i, s in enumerate(stamps) if i != 1]                    # the others untouched


def test_other_weights_or_normalisation_get_their_own_entries(model, tmp_path, monkeypatch):
    clips = clips_for(tmp_path, count=2)
    log: list[str] = []
    first = cached_features(model, clips, CPU, progress=False, log=log.append)
    key = model.feature_key()
    assert len(key) == 16 and all(c in "0123456789abcdef" for c in key)
    keys = {key}
    for name, value in (("NORMALISATION", "rgb (x*255 - 128) / 128"),
                        ("WEIGHTS_SHA256", "0" * 64)):
        with monkeypatch.context() as patch:
            patch.setattr(effnet, name, value)
            keys.add(model.feature_key())
            log.clear()
            other = cached_features(model, clips, CPU, progress=False, log=log.append)
            assert computed(log) == 2, name              # nothing reused across keys
            assert all(p.parts[-3] == model.feature_key() for p in other)
            assert not set(other) & set(first)
    assert len(keys) == 3
    assert model.feature_key() == key                    # the key is a function of both only
    # the frame settings key the frame entry, so the same videos at another size are another
    # feature entry too
    small = clips_for(tmp_path, FrameConfig(num_frames=4, width=48, height=32), 2)
    assert not set(feature_paths(model, small)) & set(first)
    assert all(p.parts[-3] == key for p in feature_paths(model, small))
