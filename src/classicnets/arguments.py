"""Argument types for the command line: each turns a string into a value or says, naming what it
expected, why it cannot. ``argparse`` puts the flag's name in front of the message."""

from __future__ import annotations

import argparse
import json

from .errors import ClassicNetsError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def key_values(pairs: list[str] | None, flag: str = "--model-arg") -> dict:
    """``key=value`` pairs; values parsed as JSON where they parse (numbers, true/false, [lists])."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            example = "shortcut=B" if flag == "--model-arg" else "depths=[20,56]"
            raise ClassicNetsError(f"{flag} {pair!r}: expected key=value, e.g. {example}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
