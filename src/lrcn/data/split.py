"""Group-aware splits: which clips train, validate and test.

Pure and deterministic functions of the samples and SplitConfig (seeded generators, sorted
inputs), so a split can be tested and repeated: clips of one group (cut from one longer video)
never land on two sides, and with SplitConfig.across_classes neither do clips of one source
that span classes. The tutorial's random split is here too, for comparison only.
"""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..config import SplitConfig
from .dataset import Sample


def split_train_val(samples: Sequence[Sample], config: SplitConfig) -> dict[str, list[Sample]]:
    """Validation groups out of a fixed training list (the official lists have no validation
    part): the same group-aware rule as split_groups with no test share."""
    return split_samples(samples, replace(config, test_fraction=0.0))


def split_data(samples: Sequence[Sample], split: SplitConfig,
               test_listed: set[Path] | None = None, ucf_split: int | None = None
               ) -> tuple[dict[str, list[Sample]], str]:
    """`find_data`'s samples (those to use) -> {"train", "val", "test"} and a description of
    the split: by group, or with `test_listed`, the official test list as published and
    validation groups out of the training list."""
    if test_listed is None:
        return split_samples(samples, split), \
            "split by group" + (" across classes" if split.across_classes else "")
    train = [s for s in samples if s.path not in test_listed]
    parts = {**split_train_val(train, split), "test": [s for s in samples
                                                       if s.path in test_listed]}
    return parts, f"official split {ucf_split} (test list as published; validation groups " \
                  "from the training list)"


def split_groups(groups_by_class: dict[str, Sequence[str]], config: SplitConfig
                 ) -> dict[str, str]:
    """Assign every group to "train", "val" or "test"; all clips of a group share its part.

    Pure and deterministic: per class, the sorted groups are shuffled with a generator seeded
    by (seed, class), then round(n * test_fraction) go to test and round(rest * val_fraction)
    to validation. A class keeps at least one training group; with at least two groups it gets
    one test group when test_fraction > 0, and with at least two left, one validation group when
    val_fraction > 0.
    """
    parts: dict[str, str] = {}
    for class_name in sorted(groups_by_class):
        groups = sorted(set(groups_by_class[class_name]))
        random.Random(f"{config.seed}:{class_name}").shuffle(groups)
        n_test, n_val = _quotas(len(groups), config)
        for i, group in enumerate(groups):
            parts[group] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return parts


def split_sources(classes_by_source: dict[str, Sequence[str]], config: SplitConfig
                  ) -> dict[str, str]:
    """Assign every source (a group tag that may span classes: one webcam session, one long
    video cut into clips of several actions) to "train", "val" or "test", all its classes
    with it, so that no source is seen in training and tested on in another class.

    Pure and deterministic. Each class's quotas are split_groups' for its number of sources.
    The sorted sources are shuffled with a generator seeded by the seed; in that order each
    goes to test while every one of its classes is under its test quota; then a class still
    under it takes a training source of its own whose every class keeps another training
    source (first one that puts no other class over its quota or under its training share);
    then validation, the same way, but only with such a source. So every class keeps a
    training source, and when every source holds every class, each class gets exactly its
    quotas; otherwise sources shared with other classes may leave a class short of a quota
    or put one over it, but are never split."""
    members = {source: set(classes) for source, classes in classes_by_source.items()}
    counts: dict[str, int] = {}
    for classes in members.values():
        for name in classes:
            counts[name] = counts.get(name, 0) + 1
    quota = {name: dict(zip(("test", "val"), _quotas(n, config))) for name, n in counts.items()}
    sources = sorted(members)
    random.Random(f"{config.seed}:sources").shuffle(sources)
    parts = {source: "train" for source in sources}
    taken = {name: {"train": n, "val": 0, "test": 0} for name, n in counts.items()}

    def cost(source: str, part: str) -> tuple[int, int]:
        others = members[source]
        return (sum(taken[c][part] >= quota[c][part] for c in others),
                sum(taken[c]["train"] <= counts[c] - quota[c]["test"] - quota[c]["val"]
                    for c in others))

    def move(source: str, part: str) -> None:
        for name in members[source]:
            taken[name]["train"] -= 1
            taken[name][part] += 1
        parts[source] = part

    for part in ("test", "val"):
        for source in sources:
            if parts[source] == "train" and all(taken[c][part] < quota[c][part] and
                                                taken[c]["train"] >= 2 for c in members[source]):
                move(source, part)
        for name in sorted(counts):
            while taken[name][part] < quota[name][part]:
                # a training source of this class whose classes all keep one to train on;
                # first one that puts no other class over this part's quota or under its
                # training share; for validation only such a one (a test part matters more)
                spares = sorted((cost(s, part), i) for i, s in enumerate(sources)
                                if parts[s] == "train" and name in members[s]
                                and all(taken[c]["train"] >= 2 for c in members[s]))
                if not spares or (part == "val" and spares[0][0] != (0, 0)):
                    break
                move(sources[spares[0][1]], part)
    return parts


def _quotas(n: int, config: SplitConfig) -> tuple[int, int]:
    """(test, validation) groups of a class of `n`: split_groups' rule."""
    n_test = round(n * config.test_fraction)
    if config.test_fraction > 0 and n >= 2:
        n_test = max(1, n_test)
    n_test = min(n_test, n - 1)
    rest = n - n_test
    n_val = round(rest * config.val_fraction)
    if config.val_fraction > 0 and rest >= 2:
        n_val = max(1, n_val)
    return n_test, min(n_val, rest - 1)


def named_source(sample: Sample) -> str | None:
    """The source a sample names, across classes: its group without the class ("g07" of
    "Wave/g07", the tag of its file name or a list's group column); None for a file with
    neither (cross-validation holds out named sources only)."""
    tag = sample.group.split("/", 1)[-1]
    return None if tag == sample.path.name else tag


def source_of(sample: Sample) -> str:
    """The sample's source across classes: the one it names, or its whole group for a file
    that names none (such a file is a source of its own, even if another class has one of its
    name)."""
    return named_source(sample) or sample.group


def split_samples(samples: Sequence[Sample], config: SplitConfig) -> dict[str, list[Sample]]:
    if config.across_classes:
        classes_by_source: dict[str, list[str]] = {}
        for sample in samples:
            classes_by_source.setdefault(source_of(sample), []).append(sample.class_name)
        parts = split_sources(classes_by_source, config)
        part_of = {s.path: parts[source_of(s)] for s in samples}
    else:
        groups_by_class: dict[str, list[str]] = {}
        for sample in samples:
            groups_by_class.setdefault(sample.class_name, []).append(sample.group)
        groups = split_groups(groups_by_class, config)
        part_of = {s.path: groups[s.group] for s in samples}
    split: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for sample in samples:
        split[part_of[sample.path]].append(sample)
    return split


def random_split(samples: Sequence[Sample], config: SplitConfig) -> dict[str, list[Sample]]:
    """The tutorial's split, for comparison only: clips drawn at random (per class), ignoring
    their groups, so near-duplicate clips of one video land on both sides and inflate test
    accuracy. The same rule as split_samples with every clip its own group."""
    own = {sample.path: Sample(sample.path, sample.class_name, str(sample.path))
           for sample in samples}
    parts = split_samples(list(own.values()), replace(config, across_classes=False))
    originals = {sample.path: sample for sample in samples}
    return {part: [originals[s.path] for s in members] for part, members in parts.items()}


__all__ = ["named_source", "random_split", "source_of", "split_data", "split_groups",
           "split_samples", "split_sources", "split_train_val"]
