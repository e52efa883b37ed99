"""Finding and reading hardware profiles: built-in names (with aliases) or TOML files."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.units import MEBI

from ._toml import tomllib
from .schema import profile_from_toml_dict

DATA_DIR = Path(__file__).parent / "data"
# Built-in profiles are under 4 KiB; anything far larger is not a profile (or is /dev/zero).
MAX_PROFILE_BYTES = MEBI

# Other spellings of the built-in names, after normalisation (see ``_normalise``). Bare
# "a100" is the 40 GB part and "h100" the SXM part, as in LLM-Viewer's hardware_params.
ALIASES = {
    "rtx-a6000": "a6000",
    "a100": "a100-40g",
    "a100-sxm": "a100-40g",
    "a100-40g-sxm": "a100-40g",
    "a100-40g-pcie": "a100-40g",
    "a100-80g-sxm": "a100-80g",
    "h100": "h100-sxm",
    "h100-sxm5": "h100-sxm",
    "h200-sxm": "h200",
    "rtx-4090": "rtx4090",
    "4090": "rtx4090",
}


def list_profiles() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(path.stem for path in DATA_DIR.glob("*.toml"))


def load_profile(name_or_path: str | os.PathLike[str]) -> HardwareProfile:
    """Load a built-in profile by name (case-insensitive; aliases such as "A6000",
    "nvidia_A100_80G" or "h100" accepted) or a profile TOML file by path.

    An argument is read as a path when it ends in ``.toml`` or contains a directory
    separator. Raises ``HardwareError`` with a one-line message naming the file and field.
    """
    return _read(resolve_profile_path(name_or_path))


def resolve_profile_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The TOML file ``load_profile`` would read for ``name_or_path``."""
    text = os.fspath(name_or_path)
    if _looks_like_path(text):
        shown = text if text.isprintable() else repr(text)
        try:
            path = Path(text).expanduser()
        except RuntimeError:  # "~someone/x.toml" for a user without a home directory
            raise HardwareError(f"hardware profile file not found: {shown}") from None
        if not path.is_file():  # also False for a directory, a device or a NUL in the name
            raise HardwareError(f"hardware profile file not found: {shown}")
        return path
    names = list_profiles()
    key = _normalise(text)
    key = ALIASES.get(key, key)
    if key not in names:
        raise HardwareError(
            f"unknown hardware profile {text!r}; valid: {', '.join(names)} "
            "(or a path to a .toml file)"
        )
    return DATA_DIR / f"{key}.toml"


def _looks_like_path(text: str) -> bool:
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return text.lower().endswith(".toml") or any(sep in text for sep in seps)


def _normalise(name: str) -> str:
    """Lower-case, hyphenate, drop vendor prefixes: "NVIDIA_A100_80GB" -> "a100-80g"."""
    key = re.sub(r"[\s_]+", "-", name.strip().lower())
    key = re.sub(r"^(nvidia-)?(geforce-)?", "", key)
    return re.sub(r"(\d+)gb\b", r"\1g", key)


def _read(path: Path) -> HardwareProfile:
    origin = path.name if path.parent == DATA_DIR else str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise HardwareError(f"{origin}: cannot read hardware profile: {exc.strerror}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise HardwareError(
            f"{origin}: larger than {MAX_PROFILE_BYTES / MEBI:g} MiB; a hardware profile is a few KiB"
        )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise HardwareError(f"{origin}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise HardwareError(f"{origin}: malformed TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise HardwareError(f"{origin}: malformed TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise HardwareError(f"{origin}: malformed TOML: {str(exc).split(':')[0]}") from None
    return profile_from_toml_dict(data, origin)
