"""`lrcn demo` end to end, as a newcomer runs it: real synthetic videos, training, an honest
group-aware evaluation and an annotated prediction. Slow (a few minutes on 2 cores)."""
import json
import subprocess
import sys

import av
import pytest


@pytest.mark.slow
def test_demo_reaches_90_percent_including_the_time_reversed_pairs(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "lrcn", "demo", "--out", str(out), "--quiet"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "demo.json").read_text())
    report = json.loads((out / "run" / "report.json").read_text())
    assert summary["test_accuracy"] == report["accuracy"] >= 0.9
    names = report["classes"]
    matrix = report["confusion_matrix"]
    for a, b in (("SlideLeft", "SlideRight"), ("Grow", "Shrink")):
        i, j = names.index(a), names.index(b)
        pair_total = sum(matrix[i]) + sum(matrix[j])
        pair_correct = matrix[i][i] + matrix[j][j]
        assert pair_correct / pair_total >= 0.9, (a, b, matrix)
    with av.open(summary["annotated_video"]) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    for key in ("checkpoint", "report", "confusion_matrix", "curves", "history"):
        assert key.replace("_", " ") in result.stdout and summary[key] in result.stdout
    print(f"demo: {summary['seconds']} s, test accuracy {report['accuracy']:.3f}")
