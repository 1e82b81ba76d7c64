"""Calibration: temperature scaling (Guo et al., 2017) and the expected calibration error, and
the one softmax that turns an engine's logits into probabilities everywhere in lrcn.

A classifier's top probability should be how often it is right. Small video models trained to
zero training loss are overconfident: they call a street scene "Bounce" at 86%. One temperature
T, fitted on the validation clips after training by minimising their negative log-likelihood,
divides the logits: softmax(z / T). It changes no prediction (the order of the classes is
kept), only the confidence, which is what --reject-below and a user read.

Engines return logits (engine.py); `softmax(logits, temperature)` is the only place where they
become probabilities. Everything here is NumPy (and SciPy's scalar minimiser).
"""
from __future__ import annotations

import numpy as np

ECE_BINS = 15
# The fewest validation clips a temperature is fitted on: at least MIN_FIT_CLIPS, and
# MIN_FIT_CLIPS_PER_CLASS per class. One parameter fitted on a handful of clips follows them,
# not the model: on one clip, answered right, it went to T = 0.083 (every answer made near
# certain); on 11 clips of 9 real classes it did not reliably lower the test ECE (README).
MIN_FIT_CLIPS, MIN_FIT_CLIPS_PER_CLASS = 10, 2


def too_few_to_fit(clips: int, classes: int) -> str | None:
    """Why `clips` validation clips of `classes` classes are too few to fit a temperature on,
    or None when they are enough."""
    needed = max(MIN_FIT_CLIPS, MIN_FIT_CLIPS_PER_CLASS * classes)
    if clips >= needed:
        return None
    return (f"{clips} validation clip{' is' if clips == 1 else 's are'} too few to fit a "
            f"temperature on ({needed} needed here: at least {MIN_FIT_CLIPS}, and "
            f"{MIN_FIT_CLIPS_PER_CLASS} per class)")


def all_right(logits: np.ndarray, labels) -> str | None:
    """Why no temperature can be fitted on validation clips the model answers all right, or
    None. With no wrong answer the likelihood rises without end as T falls (every answer made
    more certain is more likely), so the fit stops at its bound, T = 0.05, and serves near
    certainty on everything: the demo's runs with 100 groups did that, and the test ECE was
    worse with it (0.027) than without (0.016)."""
    labels = np.asarray(labels)
    if len(labels) and (np.asarray(logits).argmax(axis=-1) == labels).all():
        return (f"the model answers all {len(labels)} validation clips right, so their "
                "likelihood has no best temperature (it rises as T falls)")
    return None


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(..., classes) logits -> float32 probabilities of softmax(logits / temperature), computed
    in float64 with the largest logit subtracted first (no overflow, whatever the scale)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(..., classes) logits -> float64 log-probabilities of logits / temperature (stable)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` under
    softmax(logits / T) (searched over log T in [-3, 3], i.e. T from 0.05 to 20)."""
    from scipy.optimize import minimize_scalar   # here: engines import this module too
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    logits = np.asarray(logits, dtype=np.float64)
    found = minimize_scalar(lambda log_t: _nll(logits, labels, float(np.exp(log_t))),
                            bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def reliability(probabilities: np.ndarray, labels, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (equal widths over [0, 1]): clips, mean confidence, accuracy."""
    labels = np.asarray(labels)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1])
        if i == 0:
            inside |= confidence == 0
        count = int(inside.sum())
        rows.append({"low": float(edges[i]), "high": float(edges[i + 1]), "count": count,
                     "confidence": float(confidence[inside].mean()) if count else 0.0,
                     "accuracy": float(correct[inside].mean()) if count else 0.0})
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels, bins: int = ECE_BINS
                               ) -> float:
    """ECE: the clip-weighted mean gap between confidence and accuracy over the bins."""
    rows = reliability(probabilities, labels, bins)
    total = sum(r["count"] for r in rows)
    if not total:
        return 0.0
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / total)


__all__ = ["softmax", "log_softmax", "fit_temperature", "reliability",
           "expected_calibration_error", "ECE_BINS"]
