"""files.atomic_path: a write that fails half-way leaves the old file as it was and no
temporary beside it; a write that succeeds replaces the file whole."""
from __future__ import annotations

import numpy as np
import pytest

from lrcn.files import atomic_path, atomic_write_text


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "frames.npy"
    np.save(target, np.arange(4))
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a file")          # the new content, partly written
            raise RuntimeError("disk gone")
    assert np.load(target).tolist() == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.npy"]


def test_success_replaces_the_file_and_the_temporary_keeps_the_suffix(tmp_path):
    target = tmp_path / "frames.npy"
    atomic_write_text(target, "old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".npy"
        np.save(tmp, np.arange(3))                  # np.save would add .npy to another name
    assert np.load(target).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.npy"]


def test_video_writer_failure_keeps_the_old_video(tmp_path):
    """The PyAV writer writes through atomic_path too: an exception mid-video leaves the old
    file whole and no partial video beside it."""
    from lrcn.media.video import open_video
    from lrcn.media.writer import VideoWriter
    target = tmp_path / "clip.mp4"
    with VideoWriter(target, 32, 24, 10) as out:
        for i in range(5):
            out.write(np.full((24, 32, 3), 40 * i, np.uint8))
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(target, 32, 24, 10) as out:
            out.write(np.zeros((24, 32, 3), np.uint8))
            raise KeyboardInterrupt
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    with open_video(target) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


def test_files_get_the_usual_permissions_whatever_the_writer_made(tmp_path):
    """safetensors creates its file 0600; a model written through atomic_path is readable as
    any new file is (0666 less the umask), and a file that exists keeps its mode."""
    import os
    import torch
    from safetensors.torch import save_file
    old = os.umask(0o022)
    try:
        target = tmp_path / "model.safetensors"
        with atomic_path(target) as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        assert oct(target.stat().st_mode & 0o777) == oct(0o644)
        os.chmod(target, 0o640)
        with atomic_path(target) as tmp:
            save_file({"w": torch.ones(2)}, str(tmp))
        assert oct(target.stat().st_mode & 0o777) == oct(0o640)
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
        assert oct((tmp_path / "private.txt").stat().st_mode & 0o777) == oct(0o600)
    finally:
        os.umask(old)
