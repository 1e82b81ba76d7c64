"""Evaluation figures, exactly, on a hand-made set of predictions."""
import numpy as np
import pytest

from lrcn.training.evaluate import format_report, metrics

NAMES = ["a", "b", "c"]
TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2]
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],    # a -> a
    [0.6, 0.3, 0.1],    # a -> a
    [0.3, 0.6, 0.1],    # a -> b
    [0.1, 0.6, 0.3],    # b -> b
    [0.05, 0.35, 0.6],  # b -> c, but its group's mean says b
    [0.1, 0.2, 0.7],    # c -> c
    [0.2, 0.1, 0.7],    # c -> c
    [0.1, 0.1, 0.8],    # c -> c
    [0.5, 0.1, 0.4],    # c -> a
])
GROUPS = ["a/g1", "a/g1", "a/g2", "b/g1", "b/g1", "c/g1", "c/g1", "c/g1", "c/g2"]


def test_metrics_of_a_hand_made_confusion():
    report = metrics(NAMES, TRUE, PROBABILITIES, GROUPS)
    assert report["confusion_matrix"] == [[2, 1, 0],
                                          [0, 1, 1],
                                          [1, 0, 3]]
    assert report["num_clips"] == 9
    assert report["accuracy"] == pytest.approx(6 / 9)
    # precision: the diagonal over each column; recall: over each row
    expected = {"a": (2 / 3, 2 / 3, 3), "b": (1 / 2, 1 / 2, 2), "c": (3 / 4, 3 / 4, 4)}
    for name, (precision, recall, support) in expected.items():
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
        assert row["support"] == support
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 3 / 4) / 3)
    # groups: a/g1 right, a/g2 wrong, b/g1 right by its mean (0.475 b vs 0.45 c), c/g1 right,
    # c/g2 wrong
    assert report["num_groups"] == 5
    assert report["group_accuracy"] == pytest.approx(3 / 5)


def test_a_class_never_predicted_or_never_present_gives_zeros_not_errors():
    report = metrics(NAMES, [0, 0, 1], np.array([[0.9, 0.1, 0.0]] * 3), ["x", "x", "y"])
    assert report["confusion_matrix"] == [[2, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                        "support": 1}
    assert report["per_class"]["c"]["support"] == 0
    assert report["group_accuracy"] == pytest.approx(1 / 2)


def test_the_printed_report_shows_the_figures():
    text = format_report(metrics(NAMES, TRUE, PROBABILITIES, GROUPS))
    lines = text.splitlines()
    assert lines[0] == ("accuracy 0.667 on 9 clips (group-level 0.600 on 5 groups), "
                        "macro F1 0.639")
    assert lines[-4:] == ["                 a   b   c",          # the columns are named
                          "  a              2   1   0", "  b              0   1   1",
                          "  c              1   0   3"]


def test_a_data_folder_names_the_models_classes_exactly_first_then_in_any_case(tmp_path):
    """evaluate --data: a folder named exactly as a class is that class, even where another
    class differs from it only in case; otherwise a folder in another case is the class."""
    import io
    import shutil
    from conftest import indexed_frame, write_video
    from lrcn.training.evaluate import _data_samples
    video = write_video(tmp_path / "v.avi", [indexed_frame(i, 64, 48) for i in range(25)])
    for folder in ("Walk", "walk", "RUN", "Swim"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        shutil.copy(video, tmp_path / "data" / folder / f"v_{folder}_g01_c01.avi")
    note = io.StringIO()
    samples = _data_samples(["walk", "Walk", "Run"], tmp_path / "data", note)
    assert sorted((s.path.parent.name, s.class_name) for s in samples) == [
        ("RUN", "Run"), ("Walk", "Walk"), ("walk", "walk")]
    assert note.getvalue().strip().endswith("left out, not classes the model knows: Swim")
