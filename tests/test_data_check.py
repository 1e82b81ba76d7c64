"""Real footage, right the first time (issue 21): the data is checked before the split, a file cut
short is found by check, train, predict and the API, and the seed model says what it is for.
The tests drive the CLI (in this process: `main` returns the exit code) and the API on small
files written here."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REALCLIPS, write_video
from lrcn.cli import main


def faststart_mp4(path: Path, count: int = 100) -> Path:
    """An H.264 MP4 with its index first (movflags=faststart), as streaming sites write
    them; noise frames, so that the frames, not the index, make up most of the bytes."""
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(count))
    return write_video(path, frames, codec="h264_mp4",
                       container_options={"movflags": "faststart"})


def cut(path: Path, target: Path, share: float = 0.3) -> Path:
    """The first `share` of a file's bytes: an interrupted download."""
    data = path.read_bytes()
    target.write_bytes(data[:int(len(data) * share)])
    return target


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """(a whole faststart MP4, the same cut to its first 30% of bytes)."""
    folder = tmp_path_factory.mktemp("clips")
    whole = faststart_mp4(folder / "whole.mp4")
    assert whole.read_bytes().find(b"moov") < whole.read_bytes().find(b"mdat")   # index first
    return whole, cut(whole, folder / "cut.mp4")


def test_truncation_is_one_rule_on_what_decodes_against_the_header(clips, tmp_path):
    from lrcn.media.clip import TRUNCATED_BELOW, read_clip, truncation
    whole, short = clips
    assert read_clip(whole).truncated is None
    clip = read_clip(short)          # the index claims 100 frames; about 30 are there
    assert clip.header_frames == 100 and clip.num_frames < 40
    assert clip.truncated.startswith(f"header claims 100 frames, {clip.num_frames} decoded")
    assert truncation(80, 100) is None and truncation(79, 100) is not None   # the 80% line
    assert TRUNCATED_BELOW == 0.8 and truncation(5, 0) is None   # no claim, nothing to say
    # an AVI whose index went with its end is caught by its header's frame count too
    avi = write_video(tmp_path / "long.avi", (np.random.default_rng(1).integers(
        0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(60)), codec="mjpeg_avi")
    assert read_clip(cut(avi, tmp_path / "cut.avi", 0.5)).truncated
    # a variable-frame-rate MKV states only a duration: counted at its frames' own spacing,
    # not at the 1000 fps its stated rate guesses, so no false alarm
    from conftest import remux, write_h264
    times = [burst * 500 + i * 10 for burst in range(6) for i in range(10)]
    mkv = remux(write_h264(tmp_path / "vfr.mp4", 60, times_ms=times), tmp_path / "vfr.mkv",
                "matroska")
    assert read_clip(mkv).truncated is None


def test_check_flags_a_truncated_file_and_predict_and_the_api_warn(clips, tmp_path, capsys):
    import lrcn as api
    from lrcn.config import FrameConfig, ModelConfig
    from lrcn.models.checkpoint import save_checkpoint
    from lrcn.models.lrcn import LRCN
    whole, short = clips
    data = tmp_path / "data"
    (data / "Noise").mkdir(parents=True)
    shutil.copy(whole, data / "Noise" / "v_Noise_g01_c01.mp4")
    shutil.copy(short, data / "Noise" / "v_Noise_g02_c01.mp4")
    assert main(["check", str(data), "--quiet", "--workers", "0"]) == 1   # a file to fix
    out = capsys.readouterr().out
    assert "no problems found" not in out
    assert f"truncated   {data / 'Noise' / 'v_Noise_g02_c01.mp4'}: header claims 100 " \
           "frames" in out
    assert "v_Noise_g01_c01.mp4" not in out
    # predict: the answer, with a warning on stderr (and in --json), exit 0 (it was read)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", LRCN(ModelConfig(num_classes=2)),
                                 FrameConfig(), ["Noise", "Other"])
    assert main(["predict", str(checkpoint), str(short), str(whole), "--json"]) == 0
    printed = capsys.readouterr()
    answers = json.loads(printed.out)
    assert answers[0]["warning"].startswith("header claims 100 frames")
    assert "warning" not in answers[1]
    assert printed.err.strip() == f"lrcn: warning: {short}: {answers[0]['warning']}"
    # stream: the same warning once the file has ended; none for the whole file
    assert main(["stream", str(checkpoint), str(short)]) == 0
    printed = capsys.readouterr()
    assert "end of stream" in printed.out
    assert printed.err.strip().splitlines()[-1] == \
        f"lrcn: warning: {short}: {answers[0]['warning']}"
    assert main(["stream", str(checkpoint), str(whole)]) == 0
    assert "warning" not in capsys.readouterr().err
    # evaluate --data: the truncated clip is evaluated and listed as check lists it
    (data / "Other").mkdir()
    shutil.copy(whole, data / "Other" / "v_Other_g01_c01.mp4")
    assert main(["evaluate", str(checkpoint), "--data", str(data), "--quiet", "--workers",
                 "0", "--out", str(tmp_path / "ev")]) == 0
    err = capsys.readouterr().err
    assert f"warning: 1 truncated video (used as far as it decodes):\n  " \
           f"{data / 'Noise' / 'v_Noise_g02_c01.mp4'}: header claims 100 frames" in err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["num_clips"] == 3 and [t["path"] for t in report["truncated"]] == \
        [str(data / "Noise" / "v_Noise_g02_c01.mp4")]
    # a timeline: the same warning, and in timeline.json's facts
    assert main(["predict", str(checkpoint), str(short), "--timeline", "--out",
                 str(tmp_path / "tl")]) == 0
    assert capsys.readouterr().err.strip() == f"lrcn: warning: {short}: {answers[0]['warning']}"
    facts = json.loads((tmp_path / "tl" / "timeline.json").read_text())["facts"]
    assert facts["warning"] == answers[0]["warning"]
    # an MKV states a duration, not a count: timelines and streams count it as predict does
    from conftest import remux
    mkv = cut(remux(whole, tmp_path / "whole.mkv", "matroska"), tmp_path / "cut.mkv")
    assert main(["predict", str(checkpoint), str(mkv), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)[0]["warning"]
    assert said.startswith("header claims ") and "cut short" in said
    assert main(["predict", str(checkpoint), str(mkv), "--timeline", "--out",
                 str(tmp_path / "tl2")]) == 0
    assert capsys.readouterr().err.strip() == f"lrcn: warning: {mkv}: {said}"
    assert main(["stream", str(checkpoint), str(mkv)]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"lrcn: warning: {mkv}: {said}"
    # the API: Prediction.warning
    classifier = api.load(checkpoint)
    assert classifier.predict(short).warning == answers[0]["warning"]
    assert [p.warning for p in classifier.predict_many([whole, short])] == \
        [None, answers[0]["warning"]]


@pytest.mark.skipif(not REALCLIPS.is_dir(), reason="../shared/realclips not present")
def test_real_ucf_clips_raise_no_false_alarm(tmp_path):
    from lrcn.data.check import check_dataset
    every = sorted(p.name for p in REALCLIPS.iterdir() if p.is_dir())
    report = check_dataset(REALCLIPS, every, cache_dir=tmp_path / "cache", workers=2,
                           progress=False)
    assert report["readable"] == report["clips"] >= 40
    assert [p for p in report["problems"] if p["kind"] in ("truncated", "unreadable")] == []


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> Path:
    """Footage as it comes: three synthetic classes of three groups (one with four times the
    clips of another), a class of one clip, an unreadable file and a truncated one."""
    from lrcn.data.synth import SynthConfig, make_dataset
    root = tmp_path_factory.mktemp("awkward") / "data"
    make_dataset(root, SynthConfig(classes=("SlideRight", "Grow", "Bounce"), groups=3,
                                   clips_per_group=1, width=64, height=48, min_seconds=1.0,
                                   max_seconds=1.5, seed=2), workers=2, progress=False)
    for source in sorted((root / "Bounce").iterdir()):      # Bounce: 12 clips in 3 groups
        for clip in (2, 3, 4):
            shutil.copy(source, source.with_name(source.name.replace("_c01", f"_c0{clip}")))
    (root / "Lonely").mkdir()
    shutil.copy(next((root / "Grow").iterdir()), root / "Lonely" / "v_Lonely_g01_c01.avi")
    (root / "Grow" / "v_Grow_g09_c01.avi").write_text("not a video")
    cut(faststart_mp4(root / "whole.tmp"), root / "SlideRight" / "v_SlideRight_g01_c02.mp4")
    (root / "whole.tmp").unlink()
    return root


def test_train_checks_the_data_before_the_split(awkward, tmp_path, capsys):
    cache, run = tmp_path / "cache", tmp_path / "run"
    common = ["--epochs", "1", "--frames", "4", "--quiet", "--workers", "0", "--cache",
              str(cache)]
    assert main(["train", str(awkward), "--out", str(run), *common]) == 2
    refused = capsys.readouterr()
    error = refused.err.strip().splitlines()[-1]
    assert error.startswith(f"lrcn: error: {awkward}: too few readable groups to split: "
                            "'Lonely': 1 readable group (1 clip), none for validation or test")
    assert "--drop-small-classes" in error
    # the bad files were found and listed first, with their causes
    assert f"{awkward / 'Grow' / 'v_Grow_g09_c01.avi'}: not a readable video" in refused.err
    assert f"{awkward / 'SlideRight' / 'v_SlideRight_g01_c02.mp4'}: header claims 100 " \
           "frames" in refused.err
    assert not run.exists()        # a failed run leaves no folder that looks like a run
    # the real-footage hint: the seed model was left to its default on data not synthetic
    assert "hint: " in refused.out and "--model effnet-lstm" in refused.out

    assert main(["train", str(awkward), "--out", str(run), "--drop-small-classes",
                 *common]) == 0
    dropped = capsys.readouterr().out
    assert "note: dropped 1 class too small to split" in dropped
    assert "note: imbalanced classes: 'Bounce' has 12 clips, 'Grow' 3 (4.0x); --balance" \
        in dropped
    # one validation group per class: 1 + 1 + 4 clips, too few to fit a temperature on
    assert "calibration: skipped, 6 validation clips are too few to fit a temperature on " \
           "(10 needed here" in dropped
    split = json.loads((run / "split.json").read_text())
    paths = [e["path"] for part in ("train", "val", "test") for e in split[part]]
    assert len(paths) == 3 + 3 + 12 + 1            # every readable clip of the kept classes
    assert "Grow/v_Grow_g09_c01.avi" not in paths and not any("Lonely" in p for p in paths)
    for part in ("train", "val", "test"):          # every class in every part
        assert {e["class"] for e in split[part]} == {"SlideRight", "Grow", "Bounce"}
    settings = json.loads((run / "config.json").read_text())
    assert settings["classes"] == ["Bounce", "Grow", "SlideRight"]
    assert settings["split"]["drop_small_classes"] is True
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["temperature"] == 1.0 and "too few" in info["info"]["calibration"]["skipped"]

    # a run killed while decoding has config.json but no split yet: its resume checks and
    # splits again, to the same split
    from lrcn.training.job import job_from_run
    from lrcn.training.train import prepare_data
    for name in ("split.json", "state.safetensors"):    # what a kill while decoding lacks
        (run / name).unlink()
    job = job_from_run(run, workers=0, progress=False)
    assert job.fixed is None and job.split.drop_small_classes
    prepare_data(job, log=lambda *a, **k: None)
    assert json.loads((run / "split.json").read_text()) == split


def test_the_hint_is_for_the_default_model_on_real_data_only(tiny_dataset, awkward, tmp_path):
    from lrcn.training.job import make_job, seed_model_hint
    assert seed_model_hint(make_job(awkward, tmp_path)) is not None
    assert seed_model_hint(make_job(awkward, tmp_path, model="effnet-lstm")) is None
    assert seed_model_hint(make_job(tiny_dataset, tmp_path)) is None     # lrcn synth's
    assert seed_model_hint(make_job(tmp_path / "nosuch", tmp_path)) is None   # an error follows


def test_calibration_needs_ten_clips_and_two_per_class():
    from lrcn.inference.calibrate import too_few_to_fit
    assert too_few_to_fit(9, 2) and too_few_to_fit(1, 2).startswith("1 validation clip is")
    assert too_few_to_fit(10, 2) is None and too_few_to_fit(10, 5) is None
    assert too_few_to_fit(17, 9) and too_few_to_fit(18, 9) is None
