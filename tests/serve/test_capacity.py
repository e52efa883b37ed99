"""The KV cache a server gets, by hand: LLaVA-1.5-7B (Vicuna-7B: 32 layers, 32 KV heads of
128) stores 32 × 2 × 4096 × 2 B = 524,288 B per token at 16 bits."""

import math

import pytest

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.memory import peak_activation, weight_bytes_by_part
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.serve.capacity import ServerSettings, kv_capacity
from fpcost.costmodel.workload import Workload

from .helpers import settings_for


def test_blocks_by_hand(a6000):
    spec = get_preset("llava-1.5-7b")
    s = settings_for(a6000)
    cap = kv_capacity(spec, a6000, s, ServerSettings())
    assert cap.kv_bytes_per_token == 32 * 2 * 4096 * 2
    weights = sum(weight_bytes_by_part(spec, s.quant, s.vision_quant).values())
    reserve = peak_activation(spec, Workload(576, 8192 - 576, 1, 1), s)[0]
    assert cap.weight_bytes == weights and cap.activation_reserve_bytes == reserve
    free = 48 * 2**30 * 0.9 - weights - reserve
    assert cap.num_blocks == math.floor(free / (16 * 524_288))
    assert cap.kv_cache_bytes <= free


def test_fewer_kv_bits_and_less_memory(a6000):
    spec = get_preset("llava-1.5-7b")
    full = kv_capacity(spec, a6000, settings_for(a6000), ServerSettings())
    kv4 = kv_capacity(spec, a6000, settings_for(a6000, QuantPlan(16, 16, 4)), ServerSettings())
    assert kv4.kv_bytes_per_token == full.kv_bytes_per_token / 4
    assert kv4.num_blocks >= 4 * full.num_blocks - 4
    half = kv_capacity(spec, a6000, settings_for(a6000), ServerSettings(gpu_memory_utilization=0.5))
    assert half.num_blocks < full.num_blocks


def test_a_model_that_does_not_fit_is_one_error(a6000):
    with pytest.raises(WorkloadError, match="leaves no KV cache on a6000"):
        kv_capacity(get_preset("llava-onevision-72b"), a6000, settings_for(a6000), ServerSettings())


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_num_seqs": 0}, "--max-num-seqs 0"),
    ({"max_num_batched_tokens": True}, "--max-num-batched-tokens True"),
    ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization 1.5"),
])
def test_bad_server_settings(kwargs, fragment):
    with pytest.raises(WorkloadError, match=fragment.replace(".", r"\.")):
        ServerSettings(**kwargs)
