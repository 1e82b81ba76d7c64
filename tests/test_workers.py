"""The worker pool survives a crashing and a stalling task and finishes the rest."""
import os
import time

from lrcn.data.workers import run_tasks


def flaky(item):
    if item == "crash":
        os._exit(3)            # a decoder that takes its process down
    if item == "stall":
        time.sleep(60)         # a decoder that never returns
    if item == "raise":
        raise ValueError("bad input")
    if item == "disk":
        raise OSError(28, "No space left on device")
    return item.upper()


def test_crash_stall_and_error_are_reported_and_the_rest_finishes():
    items = ["a", "crash", "b", "stall", "c", "raise", "d", "disk"]
    start = time.monotonic()
    results = {r.item: r for r in run_tasks(flaky, items, workers=2, timeout=3)}
    assert time.monotonic() - start < 30
    assert {k: r.value for k, r in results.items() if r.error is None} == \
        {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert "crashed (exit code 3)" in results["crash"].error
    assert "timed out after 3 s" in results["stall"].error
    assert results["raise"].error == "ValueError: bad input"
    # an OSError is told apart (synthesis says a full disk in one line, a bug with its kind)
    assert results["disk"].os_error and "No space left" in results["disk"].error
    assert not any(results[k].os_error for k in ("raise", "crash", "stall"))


def test_inline_mode():
    results = list(run_tasks(flaky, ["x", "raise", "disk"], workers=0))
    assert results[0].value == "X" and "bad input" in results[1].error
    assert results[2].os_error and not results[1].os_error


def test_the_server_pool_fails_a_stall_as_timeout_and_a_crash_as_failed_and_lives_on():
    import pytest
    from lrcn.data.workers import WorkerPool
    from lrcn.errors import ErrorKind, LrcnError
    pool = WorkerPool(flaky, workers=1, timeout=2)
    try:
        with pytest.raises(LrcnError, match="timed out after 2 s") as stalled:
            pool.submit("stall").result(timeout=30)
        assert stalled.value.kind is ErrorKind.TIMEOUT
        with pytest.raises(LrcnError, match=r"crashed \(exit code 3\)") as crashed:
            pool.submit("crash").result(timeout=30)
        assert crashed.value.kind is ErrorKind.FAILED
        assert pool.submit("e").result(timeout=30) == "E"   # the lost processes were replaced
    finally:
        pool.close()


def test_a_script_without_a_main_guard_is_told_so_not_told_its_files_crashed(tiny_dataset,
                                                                              tmp_path):
    """Worker processes are spawned: each imports the user's script again, and one without
    `if __name__ == "__main__":` then runs lrcn again inside the worker, which dies starting.
    That is one error naming the cause, not every file reported as a decoder crash."""
    import subprocess
    import sys
    from pathlib import Path
    import lrcn
    # the package as this test imports it (CI's small environments put src/ on PYTHONPATH,
    # relative to the repository, which the scripts below do not run in)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(lrcn.__file__).parents[1])] + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    script = tmp_path / "noguard.py"
    script.write_text("import lrcn\n"
                      f"print(lrcn.check({str(tiny_dataset)!r}, cache={str(tmp_path / 'c')!r}, "
                      "workers=2, progress=False)['problems'])\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "worker processes die while starting (exit code 1)" in last, result.stderr[-2000:]
    assert 'if __name__ == "__main__":' in last
    guarded = tmp_path / "guarded.py"
    guarded.write_text("import lrcn\nif __name__ == '__main__':\n    " +
                       script.read_text().splitlines()[1] + "\n")
    result = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "too short" in result.stdout and "crash" not in result.stdout  # the tiny set's one
