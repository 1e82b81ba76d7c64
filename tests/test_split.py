from pathlib import Path

import pytest

from lrcn.config import SplitConfig
from lrcn.data.dataset import Sample, discover
from lrcn.data.split import random_split, source_of, split_groups, split_samples, split_sources


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


def _parts_per_class(parts, classes_by_source, classes):
    return {c: tuple(sum(1 for s, p in parts.items() if p == part and c in classes_by_source[s])
                     for part in ("train", "val", "test")) for c in classes}


def test_sources_across_classes_get_each_class_its_quotas_when_every_source_holds_every_class():
    """Webcam sessions that each recorded every class: a session is on one side for all its
    classes, and each class gets split_groups' counts for its number of sessions."""
    for n in (2, 3, 4, 8, 25):
        sessions = {f"g{i:02d}": ["Wave", "Clap", "Jump"] for i in range(1, n + 1)}
        for seed in range(5):
            config = SplitConfig(seed=seed)
            parts = split_sources(sessions, config)
            assert set(parts) == set(sessions)
            per_class = split_groups({"A": [f"A/{s}" for s in sessions]}, config)
            expected = tuple(sum(1 for p in per_class.values() if p == part)
                             for part in ("train", "val", "test"))
            assert set(_parts_per_class(parts, sessions, ["Wave", "Clap", "Jump"]).values()) == \
                {expected}
            assert parts == split_sources(dict(reversed(sessions.items())), config)


def test_sources_of_mixed_classes_keep_a_training_source_in_every_class():
    """Long videos cut into clips of different pairs of classes: whatever the seed, every class
    keeps a training source and gets a test source (here one exists for each)."""
    videos = {"g01": ["Jump", "Spin"], "g02": ["Jump", "Spin"], "g03": ["Spin", "Wave"],
              "g04": ["Wave"], "g05": ["Jump", "Wave"], "g06": ["Clap"], "g07": ["Clap"]}
    for seed in range(30):
        parts = split_sources(videos, SplitConfig(seed=seed))
        for name, (train, val, test) in _parts_per_class(
                parts, videos, ["Jump", "Spin", "Wave", "Clap"]).items():
            assert train >= 1 and test >= 1, (seed, name, train, val, test)


def test_a_split_across_classes_never_puts_one_source_on_two_sides():
    """The studio's case: per class, session g01 may test Wave while training Clap, so the
    model has seen the session's person and room; across classes it cannot."""
    samples = [Sample(Path(f"{c}/v_{c}_g{g:02d}_c{k:02d}.mp4"), c, f"{c}/g{g:02d}")
               for c in ("Wave", "Clap") for g in (1, 2) for k in (1, 2)]
    samples.append(Sample(Path("Clap/untagged.mp4"), "Clap", "Clap/untagged.mp4"))
    leaks = 0
    for seed in range(20):
        config = SplitConfig(test_fraction=0.25, val_fraction=0.0, seed=seed)
        per_class = split_samples(samples, config)
        sides = {}
        for part, members in per_class.items():
            for s in members:
                sides.setdefault(s.group.split("/")[-1], set()).add(part)
        leaks += any(len(v) > 1 for v in sides.values())
        across = split_samples(samples, SplitConfig(test_fraction=0.25, val_fraction=0.0,
                                                    seed=seed, across_classes=True))
        sides = {}
        for part, members in across.items():
            for s in members:
                sides.setdefault(s.group.split("/")[-1], set()).add(part)
        assert all(len(v) == 1 for v in sides.values()), (seed, sides)
        assert sum(map(len, across.values())) == len(samples)
        for c in ("Wave", "Clap"):
            assert any(s.class_name == c for s in across["train"])
            assert any(s.class_name == c for s in across["test"])
    assert leaks > 0      # the per-class split does leak here, so the check above can fail


def test_a_source_is_the_group_without_its_class_and_an_untagged_file_is_its_own():
    """The source of a clip: its group tag from the file name or from a list's group column
    (one session, whatever the files are called); a file with neither is a source of its own,
    even beside a file of the same name in another class. The tutorial's random split stays
    random with groups across classes."""
    listed = [Sample(Path("a/x1.mp4"), "Wave", "Wave/sess1"), Sample(Path("b/y.mp4"), "Clap",
                                                                     "Clap/sess1")]
    assert {source_of(s) for s in listed} == {"sess1"}
    assert source_of(Sample(Path("Wave/v_Wave_g07_c01.mp4"), "Wave", "Wave/g07")) == "g07"
    own = [Sample(Path(f"{c}/clip.mp4"), c, f"{c}/clip.mp4") for c in ("Wave", "Clap")]
    assert [source_of(s) for s in own] == ["Wave/clip.mp4", "Clap/clip.mp4"]
    samples = [Sample(Path(f"{c}/v_{c}_g{g:02d}_c{k:02d}.mp4"), c, f"{c}/g{g:02d}")
               for c in ("Wave", "Clap") for g in (1, 2) for k in range(1, 9)]
    parts = random_split(samples, SplitConfig(across_classes=True))
    assert all(parts[p] for p in ("train", "val", "test"))     # not one part per group


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


def test_dropping_a_small_class_across_classes_checks_the_others_again(tmp_path):
    """Across classes, dropping a class moves the groups it shared: training's check
    (data.check.screen with --drop-small-classes) runs again until every class it keeps has
    every part. Here B is short of a validation group; dropping it leaves C short too."""
    from lrcn.data.cache import CachedClip
    from lrcn.data.check import screen, small_classes
    sources = {"g01": "CD", "g02": "ABD", "g03": "ACD", "g04": "AD", "g05": "AC", "g06": "A",
               "g07": "BCD"}
    clips = [CachedClip(Sample(Path(f"{c}/v_{c}_{g}_c01.mp4"), c, f"{c}/{g}"),
                        tmp_path / "x.npy", 20, 10.0) for g, cs in sources.items() for c in cs]
    config = SplitConfig(across_classes=True, drop_small_classes=True)
    names = ["A", "B", "C", "D"]
    assert list(small_classes([c.sample for c in clips], names, config)) == ["B"]
    screened = screen(names, clips, [], [], config, tmp_path)
    assert screened.refusal is None, screened.refusal
    assert screened.class_names == ["A", "D"], screened.notes
    assert not small_classes([c.sample for c in screened.clips], screened.class_names, config)
