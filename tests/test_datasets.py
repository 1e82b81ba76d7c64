"""Data sets as they come: the official UCF101 split lists (Windows line endings, class names
in another case), `path,label` lists, leave-one-group-out cross-validation and `lrcn check`,
on real (small, synthetic) video files."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import indexed_frame, write_video
from test_video import _patch_avi_frame_count


def lrcn(*args):
    return subprocess.run([sys.executable, "-m", "lrcn", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def clips_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)).replace("\\", "/") for p in root.rglob("v_*")
                  if p.suffix in (".avi", ".mp4"))


@pytest.fixture
def ucf101_layout(tiny_dataset, tmp_path):
    """The tiny set plus official-style split lists: classInd in another case than the
    folders, CRLF line endings, a BOM, file paths in the lists' case, a missing listed file."""
    data = tmp_path / "UCF-101"
    shutil.copytree(tiny_dataset, data)
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    names = ["SlideRight", "SlideLeft", "Grow", "Bounce"]
    spelled = {"SlideRight": "SLIDERIGHT", "SlideLeft": "slideleft", "Grow": "Grow",
               "Bounce": "BOUNCE"}
    (lists / "classInd.txt").write_bytes(
        ("\ufeff" + "".join(f"{i} {spelled[n]}\r\n" for i, n in enumerate(names, 1)))
        .encode("utf-8"))
    train, test = [], []
    for rel in clips_of(data):
        cls = rel.split("/")[0]
        listed = rel.replace(cls, spelled[cls])     # the lists' spelling, not the folders'
        if "_g01_" in rel:
            test.append(listed)
        else:
            train.append(f"{listed} {names.index(cls) + 1}")
    train.append("Grow/v_Grow_g09_c01.avi 3")        # listed, not on disk
    (lists / "trainlist01.txt").write_bytes("\r\n".join(train).encode() + b"\r\n")
    (lists / "testlist01.txt").write_bytes("\r\n".join(test).encode() + b"\r\n")
    return data, lists


def test_official_split_lists(ucf101_layout, tmp_path):
    data, lists = ucf101_layout
    run = tmp_path / "run"
    result = lrcn("train", data, "--split", "1", "--lists", lists, "--out", run, "--epochs", "1",
                  "--quiet", "--no-evaluate")
    assert result.returncode == 0, result.stderr
    assert "official split 1" in result.stdout
    assert "v_Grow_g09_c01.avi: listed in trainlist01.txt but missing" in result.stderr
    split = json.loads((run / "split.json").read_text())
    test = {e["path"] for e in split["test"]}
    assert test == {p for p in clips_of(data) if "_g01_" in p}
    others = {e["path"] for e in split["train"] + split["val"]}
    assert others == {p for p in clips_of(data) if "_g01_" not in p}
    assert split["val"], "validation groups come out of the training list"
    # folder names, not the lists' spelling, name the classes
    assert {e["class"] for e in split["train"]} == {"SlideRight", "SlideLeft", "Grow", "Bounce"}
    # lists found next to the data without --lists; a split that does not exist is an error
    shutil.copytree(lists, data / "ucfTrainTestlist")
    bad = lrcn("train", data, "--split", "2", "--epochs", "1", "--quiet")
    assert bad.returncode == 2
    assert "trainlist02.txt: no such split list" in bad.stderr


def test_path_label_list(tiny_dataset, tmp_path):
    listing = tmp_path / "lists" / "mine.csv"
    listing.parent.mkdir()
    rows = ["path,label"]
    for rel in clips_of(tiny_dataset):
        if rel.startswith(("Grow/", "Bounce/")):
            label = "expanding" if rel.startswith("Grow/") else "bouncing"
            rows.append(f"{tiny_dataset / rel},{label}")
    rows.append(f"{tmp_path / 'gone.avi'},bouncing")
    listing.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    result = lrcn("train", listing, "--out", run, "--epochs", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "gone.avi: listed in mine.csv but missing" in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["classes"] == ["bouncing", "expanding"]  # in order of first appearance
    split = json.loads((run / "split.json").read_text())
    groups = {part: {e["group"] for e in split[part]} for part in ("train", "val", "test")}
    assert not (groups["train"] & groups["test"]) and not (groups["val"] & groups["test"])
    assert (run / "report.json").exists()
    # a video given as DATA was read as a list, and its error quoted the file's bytes
    video = tiny_dataset / clips_of(tiny_dataset)[0]
    result = lrcn("check", video)
    assert result.returncode == 2 and result.stderr.strip().endswith(
        f"{video}: is a video: a data set is a folder of class folders of videos, or a "
        "path,label list"), result.stderr


def test_leave_one_group_out(tiny_dataset, tmp_path):
    out = tmp_path / "cv"
    result = lrcn("cv", tiny_dataset, "--folds", "1,g03", "--out", out, "--epochs", "1",
                  "--quiet", "--classes", "SlideRight,Grow,Bounce")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "cv.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == ["g01", "g03"]
    for fold in summary["folds"]:
        split = json.loads((out / f"fold-{fold['fold']}" / "split.json").read_text())
        assert {e["group"].split("/")[1] for e in split["test"]} == {fold["fold"]}
        assert fold["fold"] not in {e["group"].split("/")[1]
                                    for e in split["train"] + split["val"]}
        assert fold["test_clips"] == 3 * 2
    mean = sum(f["accuracy"] for f in summary["folds"]) / 2
    assert summary["mean_accuracy"] == pytest.approx(mean)
    assert "mean accuracy" in result.stdout and "+-" in result.stdout
    assert (out / "cv.csv").read_text().startswith("fold,test_clips,accuracy")
    bad = lrcn("cv", tiny_dataset, "--folds", "7", "--epochs", "1", "--quiet")
    assert bad.returncode == 2 and "no group g07" in bad.stderr


def test_check_reports_counts_and_every_problem(tiny_dataset, tmp_path):
    data = tmp_path / "salted"
    shutil.copytree(tiny_dataset, data)
    (data / "Grow" / "v_Grow_g05_c01.avi").write_bytes(b"")
    (data / "Grow" / "v_Grow_g05_c02.avi").write_text("not a video")
    write_video(data / "Bounce" / "v_Bounce_g06_c01.avi",
                [indexed_frame(i, 96, 72) for i in range(9)])
    liar = write_video(data / "Bounce" / "v_Bounce_g06_c02.avi",
                       [indexed_frame(i, 96, 72) for i in range(40)])
    _patch_avi_frame_count(liar, 3)
    result = lrcn("check", data)
    assert result.returncode == 1, result.stderr   # unreadable files: non-zero
    out = result.stdout
    assert "v_Grow_g05_c01.avi: empty file (0 bytes)" in out
    assert "v_Grow_g05_c02.avi: not a readable video" in out
    assert "v_Bounce_g06_c01.avi: too short: 9 frames (< 20" in out
    assert "v_Bounce_g06_c02.avi: header claims 120 frames, 40 decoded" in out
    report = json.loads(lrcn("check", data, "--json").stdout)
    rows = {r["class"]: r for r in report["classes"]}
    assert rows["SlideRight"]["clips"] == 6 and rows["SlideRight"]["groups"] == 3
    assert rows["Grow"]["clips"] == 8 and rows["Grow"]["readable"] == 6
    assert rows["Bounce"]["frames"][0] == 9
    assert 1.0 <= rows["SlideRight"]["seconds"][0] <= rows["SlideRight"]["seconds"][1] <= 2.1
    # The untouched set: only what its manifest says is there, its clips of under 20 frames
    # (made at 15 fps from 1-2 s), reported as short, which is a warning (exit 0).
    clean = lrcn("check", tiny_dataset)
    assert clean.returncode == 0, clean.stderr
    rows = [line.split(",") for line in (tiny_dataset / "manifest.csv").read_text().split()[1:]]
    short = [(path, int(frames)) for path, _, _, _, frames, _ in rows if int(frames) < 20]
    problems = [line for line in clean.stdout.splitlines() if str(tiny_dataset) in line]
    assert sorted(problems) == sorted(
        f"  too short   {tiny_dataset / path}: too short: {frames} frames (< 20; frames are repeated to "
        "fill the clip)" for path, frames in short), clean.stdout
    assert short or "no problems found" in clean.stdout


def test_check_takes_the_frame_settings_train_takes_and_warms_its_cache(tiny_dataset,
                                                                          tmp_path):
    from lrcn.data.cache import prepare
    from lrcn.config import FrameConfig
    from lrcn.data.dataset import discover
    cache = tmp_path / "cache"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"frames": {"num_frames": 8, "channel_order": "bgr"}}))
    result = lrcn("check", tiny_dataset, "--cache", cache, "--size", "48x32", "--config",
                  settings, "--quiet")
    assert result.returncode == 0, result.stderr
    # 8 frames per clip here: every clip is long enough (a 20-frame check would say so too)
    assert "no problems found" in result.stdout
    entries = sorted(cache.rglob("*.json"))
    assert len(entries) == 24
    # `lrcn train --size 48x32 --config settings.json` finds every clip decoded already
    _, samples = discover(tiny_dataset)
    clips, failures = prepare(samples, FrameConfig(num_frames=8, height=32, width=48,
                                                   channel_order="bgr"),
                              cache_dir=cache, workers=0, progress=False)
    assert len(clips) == 24 and not failures
    assert sorted(cache.rglob("*.json")) == entries            # nothing new was decoded
    assert np.load(clips[0].frames_path).shape == (8, 32, 48, 3)


def stalling_video(path: Path, hole_gib: int = 64) -> Path:
    """A real file that stalls the decoder: a valid raw MPEG-4 stream followed by a sparse
    hole of zeros (what an interrupted download into a preallocated file leaves). FFmpeg's
    parser searches the zeros for the next start code, a few seconds per GiB; the hole costs
    no disk."""
    import av
    import numpy as np
    with av.open(str(path), "w", format="m4v") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(30):
            image = np.full((48, 64, 3), i * 8, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size + (hole_gib << 30))
    return path


def test_a_file_that_stalls_the_decoder_is_reported_and_the_rest_checked(tiny_dataset,
                                                                         tmp_path):
    import time
    data = tmp_path / "stall"
    shutil.copytree(tiny_dataset, data)
    stalled = stalling_video(data / "Grow" / "v_Grow_g07_c01.m4v")
    assert stalled.stat().st_size > 64 << 30
    start = time.monotonic()
    result = lrcn("check", data, "--decode-timeout", "3", "--cache", tmp_path / "cache")
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stderr
    assert "v_Grow_g07_c01.m4v: timed out after 3 s (decoder stalled)" in result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < 60   # bounded: the stall costs its timeout, not the hour it would take
    # The stall is remembered with its limit: a rerun does not wait again; a longer limit
    # retries the file (and remembers the new limit).
    stalls = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")
              if "stalled_after" in p.read_text()]
    assert stalls == [{"error": "timed out after 3 s (decoder stalled)", "stalled_after": 3.0}]
    report = json.loads(lrcn("check", data, "--json", "--decode-timeout", "3",
                             "--cache", tmp_path / "cache").stdout)
    rows = {r["class"]: r for r in report["classes"]}
    assert rows["Grow"]["clips"] == 7 and rows["Grow"]["readable"] == 6
    assert all(rows[c]["readable"] == rows[c]["clips"] == 6 for c in ("SlideRight", "Bounce"))
    assert any("decoder stalled" in p["cause"] for p in report["problems"])
    again = lrcn("check", data, "--decode-timeout", "4", "--cache", tmp_path / "cache")
    assert "timed out after 4 s (decoder stalled)" in again.stdout
    stalls = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")
              if "stalled_after" in p.read_text()]
    assert [s["stalled_after"] for s in stalls] == [4.0]


def test_train_lists_a_stalled_file_before_the_split_and_never_waits_for_it_again(
        tiny_dataset, tmp_path):
    """--decode-timeout holds in data prep, and a file that stalled under it is listed with
    that limit and left out of the split (the data is checked before the split), so neither
    calibration nor the test evaluation decodes it again under the 120 s default."""
    import time
    data = tmp_path / "stall"
    shutil.copytree(tiny_dataset, data)
    stalled = stalling_video(data / "Grow" / "v_Grow_g07_c01.m4v")
    start = time.monotonic()
    # 10 s: ordinary clips decode well within it even on a loaded machine, the stall never
    result = lrcn("train", data, "--out", tmp_path / "run", "--decode-timeout", "10",
                  "--epochs", "1", "--frames", "4", "--workers", "2",
                  "--quiet")
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert f"{stalled}: timed out after 10 s (decoder stalled)" in result.stderr  # data prep
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    everywhere = [e["path"] for part in ("train", "val", "test") for e in split[part]]
    assert len(everywhere) == 24 and "Grow/v_Grow_g07_c01.m4v" not in everywhere
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["skipped"] == [] and report["num_clips"] == len(split["test"])
    assert elapsed < 100   # the 120 s default was never waited for


def test_a_class_asked_for_twice_is_refused_for_folders_and_lists_alike(tiny_dataset, tmp_path):
    """Folders and path,label lists choose classes through one function: the exact name, else
    the name in any case, and the same class twice is an error in both (lists took it)."""
    from lrcn.data.dataset import discover, read_list
    from lrcn.errors import ErrorKind, LrcnError
    listing = tmp_path / "mine.csv"
    rows = ["path,label"] + [f"{tiny_dataset / rel},{rel.split('/')[0]}"
                             for rel in clips_of(tiny_dataset)]
    listing.write_text("\n".join(rows) + "\n")
    assert discover(tiny_dataset, ["grow", "Bounce"])[0] == ["Grow", "Bounce"]
    assert read_list(listing, ["grow", "Bounce"])[0] == ["Grow", "Bounce"]
    for choose in (lambda c: discover(tiny_dataset, c), lambda c: read_list(listing, c)):
        with pytest.raises(LrcnError, match="a class is listed twice") as twice:
            choose(["Grow", "grow"])
        assert twice.value.kind is ErrorKind.SETTING
        with pytest.raises(LrcnError, match="unknown class 'Jump'") as unknown:
            choose(["Jump", "Grow"])
        assert unknown.value.kind is ErrorKind.SETTING
