"""The training loop's early stopping: it stops `patience` epochs after the best validation
loss, and the checkpoint holds the best epoch's weights (Keras's restore_best_weights)."""
import math

import pytest

from lrcn.data.cache import prepare
from lrcn.models.checkpoint import load_checkpoint
from lrcn.config import TrainConfig
from lrcn.data.dataset import read_split
from lrcn.training.history import read_history
from lrcn.data.loader import clip_batches
from lrcn.training.steps import run_epoch
from lrcn.training.train import TrainingJob, train


def test_early_stopping_restores_the_best_weights(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    # A learning rate far too high: validation loss gets worse soon, so training stops early.
    config = TrainConfig(epochs=12, patience=2, lr=0.05, seed=3)
    result = train(TrainingJob(tiny_dataset, run, train=config, cache_dir=tmp_path / "cache",
                               workers=0, progress=False), log=lambda *a: None)
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
