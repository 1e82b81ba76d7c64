"""Runs are continued and reused: `--resume RUN --epochs N` trains on to N epochs in all (the
same weights as a run that went to N at once), a finished run is not "resumed" into nothing,
`--init-from` fine-tunes a trained model on the same or new classes, and a run folder is
never overwritten without --overwrite. Tiny runs, driven through the CLI's main()."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lrcn.cli import main

TRAIN = ["--patience", "20", "--seed", "3", "--batch-size", "4", "--no-evaluate", "--quiet",
         "--workers", "2"]


def history_rows(run: Path) -> int:
    return len((run / "history.csv").read_text().strip().splitlines()) - 1


@pytest.fixture(scope="module")
def two_epochs(tiny_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("reuse") / "run"
    assert main(["train", str(tiny_dataset), "--out", str(run), "--epochs", "2", *TRAIN]) == 0
    return run


def test_resume_with_more_epochs_trains_on_to_that_total(two_epochs, tiny_dataset, tmp_path,
                                                         capsys):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--quiet",
                 "--no-evaluate"]) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 2 (best epoch so far" in out and "training to epoch 3" in out
    assert "trained 1 epoch more (3 in all)" in out         # singular, and the total
    assert history_rows(run) == 3
    # the same weights as a run that was asked for 3 epochs from the start (CPU, bitwise)
    straight = tmp_path / "straight"
    assert main(["train", str(tiny_dataset), "--out", str(straight), "--epochs", "3",
                 *TRAIN]) == 0
    ours = load_file(str(run / "state.safetensors"))
    theirs = load_file(str(straight / "state.safetensors"))
    for name in (k for k in theirs if k.startswith("model.")):
        assert ours[name].equal(theirs[name]), name
    import json
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 3


def test_a_finished_run_is_not_resumed_into_nothing(two_epochs, capsys):
    before = (two_epochs / "history.csv").read_text()
    assert main(["train", "--resume", str(two_epochs), "--quiet"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lrcn: error: {two_epochs}: the run is finished (all 2 epochs "
                           "trained") and "--epochs N (more than 2) trains it on" in line
    assert main(["train", "--resume", str(two_epochs), "--epochs", "2", "--quiet"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "has trained 2 epochs already; --epochs 2 would train none" in line
    assert (two_epochs / "history.csv").read_text() == before          # nothing touched


def test_out_over_a_run_is_refused_without_overwrite(two_epochs, tiny_dataset, tmp_path,
                                                     capsys):
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    (run / "report.json").write_text("{}")           # a file of the old run
    (run / "notes.txt").write_text("mine")           # not a run file: left alone
    before = (run / "model.safetensors").read_bytes()
    args = ["train", str(tiny_dataset), "--out", str(run), "--epochs", "1", *TRAIN]
    assert main(args) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"lrcn: error: {run}: already holds a run") and "--overwrite" in line
    assert (run / "model.safetensors").read_bytes() == before
    import lrcn                                     # the API names its keywords, not flags
    from lrcn.errors import LrcnError
    with pytest.raises(LrcnError, match="already holds a run .*: overwrite=True replaces it"):
        lrcn.train(tiny_dataset, out=run, epochs=1, progress=False)
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", str(tiny_dataset), "--out", str(afile), *TRAIN]) == 2
    assert capsys.readouterr().err.strip() == \
        f"lrcn: error: {afile}: is a file: a run is written into a folder"
    # an --overwrite whose data cannot train (a mistyped folder, one class) keeps the old run
    files = sorted(p.name for p in run.iterdir())
    one_class = tmp_path / "one"
    shutil.copytree(tiny_dataset / "Grow", one_class / "Grow")
    bad = ["train", str(one_class), "--out", str(run), "--epochs", "1", "--overwrite", *TRAIN]
    assert main(bad) == 2
    assert "at least two classes" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == files
    assert (run / "model.safetensors").read_bytes() == before
    # ... or whose settings are refused when training starts (before any decoding)
    too_small = ["train", str(tiny_dataset), "--out", str(run), "--size", "16", "--overwrite",
                 *TRAIN]
    assert main(too_small) == 2
    assert "too small for the pooling" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == files
    # an --overwrite killed before its first epoch left its beginning beside the run it set
    # aside: the next --overwrite replaces that beginning, and the set-aside run survives it
    aside = run / ".replaced-run"
    aside.mkdir()
    for name in files:
        if name != "notes.txt":
            (run / name).replace(aside / name)
    (run / "config.json").write_text("{}")                   # what the killed attempt wrote
    assert main(bad) == 2
    capsys.readouterr()
    assert sorted(p.name for p in run.iterdir()) == files
    assert (run / "model.safetensors").read_bytes() == before
    assert main(args + ["--overwrite"]) == 0
    assert history_rows(run) == 1 and not (run / "report.json").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "model.safetensors").read_bytes() != before
    assert not (run / ".replaced-run").exists()                  # the old run is gone now


def test_an_overwrite_stopped_after_an_epoch_keeps_the_old_run_aside_until_resumed(
        two_epochs, tiny_dataset, tmp_path, capsys):
    """Ctrl-C of an --overwrite after its epochs: the new run stands (it resumes), and the
    old run stays set aside until the resumed run ends. It was removed at the Ctrl-C, so a
    finished run was lost to an interrupted replacement (found by a notebook user)."""
    from lrcn.training.job import claim_run_folder, make_job
    from lrcn.training.runs import train_and_evaluate
    run = tmp_path / "run"
    shutil.copytree(two_epochs, run)
    (run / "report.json").write_text('{"old": true}')        # the old run's test report
    job = make_job(tiny_dataset, run, train={"epochs": 1, "seed": 3, "batch_size": 4},
                   workers=2, progress=False)
    claim_run_folder(run, overwrite=True)

    def ctrl_c_after_training(message, *args, **kwargs):
        if str(message).startswith("calibration:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(job, log=ctrl_c_after_training)
    aside = run / ".replaced-run"
    assert (aside / "report.json").read_text() == '{"old": true}'
    assert history_rows(aside) == 2 and history_rows(run) == 1
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--quiet", "--workers", "2"]) == 0
    assert not aside.exists()                                   # gone once the new run ended
    assert (run / "report.json").read_text() != '{"old": true}'


def test_init_from_fine_tunes_on_new_classes_with_a_new_classifier_row(two_epochs, tiny_dataset,
                                                                       tmp_path, capsys):
    """Two classes, one the model knows (Grow) and one it does not (Jump): every weight but
    the classifier's is the checkpoint's, Grow's row is its row, Jump's is new. A learning
    rate of 1e-9 keeps one epoch from moving the weights measurably."""
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset / "Grow", data / "Grow")
    shutil.copytree(tiny_dataset / "Bounce", data / "Jump")
    old = load_file(str(two_epochs / "model.safetensors"))
    out = tmp_path / "tuned"
    capsys.readouterr()
    assert main(["train", str(data), "--init-from", str(two_epochs), "--out", str(out),
                 "--epochs", "1", "--lr", "1e-9", *TRAIN]) == 0
    log = capsys.readouterr().out
    assert "every weight but the classifier's; its rows for 1 known class, new rows for " \
           "Jump" in log
    new = load_file(str(out / "model.safetensors"))
    grow, jump = 0, 1                                      # sorted: Grow, Jump
    old_grow = ["Bounce", "Grow", "SlideLeft", "SlideRight"].index("Grow")
    for name, tensor in new.items():
        if name.startswith("head."):
            assert tensor.shape[0] == 2
            assert tensor[grow].allclose(old[name][old_grow], atol=1e-6), name
            if name == "head.weight":
                assert not tensor[jump].allclose(old[name][old_grow], atol=1e-3)
        else:
            assert tensor.allclose(old[name], atol=1e-6), name
    import json
    from lrcn.models.checkpoint import load_checkpoint
    tuned = load_checkpoint(out, weights=False)
    assert tuned.class_names == ["Grow", "Jump"]
    assert tuned.info["init_from"] == str((two_epochs / "model.safetensors").resolve())
    assert json.loads((out / "config.json").read_text())["init_from"] == \
        tuned.info["init_from"]


def test_init_from_takes_the_model_settings_of_its_checkpoint(two_epochs, tiny_dataset,
                                                              tmp_path, capsys):
    """The same classes: all weights; the frame and model settings are the checkpoint's, and a
    config file that sets them is refused."""
    import json
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"frames": {"height": 32, "width": 32}}))
    assert main(["train", str(tiny_dataset), "--init-from", str(two_epochs), "--out",
                 str(tmp_path / "x"), "--config", str(settings), *TRAIN]) == 2
    assert "the config file's frames section cannot be given with it" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    out = tmp_path / "same"
    assert main(["train", str(tiny_dataset), "--init-from",
                 str(two_epochs / "model.safetensors"), "--out", str(out), "--epochs", "1",
                 "--lr", "1e-9", *TRAIN]) == 0
    assert "all weights (the same classes)" in capsys.readouterr().out
    old, new = (load_file(str(p / "model.safetensors")) for p in (two_epochs, out))
    assert all(new[name].allclose(old[name], atol=1e-6) for name in old)
    assert json.loads((out / "config.json").read_text())["frames"] == \
        json.loads((two_epochs / "config.json").read_text())["frames"]
