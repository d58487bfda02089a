"""Argument types for the command line: each turns a string into a value or says, naming what it
expected, why it cannot. ``argparse`` puts the flag's name in front of the message."""

from __future__ import annotations

import argparse
import json

from .errors import ClassicNetsError


def _checked(text: str, convert, ok, expected: str, unparsed: str):
    """``convert(text)`` if it parses and ``ok`` holds, else argparse's error saying what was expected."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {unparsed}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, lambda v: v >= 1, "a positive integer", "a positive integer")


def port_number(text: str) -> int:
    """A TCP port, 0 to 65535 (0: the system picks a free one)."""
    return _checked(text, int, lambda v: 0 <= v <= 65535, "a port from 0 to 65535", "a port number")


def positive_float(text: str) -> float:
    return _checked(text, float, lambda v: 0 < v < float("inf"), "a positive number", "a number")


def nonneg_float(text: str) -> float:
    return _checked(text, float, lambda v: 0 <= v < float("inf"), "a number >= 0", "a number")


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
