"""Runs killed with SIGKILL at several moments resume with `lrcn train --resume RUN` and end
with the weights of a run that was never interrupted, bit for bit (CPU, one process)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

TRAIN = ["--epochs", "6", "--patience", "20", "--seed", "3", "--batch-size", "4",
         "--no-evaluate", "--quiet", "--workers", "2"]


def lrcn(*args, wait=True):
    command = [sys.executable, "-m", "lrcn", *map(str, args)]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def epochs_done(run: Path) -> int:
    try:
        return len((run / "history.csv").read_text().strip().splitlines()) - 1
    except OSError:
        return 0


def kill_when(process, ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def final_weights(run: Path) -> dict:
    return {k: v for k, v in load_file(str(run / "state.safetensors")).items()
            if k.startswith("model.")}


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    result = lrcn("train", tiny_dataset, "--out", run, "--cache", run.parent / "cache", *TRAIN)
    assert result.returncode == 0, result.stderr
    assert epochs_done(run) == 6
    return run


def test_killed_at_several_moments_then_resumed_gives_the_same_weights(tiny_dataset,
                                                                       uninterrupted, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    # 1. during the cache fill (a cold cache of its own)
    process = lrcn("train", tiny_dataset, "--out", run, "--cache", cache, *TRAIN, wait=False)
    kill_when(process, lambda: len(list(cache.rglob("*.json"))) >= 3)
    assert epochs_done(run) == 0
    # 2. in the middle of the third epoch, 3. right after the fourth's state was written
    process = lrcn("train", "--resume", run, "--quiet", "--no-evaluate", wait=False)
    kill_when(process, lambda: epochs_done(run) >= 2)
    assert epochs_done(run) == 2
    process = lrcn("train", "--resume", run, "--quiet", "--no-evaluate", wait=False)
    kill_when(process, lambda: state_epochs(run) >= 4)
    assert state_epochs(run) == 4
    # 4. a kill while writing leaves a temporary file beside the real ones: it is ignored
    (run / f".state.safetensors.tmp{os.getpid()}").write_bytes(b"\0" * 100)
    (run / f".model.safetensors.tmp{os.getpid()}").write_bytes(b"\0" * 100)
    result = lrcn("train", "--resume", run, "--quiet", "--no-evaluate")
    assert result.returncode == 0, result.stderr
    assert epochs_done(run) == 6
    ours, theirs = final_weights(run), final_weights(uninterrupted)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].equal(theirs[name]), name          # bitwise
    for a, b in zip(_history(run), _history(uninterrupted)):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}
    best = load_file(str(run / "model.safetensors"))
    for name, tensor in load_file(str(uninterrupted / "model.safetensors")).items():
        assert best[name].equal(tensor), name


def state_epochs(run: Path) -> int:
    """Epochs in the saved training state (0 before there is one)."""
    from safetensors import safe_open
    try:
        with safe_open(str(run / "state.safetensors"), "pt") as handle:
            return len(json.loads(handle.metadata()["state"])["progress"]["history"])
    except Exception:       # not written yet
        return 0


def _history(run: Path) -> list[dict]:
    lines = (run / "history.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def test_resume_errors_are_one_line(tmp_path):
    result = lrcn("train", "--resume", tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "not a run folder (no config.json): nothing to resume" in line
    both = lrcn("train", tmp_path, "--resume", tmp_path)
    assert both.returncode == 2 and "give no DATA" in both.stderr


def test_ctrl_c_keeps_the_state_and_says_how_to_resume(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "lrcn", "train", str(tiny_dataset),
                                "--out", str(run), "--cache", str(tmp_path / "cache"),
                                "--epochs", "200", "--patience", "200", "--no-evaluate",
                                "--quiet", "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while state_epochs(run) < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"continue with: lrcn train --resume {run}" in stdout
    assert "Traceback" not in stderr
    assert state_epochs(run) >= 2


def test_a_run_interrupted_after_its_last_epoch_is_calibrated_and_evaluated_on_resume(
        tiny_dataset, tmp_path):
    """Ctrl-C after the last epoch, between the calibration and the test evaluation, leaves a
    trained model without its test figures: `--resume` finishes the run (the same report and
    checkpoint figures as a run that was never stopped) instead of refusing a finished run;
    once done, it is refused as before, as is a finished run of an older lrcn."""
    from lrcn.models.checkpoint import load_checkpoint
    from lrcn.training.job import make_job
    from lrcn.training.runs import train_and_evaluate
    settings = {"epochs": 2, "seed": 3, "batch_size": 4}
    whole = tmp_path / "whole"
    result = lrcn("train", tiny_dataset, "--out", whole, "--cache", tmp_path / "cache",
                  "--epochs", "2", "--seed", "3", "--batch-size", "4", "--quiet",
                  "--workers", "2")
    assert result.returncode == 0, result.stderr

    def ctrl_c_after_calibration(message, *args, **kwargs):
        if str(message).startswith("calibration:"):     # said once it is stored
            raise KeyboardInterrupt

    run = tmp_path / "run"
    job = make_job(tiny_dataset, run, train=settings, cache_dir=tmp_path / "cache", workers=2,
                   progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(job, log=ctrl_c_after_calibration)
    assert "test_metrics" not in load_checkpoint(run / "model.safetensors").info
    assert not (run / "report.json").exists() and (run / ".finishing").exists()
    resumed = lrcn("train", "--resume", run, "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "training had ended (best epoch" in resumed.stdout
    done, expected = (load_checkpoint(r / "model.safetensors") for r in (run, whole))
    assert done.temperature == expected.temperature
    assert done.info["calibration"] == expected.info["calibration"]
    assert done.info["test_metrics"] == expected.info["test_metrics"]
    report, original = (json.loads((r / "report.json").read_text()) for r in (run, whole))
    assert report["confusion_matrix"] == original["confusion_matrix"]
    assert (run / "confusion_matrix.png").is_file() and (run / "curves.png").is_file()
    assert not (run / ".finishing").exists()
    again = lrcn("train", "--resume", run)
    assert again.returncode == 2 and "the run is finished" in again.stderr
    # a finished run whose checkpoint lacks figures (an older lrcn's, or --no-evaluate's)
    # is not evaluated behind the user's back: only a run stopped after training is finished
    from lrcn.models.checkpoint import save_checkpoint
    old = load_checkpoint(whole / "model.safetensors")
    info = {k: v for k, v in old.info.items() if k not in ("calibration", "test_metrics")}
    save_checkpoint(whole / "model.safetensors", old.build_model(), old.frame_config,
                    old.class_names, info, clip_seconds=old.clip_seconds)
    again = lrcn("train", "--resume", whole)
    assert again.returncode == 2 and "the run is finished" in again.stderr
