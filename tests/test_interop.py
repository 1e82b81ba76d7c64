"""Interop: the tutorial's Keras models come in with the same predictions; lrcn models go out
as ONNX with the same predictions and run without PyTorch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from conftest import indexed_frame, write_video
from lrcn.models.base import count_trainable
from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.media.clip import read_clip
from lrcn.config import FrameConfig, ModelConfig
from lrcn.devices import full_fp32
from lrcn.inference.calibrate import softmax
from lrcn.inference.engine import Backend, OrtEngine, TorchEngine, make_engine
from lrcn.errors import LrcnError
from lrcn.models.lrcn import LRCN
from lrcn.inference.predict import Predictor

os.environ.setdefault("KERAS_BACKEND", "torch")   # keras 3 on PyTorch: no TensorFlow needed
keras = pytest.importorskip("keras")
L = keras.layers


def seed_keras_model(classes=4, pool=L.MaxPooling2D, extra_dense=False):
    """The seed tutorial's create_LRCN_model, with every weight (biases too) randomised so that
    a wrong mapping cannot hide behind zeros."""
    model = keras.Sequential([L.Input(shape=(20, 64, 64, 3))])
    for filters, size, drop in [(16, 4, True), (32, 4, True), (64, 2, True), (64, 2, False)]:
        model.add(L.TimeDistributed(L.Conv2D(filters, 3, padding="same", activation="relu")))
        model.add(L.TimeDistributed(pool(pool_size=size)))
        if drop:
            model.add(L.TimeDistributed(L.Dropout(0.25)))
    model.add(L.TimeDistributed(L.Flatten()))
    model.add(L.LSTM(32))
    if extra_dense:
        model.add(L.Dense(16, activation="relu"))
    model.add(L.Dense(classes, activation="softmax"))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Real decoded clips, as the imported model's preprocessing (BGR, bilinear) gives them."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(1)
    out = []
    for k in range(3):
        frames = [np.clip(indexed_frame(i, 96, 72).astype(int) + rng.integers(-60, 60, (72, 96, 3)),
                          0, 255).astype(np.uint8) for i in range(30 + 7 * k)]
        path = write_video(folder / f"c{k}.mp4", frames, codec="h264_mp4")
        out.append(read_clip(path, FrameConfig(channel_order="bgr", interpolation="bilinear"))
                   .frames)
    return np.stack(out)   # (3, 20, 64, 64, 3) uint8


def tutorial_convlstm(recurrent_activation="sigmoid"):
    """The tutorial's create_convlstm_model (44,524 parameters for four classes), weights
    randomised so that a wrong mapping shows."""
    model = keras.Sequential([L.Input(shape=(20, 64, 64, 3))])
    for filters, drop in [(4, True), (8, True), (14, True), (16, False)]:
        model.add(L.ConvLSTM2D(filters, (3, 3), activation="tanh", data_format="channels_last",
                               recurrent_dropout=0.2, return_sequences=True,
                               recurrent_activation=recurrent_activation))
        model.add(L.MaxPooling3D(pool_size=(1, 2, 2), padding="same",
                                 data_format="channels_last"))
        if drop:
            model.add(L.TimeDistributed(L.Dropout(0.2)))
    model.add(L.Flatten())
    model.add(L.Dense(4, activation="softmax"))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("suffix, recurrent", [(".keras", "sigmoid"), (".h5", "hard_sigmoid")])
def test_the_tutorials_convlstm_imports_with_kerass_probabilities(tmp_path, clips, suffix,
                                                                   recurrent):
    model = tutorial_convlstm(recurrent)
    assert model.count_params() == 44_524
    path = tmp_path / f"convlstm{suffix}"
    model.save(path)
    out = tmp_path / "convlstm.safetensors"
    from lrcn.cli import main
    assert main(["import-keras", str(path), "--classes", "a,b,c,d", "--out", str(out)]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.model_config.name == "convlstm"
    # Keras 3 wrote the file: its hard_sigmoid is clip(x/6 + 0.5), not Keras 2's
    assert checkpoint.model_config.recurrent_activation == \
        {"sigmoid": "sigmoid", "hard_sigmoid": "hard_sigmoid6"}[recurrent]
    with full_fp32():
        ours = Predictor(make_engine(checkpoint)).probabilities(clips)
        theirs = np.asarray(model.predict(clips.astype(np.float32) / 255, verbose=0))
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert np.abs(theirs - theirs.mean(0)).max() > 1e-3


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_keras_import_gives_keras_probabilities(tmp_path, clips, suffix):
    model = seed_keras_model()
    path = tmp_path / f"seed{suffix}"
    model.save(path)
    out = tmp_path / "imported.safetensors"
    from lrcn.cli import main
    assert main(["import-keras", str(path), "--classes", "WalkingWithDog,TaiChi,Swing,HorseRace",
                 "--out", str(out)]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint.class_names == ["WalkingWithDog", "TaiChi", "Swing", "HorseRace"]
    assert checkpoint.frame_config.channel_order == "bgr"
    assert checkpoint.frame_config.interpolation == "bilinear"
    # Both sides in full fp32, whatever the hardware: on a GPU, TF32 would put them ~1e-3 apart.
    with full_fp32():
        ours = Predictor(make_engine(checkpoint)).probabilities(clips)
        theirs = np.asarray(model.predict(clips.astype(np.float32) / 255, verbose=0))
    assert ours.shape == theirs.shape == (3, 4)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    assert np.abs(theirs - theirs.mean(0)).max() > 1e-3   # the clips do give different outputs


@pytest.mark.parametrize("build, first_bad", [
    (lambda: seed_keras_model(pool=L.AveragePooling2D), "layer 2 (time_distributed_1"),
    (lambda: seed_keras_model(extra_dense=True), "Dense with softmax"),
])
def test_unrepresentable_keras_model_is_refused_naming_the_layer(tmp_path, build, first_bad):
    path = tmp_path / "other.keras"
    keras.backend.clear_session()   # layer names restart at time_distributed
    build().save(path)
    result = subprocess.run([sys.executable, "-m", "lrcn", "import-keras", str(path),
                             "--classes", "a,b,c,d"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"lrcn: error: {path}: ") and first_bad in line, line


def test_keras_import_needs_class_names_that_fit(tmp_path):
    path = tmp_path / "seed.h5"
    seed_keras_model().save(path)
    from lrcn.models.keras_import import import_keras
    with pytest.raises(LrcnError, match="holds no class names"):
        import_keras(path)
    with pytest.raises(LrcnError, match="3 class names given for a model with 4 outputs"):
        import_keras(path, ["a", "b", "c"])
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(LrcnError, match="not a readable Keras"):
        import_keras(tmp_path / "junk.h5", ["a", "b", "c", "d"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(3)
    model = LRCN(ModelConfig(num_classes=5))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.lstm.bias_hh_l0.zero_()
    checkpoint = save_checkpoint(folder / "m.safetensors", model, FrameConfig(),
                                 list("abcde"), clip_seconds=3.0)
    from lrcn.cli import main
    assert main(["export", str(checkpoint), "--format", "onnx"]) == 0
    return checkpoint, folder / "m.onnx"


def test_onnx_matches_pytorch_with_dynamic_batch(exported, clips):
    checkpoint, onnx_path = exported
    torch_predictor = Predictor.load(checkpoint, "torch")
    onnx_predictor = Predictor.load(onnx_path)
    assert isinstance(onnx_predictor.engine, OrtEngine) and not onnx_predictor.engine.splits
    assert onnx_predictor.names == list("abcde")
    assert onnx_predictor.frame_config == FrameConfig()
    assert onnx_predictor.engine.clip_seconds == 3.0
    for batch in (clips[:1], clips):
        expected = torch_predictor.probabilities(batch)
        np.testing.assert_allclose(onnx_predictor.probabilities(batch), expected, atol=1e-5,
                                   rtol=0)
    assert np.abs(expected - expected.mean(0)).max() > 1e-4


def test_onnx_runs_where_pytorch_is_not_installed(exported, clips, tmp_path):
    """The exported file takes uint8 frames, as decoded, and lrcn's own predictor runs it with
    torch unimportable; so does plain ONNX Runtime. `lrcn info` of it says its parameter count
    from its metadata; of a file from before that was recorded, it leaves the count out (it
    crashed there, building the model to count it)."""
    import onnx
    checkpoint, onnx_path = exported
    np.save(tmp_path / "clips.npy", clips)
    older = onnx.load(str(onnx_path))
    kept = [p for p in older.metadata_props if p.key != "params"]
    assert len(kept) == len(older.metadata_props) - 1
    del older.metadata_props[:]
    older.metadata_props.extend(kept)
    onnx.save(older, str(tmp_path / "older.onnx"))
    script = f"""
import sys, json
sys.modules["torch"] = None          # importing torch now fails, as on a machine without it
import numpy as np, onnxruntime as ort
from lrcn.inference.info import model_summary
from lrcn.inference.predict import Predictor
from lrcn.models.checkpoint import format_summary
x = np.load({str(tmp_path / 'clips.npy')!r})
summaries = [model_summary(p) for p in ({str(onnx_path)!r}, {str(tmp_path / 'older.onnx')!r})]
print(format_summary(summaries[1]), file=sys.stderr)
ours = Predictor.load({str(onnx_path)!r}).probabilities(x)
session = ort.InferenceSession({str(onnx_path)!r}, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
[inp], [out] = session.get_inputs(), session.get_outputs()
logits = session.run(None, {{"frames": x}})[0]
print(json.dumps({{"input": [inp.name, inp.shape, inp.type], "output": out.name,
                  "classes": json.loads(meta["classes"]), "frames": json.loads(meta["frames"]),
                  "version": meta["lrcn_format_version"], "logits": logits.tolist(),
                  "temperature": json.loads(meta["temperature"]),
                  "ours": ours.tolist(), "torch": "torch" in sys.modules and
                  sys.modules["torch"] is not None,
                  "params": [s["trainable_parameters"] for s in summaries]}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["input"] == ["frames", ["batch", 20, 64, 64, 3], "tensor(uint8)"]
    assert data["output"] == "logits" and data["classes"] == list("abcde")
    assert data["frames"]["channel_order"] == "rgb" and data["frames"]["num_frames"] == 20
    assert data["version"] == "3" and data["torch"] is False
    assert data["params"] == [count_trainable(load_checkpoint(checkpoint).build_model()), None]
    assert "\nmodel         lrcn\n" in result.stderr
    torch_engine = TorchEngine(load_checkpoint(checkpoint))
    np.testing.assert_allclose(np.array(data["logits"]), torch_engine.logits(clips), atol=1e-5,
                               rtol=0)
    expected = Predictor.load(checkpoint, "torch").probabilities(clips)
    np.testing.assert_allclose(softmax(np.array(data["logits"]), data["temperature"]),
                               expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.array(data["ours"]), expected, atol=1e-5, rtol=0)


def _old_format_file(checkpoint_path, out, version: int):
    """An ONNX file as `lrcn export` wrote them before format version 3: probabilities out.
    Version 1: float32 frames in [0, 1], lrcn metadata without a version entry; version 2:
    uint8 frames, scaled inside the graph."""
    import onnx
    checkpoint = load_checkpoint(checkpoint_path)

    class Probabilities(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, frames):
            if frames.dtype == torch.uint8:
                frames = frames.to(torch.float32) / 255
            return torch.softmax(self.model(frames), dim=1)

    example = torch.rand(2, 20, 64, 64, 3) if version == 1 else \
        torch.randint(0, 256, (2, 20, 64, 64, 3), dtype=torch.uint8)
    with warnings.catch_warnings():   # the legacy exporter's notes, as lrcn's own export
        warnings.simplefilter("ignore")
        torch.onnx.export(Probabilities(checkpoint.build_model()).eval(),
                          (example,), str(out), dynamo=False,
                          opset_version=17, input_names=["frames"],
                          output_names=["probabilities"],
                          dynamic_axes={"frames": {0: "batch"}, "probabilities": {0: "batch"}})
    model = onnx.load(str(out))
    metadata = {"lrcn_format": "lrcn-onnx", "classes": json.dumps(list("abcde")),
                "frames": json.dumps({"num_frames": 20, "height": 64, "width": 64,
                                      "channel_order": "rgb", "interpolation": "area"}),
                "info": json.dumps({"clip_seconds": 3.0})}
    if version > 1:
        metadata["lrcn_format_version"] = str(version)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_onnx_files_of_older_formats_still_predict_the_same(exported, clips, tmp_path,
                                                           version):
    """Files that output probabilities (before format 3): the log of their output is a logit
    up to a constant, so they give the same probabilities, under a temperature too."""
    checkpoint, _ = exported
    old = _old_format_file(checkpoint, tmp_path / "old.onnx", version)
    engine = OrtEngine.from_file(old)
    assert engine.clip_seconds == 3.0
    reference = TorchEngine(load_checkpoint(checkpoint))
    np.testing.assert_allclose(engine.probabilities(clips), reference.probabilities(clips),
                               atol=1e-5, rtol=0)
    engine.temperature = reference.temperature = 2.5
    np.testing.assert_allclose(engine.probabilities(clips), reference.probabilities(clips),
                               atol=1e-5, rtol=0)
    assert np.abs(engine.probabilities(clips) - softmax(reference.logits(clips))).max() > 1e-3


def test_onnx_model_errors_are_one_line(exported, tmp_path, clips):
    import onnx
    checkpoint, onnx_path = exported
    (tmp_path / "text.onnx").write_text("not a model")
    foreign = onnx.load(str(onnx_path))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    newer = onnx.load(str(onnx_path))
    for entry in newer.metadata_props:
        if entry.key == "lrcn_format_version":
            entry.value = "9"
    onnx.save(newer, str(tmp_path / "newer.onnx"))
    for name, cause in [("missing.onnx", "no such ONNX model file"),
                        ("text.onnx", "not a loadable ONNX model"),
                        ("foreign.onnx", "an ONNX model without lrcn metadata"),
                        ("newer.onnx", "ONNX format version 9 is newer than this lrcn reads")]:
        with pytest.raises(LrcnError, match=cause) as caught:
            OrtEngine.from_file(tmp_path / name)
        assert str(caught.value).startswith(str(tmp_path / name))
        assert "\n" not in str(caught.value)
    # The exported classifier is whole: it predicts clips, and says why it cannot do windows.
    engine = OrtEngine.from_file(onnx_path)
    with pytest.raises(LrcnError, match="long videos and streams need the checkpoint"):
        engine.features(clips[0])
    video = write_video(tmp_path / "v.mp4", [indexed_frame(i, 64, 48) for i in range(40)],
                        codec="h264_mp4")
    result = subprocess.run([sys.executable, "-m", "lrcn", "predict", str(onnx_path),
                             str(video), "--timeline"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "cannot run a timeline" in line and "pass the checkpoint" in line
    assert line.startswith(f"lrcn: error: {onnx_path}: ")      # the model file, not the video


def test_the_engine_falls_back_to_pytorch_out_loud(exported, clips, tmp_path):
    """Without ONNX Runtime, `auto` runs on PyTorch with the same results and says so;
    `--backend onnx` is then an error."""
    checkpoint, _ = exported
    np.save(tmp_path / "clips.npy", clips)
    script = f"""
import sys, json
sys.modules["onnxruntime"] = None    # as on a machine without ONNX Runtime
import numpy as np
from lrcn.models.checkpoint import load_checkpoint
from lrcn.inference.engine import make_engine
from lrcn.errors import LrcnError
checkpoint = load_checkpoint({str(checkpoint)!r})
engine = make_engine(checkpoint)
try:
    make_engine(checkpoint, "onnx")
    refused = None
except LrcnError as exc:
    refused = str(exc)
print(json.dumps({{"backend": engine.backend, "reason": engine.fallback_reason,
                  "refused": refused,
                  "probs": engine.probabilities(np.load({str(tmp_path / 'clips.npy')!r})).tolist()}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == Backend.TORCH and "ONNX Runtime is not installed" in data["reason"]
    assert "running on PyTorch, not ONNX Runtime (ONNX Runtime is not installed" in \
        result.stderr
    assert data["refused"].startswith("--backend onnx failed: ONNX Runtime is not installed")
    ort_engine = make_engine(load_checkpoint(checkpoint))
    assert isinstance(ort_engine, OrtEngine)           # with it installed: no fallback
    np.testing.assert_allclose(np.array(data["probs"]), ort_engine.probabilities(clips),
                               atol=1e-5, rtol=0)


def test_predict_cli_onnx_backend_agrees_with_torch(exported, tmp_path):
    checkpoint, onnx_path = exported
    video = write_video(tmp_path / "v.avi", [indexed_frame(i, 80, 60) for i in range(25)])
    run = lambda *a: subprocess.run([sys.executable, "-m", "lrcn", "predict", *map(str, a),
                                     "--json"], capture_output=True, text=True)
    # The exported file, the checkpoint on ONNX Runtime (exported in memory: the default) and
    # the checkpoint on PyTorch all give the same result.
    runs = [run(onnx_path, video), run(checkpoint, video), run(checkpoint, video, "--backend",
                                                               "torch")]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    [a], [b], [c] = (json.loads(r.stdout) for r in runs)
    assert a["label"] == b["label"] == c["label"]
    for name in "abcde":
        assert a["probabilities"][name] == pytest.approx(c["probabilities"][name], abs=1e-5)
        assert b["probabilities"][name] == pytest.approx(c["probabilities"][name], abs=1e-5)
    bad = run(onnx_path, video, "--backend", "torch")
    assert bad.returncode == 2 and "runs on ONNX Runtime only" in bad.stderr


def test_only_the_expected_onnx_failures_fall_back(exported, monkeypatch):
    """make_engine falls back to PyTorch when ONNX Runtime is missing or the exporter or ORT
    refuse the model; any other exception is a bug, and surfaces."""
    import lrcn.inference.graphs as engine_module     # where the engine's graphs are made
    checkpoint = load_checkpoint(exported[0])

    def refused(_):
        raise torch.onnx.OnnxExporterError("an operator the exporter does not know")
    monkeypatch.setattr(engine_module, "feature_graph", refused)
    engine = make_engine(checkpoint, warn=None)
    assert engine.backend is Backend.TORCH
    assert engine.fallback_reason == "OnnxExporterError: an operator the exporter does not know"

    def bug(_):
        raise ZeroDivisionError("a bug in lrcn")
    monkeypatch.setattr(engine_module, "feature_graph", bug)
    with pytest.raises(ZeroDivisionError):
        make_engine(checkpoint, warn=None)
    with pytest.raises(LrcnError, match="unknown backend 'tensorrt'"):
        make_engine(checkpoint, "tensorrt")
