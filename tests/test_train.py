"""The training loop's early stopping: it stops `patience` epochs after the best validation
loss, and the checkpoint holds the best epoch's weights (Keras's restore_best_weights)."""
import dataclasses
import math

import pytest

from lrcn.data.cache import prepare
from lrcn.models.checkpoint import load_checkpoint
from lrcn.config import TrainConfig
from lrcn.data.dataset import read_split
from lrcn.errors import ErrorKind, LrcnError
from lrcn.models.registry import settings_for
from lrcn.training.history import read_history
from lrcn.data.loader import clip_batches
from lrcn.training.steps import run_epoch
from lrcn.training.job import job_from_run, make_job
from lrcn.training.train import TrainingJob
from lrcn.training.runs import train_and_evaluate


def test_early_stopping_restores_the_best_weights(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    # A learning rate far too high: validation loss gets worse soon, so training stops early.
    # (Seed 4: with seed 3, on the tiny set as written since issue 20's generator change, the
    # model collapsed to uniform outputs, val loss ln 4 at the best and at the last epoch alike,
    # and the last check below could not tell the two apart.)
    config = TrainConfig(epochs=12, patience=2, lr=0.05, seed=4)
    job = TrainingJob(tiny_dataset, run, train=config, cache_dir=tmp_path / "cache",
                      workers=0, progress=False)
    result = train_and_evaluate(job, log=lambda *a: None).training   # and calibrate, test
    history = read_history(run / "history.csv")
    val_losses = [row["val_loss"] for row in history]
    best = min(range(len(val_losses)), key=lambda i: (math.isnan(val_losses[i]), val_losses[i]))
    assert result.best_epoch == best + 1
    assert result.epochs_run == len(history) == result.best_epoch + config.patience < 12
    assert all(not v < val_losses[best] for v in val_losses[best + 1:])
    # The checkpoint's weights give the best epoch's validation loss, not the last epoch's.
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.info["best_epoch"] == result.best_epoch
    assert checkpoint.info["epochs_run"] == len(history)
    val = read_split(run / "split.json")["val"]
    clips, failures = prepare(val, checkpoint.frame_config, cache_dir=tmp_path / "cache",
                              workers=0, progress=False)
    assert not failures and clips
    loader = clip_batches(clips, checkpoint.class_names, 64)
    loss, _ = run_epoch(checkpoint.build_model(), loader)
    assert loss == pytest.approx(val_losses[best], rel=1e-4)
    assert not math.isclose(val_losses[-1], val_losses[best], rel_tol=1e-4)
    # The run folder holds the job: resuming builds the same one, set to resume. The run
    # stopped early, so a plain resume is refused; --epochs N trains it on to N in all.
    with pytest.raises(LrcnError, match="the run is finished"):
        job_from_run(run, workers=1, progress=False)
    again = job_from_run(run, workers=1, progress=False, epochs=job.train.epochs + 5)
    assert (again.data, again.out, again.cache_dir) == (tiny_dataset.resolve(), run,
                                                        tmp_path / "cache")
    assert again.train.epochs == job.train.epochs + 5 and again.extend
    assert (again.frames, again.split) == (job.frames, job.split)
    assert dataclasses.replace(again.train, epochs=job.train.epochs) == job.train
    assert again.model_config(4) == job.model_config(4)
    assert again.classes == tuple(checkpoint.class_names) and again.resume
    names, parts = again.fixed
    assert parts == read_split(run / "split.json") and names == checkpoint.class_names


@pytest.mark.parametrize("model, augment, expected", [
    # (scale_jitter, temporal_jitter): --augment turns on what the model can take
    ("lrcn", None, (0.0, False)), ("lrcn", True, (0.2, True)), ("lrcn", False, (0.0, False)),
    ("effnet-lstm", True, (0.0, True)),           # cached features: temporal only
    ("effnet-lrcn", None, (0.2, True)),           # on by default for the fine-tuned one
    ("effnet-lrcn", False, (0.0, False)),
])
def test_augmentation_follows_the_model(model, augment, expected):
    train_config = settings_for(model, augment=augment).train
    assert (train_config.scale_jitter, train_config.temporal_jitter) == expected


def test_settings_come_in_layers():
    """The model's defaults, then the config file, then the flags; the model named by the
    config file when no flag names one."""
    file = {"model": {"name": "convlstm"}, "train": {"scale_jitter": 0.1, "epochs": 9},
            "frames": {"num_frames": 12}}
    settings = settings_for(None, file, train={"epochs": 3, "lr": None})
    assert settings.model["name"] == "convlstm" and settings.model["dropout"] == 0.2
    assert (settings.train.epochs, settings.train.scale_jitter) == (3, 0.1)
    assert settings.train.lr == 1e-3 and settings.frames.num_frames == 12
    assert settings_for(None, file, augment=True).train.scale_jitter == 0.2
    assert settings_for("effnet-lstm", {}).frames.height == 128


def test_no_augment_means_none_at_all():
    """--no-augment (augment=False) turns off a config file's augmentation, flip and hue jitter
    included, and refuses one asked for beside it."""
    file = {"train": {"flip": True, "hue_jitter": 0.3, "scale_jitter": 0.1}}
    assert settings_for(None, file).train.hue_jitter == 0.3
    train = settings_for(None, file, augment=False).train
    assert (train.flip, train.hue_jitter, train.scale_jitter, train.temporal_jitter) == \
        (False, 0.0, 0.0, False)
    with pytest.raises(LrcnError, match="no augmentation .* and hue_jitter=0.3") as refused:
        settings_for(None, {}, train={"hue_jitter": 0.3, "flip": None}, augment=False)
    assert refused.value.kind is ErrorKind.SETTING
    assert settings_for(None, {}, train={"hue_jitter": 0.0}, augment=False).train.hue_jitter == 0


def test_a_job_refuses_model_settings_that_follow_from_the_data(tmp_path):
    with pytest.raises(LrcnError, match="'num_classes' follows from the data"):
        TrainingJob(tmp_path, tmp_path / "run", model={"num_classes": 3})


def test_make_job_builds_the_job_the_cli_and_the_api_run(tmp_path):
    job = make_job(tmp_path / "data", tmp_path / "run", model="effnet-lstm", augment=True,
                   classes=["a", "b"], train={"epochs": 2, "lr": None}, workers=0,
                   progress=False)
    assert job.model["name"] == "effnet-lstm" and job.frames.height == 128
    assert job.train.temporal_jitter and job.train.scale_jitter == 0.0
    assert (job.train.epochs, job.train.lr) == (2, 1e-3)
    assert job.classes == ("a", "b") and job.data == tmp_path / "data"
    assert job.model_config(2).num_frames == job.frames.num_frames


def test_the_cosine_schedule_falls_from_lr_to_lr_over_the_epochs():
    """Epoch 1 at lr, then down along half a cosine to lr/epochs at the last epoch, never up,
    and there after it; constant is constant."""
    from lrcn.training.steps import epoch_lr
    cosine = TrainConfig(epochs=5, lr=0.01, schedule="cosine")
    rates = [epoch_lr(cosine, e) for e in range(1, 8)]
    assert rates[0] == 0.01 and rates[4] == pytest.approx(0.002) == rates[5] == rates[6]
    assert rates[2] == pytest.approx((0.01 + 0.002) / 2)          # halfway: the mean
    assert all(a > b for a, b in zip(rates[:4], rates[1:5]))
    assert epoch_lr(TrainConfig(epochs=1, lr=0.01, schedule="cosine"), 1) == 0.01
    assert {epoch_lr(TrainConfig(epochs=5, lr=0.01), e) for e in range(1, 8)} == {0.01}
    with pytest.raises(ValueError, match="schedule must be constant or cosine"):
        TrainConfig(schedule="step")


def test_a_cosine_run_trains_at_the_scheduled_rates(tiny_dataset, tmp_path):
    """The optimizer really takes the schedule's rate: with the same seed, a constant and a
    cosine run (made by the Python API) agree on epoch 1 (the same rate) and part from epoch
    2; history.csv records each epoch's rate; the run keeps its schedule, and extending it by
    resuming follows the longer curve (3 -> 6 epochs: the rate rises, a warm restart)."""
    import lrcn
    histories = {}
    for schedule in ("constant", "cosine"):
        run = lrcn.train(tiny_dataset, out=tmp_path / schedule, epochs=3, patience=3, lr=0.004,
                         seed=4, schedule=schedule, cache=tmp_path / "cache", workers=0,
                         progress=False, log=None)
        histories[schedule] = run.history
        assert job_from_run(run.folder, workers=0, progress=False,
                            epochs=4).train.schedule == schedule
    constant, cosine = histories["constant"], histories["cosine"]
    assert [row["lr"] for row in constant] == [0.004] * 3
    assert [row["lr"] for row in cosine] == pytest.approx([0.004, 0.004 * 2 / 3, 0.004 / 3],
                                                          rel=1e-5)     # written to 6 digits
    assert constant[0]["loss"] == cosine[0]["loss"]
    assert constant[0]["val_loss"] == cosine[0]["val_loss"]
    assert constant[1]["val_loss"] != cosine[1]["val_loss"]
    longer = job_from_run(tmp_path / "cosine", workers=0, progress=False, epochs=6)
    train_and_evaluate(longer, log=lambda *a: None)
    rates = [row["lr"] for row in read_history(tmp_path / "cosine" / "history.csv")]
    assert rates[:3] == [row["lr"] for row in cosine]
    floor = 0.004 / 6
    assert rates[3:] == pytest.approx([floor + (0.004 - floor) * (1 + math.cos(math.pi * e / 5)) / 2
                                       for e in (3, 4, 5)], rel=1e-5)
    assert rates[3] > rates[2]
