"""int8 inference (ONNX Runtime's static quantization, calibrated on the run's validation clips)
and the on-disk cache of the engine's ONNX graphs, on a tiny run trained here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrcn.cli import main
from lrcn.data.cache import default_cache_dir
from lrcn.errors import LrcnError
from lrcn.inference.engine import INT8, OrtEngine, load_engine, make_engine
from lrcn.models.checkpoint import load_checkpoint, update_info

from conftest import indexed_frame, write_video

# int8 against fp32, on probabilities: the seed model's features stay within about 1.5% of
# their range (measured 0.013-0.015), which moves the probabilities of this undertrained
# 4-class model by less than 1e-3; 0.02 leaves room for other ONNX Runtime builds.
INT8_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("int8") / "run"
    # a module fixture runs before the per-test cache fixture: its own cache, never the user's
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LRCN_CACHE_DIR", str(tmp_path_factory.mktemp("int8-cache")))
        assert main(["train", str(tiny_dataset), "--out", str(run), "--epochs", "1", "--quiet",
                     "--no-evaluate"]) == 0
    return run


def _clips(run: Path) -> np.ndarray:
    checkpoint = load_checkpoint(run)
    frames = checkpoint.frame_config
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, frames.num_frames, frames.height, frames.width, 3),
                        dtype=np.uint8)


def test_int8_export_predicts_close_to_fp32(tiny_run, tmp_path, capsys):
    video = write_video(tmp_path / "v.avi", [indexed_frame(i, 96, 72) for i in range(30)])
    assert main(["export", str(tiny_run), "--quantize", "int8"]) == 0
    exported = tiny_run / "model.int8.onnx"
    assert "ONNX model (int8)" in capsys.readouterr().out and exported.is_file()
    engine = load_engine(exported)
    assert engine.precision == INT8 and not engine.splits
    import onnx
    ops = {node.op_type for node in onnx.load(str(exported)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops      # really quantized
    clips = _clips(tiny_run)
    fp32 = make_engine(load_checkpoint(tiny_run), device="cpu").probabilities(clips)
    np.testing.assert_allclose(engine.probabilities(clips), fp32, atol=INT8_TOLERANCE)
    # the file predicts a video through `lrcn predict`, as the checkpoint does in fp32
    results = []
    for model in (exported, tiny_run):
        assert main(["predict", str(model), str(video), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out)[0]["probabilities"])
    for name, p in results[1].items():
        assert results[0][name] == pytest.approx(p, abs=INT8_TOLERANCE)
    # `lrcn info` reads the file's own metadata: the run's summary, and its precision
    assert main(["info", str(tiny_run), "--json"]) == 0
    of_run = json.loads(capsys.readouterr().out)
    assert main(["info", str(exported), "--json"]) == 0
    of_file = json.loads(capsys.readouterr().out)
    assert of_file.pop("precision") == "int8" and of_file.pop("checkpoint") == str(exported)
    of_run.pop("checkpoint")
    assert of_file == of_run
    assert main(["info", str(exported)]) == 0
    assert "precision     int8 (an exported ONNX file)" in capsys.readouterr().out
    # an fp32 file is not taken for an int8 one
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "f.onnx")]) == 0
    with pytest.raises(LrcnError, match="not an int8 export"):
        load_engine(tmp_path / "f.onnx", precision="int8")


def test_precision_int8_on_a_run_splits_and_is_cached(tiny_run, tmp_path, capsys):
    """--precision int8 on the run: the CNN half quantized (so timelines and streams work),
    calibrated once and then read from the graph cache."""
    checkpoint = load_checkpoint(tiny_run)
    engine = make_engine(checkpoint, device="cpu", precision="int8")
    assert isinstance(engine, OrtEngine) and engine.precision == INT8 and engine.splits
    clips = _clips(tiny_run)
    fp32 = make_engine(checkpoint, device="cpu").probabilities(clips)
    int8 = engine.probabilities(clips)
    np.testing.assert_allclose(int8, fp32, atol=INT8_TOLERANCE)
    cached = sorted((default_cache_dir() / "onnx").glob("*-features-int8.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = make_engine(load_checkpoint(tiny_run), device="cpu", precision="int8")
    assert cached[0].stat().st_mtime_ns == stamp          # not calibrated again
    np.testing.assert_array_equal(again.probabilities(clips), int8)
    video = write_video(tmp_path / "long.avi", [indexed_frame(i, 96, 72) for i in range(150)])
    assert main(["predict", str(tiny_run), str(video), "--timeline", "--precision", "int8",
                 "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "timeline.json").is_file()
    with pytest.raises(LrcnError, match="int8 runs on ONNX Runtime on the CPU"):
        make_engine(checkpoint, backend="torch", precision="int8")


def test_int8_needs_the_run_folder(tiny_run, tmp_path, capsys):
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((tiny_run / "model.safetensors").read_bytes())
    assert main(["export", str(lone), "--quantize", "int8"]) == 2
    err = capsys.readouterr().err
    assert "no split.json beside the checkpoint" in err and len(err.splitlines()) == 1


def test_graphs_are_exported_once_per_checkpoint(tiny_run, capsys, monkeypatch):
    """A second engine for the same checkpoint file reads the cached graphs (no export) and
    gives identical probabilities; other weights get new graphs."""
    import lrcn.inference.graphs as graphs
    clips = _clips(tiny_run)
    first = make_engine(load_checkpoint(tiny_run), device="cpu").probabilities(clips)
    files = sorted(p.name for p in (default_cache_dir() / "onnx").glob("*.onnx"))
    assert any(f.endswith("-features.onnx") for f in files)

    def no_export(_):
        raise AssertionError("exported again")
    with monkeypatch.context() as patched:     # (undo() would drop the test's cache dir too)
        patched.setattr(graphs, "feature_graph", no_export)
        patched.setattr(graphs, "sequence_graph", no_export)
        second = make_engine(load_checkpoint(tiny_run), device="cpu")
        np.testing.assert_array_equal(second.probabilities(clips), first)
        # the temperature and the info are not in the graphs: rewriting them exports nothing
        update_info(tiny_run / "model.safetensors", temperature=1.5, note="x")
        third = make_engine(load_checkpoint(tiny_run), device="cpu")
        np.testing.assert_array_equal(third.logits(clips), second.logits(clips))
    checkpoint = load_checkpoint(tiny_run)
    checkpoint.path = tiny_run / "copy.safetensors"
    checkpoint.path.write_bytes((tiny_run / "model.safetensors").read_bytes() + b" ")
    make_engine(checkpoint, device="cpu")
    assert len(list((default_cache_dir() / "onnx").glob("*-features.onnx"))) == 2
    checkpoint.path.unlink()


def test_an_unwritable_cache_costs_the_export_not_the_answer(tiny_run, tmp_path, capsys,
                                                            monkeypatch):
    """A cache folder that cannot be made (here a file stands where it would be): the graphs
    are exported in memory, with one warning, and the probabilities are the cached path's."""
    clips = _clips(tiny_run)
    expected = make_engine(load_checkpoint(tiny_run), device="cpu").probabilities(clips)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with monkeypatch.context() as patched:
        patched.setenv("LRCN_CACHE_DIR", str(blocker))
        engine = make_engine(load_checkpoint(tiny_run), device="cpu")
        np.testing.assert_array_equal(engine.probabilities(clips), expected)
    assert "cannot keep the exported graph" in capsys.readouterr().err


def _predict_json(*args) -> tuple[list, str]:
    """`lrcn predict ... --json` in a fresh process, as a user runs it: (its answer, the names of
    the modules it imported, one a line, from -X importtime)."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lrcn", "predict",
                             *map(str, args), "--json"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:")]
    return json.loads(result.stdout), modules


def test_a_run_whose_graphs_are_cached_predicts_without_importing_torch(tiny_run, tmp_path):
    """The first `lrcn predict` of a checkpoint exports its graphs (torch is needed for that);
    later ones, fp32 and int8, find them in the graph cache and never import torch, which was
    most of a one-clip command's time. Their answers are the torch backend's (fp32) and within
    int8's tolerance of it."""
    video = write_video(tmp_path / "v.avi", [indexed_frame(i, 96, 72) for i in range(30)])
    first, modules = _predict_json(tiny_run, video, "--device", "cpu")
    assert "torch" in modules                                   # it exported the graphs
    again, modules = _predict_json(tiny_run, video, "--device", "cpu")
    assert "torch" not in modules and "onnxruntime" in modules
    assert again == first
    torch_run = load_engine(tiny_run, backend="torch", device="cpu")
    clip = _clips(tiny_run)
    fp32 = torch_run.probabilities(clip)
    np.testing.assert_allclose(load_engine(tiny_run, device="cpu").probabilities(clip), fp32,
                               atol=1e-5)
    assert main(["predict", str(tiny_run), str(video), "--precision", "int8"]) == 0  # calibrates
    int8, modules = _predict_json(tiny_run, video, "--precision", "int8", "--device", "cpu")
    assert "torch" not in modules
    assert int8[0]["label"] == first[0]["label"]
    for name, p in first[0]["probabilities"].items():
        assert abs(int8[0]["probabilities"][name] - p) < INT8_TOLERANCE


def test_a_damaged_cached_graph_is_not_used(tiny_run):
    """A cached graph ONNX Runtime cannot load (a truncated file) is not taken by the torch-free
    path: the engine falls back as make_engine always did, with the same answers."""
    clip = _clips(tiny_run)
    expected = load_engine(tiny_run, backend="torch", device="cpu").probabilities(clip)
    load_engine(tiny_run, device="cpu")                          # exports and caches
    for graph in (default_cache_dir() / "onnx").glob("*-features.onnx"):
        graph.write_bytes(graph.read_bytes()[:100])
    engine = load_engine(tiny_run, device="cpu")
    assert engine.fallback_reason                                # PyTorch, and it says why
    np.testing.assert_allclose(engine.probabilities(clip), expected, atol=1e-5)


def test_surely_no_cuda_is_never_wrong():
    """The torch-free answer to "is 'auto' the CPU?" may say "not sure", never a wrong "yes"."""
    import torch
    from lrcn.devices import surely_no_cuda
    if surely_no_cuda():
        assert not torch.cuda.is_available()


def _quantized_parts(graph):
    """An int8 graph's Conv nodes, the names of those whose weights are int8 (a
    DequantizeLinear gives them), and {tensor: the node that takes it}."""
    made_by = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    int8 = {n.name for n in convs if made_by.get(n.input[1]) is not None
            and made_by[n.input[1]].op_type == "DequantizeLinear"}
    return convs, int8, {name: node for node in graph.node for name in node.input}


def _effnet_fp32_part(name: str) -> bool:
    """Whether a node is in the part of effnet that int8 keeps fp32: its stem, its first block."""
    return "_conv_stem/" in name or "/_blocks.0/" in name


def test_effnet_int8_keeps_its_first_block_fp32_and_its_features(tmp_path):
    """effnet's int8 backbone (ModelSpec.int8_ops and int8_fp32): the stem and the first block
    fp32; every other convolution with int8 weights, its depthwise ones included (they were
    left fp32 by mistake once, which made int8 slower than fp32); its ReLU6 and residual Adds
    quantized; and, calibrated on frames of some video files, features close to fp32's on
    frames of others."""
    import onnx
    from lrcn.config import FrameConfig, ModelConfig
    from lrcn.inference.export import feature_graph
    from lrcn.inference.graphs import quantize_graph
    from lrcn.inference.sessions import ort_session
    from lrcn.media.clip import read_clip
    from lrcn.models.checkpoint import save_checkpoint
    from lrcn.models.registry import build_model, get_spec
    from lrcn.data.synth import SynthConfig, make_dataset
    spec = get_spec("effnet-lstm")
    frames = FrameConfig(**spec.frames)
    config = ModelConfig(name="effnet-lstm", num_classes=2, num_frames=frames.num_frames,
                         height=frames.height, width=frames.width, **spec.model)
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "e.safetensors",
                                                 build_model(config, pretrained=True), frames,
                                                 ["a", "b"]))
    data = make_dataset(tmp_path / "data", SynthConfig(groups=2, clips_per_group=1,
                                                       min_seconds=1, max_seconds=2),
                        progress=False)
    videos = sorted(data.rglob("*_g01_*.*")), sorted(data.rglob("*_g02_*.*"))
    calibration, held_out = (np.concatenate([read_clip(v, checkpoint.frame_config).frames
                                             for v in group]) for group in videos)
    fp32 = feature_graph(checkpoint)
    int8 = quantize_graph(fp32, (calibration[i:i + 20] for i in range(0, len(calibration), 20)),
                          ops=spec.int8_ops, keep_fp32=spec.int8_fp32)
    graph = onnx.load_from_string(int8)
    convs, int8_weights, used_by = _quantized_parts(graph.graph)
    fp32_convs = {n.name for n in convs} - int8_weights
    assert fp32_convs == {n.name for n in convs if _effnet_fp32_part(n.name)} \
        and len(fp32_convs) == 3
    assert any("_depthwise_conv" in name for name in int8_weights)
    # ReLU6 and the residual Adds in int8: outside the fp32 part, their outputs go on as int8
    # (a QuantizeLinear takes them; this ONNX Runtime folds the Clips into it, leaving none)
    int8_part = [n for n in graph.graph.node if n.op_type in ("Clip", "Add")
                 and "/_blocks.0/" not in n.name and n.name != "/backbone/Clip"]
    assert any(n.op_type == "Add" for n in int8_part)
    assert all(used_by[n.output[0]].op_type == "QuantizeLinear" for n in int8_part)
    reference = ort_session(fp32, 1).run(None, {"frames": held_out})[0]
    features = ort_session(int8, 1).run(None, {"frames": held_out})[0]
    cosine = (features * reference).sum(1) / (np.linalg.norm(features, axis=1)
                                              * np.linalg.norm(reference, axis=1))
    print(f"int8 effnet features, cosine to fp32: mean {cosine.mean():.4f}, "
          f"min {cosine.min():.4f} over {len(cosine)} frames")
    assert cosine.mean() > 0.99 and cosine.min() > 0.97        # measured 0.996 and 0.992


def test_a_layer_to_keep_in_fp32_that_the_graph_does_not_have_is_an_error(tiny_run):
    from lrcn.inference.export import feature_graph
    from lrcn.inference.graphs import quantize_graph
    frames = _clips(tiny_run)[0]
    graph = feature_graph(load_checkpoint(tiny_run))
    with pytest.raises(ValueError, match="no node of the graph is named like"):
        quantize_graph(graph, [frames], keep_fp32=("/backbone/_blocks.0/",))
    with pytest.raises(TypeError, match="not the string"):      # "/" would name every node
        quantize_graph(graph, [frames], keep_fp32="/backbone/_blocks.0/")


@pytest.mark.parametrize("name", ["effnet-lstm", "convlstm"])
def test_int8_exports_quantize_what_their_model_says(name, tiny_dataset, tmp_path, capsys,
                                                     monkeypatch):
    """`lrcn export RUN --quantize int8` of other models, through the CLI: effnet's file keeps
    its stem and first block fp32 and its depthwise convolutions int8 (ModelSpec); convlstm's
    keeps its unrolled recurrence fp32 (the Adds of its gates and cell state are not rounded
    at every step: only convolutions are quantized); each predicts close to its fp32 run on
    the run's test clips."""
    import onnx
    monkeypatch.setenv("LRCN_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", str(tiny_dataset), "--model", name, "--out", str(run), "--epochs",
                 "1", "--quiet", "--no-evaluate"] + (["--size", "80x64"] if "effnet" in name
                                                     else [])) == 0
    # the exact products (int8_products_saturate) on every CPU, as on one without VNNI: they
    # are a rewrite of the graph, which refused convlstm's shared weight once
    from lrcn.inference import sessions
    monkeypatch.setattr(sessions, "int8_products_saturate", lambda: True)
    assert main(["export", str(run), "--quantize", "int8"]) == 0
    graph = onnx.load(str(run / "model.int8.onnx")).graph
    convs, int8_convs, used_by = _quantized_parts(graph)
    adds = [n for n in graph.node if n.op_type == "Add"]
    if name == "effnet-lstm":
        assert {n.name for n in convs} - int8_convs == {
            n.name for n in convs if _effnet_fp32_part(n.name)}
        assert any("_depthwise_conv" in n for n in int8_convs)
    else:
        assert int8_convs and adds
        assert not any(used_by.get(n.output[0]) is not None
                       and used_by[n.output[0]].op_type == "QuantizeLinear" for n in adds)
    # every int8 weight is read by one node: convlstm's recurrent convolution, one weight at
    # every step, is given a copy a step (ONNX Runtime's exact products on CPUs without VNNI
    # refuse a shared one)
    readers = [name for node in graph.node for name in node.input]
    assert all(readers.count(n.output[0]) == 1 for n in graph.node
               if n.op_type == "DequantizeLinear" and n.input[0].endswith("_quantized"))
    # on the run's test clips (int8's ranges are calibrated on clips like them; random noise,
    # far outside them, moved effnet's probabilities by up to 0.05)
    from lrcn.api.runs import Run
    from lrcn.media.clip import read_clip
    frames = load_checkpoint(run).frame_config
    clips = np.stack([read_clip(sample.path, frames).frames
                      for sample in Run(run).split["test"][:4]])
    fp32 = make_engine(load_checkpoint(run), device="cpu").probabilities(clips)
    # effnet's int8 moves probabilities more than the seed model's: 0.035 at most here, and
    # on ../shared/realdata's 76 clips 0.138 at most (0.130 in the form before; both change
    # one answer of 76, a 0.002 margin: bench/effnet_int8.py)
    tolerance = 0.06 if name == "effnet-lstm" else INT8_TOLERANCE
    np.testing.assert_allclose(load_engine(run / "model.int8.onnx").probabilities(clips), fp32,
                               atol=tolerance)


def test_int8_products_saturate_on_x86_without_vnni(tmp_path, monkeypatch):
    """Which CPUs get ONNX Runtime's exact uint8 x uint8 products (sessions.py): x86 without
    VNNI or AMX, read from Linux's CPU flags; ARM never; $LRCN_INT8_EXACT decides over both."""
    from lrcn.inference import sessions
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(sessions.platform, "machine", lambda: "x86_64")
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert sessions.cpu_saturates(cpuinfo)
    for exact in ("avx512_vnni", "avx_vnni", "amx_int8"):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu avx2 avx512f {exact}\n")
        assert not sessions.cpu_saturates(cpuinfo)
    monkeypatch.setattr(sessions.platform, "machine", lambda: "aarch64")
    cpuinfo.write_text("flags\t\t: fpu\n")
    assert not sessions.cpu_saturates(cpuinfo)
    for forced, exact in (("1", True), ("0", False)):
        monkeypatch.setenv("LRCN_INT8_EXACT", forced)
        sessions.int8_products_saturate.cache_clear()
        assert sessions.int8_products_saturate() is exact
    monkeypatch.delenv("LRCN_INT8_EXACT")
    sessions.int8_products_saturate.cache_clear()


def _shared_weight_graph() -> bytes:
    """A QDQ graph of three convolutions that read one int8 weight (as convlstm's recurrence
    did in int8 files exported before 2026-12-03)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    constants = [numpy_helper.from_array(rng.integers(-127, 128, (4, 4, 3, 3), dtype=np.int8),
                                         "w_quantized"),
                 numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
                 numpy_helper.from_array(np.zeros(4, np.int8), "w_zero_point"),
                 numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(0, np.uint8), "x_zero_point")]
    nodes = [helper.make_node("DequantizeLinear", ["w_quantized", "w_scale", "w_zero_point"],
                              ["w"], name="w_DequantizeLinear", axis=0)]
    x = "x"
    for i in range(3):
        nodes += [helper.make_node("QuantizeLinear", [x, "x_scale", "x_zero_point"], [f"q{i}"]),
                  helper.make_node("DequantizeLinear", [f"q{i}", "x_scale", "x_zero_point"],
                                   [f"d{i}"]),
                  helper.make_node("Conv", [f"d{i}", "w"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 8, 8])], [helper.make_tensor_value_info(
            x, TensorProto.FLOAT, [1, 4, 8, 8])], constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]) \
        .SerializeToString()


def test_an_int8_weight_read_by_several_nodes_is_copied_for_the_exact_products(monkeypatch):
    """ONNX Runtime's exact-products rewrite refuses a graph whose int8 weight several nodes
    read: quantize_graph gives each its own copy (unshare_weights), and ort_session does the
    same for an int8 file exported before it did; the answers are the graph's."""
    import onnx
    import onnxruntime as ort
    from lrcn.inference import sessions
    from lrcn.inference.sessions import unshared_graph
    graph = _shared_weight_graph()
    unshared = onnx.load_from_string(unshared_graph(graph)).graph
    onnx.checker.check_graph(unshared)
    readers = [name for node in unshared.node for name in node.input]
    weights = [n for n in unshared.node if n.op_type == "DequantizeLinear"
               and n.input[0].startswith("w_quantized")]
    assert len(weights) == 3 and all(readers.count(n.output[0]) == 1 for n in weights) \
        and all(readers.count(name) == 1 for n in weights for name in n.input)
    x = np.random.default_rng(1).random((1, 4, 8, 8), dtype=np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]) \
        .run(None, {"x": x})[0]                  # the QDQ maths in float: exact products
    monkeypatch.setattr(sessions, "int8_products_saturate", lambda: True)
    for model in (graph, unshared_graph(graph)):
        out = sessions.ort_session(model, 1).run(None, {"x": x})[0]
        # within a few steps of x_scale (0.02): the fused kernels round each layer's uint8
        # output as the float maths does not; measured 0.044 at most, outputs up to 18
        np.testing.assert_allclose(out, reference, atol=0.1)
