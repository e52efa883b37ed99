"""Hardware profiles: one cited TOML file per device in ``data/``, read into
``fpcost.costmodel.hardware.HardwareProfile`` (SI units).

    >>> from fpcost.hardware_profiles import load_profile
    >>> load_profile("A6000").hbm_bandwidth_bytes_per_s
    768000000000.0

The file format is documented in docs/hardware.md and in ``schema``.
"""

from .loader import list_profiles, load_profile, resolve_profile_path
from .schema import profile_from_toml_dict, profile_to_toml_dict
from .writer import dumps_profile, write_profile, write_text_atomic

__all__ = [
    "dumps_profile",
    "list_profiles",
    "load_profile",
    "profile_from_toml_dict",
    "profile_to_toml_dict",
    "resolve_profile_path",
    "write_profile",
    "write_text_atomic",
]
