"""The one place that knows about unit prefixes.

Everything inside fpcost computes in SI base units (bytes, FLOPs, seconds, bytes/s, FLOP/s)
as plain floats. Conversions happen once when a profile is read and once when a table is
printed, always through the constants and helpers below.
"""

KILO = 1e3
MEGA = 1e6
GIGA = 1e9
TERA = 1e12

# Binary prefixes, for memory capacities only: DRAM comes in powers of two, so a "40 GB"
# A100 holds 40 GiB (40,960 MiB as nvidia-smi reports it). Rates stay decimal.
MEBI = 2**20
GIBI = 2**30

MILLI = 1e-3
MICRO = 1e-6

BITS_PER_BYTE = 8

VALID_BITS = (4, 8, 16, 32)


def bytes_per_element(bits: int) -> float:
    """Bytes taken by one element stored with ``bits`` bits (true division: int4 = 0.5 B)."""
    return bits / BITS_PER_BYTE
