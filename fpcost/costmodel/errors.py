"""Errors raised by fpcost. Every message names the offending value and what is valid.

They live in the cost model because it imports nothing else from the project; the pruner,
the profile loader and the CLI all raise and catch these same classes.
"""


class FpcostError(ValueError):
    """Base class: a user-facing error with a one-line message."""


class ConfigError(FpcostError):
    """A model spec or config.json that is missing, malformed or inconsistent."""


class HardwareError(FpcostError):
    """A hardware profile that is unknown, malformed or incomplete."""


class WorkloadError(FpcostError):
    """Token counts, batch sizes, bit widths or ratios outside their valid range."""


class OutputError(FpcostError):
    """An output path that cannot be written: a directory, a missing parent, a full disk."""
