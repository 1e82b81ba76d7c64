"""The fast paths change speed, not results: training steps against a plain eager PyTorch
reference, the ONNX Runtime engine against the PyTorch engine, and fixed-seed reproducibility."""
from __future__ import annotations

import copy
import os
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrcn.models.checkpoint import load_checkpoint, save_checkpoint
from lrcn.config import FrameConfig, ModelConfig
from lrcn.inference.engine import OrtEngine, TorchEngine
from lrcn.models.lrcn import LRCN
from lrcn.models.base import MaskDropout
from lrcn.training.steps import make_optimizer, train_step
from lrcn.training.train import TrainingJob, train
from lrcn.media.clip import read_clip

from conftest import indexed_frame, write_video


def reference_logits(model: LRCN, clips: torch.Tensor) -> torch.Tensor:
    """The seed model written the textbook way, as Keras computes it: conv -> ReLU -> max-pool
    -> dropout per frame, features flattened in (H, W, C) order, LSTM, Dense. Dropout masks come
    from the model's own dropout layers, so both paths see the same masks."""
    x = clips.to(torch.float32).div(255.0)
    b, t = x.shape[:2]
    x = x.flatten(0, 1).permute(0, 3, 1, 2).contiguous()  # plain NCHW
    convs = [m for m in model.cnn if isinstance(m, torch.nn.Conv2d)]
    drops = [m for m in model.cnn if isinstance(m, MaskDropout)]
    cfg = model.config
    for i, (conv, pool) in enumerate(zip(convs, cfg.pool_sizes)):
        x = F.max_pool2d(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)), pool)
        if cfg.dropout_after[i] and model.training:
            x = x * drops[sum(cfg.dropout_after[:i])].mask(tuple(x.shape))
    feats = x.permute(0, 2, 3, 1).reshape(b, t, -1)
    _, (h, _) = model.lstm(feats)
    return model.head(h[-1])


@pytest.mark.parametrize("batch, chunk, threads", [(4, 4, 1), (6, 4, 1), (6, 4, 2), (4, 2, 2),
                                                   (5, None, 2)])
def test_fast_training_steps_match_plain_eager_pytorch(batch, chunk, threads):
    """Chunked steps, and on two threads chunks run at once in threads of their own (the same
    dropout masks, gradients summed), against one plain pass over the whole batch."""
    torch.manual_seed(3)
    fast = LRCN(ModelConfig(num_classes=4))
    plain = copy.deepcopy(fast)
    fast.seed_dropout(11)
    plain.seed_dropout(11)
    fast_opt = make_optimizer(fast, 1e-3)                       # fused Adam
    plain_opt = torch.optim.Adam([p for p in plain.parameters() if p.requires_grad], lr=1e-3,
                                 eps=1e-7, foreach=False, fused=False)
    ran_in = set()                 # (thread, its PyTorch thread count) of each forward pass
    fast.cnn[0].register_forward_hook(lambda *_: ran_in.add(
        (threading.current_thread().name, torch.get_num_threads())))
    rng = np.random.default_rng(0)
    fast_losses, plain_losses = [], []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(4):
            clips = torch.from_numpy(rng.integers(0, 256, (batch, 20, 64, 64, 3), dtype=np.uint8))
            labels = torch.from_numpy(rng.integers(0, 4, batch))
            loss_sum, right = train_step(fast, fast_opt, clips, labels, chunk_clips=chunk)
            assert torch.get_num_threads() == threads        # this thread's count is kept
            fast_losses.append(loss_sum / batch)
            plain.train()
            plain_opt.zero_grad()
            logits = reference_logits(plain, clips)
            loss = F.cross_entropy(logits, labels)  # whole batch, mean
            loss.backward()
            plain_opt.step()
            plain_losses.append(loss.item())
            assert int(right) == int((logits.argmax(1) == labels).sum())
    finally:
        torch.set_num_threads(before)
    assert len(set(np.round(plain_losses, 6))) == 4  # the steps really changed the model
    np.testing.assert_allclose(fast_losses, plain_losses, rtol=1e-5, atol=1e-6)
    # Adam's first steps are about lr (1e-3) whatever the gradient's size, so for a near-zero
    # gradient the rounding of another summation order shows in the weights (up to 1.5e-5
    # seen on chunks of 3 and 2). A wrong gradient moves most weights by a step's size.
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")
    # on two threads, two workers of one thread each (not two of two, four on two cores)
    workers = {(name.startswith("lrcn-train"), count) for name, count in ran_in}
    assert workers == ({(True, 1)} if threads > 1 else {(False, 1)}), ran_in


@pytest.mark.parametrize("name", ["lrcn", "convlstm"])
def test_a_step_in_threads_is_the_step_in_turn(name):
    """One step of every model with dropout, chunks in turn on one thread and at once in two
    threads: the same masks (ConvLSTM's recurrent one too), so the same loss and gradients."""
    from lrcn.models.registry import build_model, get_spec
    torch.manual_seed(5)
    one = build_model(ModelConfig(name=name, num_classes=4, **get_spec(name).model))
    two = copy.deepcopy(one)
    one.seed_dropout(7)
    two.seed_dropout(7)
    rng = np.random.default_rng(1)
    clips = torch.from_numpy(rng.integers(0, 256, (8, 20, 64, 64, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 4, 8))
    before = torch.get_num_threads()
    results = []
    try:
        for model, threads in ((one, 1), (two, 2)):
            torch.set_num_threads(threads)
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                        lr=0.0)        # the gradients stay to compare
            results.append(train_step(model, optimizer, clips, labels, chunk_clips=2))
    finally:
        torch.set_num_threads(before)
    (loss_one, right_one), (loss_two, right_two) = results
    assert float(loss_one) == pytest.approx(float(loss_two), rel=1e-6)
    assert int(right_one) == int(right_two)
    for (param, a), b in zip(one.named_parameters(), two.parameters()):
        assert (a.grad is None) == (b.grad is None), param
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=param)


def test_inference_equals_the_keras_order():
    torch.manual_seed(0)
    model = LRCN(ModelConfig(num_classes=3)).eval()
    clips = torch.randint(0, 256, (2, 20, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(clips.float().div(255)), reference_logits(model, clips),
                                   rtol=1e-5, atol=1e-6)


def test_mask_dropout_rate_scale_and_chunk_invariance():
    drop = MaskDropout(0.25)
    drop.seed(5)
    mask = drop.mask((64, 16, 16, 16))
    kept = (mask > 0).float().mean().item()
    assert abs(kept - 0.75) < 0.005
    values = mask.unique().tolist()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / 0.75)
    # Masks for two halves of a batch equal the mask for the whole batch (chunked training
    # sees the same masks as an unchunked step).
    drop.seed(9)
    halves = torch.cat([drop.mask((4, 16, 8, 8)), drop.mask((4, 16, 8, 8))])
    drop.seed(9)
    torch.testing.assert_close(halves, drop.mask((8, 16, 8, 8)))
    drop.eval()
    x = torch.rand(2, 16, 8, 8)
    assert drop(x) is x


def test_fixed_seed_training_is_reproducible(tiny_dataset, tmp_path):
    runs = [train(TrainingJob(tiny_dataset, tmp_path / f"run{i}", train=_short(),
                              progress=False, workers=2), log=lambda *a: None)
            for i in range(2)]
    a, b = (r.history for r in runs)
    assert [row["loss"] for row in a] == [row["loss"] for row in b]
    assert [row["val_loss"] for row in a] == [row["val_loss"] for row in b]
    wa = load_checkpoint(runs[0].checkpoint).state_dict
    wb = load_checkpoint(runs[1].checkpoint).state_dict
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _short():
    from lrcn.config import TrainConfig
    return TrainConfig(epochs=2, batch_size=4)


def test_onnx_runtime_spreads_a_batch_over_threads_in_order(tmp_path):
    """On the CPU a batch runs as equal parts, one-thread runs from several threads at once:
    the same numbers, in the same order, as one run of the whole batch (odd sizes: unequal
    last parts). Clips go as one batch there, in slices of 160 frames on one thread."""
    import threading
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "m.safetensors", LRCN(ModelConfig(num_classes=3)),
                           FrameConfig(), list("abc"))
    checkpoint = load_checkpoint(path)
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (101, 64, 64, 3), np.uint8)
    clips = rng.integers(0, 256, (11, 20, 64, 64, 3), np.uint8)   # 220 frames
    before = set(threading.enumerate())
    spread = OrtEngine.from_checkpoint(checkpoint, threads=3)
    one = OrtEngine.from_checkpoint(checkpoint, threads=1)
    feats = spread.features(frames)
    assert any(t.name.startswith("lrcn-cnn")                # it did run in threads
               for t in set(threading.enumerate()) - before)
    np.testing.assert_allclose(feats, one.features(frames), atol=1e-6)
    assert np.abs(feats[1:] - feats[:-1]).max() > 1e-3   # frames that differ: order shows
    assert spread.frames_per_call > len(clips) * 20 > one.frames_per_call
    np.testing.assert_allclose(spread.logits(clips), one.logits(clips), atol=1e-6)


def test_usable_cores_follow_the_affinity_and_a_cpu_quota(tmp_path):
    """How many CNN threads: the cores this process may run on, capped by a container's CPU
    quota in either cgroup version's files; no quota, no files or unreadable ones: the
    affinity alone."""
    from lrcn.inference.sessions import usable_cores
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        os.cpu_count()
    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    v2.mkdir()
    assert usable_cores(tmp_path / "none") == cores
    for text, expected in [("150000 100000\n", min(cores, 2)), ("50000 100000", 1),
                           ("max 100000\n", cores), ("garbage", cores)]:
        (v2 / "cpu.max").write_text(text)
        assert usable_cores(v2) == expected, text
    for quota, expected in [("100000", 1), ("-1", cores), ("", cores)]:
        (v1 / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
        (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
        assert usable_cores(v1) == expected, quota


def test_onnx_runtime_engine_matches_pytorch_engine(tmp_path):
    torch.manual_seed(1)
    path = save_checkpoint(tmp_path / "m.safetensors", LRCN(ModelConfig(num_classes=5)),
                           FrameConfig(), list("abcde"))
    checkpoint = load_checkpoint(path)
    ort, eager = OrtEngine.from_checkpoint(checkpoint), TorchEngine(checkpoint)
    video = write_video(tmp_path / "v.mp4", [indexed_frame(i, 96, 72) for i in range(40)],
                        codec="h264_mp4")
    clip = read_clip(video).frames
    rng = np.random.default_rng(2)
    batch = np.concatenate([clip[None], rng.integers(0, 256, (2, 20, 64, 64, 3), np.uint8)])
    np.testing.assert_allclose(ort.features(clip), eager.features(clip), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ort.probabilities(batch), eager.probabilities(batch), atol=1e-5)
    np.testing.assert_allclose(ort.probabilities(clip), eager.probabilities(clip), atol=1e-5)
    assert ort.probabilities(batch).sum(1) == pytest.approx(np.ones(3), abs=1e-5)
