"""Hardware profiles: the built-in data against the datasheets, the loader's errors, the
writer's round trip, and the ``fpcost hardware`` command."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fpcost.cli.main import cli, main
from fpcost.costmodel.errors import HardwareError
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.units import GIBI, MEBI
from fpcost.hardware_profiles import (
    dumps_profile,
    list_profiles,
    load_profile,
    profile_from_toml_dict,
    write_profile,
)
from fpcost.hardware_profiles.loader import DATA_DIR
from fpcost.hardware_profiles.schema import NUMERIC_KEYS

BUILTIN_NAMES = [
    "a100-40g",
    "a100-80g",
    "a100-80g-pcie",
    "a6000",
    "h100-pcie",
    "h100-sxm",
    "h200",
    "l40s",
    "rtx4090",
]
HOPPER = ["h100-sxm", "h100-pcie", "h200"]

# Dense peaks from the datasheets (sparse figures are exactly 2x and must not be used), in
# SI units: (memory bytes, bandwidth bytes/s, FP16 tensor FLOP/s, INT8 OP/s, INT4 OP/s or
# None, FP8 FLOP/s or None). Sources: NVIDIA datasheets and architecture whitepapers for the
# RTX A6000 (GA102), A100, H100, H200, L40S and RTX 4090 (Ada); the RTX 4090's FP16 and FP8
# are the FP32-accumulate rates; the L40S INT4 is derived (docs/hardware.md). Capacities are
# binary: the datasheets' "40 GB" A100 holds 40 GiB, reported by nvidia-smi as 40,960 MiB.
DATASHEET = {
    "a6000": (48 * GIBI, 768e9, 154.8e12, 309.7e12, 619.4e12, None),
    "a100-40g": (40 * GIBI, 1555e9, 312e12, 624e12, 1248e12, None),
    "a100-80g": (80 * GIBI, 2039e9, 312e12, 624e12, 1248e12, None),
    "a100-80g-pcie": (80 * GIBI, 1935e9, 312e12, 624e12, 1248e12, None),
    "h100-sxm": (80 * GIBI, 3350e9, 989.4e12, 1979e12, None, 1979e12),
    "h100-pcie": (80 * GIBI, 2000e9, 756e12, 1513e12, None, 1513e12),
    "h200": (141 * GIBI, 4800e9, 989.4e12, 1979e12, None, 1979e12),
    "l40s": (48 * GIBI, 864e9, 362e12, 733e12, 733e12, 733e12),
    "rtx4090": (24 * GIBI, 1008e9, 165.2e12, 660.6e12, 1321e12, 330e12),
}
DATASHEET_FIELDS = (
    "memory_bytes",
    "hbm_bandwidth_bytes_per_s",
    "tensor_fp16_flops_per_s",
    "tensor_int8_ops_per_s",
    "tensor_int4_ops_per_s",
    "tensor_fp8_flops_per_s",
)

# On-chip buffer = SMs x 256 KB register file, KB = 1e3 B (LLM-Viewer's hardware_params:
# A6000 21504e3, A100 27648e3, H100 SXM 33792e3, H100 PCIe 29184e3).
NUM_SMS = {
    "a6000": 84,
    "a100-40g": 108,
    "a100-80g": 108,
    "a100-80g-pcie": 108,
    "h100-sxm": 132,
    "h100-pcie": 114,
    "h200": 132,
    "l40s": 142,
    "rtx4090": 128,
}
REGISTER_FILE_BYTES_PER_SM = 256e3

# Non-tensor (CUDA-core) rates, FLOP/s: (FP16, FP32), from the same datasheets/whitepapers.
VECTOR_PEAKS = {
    "a6000": (38.7e12, 38.7e12),
    "a100-40g": (78e12, 19.5e12),
    "a100-80g": (78e12, 19.5e12),
    "a100-80g-pcie": (78e12, 19.5e12),
    "h100-sxm": (133.8e12, 66.9e12),
    "h100-pcie": (102e12, 51e12),
    "h200": (133.8e12, 67e12),
    "l40s": (91.6e12, 91.6e12),
    "rtx4090": (82.6e12, 82.6e12),
}

MINIMAL = """\
name = "tiny"
[memory]
capacity_gb = 48
bandwidth_gb_per_s = 768
onchip_buffer_kb = 21504
[tensor]
fp16_tflops = 154.8
int8_tops = 309.7
[vector]
fp16_tflops = 38.7
fp32_tflops = 38.7
"""


def _assert_one_line_error(path, expected):
    """Loading ``path`` fails with one line that names the file once and says ``expected``."""
    with pytest.raises(HardwareError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert message.count(str(path)) == 1
    assert expected in message


def _write(tmp_path: Path, text: str, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the built-in data -------------------------------------------------------------------


def test_builtin_names():
    assert list_profiles() == BUILTIN_NAMES


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_profile_loads(name):
    profile = load_profile(name)
    assert isinstance(profile, HardwareProfile)
    assert profile.name == name  # the name inside the file matches the file name
    assert profile.device_type == "gpu"
    assert profile.description.startswith("NVIDIA ")
    assert profile.efficiency == {}  # datasheet ceilings, uncalibrated


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_datasheet_values(name):
    profile = load_profile(name)
    for field, expected in zip(DATASHEET_FIELDS, DATASHEET[name], strict=True):
        actual = getattr(profile, field)
        if expected is None:
            assert actual is None, f"{name}.{field}"
        else:
            assert actual == pytest.approx(expected, rel=1e-12), f"{name}.{field}"


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_onchip_buffer_is_register_file(name):
    expected = NUM_SMS[name] * REGISTER_FILE_BYTES_PER_SM
    assert load_profile(name).onchip_buffer_bytes == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_vector_peaks(name):
    profile = load_profile(name)
    fp16, fp32 = VECTOR_PEAKS[name]
    assert profile.vector_fp16_flops_per_s == pytest.approx(fp16, rel=1e-12)
    assert profile.vector_fp32_flops_per_s == pytest.approx(fp32, rel=1e-12)
    # The trap "CUDA-core FP32 used as the compute peak": tensor peaks are far above.
    assert profile.tensor_fp16_flops_per_s > 1.9 * profile.vector_fp16_flops_per_s


@pytest.mark.parametrize("name", HOPPER)
def test_hopper_has_no_int4_peak(name):
    profile = load_profile(name)
    assert profile.tensor_int4_ops_per_s is None
    # ... so INT4 work falls back to the INT8 tensor rate.
    assert profile.peak_flops_per_s("tensor", "int4") == profile.tensor_int8_ops_per_s
    assert profile.sources["tensor_int4_ops_per_s"].startswith("none:")


def test_a6000_reproduces_llm_viewer_table3_setting():
    # The setting that reproduces Table 3 (docs/accounting.md): A6000 768e9 B/s, FP16
    # 154.8e12 FLOP/s, INT8 309.7e12 OP/s, on-chip buffer 21504e3 B.
    profile = load_profile("a6000")
    assert profile.hbm_bandwidth_bytes_per_s == 7.68e11
    assert profile.tensor_fp16_flops_per_s == pytest.approx(1.548e14, rel=1e-12)
    assert profile.tensor_int8_ops_per_s == pytest.approx(3.097e14, rel=1e-12)
    assert profile.onchip_buffer_bytes == 2.1504e7


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_number_has_a_source(name):
    profile = load_profile(name)
    for nk in NUMERIC_KEYS:
        if getattr(profile, nk.field) is None:
            continue
        source = profile.sources.get(nk.field, "")
        assert source.strip(), f"{name}: {nk.dotted} has no source"
        # A citation with a URL, or an explicit derivation; the interconnect latency is a
        # stated assumption (no datasheet prints one).
        stated = source.startswith("derived") or (nk.key == "latency_us"
                                                  and source.startswith("assumption"))
        assert "http" in source or stated, f"{name}: {nk.dotted}"
    if profile.interconnect_kind is not None:
        assert profile.sources.get("interconnect_kind", "").strip(), f"{name}: interconnect.kind"


def test_schema_covers_every_numeric_field():
    non_numeric = {"name", "description", "device_type", "efficiency", "sources", "provenance",
                   "interconnect_kind"}
    fields = {f.name for f in dataclasses.fields(HardwareProfile)} - non_numeric
    assert {nk.field for nk in NUMERIC_KEYS} == fields


# --- names, aliases, paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("A6000", "a6000"),
        ("rtx-a6000", "a6000"),
        ("RTX A6000", "a6000"),
        ("nvidia_A6000", "a6000"),
        ("a100", "a100-40g"),  # as LLM-Viewer's nvidia_A100: the 40 GB data
        ("nvidia_A100_40G", "a100-40g"),
        ("nvidia_A100_80G", "a100-80g"),
        ("A100-80GB-PCIe", "a100-80g-pcie"),
        ("h100", "h100-sxm"),
        ("nvidia_H100_SXM", "h100-sxm"),
        ("nvidia_H100_PCIe", "h100-pcie"),
        ("H200", "h200"),
        ("L40S", "l40s"),
        ("GeForce RTX 4090", "rtx4090"),
        ("rtx-4090", "rtx4090"),
    ],
)
def test_aliases(alias, name):
    assert load_profile(alias).name == name


def test_load_by_path(tmp_path):
    text = (DATA_DIR / "a6000.toml").read_text(encoding="utf-8")
    path = _write(tmp_path, text, "my-a6000.toml")
    assert load_profile(str(path)) == load_profile("a6000")
    assert load_profile(path) == load_profile("a6000")


def test_unit_conversion(tmp_path):
    profile = load_profile(_write(tmp_path, MINIMAL))
    assert profile.hbm_bandwidth_bytes_per_s == 7.68e11  # 768 GB/s, GB = 1e9 B
    assert profile.memory_bytes == 4.8e10
    assert profile.onchip_buffer_bytes == 2.1504e7  # KB = 1e3 B
    assert profile.tensor_fp16_flops_per_s == pytest.approx(1.548e14, rel=1e-12)
    assert profile.tensor_int4_ops_per_s is None
    assert profile.description == ""
    assert profile.device_type == "gpu"


def test_cpu_profile_with_provenance(tmp_path):
    text = MINIMAL.replace('name = "tiny"', 'name = "my-cpu"\ndevice_type = "cpu"') + (
        "[efficiency]\nmatmul = 0.8\n"
        '[sources]\n"tensor.fp16_tflops" = "measured: fpcost calibrate"\n'
        '[provenance]\ndevice = "AMD EPYC 7763"\ntorch = "2.5.1"\nthreads = 8\n'
        'date = "2025-01-01"\n'
    )
    profile = load_profile(_write(tmp_path, text, "cpu.toml"))
    assert profile.device_type == "cpu"
    assert profile.efficiency == {"matmul": 0.8}
    assert profile.sources == {"tensor_fp16_flops_per_s": "measured: fpcost calibrate"}
    assert profile.provenance == {
        "device": "AMD EPYC 7763",
        "torch": "2.5.1",
        "threads": "8",
        "date": "2025-01-01",
    }


# --- one-line errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("fp16_tflops = 154.8\n", "", "[tensor] fp16_tflops is missing"),
        ('name = "tiny"\n', "", "name is missing"),
        ('name = "tiny"', 'name = ""', "name = '' must be a non-empty string"),
        ('name = "tiny"', 'name = "tiny"\ndescription = 5', "description = 5 must be a string"),
        (
            "[vector]\nfp16_tflops = 38.7\nfp32_tflops = 38.7\n",
            "",
            "[vector] fp16_tflops is missing",
        ),
        ("int8_tops = 309.7", 'int8_tops = "fast"', "[tensor] int8_tops = 'fast' must be a number"),
        ("int8_tops = 309.7", "int8_tops = true", "[tensor] int8_tops = True must be a number"),
        (
            "capacity_gb = 48",
            "capacity_gb = 0",
            "[memory] capacity_gb = 0 is out of range; valid: 0.001 to 1e+06 GB",
        ),
        (
            "bandwidth_gb_per_s = 768",
            "bandwidth_gb_per_s = -768",
            "[memory] bandwidth_gb_per_s = -768 is out of range; valid: 0.001 to 1e+06 GB/s",
        ),
        (
            "bandwidth_gb_per_s = 768",
            "bandwidth_gb_per_s = inf",
            "[memory] bandwidth_gb_per_s = inf is out of range; valid: 0.001 to 1e+06 GB/s",
        ),
        # subnormal, absurdly small or large, NaN: refused at load, never a time of inf or 0
        (
            "bandwidth_gb_per_s = 768",
            "bandwidth_gb_per_s = 1e-320",
            "[memory] bandwidth_gb_per_s = 1e-320 is out of range; valid: 0.001 to 1e+06 GB/s",
        ),
        ("bandwidth_gb_per_s = 768", "bandwidth_gb_per_s = nan", "bandwidth_gb_per_s = nan is out"),
        ("bandwidth_gb_per_s = 768", "bandwidth_gb_per_s = 2e6", "bandwidth_gb_per_s = 2000000.0 is"),
        (
            "bandwidth_gb_per_s = 768",
            "bandwidth_gb_per_s = 9" + "9" * 30,
            "bandwidth_gb_per_s = " + "9" * 31 + " is out of range",
        ),
        ("capacity_gb = 48", "capacity_gb = 5e-4", "capacity_gb = 0.0005 is out of range"),
        ("capacity_gb = 48", "capacity_gib = 2e6", "capacity_gib = 2000000.0 is out of range; "
                                                   "valid: 0.001 to 1e+06 GiB"),
        ("capacity_gb = 48", "capacity_gb = 48\ncapacity_gib = 48",
         "[memory] give one of capacity_gib or capacity_gb, not both"),
        ("capacity_gb = 48\n", "", "[memory] capacity_gib is missing"),
        ("onchip_buffer_kb = 21504", "onchip_buffer_kb = 2e9", "valid: 0.001 to 1e+09 KB"),
        ("fp16_tflops = 154.8", "fp16_tflops = 1e-7",
         "[tensor] fp16_tflops = 1e-07 is out of range; valid: 1e-06 to 1e+06 TFLOP/s"),
        ("int8_tops = 309.7", "int8_tops = -inf", "[tensor] int8_tops = -inf is out of range"),
        (
            "fp16_tflops = 154.8",
            "fp16_tflop = 154.8",
            "unknown key [tensor] 'fp16_tflop'; "
            "valid: fp16_tflops, int8_tops, int4_tops, fp8_tflops, tf32_tflops",
        ),
        (
            'name = "tiny"',
            'nmae = "tiny"',
            "unknown top-level key 'nmae'; valid: name, description, device_type, memory, "
            "tensor, vector, runtime, interconnect, efficiency, sources, provenance",
        ),
        ("[tensor]", "[tensr]", "unknown top-level key 'tensr'; valid: name,"),
        (
            'name = "tiny"',
            'name = "tiny"\ndevice_type = "tpu"',
            "device_type = 'tpu' is unknown; valid: gpu, cpu",
        ),
        (
            'name = "tiny"',
            'name = "tiny"\nmemory = 5',
            "malformed TOML",  # a key and a table of the same name
        ),
    ],
)
def test_error_messages(tmp_path, old, new, expected):
    assert old in MINIMAL
    path = _write(tmp_path, MINIMAL.replace(old, new))
    _assert_one_line_error(path, expected)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "[efficiency]\nsoftmax = 0.5\n",
            "unknown operator class [efficiency] 'softmax'; valid: matmul, attention, vector, norm",
        ),
        ("[efficiency]\nmatmul = 0\n", "[efficiency] matmul = 0 is out of range; valid: 1e-06 to 1000"),
        ("[efficiency]\nmatmul = 1e-300\n", "[efficiency] matmul = 1e-300 is out of range"),
        (
            '[sources]\n"tensor.fp16_tflop" = "x"\n',
            "unknown source key [sources] 'tensor.fp16_tflop'; valid: memory.capacity_gib, ",
        ),
        ('[sources]\n"tensor.fp16_tflops" = ""\n', "must be a non-empty string"),
        ("[provenance]\ndevice = [1, 2]\n", "[provenance] device = [1, 2] must be a string"),
        ("[efficiency]\nmatmul = 5000\n", "[efficiency] matmul = 5000 is out of range"),
    ],
)
def test_error_messages_optional_tables(tmp_path, extra, expected):
    path = _write(tmp_path, MINIMAL + extra)
    _assert_one_line_error(path, expected)


def test_table_given_as_a_value(tmp_path):
    text = MINIMAL.replace("[vector]\nfp16_tflops = 38.7\nfp32_tflops = 38.7\n", "")
    path = _write(tmp_path, text.replace('name = "tiny"', 'name = "tiny"\nvector = 5'))
    with pytest.raises(HardwareError, match=r": \[vector\] must be a table, got 5$"):
        load_profile(path)


def test_malformed_toml_names_the_line(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("capacity_gb = 48", "capacity_gb = = 48"))
    with pytest.raises(HardwareError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(f"{path}: malformed TOML: ")
    assert "line 3" in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(HardwareError, match=r"^hardware profile file not found: .*nope\.toml$"):
        load_profile(str(path))


def test_unknown_name_lists_valid_names():
    with pytest.raises(HardwareError) as info:
        load_profile("a7000")
    assert str(info.value) == (
        "unknown hardware profile 'a7000'; valid: "
        + ", ".join(BUILTIN_NAMES)
        + " (or a path to a .toml file)"
    )


def test_builtin_error_names_the_file():
    data = {
        "name": "a6000",
        "memory": {"capacity_gb": 48, "bandwidth_gb_per_s": 768, "onchip_buffer_kb": 21504},
        "tensor": {"int8_tops": 309.7},
        "vector": {"fp16_tflops": 38.7, "fp32_tflops": 38.7},
    }
    with pytest.raises(HardwareError, match=r"^a6000\.toml: \[tensor\] fp16_tflops is missing$"):
        profile_from_toml_dict(data, "a6000.toml")


# --- writing -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_write_profile_round_trips_builtins(tmp_path, name):
    profile = load_profile(name)
    path = write_profile(profile, tmp_path / f"{name}.toml")
    assert load_profile(path) == profile
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.toml"]  # no temporary left


def test_write_profile_round_trips_calibrated_cpu_profile(tmp_path):
    profile = HardwareProfile(
        name="xeon-calibrated",
        description='Intel Xeon "Sapphire Rapids"\\ 8480+, measured\ttwice\n',
        memory_bytes=512e9,
        hbm_bandwidth_bytes_per_s=2.3456789012345e11,
        onchip_buffer_bytes=105e6,
        tensor_fp16_flops_per_s=1.2345678901234e13,
        tensor_int8_ops_per_s=3.3e13,
        vector_fp16_flops_per_s=7.77e11,
        vector_fp32_flops_per_s=1.0e12,
        device_type="cpu",
        efficiency={"matmul": 0.83, "norm": 0.5},
        sources={
            "tensor_fp16_flops_per_s": "measured: 4096^3 matmul, median of 20",
            "efficiency.matmul": "fitted: fpcost validate, 12 shapes",
        },
        provenance={"device": "Xeon 8480+ (ü, \x7f)", "torch version": "2.5.1", "threads": "56"},
    )
    path = tmp_path / "cpu.toml"
    path.write_text("old contents", encoding="utf-8")
    write_profile(profile, path)  # replaces an existing file
    loaded = load_profile(path)
    for field in dataclasses.fields(HardwareProfile):
        expected, actual = getattr(profile, field.name), getattr(loaded, field.name)
        if isinstance(expected, float):
            assert actual == pytest.approx(expected, rel=1e-14), field.name
        else:
            assert actual == expected, field.name
    text = path.read_text(encoding="utf-8")
    assert "hbm_bandwidth" not in text  # the file uses file-unit keys
    assert "bandwidth_gb_per_s = 234.56789012345" in text


def test_write_profile_rejects_unknown_source_key(tmp_path):
    profile = dataclasses.replace(load_profile("a6000"), sources={"tensor_fp16_flops": "x"})
    with pytest.raises(HardwareError, match="sources key 'tensor_fp16_flops' is unknown"):
        write_profile(profile, tmp_path / "x.toml")
    assert not list(tmp_path.iterdir())


def test_write_profile_into_missing_directory(tmp_path):
    from fpcost.costmodel.errors import OutputError

    with pytest.raises(OutputError, match="^cannot write hardware profile .*does not exist$"):
        write_profile(load_profile("a6000"), tmp_path / "no" / "such" / "dir.toml")


def test_dumps_profile_uses_datasheet_units():
    text = dumps_profile(load_profile("a6000"))
    assert "bandwidth_gb_per_s = 768\n" in text
    assert "fp16_tflops = 154.8\n" in text
    assert "onchip_buffer_kb = 21504\n" in text


# --- the CLI -----------------------------------------------------------------------------


def test_cli_list_table():
    result = CliRunner().invoke(cli, ["hardware"])
    assert result.exit_code == 0, result.output
    for name in BUILTIN_NAMES:
        assert name in result.output
    assert "154.8" in result.output


def test_cli_list_json():
    result = CliRunner().invoke(cli, ["hardware", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == BUILTIN_NAMES
    a6000 = rows[BUILTIN_NAMES.index("a6000")]
    assert a6000["hbm_bandwidth_bytes_per_s"] == 7.68e11  # raw SI numbers
    assert a6000["tensor_fp16_flops_per_s"] == pytest.approx(154.8e12, rel=1e-12)
    h100 = rows[BUILTIN_NAMES.index("h100-sxm")]
    assert h100["tensor_int4_ops_per_s"] is None


def test_cli_list_csv():
    result = CliRunner().invoke(cli, ["hardware", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["name"] for row in rows] == BUILTIN_NAMES
    assert float(rows[BUILTIN_NAMES.index("a6000")]["memory_bytes"]) == 48 * GIBI


def test_cli_show_one_with_sources():
    result = CliRunner().invoke(cli, ["hardware", "A6000"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "tensor.fp16_tflops" in result.output
    assert "154.8" in result.output
    assert "GA102" in result.output


def test_cli_show_one_json_and_csv(tmp_path):
    result = CliRunner().invoke(cli, ["hardware", "h100", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["name"] == "h100-sxm"
    assert data["tensor_int4_ops_per_s"] is None
    assert data["sources"]["tensor_fp16_flops_per_s"]

    path = write_profile(load_profile("l40s"), tmp_path / "mine.toml")
    result = CliRunner().invoke(cli, ["hardware", str(path), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = {row["field"]: row for row in csv.DictReader(io.StringIO(result.output))}
    assert float(rows["hbm_bandwidth_bytes_per_s"]["value"]) == 864e9
    assert rows["tensor_int4_ops_per_s"]["source"].startswith("derived")


def test_cli_unknown_name_is_one_line_error(capsys):
    assert main(["hardware", "a7000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "Error: unknown hardware profile 'a7000'; valid: "
        + ", ".join(BUILTIN_NAMES)
        + " (or a path to a .toml file)\n"
    )


def test_cli_bad_file_is_one_line_error(tmp_path, capsys):
    path = _write(tmp_path, MINIMAL.replace("fp16_tflops = 154.8\n", ""))
    assert main(["hardware", str(path)]) == 2
    assert capsys.readouterr().err == f"Error: {path}: [tensor] fp16_tflops is missing\n"


def test_loading_profiles_imports_no_cli_or_dataframe_libraries():
    code = (
        "import sys; from fpcost.hardware_profiles import load_profile; load_profile('a6000'); "
        "print(sorted(m for m in ('click', 'rich', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    assert out.strip() == "[]"


# --- capacities are binary; every value bounded; hostile files -----------------------------


def test_capacities_are_binary_gib():
    """A "40 GB" A100 holds 40 GiB = 42,949,672,960 B (nvidia-smi: 40,960 MiB), not 40e9 B;
    the H200's "141 GB" is 141 GiB (its driver reports 143,771 MiB, more than 141e9 B)."""
    assert load_profile("a100-40g").memory_bytes == 42_949_672_960
    assert load_profile("a100-80g").memory_bytes == 80 * GIBI
    assert load_profile("h200").memory_bytes == 141 * GIBI
    assert load_profile("h200").memory_bytes > 143_771 * MEBI > 141e9
    for name in BUILTIN_NAMES:
        assert "memory.capacity_gib" in (DATA_DIR / f"{name}.toml").read_text(encoding="utf-8")
        assert "binary GB" in load_profile(name).sources["memory_bytes"]


def test_llava_13b_batch_14_fits_a100_40g():
    """The issue's case: 26.7 GB of weights + 12.9 GB of KV cache + 0.9 GB of activations =
    40.6e9 B fits 40 GiB (42.9e9 B); with 40e9 B it was refused and the largest batch was 13."""
    args = ["estimate", "--model", "llava-1.5-13b", "--hardware", "a100-40g", "--batch", "14",
            "--output-tokens", "512", "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    memory = json.loads(result.output)["memory"]
    assert memory["device_memory_bytes"] == 40 * GIBI
    assert 40e9 < memory["total_bytes"] < 40 * GIBI
    assert memory["fits"] is True
    assert memory["max_batch_size"] == 16


def test_legacy_capacity_gb_still_reads_as_decimal(tmp_path):
    """User files written before capacity_gib keep their meaning: capacity_gb = 48 is 48e9 B."""
    old = load_profile(_write(tmp_path, MINIMAL, "old.toml"))
    new = load_profile(_write(tmp_path, MINIMAL.replace("capacity_gb = 48", "capacity_gib = 48")))
    assert old.memory_bytes == 48e9 and isinstance(old.memory_bytes, float)
    assert new.memory_bytes == 48 * GIBI and isinstance(new.memory_bytes, float)
    text = MINIMAL + '[sources]\n"memory.capacity_gb" = "datasheet"\n'
    assert load_profile(_write(tmp_path, text, "src.toml")).sources == {"memory_bytes": "datasheet"}


def test_written_profiles_use_capacity_gib_and_round_trip_exactly(tmp_path):
    profile = dataclasses.replace(load_profile("a6000"), memory_bytes=16_777_216_123.0)
    path = write_profile(profile, tmp_path / "odd.toml")
    assert "capacity_gib = " in path.read_text(encoding="utf-8")
    assert load_profile(path).memory_bytes == 16_777_216_123.0
    assert "capacity_gib = 48\n" in dumps_profile(load_profile("a6000"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a = " + "[" * 100_000 + "]" * 100_000, "malformed TOML: arrays or tables nested too deeply"),
        ("a = " + "{b = " * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ("x" * (2 * 1024 * 1024), "larger than 1 MiB"),
        (MINIMAL.replace("capacity_gb = 48", "capacity_gb = 1" + "0" * 5000),
         "malformed TOML: Exceeds the limit (4300 digits) for integer string conversion"),
        (MINIMAL.replace("capacity_gb = 48", 'capacity_gb = "' + "4" * 5000 + '"'),
         "[memory] capacity_gb = '44444444444444444444444444444444444444444444444444444444... "
         "must be a number"),
    ],
    ids=["deep-array", "deep-table", "huge", "huge-int", "long-string"],
)
def test_hostile_files_are_one_line_errors(tmp_path, text, expected):
    _assert_one_line_error(_write(tmp_path, text), expected)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(MINIMAL.encode() + b"# \xff\xfe\n")
    _assert_one_line_error(path, "not UTF-8 text")


@pytest.mark.parametrize("arg", ["~no_such_user_xyz/x.toml", "a\x00b.toml", "/dev/null/x.toml"])
def test_odd_paths_are_one_line_errors(arg):
    with pytest.raises(HardwareError, match="^hardware profile file not found: ") as info:
        load_profile(arg)
    assert "\n" not in str(info.value) and "\x00" not in str(info.value)


@pytest.mark.parametrize("value", [0.5, 1e25, float("nan"), float("inf"), 5e-324])
def test_profile_dataclass_bounds_si_values(value):
    """The Python API checks too: a rate below 1 or above 1e24 SI units is refused."""
    expected = r"hbm_bandwidth_bytes_per_s = .* must be a number in \[1, 1e\+24\]"
    with pytest.raises(HardwareError, match=expected):
        dataclasses.replace(load_profile("a6000"), hbm_bandwidth_bytes_per_s=value)


def test_cli_bad_value_names_key_file_and_range(tmp_path, capsys):
    path = _write(tmp_path, MINIMAL.replace("bandwidth_gb_per_s = 768", "bandwidth_gb_per_s = 1e-320"))
    for args in (["hardware", str(path)], ["table3", "--hardware", str(path)]):
        assert main(args) == 2
        assert capsys.readouterr().err == (
            f"Error: {path}: [memory] bandwidth_gb_per_s = 1e-320 is out of range; valid: 0.001 "
            "to 1e+06 GB/s\n"
        )


def test_cli_help_describes_argument_and_names_profiles():
    result = CliRunner().invoke(cli, ["hardware", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "NAME_OR_PATH is a built-in profile name" in text
    assert "[default: table]" in text
    assert "Built-in profiles: " + ", ".join(BUILTIN_NAMES) in text
