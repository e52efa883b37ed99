"""Read a Hugging Face ``config.json`` into a ``ModelSpec`` with the json module only
(loading transformers just for a config costs seconds).

The file is parsed here (size limit, UTF-8, strict JSON: no NaN or Infinity) and handed to
the model family its ``model_type`` names (``families``): a config with ``text_config`` or
``vision_config`` must name a multimodal family (LLaVA-1.5 ``llava``, ``video_llava``,
``llava_next``, ``qwen2_vl``, ``qwen2_5_vl``, ``llava_onevision``); any other config is read as a bare
Llama-family LLM. The family reads the fields (configread.py holds the readers the families
share).
"""

from __future__ import annotations

import json
from pathlib import Path

from .configread import get_choice
from .errors import ConfigError
from .families import family_for_model_type, multimodal_model_types, text_only_family
from .spec import ModelSpec, show
from .units import MEBI

MAX_CONFIG_BYTES = 16 * MEBI  # real config.json files are a few KiB


def load_config_json(path: str | Path) -> ModelSpec:
    """``ModelSpec`` for the config.json at ``path`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    shown = show(str(path), 200)
    try:
        with path.open("rb") as handle:
            raw = handle.read(int(MAX_CONFIG_BYTES) + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} does not exist") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"config file {shown} cannot be read: {reason}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {shown} is larger than {MAX_CONFIG_BYTES / MEBI:g} MiB; "
                          "a config.json is a few KiB")
    # a model is named by its directory (DIR/config.json) or its file's stem (llama.json)
    name = path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return spec_from_config(_parse_json(raw, path.name), name=name,
                            origin=path.name)


def _parse_json(raw: bytes, origin: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{origin} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except _NonFiniteConstant as exc:
        raise ConfigError(f"{origin} holds {exc}, which is not a JSON number") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{origin} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{origin} is not valid JSON: arrays or objects nested too deeply") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError(f"{origin} is not valid JSON: {str(exc).split(':')[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a JSON object, not {type(data).__name__}")
    return data


class _NonFiniteConstant(Exception):
    """NaN, Infinity or -Infinity: Python's json module reads them, JSON has no such thing."""


def _reject_constant(name: str) -> None:
    raise _NonFiniteConstant(name)


def spec_from_config(data: dict, name: str = "custom", origin: str = "config.json") -> ModelSpec:
    """``ModelSpec`` for a parsed config.json; ``origin`` (the file name) starts every error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin} must hold a JSON object, not {type(data).__name__}")
    try:
        return family_for_config(data, origin).read_config(data, name, origin)
    except ConfigError as exc:  # a spec's own checks (divisibility): say which file
        message = str(exc)
        raise ConfigError(message if message.startswith(origin) else f"{origin}: {message}") from None


def family_for_config(data: dict, origin: str):
    """The family that reads ``data``: the one its ``model_type`` names when it has a
    vision side (``text_config`` / ``vision_config``), else the bare LLM's."""
    if "text_config" not in data and "vision_config" not in data:
        return text_only_family()
    model_type = get_choice(data, "model_type", origin, multimodal_model_types(),
                            noun="multimodal model")
    return family_for_model_type(model_type)
