"""The torch side of calibrate and validate on tiny shapes: hooks, the per-class split,
memory checks, single-operator kernels, and a whole (miniature) calibration. No timing
assertions: only shapes, keys, signs and deterministic fake clocks."""

import pytest
import torch
from torch import nn

from fpcost.costmodel.errors import FpcostError
from fpcost.costmodel.hardware import OPERATOR_CLASSES
from fpcost.costmodel.kernel_fit import KERNEL_OP_CLASSES, KernelCase
from fpcost.costmodel.spec import LLMSpec
from fpcost.costmodel.units import GIGA
from fpcost.hardware_profiles import load_profile, write_profile
from fpcost.pruner import calibrate as calibrate_module
from fpcost.pruner.timing import DeviceError, WallTimer, resolve_device
from fpcost.pruner.validate import (
    SCALED_LLAMA,
    ClassHooks,
    build_llm,
    check_fits,
    llama_config,
    measure_prefills,
    required_memory_bytes,
)
from tests.noise_helpers import quiet_machine  # noqa: F401  (the fixture)


@pytest.fixture(autouse=True)
def _detectors_off(quiet_machine):  # noqa: F811
    """Tiny kernels time in microseconds: these tests check shapes, not noise."""


TINY = LLMSpec(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=64, vocab_size=128, name="tiny")


class StepTimer(WallTimer):
    """Every mark advances a fake clock by 1 s."""

    def __init__(self):
        self.now = 0.0

    def mark(self):
        self.now += 1.0
        return self.now


@pytest.fixture(scope="module")
def cpu():
    return resolve_device("cpu", num_threads=1)


def test_llama_config_matches_the_spec():
    config = llama_config(TINY, 100)
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (32, 2, 2)
    assert config.max_position_embeddings >= 100
    assert config._attn_implementation == "sdpa"


def test_hooks_split_a_pass_into_classes_and_always_detach(cpu):
    model = build_llm(TINY, "float32", cpu, 16)
    hooks = ClassHooks(StepTimer())
    with hooks.attach(model):
        with torch.inference_mode():
            model(input_ids=torch.zeros(1, 8, dtype=torch.long), logits_to_keep=1)
        kinds = [kind for kind, _, _ in hooks.intervals]
        # Per layer: 4 attention projections, 3 MLP projections, 2 norms, 1 attention
        # module; then the final norm and the LM head.
        assert kinds.count("attention_linear") == 8 and kinds.count("linear") == 6 + 1
        assert kinds.count("norm") == 5 and kinds.count("attention_module") == 2
        split = hooks.class_seconds(total_s=1000.0)
    assert set(split) == set(OPERATOR_CLASSES)
    assert sum(split.values()) == pytest.approx(1000.0)
    assert all(v > 0 for v in split.values())
    assert hooks.intervals == []
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_hook_arithmetic_by_hand():
    hooks = ClassHooks(WallTimer())
    hooks.intervals = [("attention_module", 0.0, 10.0), ("attention_linear", 1.0, 5.0),
                       ("linear", 10.0, 30.0), ("norm", 30.0, 31.0)]
    assert hooks.class_seconds(40.0) == {"matmul": 24.0, "attention": 6.0, "norm": 1.0, "vector": 9.0}


def test_hooks_are_removed_when_the_body_raises(cpu):
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(RuntimeError), ClassHooks(WallTimer()).attach(model):
        raise RuntimeError("interrupted")
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


def test_measure_prefills_on_a_tiny_model(cpu):
    steps = []
    results = measure_prefills(TINY, "float32", cpu, [4, 8], warmup=0, repeats=2,
                               hooked_repeats=1, progress=steps.append)
    assert [r.num_tokens for r in results] == [4, 8]
    for r in results:
        assert r.total_s() > 0 and len(r.total_repeats_s) == 2
        assert r.total_s("min") == min(r.total_repeats_s)
        for statistic in ("median", "min"):
            assert set(r.class_s(statistic)) == set(OPERATOR_CLASSES)
            assert sum(r.class_s(statistic).values()) == pytest.approx(r.total_s(statistic))
    assert len(steps) == 1 + 2 + 1
    with pytest.raises(DeviceError, match="--dtype 'int4' is unknown"):
        measure_prefills(TINY, "int4", cpu, [4])


def test_memory_estimate_and_one_line_error(cpu):
    small = required_memory_bytes(SCALED_LLAMA, 64, 32)
    assert required_memory_bytes(SCALED_LLAMA, 2048, 32) > small
    assert required_memory_bytes(SCALED_LLAMA, 64, 16) < small
    check_fits(SCALED_LLAMA, 2048, "float32", cpu, available_bytes=20 * GIGA)
    with pytest.raises(DeviceError) as info:
        check_fits(SCALED_LLAMA, 50_000_000, "float32", cpu, available_bytes=20 * GIGA)
    assert "needs about" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("op_name", sorted(KERNEL_OP_CLASSES))
def test_every_kernel_runs(op_name):
    case = KernelCase(op_name, TINY, 8)
    out = calibrate_module.kernel_fn(case, torch.float32, torch.device("cpu"))()
    assert torch.isfinite(out).all()


@pytest.fixture
def miniature_ladders(monkeypatch):
    """Calibration shapes shrunk so that a whole calibration runs in a moment."""
    monkeypatch.setitem(calibrate_module.MATMUL_SHAPES, "cpu", ((8, 16, 16), (32, 32, 32)))
    monkeypatch.setitem(calibrate_module.VECTOR_SIZES, "cpu", (256,))
    monkeypatch.setitem(calibrate_module.COPY_BYTES, "cpu", 4096.0)
    cases = tuple(KernelCase(name, TINY, n) for n in (4, 8) for name in KERNEL_OP_CLASSES)
    monkeypatch.setattr(calibrate_module, "kernel_suite", lambda device_type: cases)


def test_miniature_calibration_writes_a_loadable_profile(cpu, tmp_path, miniature_ladders):
    steps = []
    result = calibrate_module.calibrate(cpu, ["float32", "int8"], "mini", 0, 1, steps.append)
    profile = result.profile
    assert profile.device_type == "cpu" and set(profile.efficiency) == set(OPERATOR_CLASSES)
    assert profile.provenance["device"] == cpu.name and profile.provenance["threads"] == "1"
    assert profile.provenance["torch"] == torch.__version__
    assert "matmul.float32.32x32x32" in profile.provenance
    assert len(result.kernel_times_s) == len(result.kernel_cases) == 14
    loaded = load_profile(write_profile(profile, tmp_path / "mini.toml"))
    assert loaded.efficiency == pytest.approx(profile.efficiency)
    assert steps[-1].startswith("kernel")
    with pytest.raises(FpcostError, match="--dtype 'float8' is unknown"):
        calibrate_module.calibrate(cpu, ["float8"], "mini")
