"""The hardware-profile TOML schema and its conversion to and from ``HardwareProfile``.

Files hold numbers in the units datasheets print (GB, GB/s, KB, TFLOP/s, TOP/s) with the
unit in the key name; ``HardwareProfile`` holds SI base units. This module is the one place
that converts between the two, through the constants of ``fpcost.costmodel.units``.

Layout of a file (see docs/hardware.md)::

    name, description, device_type          top-level strings
    [memory]      capacity_gb, bandwidth_gb_per_s, onchip_buffer_kb
    [tensor]      fp16_tflops, int8_tops, int4_tops?, fp8_tflops?, tf32_tflops?, fp32_tflops?
    [vector]      fp16_tflops, fp32_tflops
    [runtime]     kernel_launch_us?, cache_bandwidth_gb_per_s?, cache_mb?   (calibrated CPUs)
    [efficiency]  matmul?, attention?, vector?, norm?     (fractions of the ceilings)
    [sources]     "<table>.<key>" = "where the number comes from"
    [provenance]  free-form strings (calibrated profiles: device, torch, threads, date)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import DEVICE_TYPES, OPERATOR_CLASSES, HardwareProfile
from fpcost.costmodel.units import GIGA, KILO, MEGA, MICRO, TERA


@dataclass(frozen=True)
class NumericKey:
    """One number in a profile file: where it sits, its file unit, and its SI field."""

    table: str
    key: str
    field: str  # HardwareProfile attribute, SI units
    si_per_file_unit: float
    unit: str  # the file unit, for help texts and the CLI
    required: bool

    @property
    def dotted(self) -> str:
        """The key as written in ``[sources]``: ``"tensor.fp16_tflops"``."""
        return f"{self.table}.{self.key}"


NUMERIC_KEYS = (
    NumericKey("memory", "capacity_gb", "memory_bytes", GIGA, "GB", True),
    NumericKey("memory", "bandwidth_gb_per_s", "hbm_bandwidth_bytes_per_s", GIGA, "GB/s", True),
    NumericKey("memory", "onchip_buffer_kb", "onchip_buffer_bytes", KILO, "KB", True),
    NumericKey("tensor", "fp16_tflops", "tensor_fp16_flops_per_s", TERA, "TFLOP/s", True),
    NumericKey("tensor", "int8_tops", "tensor_int8_ops_per_s", TERA, "TOP/s", True),
    NumericKey("tensor", "int4_tops", "tensor_int4_ops_per_s", TERA, "TOP/s", False),
    NumericKey("tensor", "fp8_tflops", "tensor_fp8_flops_per_s", TERA, "TFLOP/s", False),
    NumericKey("tensor", "tf32_tflops", "tensor_tf32_flops_per_s", TERA, "TFLOP/s", False),
    NumericKey("tensor", "fp32_tflops", "tensor_fp32_flops_per_s", TERA, "TFLOP/s", False),
    NumericKey("vector", "fp16_tflops", "vector_fp16_flops_per_s", TERA, "TFLOP/s", True),
    NumericKey("vector", "fp32_tflops", "vector_fp32_flops_per_s", TERA, "TFLOP/s", True),
    NumericKey("runtime", "kernel_launch_us", "kernel_launch_s", MICRO, "µs", False),
    NumericKey("runtime", "cache_bandwidth_gb_per_s", "cache_bandwidth_bytes_per_s", GIGA, "GB/s",
               False),
    NumericKey("runtime", "cache_mb", "cache_bytes", MEGA, "MB", False),
)
NUMERIC_TABLES = ("memory", "tensor", "vector", "runtime")
TOP_LEVEL_STRINGS = ("name", "description", "device_type")
OPTIONAL_TABLES = ("efficiency", "sources", "provenance")
TOP_LEVEL_KEYS = TOP_LEVEL_STRINGS + NUMERIC_TABLES + OPTIONAL_TABLES

# Keys allowed in a file's [sources]: every number, including the efficiency factors.
_EFFICIENCY_SOURCE_KEYS = tuple(f"efficiency.{op_class}" for op_class in OPERATOR_CLASSES)
SOURCE_KEYS = tuple(k.dotted for k in NUMERIC_KEYS) + _EFFICIENCY_SOURCE_KEYS
# The same keys in ``HardwareProfile.sources``: SI field names, then "efficiency.<class>".
PROFILE_SOURCE_KEYS = tuple(k.field for k in NUMERIC_KEYS) + _EFFICIENCY_SOURCE_KEYS


def profile_from_toml_dict(data: Mapping[str, Any], origin: str) -> HardwareProfile:
    """Build a profile from a parsed TOML document; ``origin`` (a file name) prefixes every
    error message. Numbers are converted from file units to SI here, once.

    ``HardwareProfile.sources`` is keyed by SI field name (``"tensor_fp16_flops_per_s"``),
    and by ``"efficiency.<class>"`` for efficiency factors.
    """
    _check_known(origin, None, data, TOP_LEVEL_KEYS, "top-level key")
    name = _string(origin, data, "name", required=True)
    description = _string(origin, data, "description", required=False)
    device_type = _string(origin, data, "device_type", required=False) or "gpu"
    if device_type not in DEVICE_TYPES:
        raise HardwareError(
            f"{origin}: device_type = {device_type!r} is unknown; valid: {', '.join(DEVICE_TYPES)}"
        )

    tables = {t: _table(origin, data, t) for t in NUMERIC_TABLES + OPTIONAL_TABLES}
    for table in NUMERIC_TABLES:
        valid = [k.key for k in NUMERIC_KEYS if k.table == table]
        _check_known(origin, table, tables[table], valid, "key")

    si_values: dict[str, float | None] = {}
    for nk in NUMERIC_KEYS:
        raw = tables[nk.table].get(nk.key)
        if raw is None:
            if nk.required:
                raise HardwareError(f"{origin}: [{nk.table}] {nk.key} is missing")
            si_values[nk.field] = None
            continue
        si_values[nk.field] = _positive(origin, nk.table, nk.key, raw) * nk.si_per_file_unit

    efficiency = tables["efficiency"]
    _check_known(origin, "efficiency", efficiency, OPERATOR_CLASSES, "operator class")
    efficiency_factors = {
        op_class: float(_positive(origin, "efficiency", op_class, value))
        for op_class, value in efficiency.items()
    }

    sources = _sources(origin, tables["sources"])
    provenance = _provenance(origin, tables["provenance"])
    try:
        return HardwareProfile(
            name=name,
            description=description,
            device_type=device_type,
            efficiency=efficiency_factors,
            sources=sources,
            provenance=provenance,
            **si_values,
        )
    except HardwareError as exc:  # the dataclass's own checks, e.g. an efficiency bound
        raise HardwareError(f"{origin}: {exc}") from None


def profile_to_toml_dict(profile: HardwareProfile) -> dict[str, Any]:
    """The nested document ``profile_from_toml_dict`` reads back: numbers in file units
    (rounded to 15 significant digits, so 133.8e12 is written as 133.8), absent optional
    peaks left out, sources re-keyed to ``"<table>.<key>"``."""
    doc: dict[str, Any] = {
        "name": profile.name,
        "description": profile.description,
        "device_type": profile.device_type,
    }
    for table in NUMERIC_TABLES:
        doc[table] = {}
    for nk in NUMERIC_KEYS:
        value = getattr(profile, nk.field)
        if value is not None:
            doc[nk.table][nk.key] = _file_number(value / nk.si_per_file_unit)
    if not doc["runtime"]:  # only calibrated profiles carry a launch time
        del doc["runtime"]
    if profile.efficiency:
        doc["efficiency"] = {k: _file_number(v) for k, v in profile.efficiency.items()}
    by_field = {nk.field: nk.dotted for nk in NUMERIC_KEYS}
    sources: dict[str, str] = {}
    for key, text in profile.sources.items():
        if key not in PROFILE_SOURCE_KEYS:
            raise HardwareError(
                f"profile {profile.name!r}: sources key {key!r} is unknown; "
                f"valid: {', '.join(PROFILE_SOURCE_KEYS)}"
            )
        sources[by_field.get(key, key)] = text
    doc["sources"] = sources
    if profile.provenance:
        doc["provenance"] = dict(profile.provenance)
    return doc


def _file_number(value: float) -> int | float:
    rounded = float(f"{value:.15g}")
    if rounded.is_integer() and abs(rounded) < 2**53:
        return int(rounded)
    return rounded


def _check_known(
    origin: str, table: str | None, data: Mapping[str, Any], valid: tuple | list, what: str
) -> None:
    for key in data:
        if key not in valid:
            where = f"[{table}] " if table else ""
            raise HardwareError(
                f"{origin}: unknown {what} {where}{key!r}; valid: {', '.join(valid)}"
            )


def _string(origin: str, data: Mapping[str, Any], key: str, required: bool) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise HardwareError(f"{origin}: {key} is missing")
        return ""
    if not isinstance(value, str):
        raise HardwareError(f"{origin}: {key} = {value!r} must be a string")
    if required and not value.strip():
        raise HardwareError(f"{origin}: {key} = {value!r} must be a non-empty string")
    return value


def _table(origin: str, data: Mapping[str, Any], table: str) -> Mapping[str, Any]:
    value = data.get(table, {})
    if not isinstance(value, Mapping):
        raise HardwareError(f"{origin}: [{table}] must be a table, got {value!r}")
    return value


def _positive(origin: str, table: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareError(f"{origin}: [{table}] {key} = {value!r} must be a number")
    if not math.isfinite(value) or value <= 0:
        raise HardwareError(f"{origin}: [{table}] {key} = {value!r} must be a positive number")
    return value


def _sources(origin: str, table: Mapping[str, Any]) -> dict[str, str]:
    _check_known(origin, "sources", table, SOURCE_KEYS, "source key")
    by_dotted = {nk.dotted: nk.field for nk in NUMERIC_KEYS}
    sources = {}
    for dotted, text in table.items():
        if not isinstance(text, str) or not text.strip():
            raise HardwareError(
                f"{origin}: [sources] {dotted!r} = {text!r} must be a non-empty string"
            )
        sources[by_dotted.get(dotted, dotted)] = text
    return sources


def _provenance(origin: str, table: Mapping[str, Any]) -> dict[str, str]:
    provenance = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise HardwareError(
                f"{origin}: [provenance] {key} = {value!r} must be a string or a number"
            )
        provenance[key] = str(value)
    return provenance
