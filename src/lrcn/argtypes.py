"""The command line's argument types: text -> a value in its range, or argparse's one-line
error naming what was wrong. Every numeric option goes through one of these, so that a value out
of range (a negative L2 factor, a port above 65535) is refused before any work starts."""
from __future__ import annotations

import argparse
import math

from .errors import LrcnError


def _number(kind: type, text: str):
    """`text` as an int or a finite float: no option of lrcn means anything at nan or inf."""
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_in(minimum: int, maximum: int | None = None):
    """A whole number in [minimum, maximum]."""
    def parse(text: str) -> int:
        value = _number(int, text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
port = int_in(0, 65535)


def split_number(text: str) -> int:
    """The number N of an official UCF101 split list (trainlist0N.txt)."""
    value = positive_int(text)
    if value > 99:
        raise argparse.ArgumentTypeError(f"split lists are numbered 1, 2, 3, ...: {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(float, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def hue_share(text: str) -> float:
    """A share of the hue circle: a number in [0, 0.5] (0.5: any turn)."""
    value = _number(float, text)
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be in [0, 0.5], got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(float, text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def size(text: str) -> tuple[int, int]:
    """'64' or '64x48' (width x height) -> (width, height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or SIZE, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or SIZE, got {text!r}")
    return parts[0], parts[1]


def device(text: str) -> str:
    """The spelling of a device; whether this machine has it is checked when it is used."""
    from .devices import check_device_name
    try:
        return check_device_name(text)
    except LrcnError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def name_list(text: str) -> list[str]:
    """Comma-separated names (classes, models, folds)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


__all__ = ["int_in", "positive_int", "non_negative_int", "port", "split_number", "fraction",
           "hue_share", "positive_float", "non_negative_float", "size", "device", "name_list"]
