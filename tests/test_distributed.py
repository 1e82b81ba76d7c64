"""Data-parallel training with torchrun on this machine's CPUs (gloo): the same losses as one
process, two "nodes" on 127.0.0.1 making one run, a rank killed mid-run taking the others down
with a message, and a distributed run resumed after a kill."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

# Dropout off: with it, every process draws its own masks (by design), so only the gradient
# arithmetic can be compared to 1e-4.
COMMON = ["--epochs", "4", "--patience", "10", "--seed", "3", "--batch-size", "4",
          "--no-evaluate", "--quiet", "--workers", "1"]


def history(run: Path) -> list[dict[str, float]]:
    lines = (run / "history.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")))) for line in lines[1:]]


def run(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    path = tmp_path_factory.mktemp("settings") / "nodrop.json"
    path.write_text(json.dumps({"model": {"dropout": 0.0}}))
    return path


@pytest.fixture(scope="module")
def single(tiny_dataset, settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    result = run("-m", "lrcn", "train", tiny_dataset, "--out", out, "--config", settings,
                 "--cache", out.parent / "cache", *COMMON)
    assert result.returncode == 0, result.stderr
    return out


def same_run(ours: Path, theirs: Path) -> None:
    a, b = history(ours), history(theirs)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert x[key] == pytest.approx(y[key], abs=1e-4), (key, x, y)
    assert json.loads((ours / "split.json").read_text()) == \
        json.loads((theirs / "split.json").read_text())


@pytest.mark.parametrize("argv", [
    ["train", "D", "--nproc", "2", "--epochs", "3"],
    ["train", "D", "--nproc=2", "--epochs", "3"],
    ["train", "D", "--npr", "2", "--epochs", "3"],      # argparse's abbreviation of --nproc
    ["train", "--npro=2", "D", "--epochs", "3"],
])
def test_the_nproc_command_is_the_same_command_under_torchrun(argv):
    from lrcn.distributed import torchrun_command
    assert torchrun_command(argv, 2, python="python3") == [
        "python3", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "lrcn", "train", "D", "--epochs", "3"]


def test_nproc_under_torchrun_is_refused(tiny_dataset, tmp_path):
    """Under torchrun (which sets WORLD_SIZE), --nproc would start processes in processes."""
    import os
    result = subprocess.run([sys.executable, "-m", "lrcn", "train", str(tiny_dataset),
                             "--nproc", "2", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "WORLD_SIZE": "2"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == "lrcn: error: --nproc is for starting processes; under torchrun, leave it out"
    assert not (tmp_path / "run").exists()


def test_two_processes_train_as_one(tiny_dataset, settings, single, tmp_path):
    out = tmp_path / "run"
    result = run("-m", "lrcn", "train", tiny_dataset, "--out", out, "--config", settings,
                 "--cache", tmp_path / "cache", "--nproc", "2", *COMMON)
    assert result.returncode == 0, result.stderr
    assert "torch.distributed.run --standalone --nproc-per-node 2" in result.stderr
    assert result.stdout.count("trained 4 epochs") == 1          # rank 0 speaks
    same_run(out, single)
    config = json.loads((out / "config.json").read_text())
    assert config["processes"] == 2
    # the cache was filled in shares: every clip decoded once, by one of the ranks
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 24


def test_two_nodes_on_one_machine_make_one_run(tiny_dataset, settings, single, tmp_path):
    out, port = tmp_path / "run", free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
         "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
         "--rdzv-id", "lrcn-test", "-m", "lrcn", "train", str(tiny_dataset), "--out",
         str(out), "--config", str(settings), "--cache", str(tmp_path / "cache"), *COMMON],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outputs]
    assert sum(stdout.count("trained 4 epochs") for stdout, _ in outputs) == 1
    same_run(out, single)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_rank_killed_mid_run_stops_the_others_with_a_message(tiny_dataset, settings,
                                                              tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", "-m", "lrcn", "train", str(tiny_dataset), "--out", str(out), "--config",
         str(settings), "--cache", str(tmp_path / "cache"), "--epochs", "40", "--patience",
         "40", "--no-evaluate", "--quiet", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "history.csv").exists() or len(history(out)) < 2:
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.05)
    ranks = _children(launcher.pid)
    assert len(ranks) == 2
    killed = time.monotonic()
    subprocess.run(["kill", "-KILL", str(ranks[1])])
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    assert time.monotonic() - killed < 60
    assert "Signal 9 (SIGKILL)" in stderr or "exitcode" in stderr, stderr[-2000:]
    for pid in ranks:
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    # and the run goes on from its last saved epoch, in two processes again
    done = len(history(out))
    resumed = run("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "lrcn", "train", "--resume", out, "--no-evaluate", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stdout
    assert len(history(out)) == 40 and done >= 2


def test_a_failing_nproc_run_ends_in_its_own_lines_not_the_launchers_traceback(
        tiny_dataset, settings, tmp_path):
    """`--nproc 2` with a learning rate that diverges: each process says why in one line, and
    the launcher (run in lrcn's process) adds one line, not torchrun's ChildFailedError trace."""
    result = run("-m", "lrcn", "train", tiny_dataset, "--out", tmp_path / "run", "--config",
                 settings, "--cache", tmp_path / "cache", "--nproc", "2", "--lr", "1e30",
                 "--epochs", "2", "--no-evaluate", "--quiet", "--workers", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert "training diverged at epoch 1" in result.stderr
    assert "lrcn: error: training process" in result.stderr.splitlines()[-1]
