"""What every part of the command line shares: the bounded number types of its options and the error
of options that do not go together. Imports nothing else of the command line."""

from __future__ import annotations

import argparse

from nnunet_dsmm.errors import DSMMError


class UsageError(DSMMError):
    """Options that do not go together."""


def bounded(kind: type, low: float, high: float | None = None):
    """An argparse type: a ``kind`` number from ``low`` to ``high`` (inclusive), else a usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value
    return parse


FRACTION, POSITIVE, NON_NEGATIVE = bounded(float, 0.0, 1.0), bounded(int, 1), bounded(int, 0)
