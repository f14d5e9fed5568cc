"""Argument checks shared by the lab's process entry points (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse

from pydantic import TypeAdapter, ValidationError

from domain.topology import Name


def lab_name(text: str) -> str:
    # The topology's own name rule, so a name the lab accepts always fits a topology file.
    try:
        return TypeAdapter(Name).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: use lower-case letters, digits and '-' (e.g. md-a)"
        ) from None


def port_number(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: a port is between 1 and 65535")
    return port


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a positive number")
    return value
