"""``fpcost hardware [NAME_OR_PATH]``: list the built-in profiles, or show one with sources."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from fpcost.cli.render import Column, emit_csv, emit_json, format_option, render_table
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.units import GIBI, GIGA, TERA
from fpcost.hardware_profiles import list_profiles, load_profile
from fpcost.hardware_profiles.schema import NUMERIC_KEYS


def compact(divisor: float) -> Callable[[Any], str]:
    """Formatter printing ``value / divisor`` with up to 6 significant digits ("154.8")."""

    def _fmt(value: Any) -> str:
        return "—" if value is None else f"{value / divisor:g}"

    return _fmt


# Short headers so that the table fits 80 columns; the caption spells out the units.
LIST_COLUMNS = (
    Column("name", "profile", justify="left"),
    Column("memory_bytes", "mem\nGiB", compact(GIBI)),
    Column("hbm_bandwidth_bytes_per_s", "BW\nGB/s", compact(GIGA)),
    Column("tensor_fp16_flops_per_s", "FP16", compact(TERA)),
    Column("tensor_int8_ops_per_s", "INT8", compact(TERA)),
    Column("tensor_int4_ops_per_s", "INT4", compact(TERA)),
    Column("tensor_fp8_flops_per_s", "FP8", compact(TERA)),
    Column("vector_fp16_flops_per_s", "vec\nFP16", compact(TERA)),
    Column("vector_fp32_flops_per_s", "vec\nFP32", compact(TERA)),
)
# CSV of the list: every scalar field, raw SI numbers.
LIST_CSV_KEYS = (("name", "description", "device_type", "interconnect_kind")
                 + tuple(k.field for k in NUMERIC_KEYS))
LIST_TITLE = "Hardware profiles"
LIST_CAPTION = (
    "mem: device memory in GiB (2^30 B); BW: memory bandwidth in GB/s (1e9 B/s). "
    "FP16/INT8/INT4/FP8: dense tensor peaks in TFLOP/s (TOP/s for INT8/INT4), never the 2x "
    "sparse figures; — = no such tensor path. vec: non-tensor rates in TFLOP/s. "
    "`fpcost hardware NAME` shows every field with its source, the GPU-to-GPU interconnect "
    "(--tensor-parallel) included."
)

DETAIL_COLUMNS = (
    Column("key", "key", justify="left"),
    Column("value", "value"),
    Column("unit", "unit", justify="left"),
    Column("source", "source", justify="left"),
)
DETAIL_CSV_KEYS = ("field", "value", "source")


@click.command(epilog="Built-in profiles: " + ", ".join(list_profiles()) + ". The file "
               "format, its units and valid ranges: docs/hardware.md.",
               # a dash-led argument ("-inf") is a profile name to refuse, not an unknown option
               context_settings={"ignore_unknown_options": True})
@click.argument("name_or_path", required=False, metavar="[NAME_OR_PATH]")
@format_option
def hardware(name_or_path: str | None, output_format: str) -> None:
    """List the built-in hardware profiles (the default, with no argument), or show one
    profile with every number, its unit and its source.

    NAME_OR_PATH is a built-in profile name, case-insensitive, aliases accepted (a6000,
    "RTX A6000", h100 = h100-sxm, a100 = a100-40g), or a profile .toml file (any argument
    ending in .toml or containing a /).

    Table values are in the file's units (capacity GiB = 2^30 B; bandwidth GB/s = 1e9 B/s;
    TFLOP/s); JSON and CSV hold raw SI numbers (bytes, bytes/s, FLOP/s) in unit-suffixed
    fields.
    """
    if name_or_path is None:
        _show_list([load_profile(name) for name in list_profiles()], output_format)
    else:
        _show_one(load_profile(name_or_path), output_format)


def _show_list(profiles: list[HardwareProfile], output_format: str) -> None:
    rows = [dataclasses.asdict(p) for p in profiles]
    if output_format == "json":
        emit_json(rows)
    elif output_format == "csv":
        emit_csv(rows, LIST_CSV_KEYS)
    else:
        render_table(rows, LIST_COLUMNS, title=LIST_TITLE, caption=LIST_CAPTION)


def _show_one(profile: HardwareProfile, output_format: str) -> None:
    if output_format == "json":
        emit_json(dataclasses.asdict(profile))
    elif output_format == "csv":
        emit_csv(_si_rows(profile), DETAIL_CSV_KEYS)
    else:
        caption = None
        if profile.provenance:
            caption = "provenance: " + "; ".join(f"{k}: {v}" for k, v in profile.provenance.items())
        render_table(
            _display_rows(profile),
            DETAIL_COLUMNS,
            title=f"{profile.name} ({profile.device_type}): {profile.description}",
            caption=caption,
        )


def _si_rows(profile: HardwareProfile) -> list[dict[str, Any]]:
    """One row per field, numbers in SI units, keyed by the HardwareProfile field name."""
    rows = [
        {"field": key, "value": getattr(profile, key), "source": ""}
        for key in ("name", "description", "device_type")
    ]
    rows.append({"field": "interconnect_kind", "value": profile.interconnect_kind,
                 "source": _source(profile, "interconnect_kind")})
    rows += [
        {
            "field": nk.field,
            "value": getattr(profile, nk.field),
            "source": _source(profile, nk.field),
        }
        for nk in NUMERIC_KEYS
    ]
    for op_class, factor in profile.efficiency.items():
        key = f"efficiency.{op_class}"
        rows.append({"field": key, "value": factor, "source": _source(profile, key)})
    for key, text in profile.provenance.items():
        rows.append({"field": f"provenance.{key}", "value": text, "source": ""})
    return rows


def _display_rows(profile: HardwareProfile) -> list[dict[str, Any]]:
    """One row per number in the profile file's own keys and units."""
    rows = [{"key": "interconnect.kind", "value": profile.interconnect_kind or "—", "unit": "",
             "source": _source(profile, "interconnect_kind")}]
    for nk in NUMERIC_KEYS:
        value = getattr(profile, nk.field)
        shown = "—" if value is None else f"{value / nk.si_per_file_unit:g}"
        rows.append(
            {
                "key": nk.dotted,
                "value": shown,
                "unit": nk.unit,
                "source": _source(profile, nk.field),
            }
        )
    for op_class, factor in profile.efficiency.items():
        key = f"efficiency.{op_class}"
        rows.append(
            {
                "key": key,
                "value": f"{factor:g}",
                "unit": "fraction",
                "source": _source(profile, key),
            }
        )
    return rows


def _source(profile: HardwareProfile, key: str) -> str:
    return profile.sources.get(key, "")
