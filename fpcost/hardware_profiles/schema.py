"""The hardware-profile TOML schema and its conversion to and from ``HardwareProfile``.

Files hold numbers in the units datasheets print (GiB, GB/s, KB, TFLOP/s, TOP/s) with the
unit in the key name; ``HardwareProfile`` holds SI base units. This module is the one place
that converts between the two, through the constants of ``fpcost.costmodel.units``.

Layout of a file (see docs/hardware.md)::

    name, description, device_type          top-level strings
    [memory]      capacity_gib (or capacity_gb), bandwidth_gb_per_s, onchip_buffer_kb
    [tensor]      fp16_tflops, int8_tops, int4_tops?, fp8_tflops?, tf32_tflops?, fp32_tflops?
    [vector]      fp16_tflops, fp32_tflops
    [runtime]     kernel_launch_us?, cache_bandwidth_gb_per_s?, cache_mb?,
                  weight_bandwidth_gb_per_s?, sdpa_call_us?   (calibrated CPUs)
    [interconnect] kind?, bandwidth_gb_per_s?, latency_us?   (GPU-to-GPU link, per direction)
    [efficiency]  matmul?, attention?, vector?, norm?     (fractions of the ceilings)
    [sources]     "<table>.<key>" = "where the number comes from"
    [provenance]  free-form strings (calibrated profiles: device, torch, threads, date)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import (
    DEVICE_TYPES,
    EFFICIENCY_RANGE,
    INTERCONNECT_KINDS,
    OPERATOR_CLASSES,
    HardwareProfile,
)
from fpcost.costmodel.spec import show
from fpcost.costmodel.units import GIBI, GIGA, KILO, MEGA, MICRO, TERA


@dataclass(frozen=True)
class NumericKey:
    """One number in a profile file: where it sits, its file unit, and its SI field."""

    table: str
    key: str
    field: str  # HardwareProfile attribute, SI units
    si_per_file_unit: float
    unit: str  # the file unit, for help texts and the CLI
    required: bool
    # Valid range in the file unit: anything outside is a typo or a unit mix-up, and would
    # turn roofline times into 0, inf or subnormal noise (a bandwidth of 1e-320 GB/s).
    minimum: float = 1e-3
    maximum: float = 1e6

    @property
    def dotted(self) -> str:
        """The key as written in ``[sources]``: ``"tensor.fp16_tflops"``."""
        return f"{self.table}.{self.key}"


# Ranges: capacity 1 MiB..~1 PiB; bandwidth 1 MB/s..1 PB/s; on-chip buffer 1 B..1 TB;
# compute 1 MFLOP/s..1 EFLOP/s (a slow CPU's measured FP16 element-wise rate can be well
# under 1 GFLOP/s; the fastest GPU's sparse FP4 peak is ~2e4 TFLOP/s).
_RATE_RANGE = {"minimum": 1e-6, "maximum": 1e6}
NUMERIC_KEYS = (
    NumericKey("memory", "capacity_gib", "memory_bytes", GIBI, "GiB", True),
    NumericKey("memory", "bandwidth_gb_per_s", "hbm_bandwidth_bytes_per_s", GIGA, "GB/s", True),
    NumericKey("memory", "onchip_buffer_kb", "onchip_buffer_bytes", KILO, "KB", True,
               maximum=1e9),
    NumericKey("tensor", "fp16_tflops", "tensor_fp16_flops_per_s", TERA, "TFLOP/s", True, **_RATE_RANGE),
    NumericKey("tensor", "int8_tops", "tensor_int8_ops_per_s", TERA, "TOP/s", True, **_RATE_RANGE),
    NumericKey("tensor", "int4_tops", "tensor_int4_ops_per_s", TERA, "TOP/s", False, **_RATE_RANGE),
    NumericKey("tensor", "fp8_tflops", "tensor_fp8_flops_per_s", TERA, "TFLOP/s", False, **_RATE_RANGE),
    NumericKey("tensor", "tf32_tflops", "tensor_tf32_flops_per_s", TERA, "TFLOP/s", False, **_RATE_RANGE),
    NumericKey("tensor", "fp32_tflops", "tensor_fp32_flops_per_s", TERA, "TFLOP/s", False, **_RATE_RANGE),
    NumericKey("vector", "fp16_tflops", "vector_fp16_flops_per_s", TERA, "TFLOP/s", True, **_RATE_RANGE),
    NumericKey("vector", "fp32_tflops", "vector_fp32_flops_per_s", TERA, "TFLOP/s", True, **_RATE_RANGE),
    # [runtime], calibrated CPUs only: launch 1 ns..1 s, cache bandwidth and size as above
    NumericKey("runtime", "kernel_launch_us", "kernel_launch_s", MICRO, "µs", False),
    NumericKey("runtime", "cache_bandwidth_gb_per_s", "cache_bandwidth_bytes_per_s", GIGA, "GB/s",
               False),
    NumericKey("runtime", "cache_mb", "cache_bytes", MEGA, "MB", False),
    NumericKey("runtime", "sdpa_call_us", "sdpa_call_s", MICRO, "µs", False),
    NumericKey("runtime", "weight_bandwidth_gb_per_s", "weight_bandwidth_bytes_per_s", GIGA,
               "GB/s", False),
    # [interconnect]: the GPU-to-GPU link, per direction (NVLink 4: 450 GB/s), and the fixed
    # latency of one transfer step, 1 ns..1 s
    NumericKey("interconnect", "bandwidth_gb_per_s", "interconnect_bandwidth_bytes_per_s", GIGA,
               "GB/s", False),
    NumericKey("interconnect", "latency_us", "interconnect_latency_s", MICRO, "µs", False),
)
# [interconnect]'s one string key, beside its numbers
INTERCONNECT_KIND_KEY = "interconnect.kind"
# Older spellings still read (never written): a key here may stand in for the NUMERIC_KEYS
# entry with the same field, not beside it. capacity_gb is decimal: 40 means 40e9 B.
LEGACY_KEYS = (NumericKey("memory", "capacity_gb", "memory_bytes", GIGA, "GB", False),)
NUMERIC_TABLES = ("memory", "tensor", "vector", "runtime", "interconnect")
TOP_LEVEL_STRINGS = ("name", "description", "device_type")
OPTIONAL_TABLES = ("efficiency", "sources", "provenance")
TOP_LEVEL_KEYS = TOP_LEVEL_STRINGS + NUMERIC_TABLES + OPTIONAL_TABLES

# Keys allowed in a file's [sources]: every number, including the efficiency factors.
_EFFICIENCY_SOURCE_KEYS = tuple(f"efficiency.{op_class}" for op_class in OPERATOR_CLASSES)
SOURCE_KEYS = (tuple(k.dotted for k in NUMERIC_KEYS + LEGACY_KEYS) + (INTERCONNECT_KIND_KEY,)
               + _EFFICIENCY_SOURCE_KEYS)
# The same keys in ``HardwareProfile.sources``: SI field names, then "efficiency.<class>".
PROFILE_SOURCE_KEYS = (tuple(k.field for k in NUMERIC_KEYS) + ("interconnect_kind",)
                       + _EFFICIENCY_SOURCE_KEYS)


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
        valid = [k.key for k in NUMERIC_KEYS + LEGACY_KEYS if k.table == table]
        if table == "interconnect":
            valid.insert(0, "kind")
        _check_known(origin, table, tables[table], valid, "key")
    interconnect_kind = _interconnect_kind(origin, tables["interconnect"])

    si_values: dict[str, float | None] = {}
    for nk in NUMERIC_KEYS:
        given = [k for k in (nk, *_legacy(nk)) if k.key in tables[k.table]]
        if len(given) > 1:
            raise HardwareError(
                f"{origin}: [{nk.table}] give one of {' or '.join(k.key for k in given)}, not both"
            )
        if not given:
            if nk.required:
                raise HardwareError(f"{origin}: [{nk.table}] {nk.key} is missing")
            si_values[nk.field] = None
            continue
        key = given[0]
        raw = tables[key.table][key.key]
        value = _number_in_range(origin, key.table, key.key, raw, key.minimum, key.maximum, key.unit)
        si_values[nk.field] = float(value * key.si_per_file_unit)

    efficiency = tables["efficiency"]
    _check_known(origin, "efficiency", efficiency, OPERATOR_CLASSES, "operator class")
    efficiency_factors = {
        op_class: float(_number_in_range(origin, "efficiency", op_class, value, *EFFICIENCY_RANGE,
                                         "(fraction of the ceiling)"))
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
            interconnect_kind=interconnect_kind,
            **si_values,
        )
    except HardwareError as exc:  # the dataclass's own checks, e.g. an efficiency bound
        raise HardwareError(f"{origin}: {exc}") from None


def profile_to_toml_dict(profile: HardwareProfile) -> dict[str, Any]:
    """The nested document ``profile_from_toml_dict`` reads back: numbers in file units
    (the fewest significant digits, from 15, that read back to the same SI value: 133.8e12
    is written as 133.8), absent optional peaks left out, sources re-keyed to
    ``"<table>.<key>"``. Memory capacity is written as ``capacity_gib``."""
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
            doc[nk.table][nk.key] = _file_number(value, nk.si_per_file_unit)
    if not doc["runtime"]:  # only calibrated profiles carry a launch time
        del doc["runtime"]
    if profile.interconnect_kind is not None:
        doc["interconnect"] = {"kind": profile.interconnect_kind, **doc["interconnect"]}
    if not doc["interconnect"]:
        del doc["interconnect"]
    if profile.efficiency:
        doc["efficiency"] = {k: _file_number(v, 1.0) for k, v in profile.efficiency.items()}
    by_field = {nk.field: nk.dotted for nk in NUMERIC_KEYS}
    by_field["interconnect_kind"] = INTERCONNECT_KIND_KEY
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


def _file_number(si_value: float, si_per_file_unit: float) -> int | float:
    """``si_value`` in file units, as short as it can be written and still read back to
    exactly ``si_value`` (15 digits hide division noise; 17 always round-trip)."""
    value = si_value / si_per_file_unit
    for digits in (15, 16, 17):
        rounded = float(f"{value:.{digits}g}")
        if rounded * si_per_file_unit == si_value:
            break
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
        raise HardwareError(f"{origin}: {key} = {show(value)} must be a string")
    if required and not value.strip():
        raise HardwareError(f"{origin}: {key} = {show(value)} must be a non-empty string")
    return value


def _table(origin: str, data: Mapping[str, Any], table: str) -> Mapping[str, Any]:
    value = data.get(table, {})
    if not isinstance(value, Mapping):
        raise HardwareError(f"{origin}: [{table}] must be a table, got {show(value)}")
    return value


def _legacy(nk: NumericKey) -> tuple[NumericKey, ...]:
    return tuple(k for k in LEGACY_KEYS if k.field == nk.field)


def _number_in_range(origin: str, table: str, key: str, value: Any, minimum: float,
                     maximum: float, unit: str) -> float:
    """``value`` if it is an int or float in [minimum, maximum], else a one-line error
    naming the file, the key and the valid range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HardwareError(f"{origin}: [{table}] {key} = {show(value)} must be a number")
    if not minimum <= value <= maximum:  # NaN fails too; no float() of a huge int
        raise HardwareError(
            f"{origin}: [{table}] {key} = {show(value)} is out of range; valid: {minimum:g} to "
            f"{maximum:g} {unit}"
        )
    return value


def _sources(origin: str, table: Mapping[str, Any]) -> dict[str, str]:
    _check_known(origin, "sources", table, SOURCE_KEYS, "source key")
    by_dotted = {nk.dotted: nk.field for nk in NUMERIC_KEYS + LEGACY_KEYS}
    by_dotted[INTERCONNECT_KIND_KEY] = "interconnect_kind"
    sources = {}
    for dotted, text in table.items():
        if not isinstance(text, str) or not text.strip():
            raise HardwareError(
                f"{origin}: [sources] {dotted!r} = {show(text)} must be a non-empty string"
            )
        sources[by_dotted.get(dotted, dotted)] = text
    return sources


def _interconnect_kind(origin: str, table: Mapping[str, Any]) -> str | None:
    """[interconnect] kind: one of ``INTERCONNECT_KINDS``; required when the table gives a
    bandwidth or latency; "none" (no link) takes neither."""
    if not table:
        return None
    kind = table.get("kind")
    if kind is None:
        raise HardwareError(f"{origin}: [interconnect] kind is missing; valid: "
                            f"{', '.join(INTERCONNECT_KINDS)}")
    if not isinstance(kind, str) or kind not in INTERCONNECT_KINDS:
        raise HardwareError(f"{origin}: [interconnect] kind = {show(kind)} is unknown; valid: "
                            f"{', '.join(INTERCONNECT_KINDS)}")
    numbers = [key for key in ("bandwidth_gb_per_s", "latency_us") if key in table]
    if kind == "none" and numbers:
        raise HardwareError(f"{origin}: [interconnect] kind = \"none\" (no link) takes no "
                            f"{' or '.join(numbers)}")
    missing = [key for key in ("bandwidth_gb_per_s", "latency_us") if key not in table]
    if kind != "none" and missing:
        raise HardwareError(f"{origin}: [interconnect] {' and '.join(missing)} missing for kind "
                            f"{kind!r}")
    return kind


def _provenance(origin: str, table: Mapping[str, Any]) -> dict[str, str]:
    provenance = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise HardwareError(
                f"{origin}: [provenance] {key} = {show(value)} must be a string or a number"
            )
        provenance[key] = str(value)
    return provenance
