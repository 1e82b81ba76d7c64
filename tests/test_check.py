"""data.check, called directly on small data sets made here: every kind of problem is reported
with its kind, class and cause, the per-class table counts what is there, and format_check
names them all."""
from __future__ import annotations

import pytest

from lrcn.config import FrameConfig
from lrcn.data.check import check_dataset, format_check
from lrcn.errors import LrcnError

from conftest import write_h264, write_indexed_video

FRAMES = FrameConfig(num_frames=8, width=32, height=32)


@pytest.fixture(scope="module")
def salted(tmp_path_factory):
    """Walk: three good clips (two groups) and one text file with a video's name. Run: one
    good clip, one too short for 8 frames, one whose frames are smaller than 32x32 and one
    with a variable frame rate."""
    root = tmp_path_factory.mktemp("salted") / "data"
    (root / "Walk").mkdir(parents=True)
    (root / "Run").mkdir()
    for name in ("v_Walk_g01_c01", "v_Walk_g01_c02", "v_Walk_g02_c01"):
        write_indexed_video(root / "Walk" / f"{name}.avi", 30)
    (root / "Walk" / "v_Walk_g02_c02.avi").write_text("not a video")
    write_indexed_video(root / "Run" / "v_Run_g01_c01.avi", 40)
    write_indexed_video(root / "Run" / "v_Run_g01_c02.avi", 5)
    write_indexed_video(root / "Run" / "v_Run_g02_c01.avi", 30, width=24, height=16)
    # frames 40 ms apart, then 120 ms apart: 0.8 + 2.4 = 3.2 s over 40 frames
    times = [40 * i for i in range(20)] + [800 + 120 * i for i in range(20)]
    write_h264(root / "Run" / "v_Run_g03_c01.mp4", 40, times_ms=times)
    return root


def test_check_reports_each_problem_with_its_kind_and_class(salted, tmp_path):
    report = check_dataset(salted, frames=FRAMES, cache_dir=tmp_path / "cache", workers=0,
                           progress=False)
    found = sorted((p["path"].rsplit("/", 1)[1], p["kind"], p["class"], p["cause"])
                   for p in report["problems"])
    assert [row[:3] for row in found] == [
        ("v_Run_g01_c02.avi", "suspicious", "Run"),       # 5 frames: too short for 8 ...
        ("v_Run_g01_c02.avi", "too short", "Run"),        # ... and only 0.2 s long
        ("v_Run_g02_c01.avi", "suspicious", "Run"),
        ("v_Run_g03_c01.mp4", "note", "Run"),
        ("v_Walk_g02_c02.avi", "unreadable", "Walk"),
    ]
    causes = [row[3] for row in found]
    assert causes[0] == "very short: 0.20 s"
    assert causes[1].startswith("too short: 5 frames (< 8;")
    assert causes[2] == "tiny frames 24x16 (upscaled to 32x32)"
    assert causes[3].startswith("variable frame rate")
    assert causes[4].startswith("not a readable video")
    assert all(p["path"] == str(salted / p["class"] / p["path"].rsplit("/", 1)[1])
               for p in report["problems"])
    assert (report["clips"], report["readable"]) == (8, 7)
    rows = {row["class"]: row for row in report["classes"]}
    assert list(rows) == ["Run", "Walk"]                      # every class folder, sorted
    assert rows["Walk"] | {"seconds": None} == {
        "class": "Walk", "clips": 4, "readable": 3, "groups": 2, "seconds": None,
        "frames": [30, 30]}
    assert rows["Walk"]["seconds"] == [1.2, 1.2]                          # 30 frames at 25 fps
    assert rows["Run"]["clips"] == rows["Run"]["readable"] == 4
    assert rows["Run"]["groups"] == 3 and rows["Run"]["frames"] == [5, 40]
    # the shortest is 5 frames at 25 fps; the longest the variable-rate clip (as long as its
    # container says: FFmpeg counts 2.96 of its 3.2 s)
    assert rows["Run"]["seconds"][0] == 0.2 and 1.6 < rows["Run"]["seconds"][1] <= 3.2

    text = format_check(report)
    lines = text.splitlines()
    assert lines[0].split() == ["class", "clips", "groups", "seconds", "frames"]
    secs = rows["Run"]["seconds"]
    assert lines[1].split() == ["Run", "4", "3", f"{secs[0]:.1f}-{secs[1]:.1f}", "5-40"]
    assert lines[2].split() == ["Walk", "3/4", "2", "1.2-1.2", "30-30"]
    assert "7 of 8 files readable" in lines
    assert "5 problem(s):" in lines
    for p in report["problems"]:
        assert f"  {p['kind']:<11} {p['path']}: {p['cause']}" in lines
    assert "no problems found" not in text


def test_the_classes_and_frame_settings_decide_what_is_a_problem(salted, tmp_path):
    report = check_dataset(salted, classes=["walk"], frames=FRAMES, cache_dir=tmp_path,
                           workers=0, progress=False)
    assert [row["class"] for row in report["classes"]] == ["Walk"]  # one class is enough
    assert [p["kind"] for p in report["problems"]] == ["unreadable"]
    clean = check_dataset(salted, classes=["Run"], frames=FrameConfig(num_frames=4, width=16,
                                                                      height=16),
                          cache_dir=tmp_path, workers=0, progress=False)
    # 4 frames at 16x16: nothing is too short in frames or tiny any more; 0.2 s is still very
    # short, and the variable rate still a note
    assert [(p["kind"], p["path"].rsplit("/", 1)[1], p["cause"]) for p in clean["problems"]] \
        == [("suspicious", "v_Run_g01_c02.avi", "very short: 0.20 s"),
            ("note", "v_Run_g03_c01.mp4", "variable frame rate: frames sampled evenly in time")]


def test_files_a_list_names_but_that_are_missing(salted, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(f"{salted}/Walk/v_Walk_g01_c01.avi,Walk\n"
                       f"{salted}/Walk/v_Walk_g09_c01.avi,Walk\n"
                       f"{salted}/Run/v_Run_g01_c01.avi,Run\n")
    report = check_dataset(listing, frames=FRAMES, cache_dir=tmp_path / "cache", workers=0,
                           progress=False)
    assert report["problems"] == [{"path": f"{salted}/Walk/v_Walk_g09_c01.avi", "class": None,
                                   "kind": "missing",
                                   "cause": "listed in list.csv but missing"}]
    assert (report["clips"], report["readable"]) == (3, 2)
    assert f"  missing     {salted}/Walk/v_Walk_g09_c01.avi: listed in list.csv but missing" \
        in format_check(report).splitlines()


def test_a_class_without_a_folder_or_without_videos_is_refused(salted, tmp_path):
    with pytest.raises(LrcnError) as error:
        check_dataset(salted, classes=["Walk", "Swim"], frames=FRAMES, cache_dir=tmp_path,
                      workers=0, progress=False)
    assert error.value.path == str(salted) and "unknown class 'Swim'" in error.value.reason
    empty = tmp_path / "data"
    (empty / "Walk").mkdir(parents=True)
    (empty / "Walk" / "readme.txt").write_text("no videos here")
    with pytest.raises(LrcnError) as error:
        check_dataset(empty, frames=FRAMES, cache_dir=tmp_path, workers=0, progress=False)
    assert error.value.path == str(empty / "Walk")
    assert error.value.reason.startswith("class folder has no video files")


def test_check_with_a_model_decodes_what_its_training_will_read(salted, tmp_path):
    """`lrcn check DATA --model effnet-lstm` fills the cache at that model's frames (160x128
    RGB), the entries `lrcn train DATA --model effnet-lstm` then reads."""
    from lrcn.cli import main
    from lrcn.data.cache import cache_key
    from lrcn.models.registry import settings_for
    cache = tmp_path / "cache"
    main(["check", str(salted), "--classes", "Walk", "--model", "effnet-lstm", "--cache",
          str(cache), "--workers", "0", "--quiet"])
    frames = settings_for("effnet-lstm").frames
    assert (frames.width, frames.height, frames.channel_order) == (160, 128, "rgb")
    cached = " ".join(p.name for p in cache.rglob("*"))
    for clip in ("v_Walk_g01_c01", "v_Walk_g01_c02", "v_Walk_g02_c01"):
        assert cache_key(salted / "Walk" / f"{clip}.avi", frames) in cached
