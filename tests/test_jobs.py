"""server.jobs, called directly: JobRunner runs timeline jobs in processes of their own, one slot
at a time here, writes each job's files, ends a job on a broken file in error.json with a
one-line cause that names no path on the server, and removes finished jobs after a while.
(The HTTP routes over it are in test_serve.py.)"""
from __future__ import annotations

import json
import time

import av
import pytest
import torch

from lrcn.config import FrameConfig, ModelConfig
from lrcn.models.checkpoint import save_checkpoint
from lrcn.models.lrcn import LRCN
from lrcn.server.jobs import JOB_ID, Job, JobRunner, new_job_id

from conftest import write_indexed_video


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(5)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(folder / "m.safetensors",
                           LRCN(ModelConfig(num_classes=3, num_frames=8)),
                           FrameConfig(num_frames=8), ["walk", "run", "jump"], clip_seconds=1.0)


def wait_until_finished(runner, jobs, seconds=120.0):
    """Poll as a client would; returns the most jobs seen running at once."""
    deadline, most = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        states = [job.state for job in jobs]
        most = max(most, states.count("running"))
        if all(state in ("done", "failed", "cancelled") for state in states):
            return most
        time.sleep(0.05)
    raise AssertionError(f"jobs still {[job.state for job in jobs]} after {seconds} s")


def test_jobs_run_to_their_files_one_slot_at_a_time_and_a_broken_file_fails(checkpoint,
                                                                            tmp_path):
    root = tmp_path / "jobs"
    runner = JobRunner(str(checkpoint), "cpu", "fp32", {"smooth": 1}, root, jobs=1,
                       stall_seconds=120, keep_seconds=3600)
    try:
        good_id, good_folder = runner.new_folder()
        upload = write_indexed_video(good_folder / "upload", 75, codec="h264_mp4")   # 3 s
        good = runner.add(good_id, good_folder, upload)
        bad_id, bad_folder = runner.new_folder()
        (bad_folder / "upload").write_text("this is not a video, just a text file")
        bad = runner.add(bad_id, bad_folder, bad_folder / "upload")
        assert runner.get(good_id) is good and runner.get(bad_id) is bad
        assert good_folder.parent == bad_folder.parent == root and good_id != bad_id

        most = wait_until_finished(runner, [good, bad])
        assert most == 1                                      # one slot: one job at a time
        assert bad.created >= good.created and bad.finished >= good.finished   # in order

        assert good.state == "done" and good.error is None and good.progress() == 1.0
        progress = json.loads((good_folder / "progress.json").read_text())
        assert progress["progress"] == 1.0 and progress["phase"] == "done"
        timeline = json.loads((good_folder / "timeline.json").read_text())
        assert timeline["classes"] == ["walk", "run", "jump"]
        assert timeline["facts"]["duration"] == pytest.approx(3.0, abs=0.05)
        assert timeline["facts"]["smoothing"] == 1                 # the runner's window setting
        segments = timeline["segments"]
        assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(3.0, abs=0.05)
        assert all(s["label"] in timeline["classes"] for s in segments)
        assert (good_folder / "timeline.png").read_bytes()[:4] == b"\x89PNG"
        with av.open(str(good_folder / "video.mp4")) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            assert sum(1 for _ in container.decode(video=0)) == 75
        assert not upload.exists()                       # the upload is no longer needed

        assert bad.state == "failed" and bad.progress() == 0.0
        error = json.loads((bad_folder / "error.json").read_text())["error"]
        assert bad.error == error
        assert error.startswith("not a readable video") and "\n" not in error
        assert str(tmp_path) not in error and "/" not in error and "upload" not in error
        assert not (bad_folder / "timeline.json").exists()
        assert not (bad_folder / "video.mp4").exists()

        assert runner.remove(good_id) and not good_folder.exists()
        assert runner.get(good_id) is None and not runner.remove(good_id)

        # finished jobs expire with their files once they are older than keep_seconds
        assert bad_folder.exists()
        runner.keep_seconds = 0.3
        deadline = time.monotonic() + 10
        while bad_folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bad_folder.exists() and runner.get(bad_id) is None
    finally:
        runner.close(grace=1)


def test_job_ids_are_tokens_never_paths(tmp_path):
    ids = {new_job_id() for _ in range(50)}
    assert len(ids) == 50 and all(JOB_ID.fullmatch(i) for i in ids)
    runner = JobRunner("unused.safetensors", "cpu", "fp32", {}, tmp_path / "jobs", jobs=1,
                       stall_seconds=60, keep_seconds=60)
    try:
        job_id, folder = runner.new_folder()
        assert folder == tmp_path / "jobs" / job_id and folder.is_dir()
        for probe in ("../" + job_id[3:], job_id + "/..", job_id[:-1], "", "a" * 23):
            assert runner.get(probe) is None, probe
    finally:
        runner.close(grace=0)


def test_only_the_newest_finished_jobs_are_kept(tmp_path):
    """--keep-jobs: past it, the oldest finished jobs go with their files (the disk finished
    jobs hold is bounded by count, not only by age)."""
    runner = JobRunner("unused.safetensors", "cpu", "fp32", {}, tmp_path / "jobs", jobs=1,
                       stall_seconds=60, keep_seconds=3600, keep_jobs=2)
    try:
        made = []
        for k in range(4):
            job_id, folder = runner.new_folder()
            # finished already (never queued: the runner's own loop would start it)
            runner.jobs[job_id] = Job(job_id, folder, folder / "upload", state="done",
                                      finished=time.time() - 10 + k)   # the last is newest
            made.append((job_id, folder))
        runner.poll()
        assert [runner.get(j) is not None for j, _ in made] == [False, False, True, True]
        assert [f.exists() for _, f in made] == [False, False, True, True]
    finally:
        runner.close(grace=0)
