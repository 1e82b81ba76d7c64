"""The same answer every time (issue 20): a seed gives the same data set byte for byte, whatever
the worker count, and training with a seed on one machine gives the same weights."""
import hashlib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lrcn.data.synth import SynthConfig, make_dataset
from lrcn.training.job import make_job
from lrcn.training.runs import train_and_evaluate


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_seed_writes_the_same_bytes_whatever_the_worker_count(tmp_path):
    # XviD AVI and H.264 MP4 both, of every class
    config = SynthConfig(groups=2, clips_per_group=2, width=96, height=72, min_seconds=1.0,
                         max_seconds=2.0, seed=3)
    first = digests(make_dataset(tmp_path / "a", config, workers=2, progress=False))
    second = digests(make_dataset(tmp_path / "b", config, workers=0, progress=False))
    assert {Path(name).suffix for name in first} >= {".avi", ".mp4", ".csv", ".json"}
    assert len(first) == 6 * 2 * 2 + 2                    # the clips, manifest.csv, synth.json
    assert first == second
    other = digests(make_dataset(tmp_path / "c", SynthConfig(**{**config.__dict__, "seed": 4}),
                                 workers=2, progress=False))
    assert len(other) == len(first) and other != first     # the seed matters


def weights(checkpoint: Path) -> dict[str, bytes]:
    with safe_open(str(checkpoint), "pt") as f:
        return {name: f.get_tensor(name).numpy().tobytes() for name in f.keys()}


@pytest.mark.parametrize("threads", [1, 2])
def test_training_with_a_seed_gives_the_same_weights(tiny_dataset, tmp_path, threads):
    """On two threads, batches of 8 run as two chunks at once in threads (training.steps):
    the same weights every time all the same."""
    def run(name: str, seed: int):
        job = make_job(tiny_dataset, tmp_path / name, model="lrcn",
                       frames={"num_frames": 8, "height": 64, "width": 64},
                       train={"epochs": 2, "seed": seed, "batch_size": 4 * threads,
                              "num_threads": threads},
                       cache_dir=tmp_path / "cache", workers=0, progress=False)
        return train_and_evaluate(job, log=lambda *a, **k: None)

    before = torch.get_num_threads()
    try:
        a, b, c = run("a", 5), run("b", 5), run("c", 6)
    finally:
        torch.set_num_threads(before)
    assert weights(a.checkpoint) == weights(b.checkpoint)
    assert a.report == b.report
    assert weights(a.checkpoint) != weights(c.checkpoint)     # and the seed matters
