"""The frame cache: decoded once, reused, bad files reported and cached as failures,
interrupted work kept."""
from __future__ import annotations

import json

import numpy as np

from conftest import decoded_index, write_indexed_video
from lrcn.data.cache import _entry_paths, cache_key, prepare
from lrcn.data.dataset import Sample
from lrcn.config import FrameConfig
from lrcn.media.sampling import sample_indices


def make_samples(root, counts):
    samples = []
    for i, count in enumerate(counts):
        path = write_indexed_video(root / f"v_A_g{i:02d}_c01.avi", count)
        samples.append(Sample(path, "A", f"A/g{i:02d}"))
    return samples


def entry_mtimes(cache_dir):
    return {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*") if p.is_file()}


def test_second_run_decodes_nothing(tmp_path):
    samples = make_samples(tmp_path, [25, 40, 12])
    bad = tmp_path / "v_A_g09_c01.avi"
    bad.write_text("not a video")
    samples.append(Sample(bad, "A", "A/g09"))
    cache_dir = tmp_path / "cache"
    clips, failures = prepare(samples, FrameConfig(), cache_dir, workers=2, progress=False)
    assert [c.sample.path for c in clips] == [s.path for s in samples[:3]]
    assert [(s.path, "not a readable video" in cause) for s, cause in failures] == [(bad, True)]
    for clip, count in zip(clips, [25, 40, 12]):
        frames = np.load(clip.frames_path)
        assert frames.dtype == np.uint8 and frames.shape == (20, 64, 64, 3)
        assert [decoded_index(f) for f in frames] == sample_indices(count, 20)
        assert clip.num_frames == count and clip.fps == 25
    before = entry_mtimes(cache_dir)
    clips2, failures2 = prepare(samples, FrameConfig(), cache_dir, workers=2, progress=False)
    assert entry_mtimes(cache_dir) == before       # nothing decoded or rewritten
    assert [c.frames_path for c in clips2] == [c.frames_path for c in clips]
    assert [str(s.path) for s, _ in failures2] == [str(bad)]   # still reported, not dropped


def test_key_changes_with_file_and_settings(tmp_path):
    path = write_indexed_video(tmp_path / "a.avi", 20)
    key = cache_key(path, FrameConfig())
    assert cache_key(path, FrameConfig(num_frames=16)) != key
    assert cache_key(path, FrameConfig(height=32, width=32)) != key
    assert cache_key(path, FrameConfig(channel_order="bgr")) != key
    write_indexed_video(path, 30)   # the file changed: a new entry
    assert cache_key(path, FrameConfig()) != key


def test_interrupted_run_resumes_and_keeps_finished_entries(tmp_path):
    samples = make_samples(tmp_path, [20, 21, 22, 23])
    cache_dir = tmp_path / "cache"
    prepare(samples[:2], FrameConfig(), cache_dir, workers=0, progress=False)
    # An interrupted write leaves at most a temporary file, never a half entry: simulate one.
    frames_path, meta_path = _entry_paths(cache_dir, cache_key(samples[2].path, FrameConfig()))
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    (frames_path.parent / f".{frames_path.stem}.123.npy").write_bytes(b"partial")
    kept = entry_mtimes(cache_dir)
    clips, failures = prepare(samples, FrameConfig(), cache_dir, workers=2, progress=False)
    assert not failures and len(clips) == 4
    after = entry_mtimes(cache_dir)
    assert all(after[p] == t for p, t in kept.items() if p.suffix == ".json")
    assert json.loads(meta_path.read_text())["num_frames"] == 22


def test_ctrl_c_mid_preprocessing_then_rerun_resumes(tmp_path):
    """A real Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while
    `lrcn check` decodes a data set; the rerun keeps every finished entry and does the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import write_indexed_video
    data = tmp_path / "data"
    for c in ("A", "B"):
        (data / c).mkdir(parents=True)
        for i in range(20):
            write_indexed_video(data / c / f"v_{c}_g{i // 4 + 1:02d}_c{i % 4 + 1:02d}.avi", 120,
                                width=160, height=120)
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "lrcn", "check", str(data), "--cache", str(cache),
               "--workers", "1", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    def entries():   # finished ones: a write in progress is a hidden temporary (files.py)
        return [p for p in cache.rglob("*.json") if not p.name.startswith(".")]

    deadline = time.monotonic() + 60
    while len(entries()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = {p: p.stat().st_mtime_ns for p in entries()}
    assert 3 <= len(done) < 40, "interrupt came too late to test resuming"
    for meta in done:          # every finished entry is complete
        assert meta.with_suffix(".npy").exists() and "num_frames" in json.loads(meta.read_text())
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "40 of 40 files readable" in rerun.stdout
    after = {p: p.stat().st_mtime_ns for p in entries()}
    assert len(after) == 40 and all(after[p] == t for p, t in done.items())
