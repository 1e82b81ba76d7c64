"""The training state of a run, saved after every epoch so that a run killed at any moment
resumes where it was: `lrcn train --resume RUN`.

`RUN/state.safetensors` holds, written atomically: the weights, the optimizer's state (Adam's
moments and step counts), every random stream of training (the shuffling generator, each
dropout layer's mask stream), the early-stopping counters and the history. Tensors are
safetensors and the rest is JSON in its header: loading runs no code. On the CPU in one
process, a resumed run ends with weights bitwise identical to those of a run that was never
interrupted (tests/test_resume.py kills real runs with SIGKILL).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import LrcnError
from ..files import atomic_path
from ..models.base import ClipClassifier, MaskDropout
from ..models.checkpoint import first_non_finite

STATE_NAME = "state.safetensors"
FORMAT = "lrcn-train-state"


def _dropouts(model: ClipClassifier) -> list[MaskDropout]:
    return [m for m in model.modules() if isinstance(m, MaskDropout)]


def dropout_states(model: ClipClassifier) -> list[dict]:
    """This process's dropout mask streams (NumPy's generator states, JSON-able)."""
    return [layer.rng.bit_generator.state for layer in _dropouts(model)]


def save_state(path: str | os.PathLike, model: ClipClassifier, optimizer: torch.optim.Optimizer,
               shuffle: torch.Generator, progress: dict[str, Any],
               dropout_by_rank: list[list[dict]] | None = None) -> None:
    """Write the state after an epoch (`progress`: history, best, best_epoch, waited,
    stopped). `dropout_by_rank`: every process's dropout streams, when there are several."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous()
               for k, v in model.state_dict().items()}
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).to("cpu").contiguous()
    tensors["rng.shuffle"] = shuffle.get_state()
    for i, layer in enumerate(_dropouts(model)):
        for device, generator in layer._generators.items():
            tensors[f"rng.dropout.{i}.{device}"] = generator.get_state()
    header = {"progress": progress, "param_groups": optim["param_groups"],
              "dropout": dropout_by_rank or [dropout_states(model)]}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "state": json.dumps(header)})


def saved_progress(path: str | os.PathLike) -> dict[str, Any] | None:
    """A saved state's progress (history, best, best_epoch, waited, stopped), read from its
    header alone; None when there is no state (a run killed before its first epoch ended)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise LrcnError("not an lrcn training state", path)
        return json.loads(metadata["state"])["progress"]
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise LrcnError(f"the training state is damaged ({exc}); delete it to start the "
                        "run again", path) from None


def load_state(path: str | os.PathLike, model: ClipClassifier, optimizer: torch.optim.Optimizer,
               shuffle: torch.Generator, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """Put a saved state back into a freshly built model, optimizer and shuffling generator;
    return the progress (history, best, best_epoch, waited, stopped). A run resumed with
    another number of processes keeps the weights, the optimizer and the shuffling, and the
    ranks that the state has no dropout streams for keep their fresh ones."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise LrcnError("not an lrcn training state", path)
        header = json.loads(metadata["state"])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise LrcnError(f"the training state is damaged ({exc}); delete it to start the "
                        "run again", path) from None
    damaged = first_non_finite(tensors)
    if damaged:    # training would go on at NaN: refused here (fit's loss check does the rest)
        raise LrcnError(f"the training state is damaged: tensor {damaged} holds NaN or infinite "
                        "values; delete it to start the run again", path)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise LrcnError("the training state does not fit this run's model", path) from None
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    # The optimizer puts each value where its parameter is (and Adam's step where it wants it).
    optimizer.load_state_dict({"state": slots, "param_groups": header["param_groups"]})
    shuffle.set_state(tensors["rng.shuffle"])
    streams = header["dropout"][rank] if len(header["dropout"]) == world else None
    for i, layer in enumerate(_dropouts(model)):
        if streams is not None:
            layer.rng = np.random.default_rng()
            layer.rng.bit_generator.state = streams[i]
        for key, value in tensors.items():
            if rank != 0:
                break           # the GPU streams saved are rank 0's
            if key.startswith(f"rng.dropout.{i}."):
                target = torch.device(key.split(".", 3)[3])
                generator = torch.Generator(device=target)
                generator.set_state(value)
                layer._generators[target] = generator
    return header["progress"]



__all__ = ["STATE_NAME", "save_state", "load_state", "saved_progress"]
