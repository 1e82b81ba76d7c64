"""Devices and precisions, and the loader that feeds them: one code path, run here on the CPU;
the tests marked `cuda` run where PyTorch sees a CUDA GPU and are skipped elsewhere."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lrcn.data.cache import prepare
from lrcn.models.checkpoint import load_checkpoint
from lrcn.config import FrameConfig, TrainConfig
from lrcn.data.dataset import discover
from lrcn.devices import resolve_device
from lrcn.inference.engine import TorchEngine, make_engine
from lrcn.errors import LrcnError
from lrcn.data.loader import FrameStore, clip_batches

CUDA = torch.cuda.is_available()


def cuda(test):
    """Marked `cuda` (select with -m cuda) and skipped, saying why, where there is no GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason="no CUDA GPU here")(test))


def lrcn(*args):
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def cached(tiny_dataset, tmp_path_factory):
    names, samples = discover(tiny_dataset)
    clips, failures = prepare(samples, FrameConfig(), progress=False, workers=2,
                              cache_dir=tmp_path_factory.mktemp("cache"))
    assert not failures
    return names, clips


@pytest.fixture(scope="module")
def untrained(cached, tmp_path_factory):
    """An untrained model for the cached clips' classes, as a loaded checkpoint."""
    from lrcn.models.checkpoint import save_checkpoint
    from lrcn.config import ModelConfig
    from lrcn.models.lrcn import LRCN
    names, _ = cached
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path_factory.mktemp("untrained") / "m.safetensors",
                           LRCN(ModelConfig(num_classes=len(names))), FrameConfig(), names)
    return load_checkpoint(path)


def test_auto_is_cuda_when_there_is_one_else_the_cpu():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(LrcnError, match="unknown device 'gpu'"):
        resolve_device("gpu")


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_device_that_is_not_there_is_one_line_and_exit_2(name, tiny_dataset, tmp_path):
    from lrcn.models.checkpoint import save_checkpoint
    from lrcn.config import ModelConfig
    from lrcn.models.lrcn import LRCN
    with pytest.raises(LrcnError, match=f"--device {name}: this machine has no CUDA GPU"):
        resolve_device(name)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", LRCN(ModelConfig(num_classes=2)),
                                 FrameConfig(), ["a", "b"])
    video = next((tiny_dataset / "Grow").iterdir())
    commands = [["predict", checkpoint, video], ["stream", checkpoint, video],
                ["evaluate", checkpoint, "--data", tiny_dataset],
                # checked before any video is decoded
                ["train", tiny_dataset, "--out", tmp_path / "run", "--cache",
                 tmp_path / "cache"]]
    # every command with the plain name; a numbered device goes through the same check
    for args in commands if name == "cuda" else commands[-1:]:
        quiet = ["--quiet"] if args[0] in ("train", "evaluate") else []
        result = lrcn(*args, "--device", name, *quiet)
        assert result.returncode == 2, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"lrcn: error: --device {name}: this machine has no CUDA GPU")
    assert not (tmp_path / "cache").exists()
    typo = lrcn("predict", checkpoint, video, "--device", "gpu0")
    assert typo.returncode == 2 and "unknown device 'gpu0'" in typo.stderr


HEAP_AFTER_24MB = """
import sys
def heap():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = line.split()[0].split("-")
            return int(end, 16) - int(start, 16)
    return 0
import torch
if sys.argv[1] == "kept":
    from lrcn.devices import keep_freed_memory
    keep_freed_memory()
before = heap()
x = torch.ones(6 << 20)          # 24 MB
during = heap() - before
del x
print(during >> 20, (heap() - before) >> 20)
"""


def _glibc_allocator() -> bool:
    """glibc's malloc, with its defaults (no other allocator preloaded, no tunables set)."""
    try:
        glibc = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):           # musl and others
        return False
    return glibc and "LD_PRELOAD" not in os.environ and not any(
        k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ)


@pytest.mark.skipif(not _glibc_allocator(), reason="glibc's allocator, as it comes")
def test_training_keeps_freed_tensors_in_the_heap_for_the_next_step():
    """keep_freed_memory (called by training on the CPU): a fresh process's 24 MB tensor comes
    from the heap and its memory stays there once freed, for the next chunk's tensor, instead
    of a new mapping whose every page faults when first written. Without it glibc maps it."""
    run = [sys.executable, "-c", HEAP_AFTER_24MB]
    kept = subprocess.run(run + ["kept"], capture_output=True, text=True, check=True)
    default = subprocess.run(run + ["default"], capture_output=True, text=True, check=True)
    during, after = map(int, kept.stdout.split())
    assert during >= 20 and after >= 20, kept.stdout          # in the heap, and kept there
    assert default.stdout.split() == ["0", "0"], default.stdout   # glibc's default: mapped


def test_the_loader_shuffles_as_a_dataloader_does(cached):
    """Same seed, same batches as torch's DataLoader(shuffle=True): runs trained before this
    loader existed are reproduced batch for batch."""
    names, clips = cached
    index = {n: i for i, n in enumerate(names)}

    class Frames(torch.utils.data.Dataset):
        def __len__(self):
            return len(clips)

        def __getitem__(self, i):
            return torch.from_numpy(np.load(clips[i].frames_path)), \
                index[clips[i].sample.class_name]

    reference = torch.utils.data.DataLoader(Frames(), batch_size=5, shuffle=True,
                                            generator=torch.Generator().manual_seed(27))
    ours = clip_batches(clips, names, 5, shuffle=True,
                        generator=torch.Generator().manual_seed(27))
    for epoch in range(3):
        theirs = list(reference)
        mine = list(ours)
        assert len(mine) == len(theirs) == len(ours) == 5
        for (a, la), (b, lb) in zip(theirs, mine):
            assert torch.equal(a, b) and torch.equal(la, lb)


def test_resident_and_mapped_stores_give_the_same_batches(cached):
    names, clips = cached
    resident = clip_batches(clips, names, 7, shuffle=True,
                            generator=torch.Generator().manual_seed(1))
    mapped = clip_batches(clips, names, 7, shuffle=True,
                          generator=torch.Generator().manual_seed(1), max_resident_bytes=0)
    assert resident.store.resident and not mapped.store.resident
    packs = list(clips[0].frames_path.parents[1].glob("packs/*.npy"))
    assert len(packs) == 1 and np.load(packs[0], mmap_mode="r").shape == (24, 20, 64, 64, 3)
    for _ in range(2):
        for (a, la), (b, lb) in zip(resident, mapped):   # the mapped one via its prefetch thread
            assert torch.equal(a, b) and torch.equal(la, lb)
    again = FrameStore(clips, max_resident_bytes=0)       # the pack is reused, not rewritten
    assert list(clips[0].frames_path.parents[1].glob("packs/*")) == packs
    assert torch.equal(again.gather([3, 1]), resident.store.gather([3, 1]))


def test_an_early_break_stops_the_prefetch_thread(cached):
    import threading
    names, clips = cached
    before = threading.active_count()
    batches = clip_batches(clips, names, 2, max_resident_bytes=0)
    for _ in batches:
        break
    assert threading.active_count() == before


def test_bf16_inference_stays_close_to_fp32(cached, untrained):
    names, clips = cached
    checkpoint = untrained
    batch = np.stack([np.load(c.frames_path) for c in clips[:6]])
    fp32 = make_engine(checkpoint, device="cpu").probabilities(batch)
    bf16 = make_engine(checkpoint, device="cpu", precision="bf16")
    assert isinstance(bf16, TorchEngine) and bf16.precision == "bf16"
    got = bf16.probabilities(batch)
    assert np.abs(got - fp32).max() < 0.02
    assert not np.array_equal(got, fp32)     # it did run in bf16


def test_training_in_bf16_on_the_cpu_records_its_settings(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    result = lrcn("train", tiny_dataset, "--out", run, "--epochs", "2", "--precision", "bf16",
                  "--device", "cpu", "--quiet", "--cache", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["device"] == "cpu" and config["train"]["precision"] == "bf16"
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3
    assert all(np.isfinite(float(v)) for v in history[1].split(","))


@cuda
def test_a_checkpoint_trained_on_the_gpu_predicts_the_same_on_the_cpu(tiny_dataset, tmp_path):
    from lrcn.devices import full_fp32
    from lrcn.training.train import TrainingJob, train
    config = TrainConfig(epochs=3, device="cuda", seed=2)
    result = train(TrainingJob(tiny_dataset, tmp_path / "run", train=config,
                               cache_dir=tmp_path / "cache", progress=False),
                   log=lambda *a: None)
    checkpoint = load_checkpoint(result.checkpoint)
    names, samples = discover(tiny_dataset)
    clips, _ = prepare(samples, FrameConfig(), cache_dir=tmp_path / "cache", progress=False)
    batch = np.stack([np.load(c.frames_path) for c in clips])
    with full_fp32():
        on_gpu = TorchEngine(checkpoint, device="cuda").probabilities(batch)
    on_cpu = make_engine(checkpoint, device="cpu").probabilities(batch)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-5, rtol=0)


@cuda
def test_a_few_epochs_on_the_gpu_reach_the_cpus_accuracy(tiny_dataset, tmp_path):
    from lrcn.training.runs import TrainingJob, train_and_evaluate
    accuracy = {}
    for device in ("cpu", "cuda"):
        job = TrainingJob(tiny_dataset, tmp_path / device,
                          train=TrainConfig(epochs=15, device=device, seed=4),
                          cache_dir=tmp_path / "cache", progress=False)
        result = train_and_evaluate(job, log=lambda *a: None)
        accuracy[device] = result.report["accuracy"]
    assert accuracy["cuda"] >= accuracy["cpu"] - 0.125    # one clip of eight test clips


@cuda
def test_bf16_on_the_gpu_stays_within_tolerance(cached, untrained):
    names, clips = cached
    checkpoint = untrained
    batch = np.stack([np.load(c.frames_path) for c in clips])
    fp32 = make_engine(checkpoint, device="cpu").probabilities(batch)
    for precision in ("bf16", "fp16"):
        got = make_engine(checkpoint, device="cuda", precision=precision).probabilities(batch)
        assert np.abs(got - fp32).max() < 0.02, precision


TF32_FLAGS = """
import torch
from lrcn import devices
def flags():
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision())
def tf32_on():   # what a process may start with (cuDNN's TF32 default, a user's setting)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
tf32_on()
with devices.full_fp32():           # before any model: the flags come back after the block
    assert flags() == (False, False, "highest"), flags()
assert flags() == (True, True, "high"), flags()
with devices.full_fp32():
    devices.no_tf32()               # the process's first fp32 model on a GPU runs in here
assert flags() == (False, False, "highest"), flags()   # and fp32 stays full fp32 after it
tf32_on()                           # set again by the user after no_tf32: full_fp32 restores
with devices.full_fp32():
    assert flags() == (False, False, "highest"), flags()
assert flags() == (True, True, "high"), flags()
print("ok")
"""


def test_full_fp32_keeps_what_no_tf32_set_when_it_first_ran_inside():
    """The TF32 flags' logic, on any machine (the flags are settable without a GPU): a fresh
    process, so that no_tf32 has not run yet."""
    result = subprocess.run([sys.executable, "-c", TF32_FLAGS], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
