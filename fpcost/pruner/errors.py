"""The pruner's one error class (a ``FpcostError``, so the CLI turns it into one line)."""

from __future__ import annotations

from fpcost.costmodel.errors import FpcostError


class PruningError(FpcostError):
    """Bad pruning input: a parameter out of range, NaN attention, an unloadable encoder,
    an unreadable image. The message names the bad value and what is valid."""
