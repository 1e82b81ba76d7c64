from pathlib import Path

import pytest

from lrcn.config import SplitConfig
from lrcn.data.dataset import Sample, discover, split_groups, split_samples


def groups(n, cls="A"):
    return [f"{cls}/g{i:02d}" for i in range(1, n + 1)]


@pytest.mark.parametrize("n, test_fraction, val_fraction, expected", [
    # n groups -> (train, val, test) group counts
    (25, 0.25, 0.2, (15, 4, 6)),
    (8, 0.25, 0.2, (5, 1, 2)),
    (4, 0.25, 0.2, (2, 1, 1)),
    (3, 0.25, 0.2, (1, 1, 1)),
    (2, 0.25, 0.2, (1, 0, 1)),   # too few for validation: train and test only
    (1, 0.25, 0.2, (1, 0, 0)),   # a lone group can only train
    (10, 0.0, 0.0, (10, 0, 0)),
    (10, 0.5, 0.0, (5, 0, 5)),
    (5, 0.9, 0.9, (1, 0, 4)),    # always at least one training group
])
def test_split_group_counts(n, test_fraction, val_fraction, expected):
    parts = split_groups({"A": groups(n)}, SplitConfig(test_fraction, val_fraction, seed=1))
    counts = tuple(sum(1 for p in parts.values() if p == name) for name in ("train", "val", "test"))
    assert counts == expected
    assert set(parts) == set(groups(n))


def test_split_is_deterministic_and_seeded():
    data = {"A": groups(12, "A"), "B": groups(9, "B")}
    first = split_groups(data, SplitConfig(seed=3))
    assert first == split_groups(data, SplitConfig(seed=3))
    assert first == split_groups({"B": list(reversed(data["B"])), "A": data["A"]}, SplitConfig(seed=3))
    assert any(split_groups(data, SplitConfig(seed=s)) != first for s in range(4, 10))


def test_clips_of_a_group_never_span_two_parts():
    samples = [Sample(Path(f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi"), c, f"{c}/g{g:02d}")
               for c in ("A", "B", "C") for g in range(1, 9) for k in range(1, 6)]
    split = split_samples(samples, SplitConfig())
    where = {}
    for part, members in split.items():
        for s in members:
            assert where.setdefault(s.group, part) == part
    assert sum(len(m) for m in split.values()) == len(samples)
    for c in ("A", "B", "C"):   # every class is in every part
        for part in ("train", "val", "test"):
            assert any(s.class_name == c for s in split[part])


def test_discover_groups_and_default_classes(tmp_path):
    for cls in ("WalkingWithDog", "TaiChi", "Swing", "HorseRace", "Basketball"):
        (tmp_path / cls).mkdir()
        for g, c in ((1, 1), (1, 2), (2, 1)):
            (tmp_path / cls / f"v_{cls}_g{g:02d}_c{c:02d}.avi").write_bytes(b"x")
    (tmp_path / "TaiChi" / "untagged.mp4").write_bytes(b"x")
    (tmp_path / "TaiChi" / "notes.txt").write_text("not a video")
    names, samples = discover(tmp_path)
    assert names == ["WalkingWithDog", "TaiChi", "Swing", "HorseRace"]   # the seed's four
    taichi = sorted(s.group for s in samples if s.class_name == "TaiChi")
    assert taichi == ["TaiChi/g01", "TaiChi/g01", "TaiChi/g02", "TaiChi/untagged.mp4"]
    names, _ = discover(tmp_path, ["basketball", "Swing"])              # case-insensitive
    assert names == ["Basketball", "Swing"]
