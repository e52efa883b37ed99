"""Writing a ``HardwareProfile`` as a profile TOML file (the format ``load_profile`` reads).

The standard library reads TOML but does not write it; the documents here are flat enough
(strings and numbers in a few tables) that a small emitter is simpler than a dependency.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fpcost.costmodel.hardware import HardwareProfile
from fpcost.files import write_output

from ._toml import tomllib
from .schema import NUMERIC_TABLES, profile_from_toml_dict, profile_to_toml_dict

HEADER = (
    "# fpcost hardware profile. Units are in the key names: GiB = 2^30 B, GB = 1e9 B,\n"
    "# KB = 1e3 B, TFLOP/s = 1e12 FLOP/s, TOP/s = 1e12 OP/s. Tensor peaks are dense (never the 2x\n"
    "# sparse figures). See docs/hardware.md.\n"
)
TABLE_COMMENTS = {
    "tensor": "dense matrix-unit peaks",
    "vector": "non-tensor (CUDA-core) rates",
    "efficiency": "fraction of each ceiling reached, per operator class",
}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
# Characters TOML basic strings must escape (besides " and \): controls other than tab.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def dumps_profile(profile: HardwareProfile) -> str:
    """The profile as TOML text, numbers in file units (GB, GB/s, KB, TFLOP/s, TOP/s)."""
    doc = profile_to_toml_dict(profile)
    lines = [HEADER.rstrip("\n")]
    for key in ("name", "description", "device_type"):
        lines.append(f"{key} = {_toml_value(doc[key])}")
    for table in (*NUMERIC_TABLES, "efficiency", "sources", "provenance"):
        if table not in doc:
            continue
        lines.append("")
        comment = TABLE_COMMENTS.get(table)
        lines.append(f"[{table}]" + (f"  # {comment}" if comment else ""))
        lines.extend(_table_lines(doc[table]))
    return "\n".join(lines) + "\n"


def write_profile(profile: HardwareProfile, path: str | os.PathLike[str]) -> Path:
    """Write ``profile`` to ``path``: the text is checked to load back, then written by
    ``fpcost.files.write_output`` (atomically for a regular file; see its rules). Returns
    the path written; raises ``OutputError`` if it cannot be written."""
    target = Path(path)
    text = dumps_profile(profile)
    profile_from_toml_dict(tomllib.loads(text), str(target))  # never write what we can't read
    return write_text_atomic(target, text, what="hardware profile")


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str = "file") -> Path:
    """``text`` to ``path`` through the package's one output writer (kept under this name
    for callers of ``fpcost.hardware_profiles``)."""
    return write_output(path, text, what=what)


def _table_lines(table: Mapping[str, Any]) -> list[str]:
    return [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in table.items()]


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"cannot write {type(value).__name__} {value!r} as a profile value")
    return repr(value)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
