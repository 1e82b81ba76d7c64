"""examples/tutorial.ipynb runs from top to bottom, as a reader would run it, and its cells'
own assertions hold (a failing cell fails the test with the cell's error)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs lrcn[test]")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs lrcn[test]")
pytest.importorskip("ipykernel", reason="the notebook test needs lrcn[test]")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tutorial.ipynb"


def test_the_tutorial_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_tutorial_runs(tmp_path, monkeypatch):
    # A kernel on this very interpreter (and its PYTHONPATH), whatever kernels are installed.
    spec = tmp_path / "jupyter" / "kernels" / "lrcn-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lrcn test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "run"
    work.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="lrcn-test",
                            resources={"metadata": {"path": str(work)}}).execute()
    seconds = time.perf_counter() - start
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "test accuracy" in outputs and "timeline:" in outputs
    images = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == 3                  # curves, confusion matrix, timeline
    assert (work / "tutorial" / "run" / "model.onnx").exists()
    assert seconds < 300, f"the tutorial took {seconds:.0f} s"
