"""Runtime execution profiles (pure): the kernels each runtime launches, counted by hand,
and the launch and cache terms of a kernel's time."""

from dataclasses import replace

import pytest

from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.flash import FlashWork
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.ops import Op
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.runtime import (
    Kernel,
    class_times_s,
    cpu_flash_work,
    kernel_time_s,
    launch_times_s,
    num_launches,
    prefill_kernels,
    split_class_times_s,
)
from fpcost.costmodel.spec import LLMSpec
from fpcost.hardware_profiles import load_profile, write_profile

# 2 layers, hidden 8, 2 heads of 4, FFN 16: small numbers to count by hand
LLM = LLMSpec(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
              intermediate_size=16, vocab_size=32, name="hand")
FP32, FP16 = QuantPlan.uniform(32), QuantPlan.uniform(16)
T = 4  # tokens
BUFFER = 1e6


def by_name(kernels):
    return {k.op.name: k for k in kernels}


def test_transformers_sdpa_launches_by_hand():
    kernels = prefill_kernels(LLM, FP32, T, "transformers-sdpa", BUFFER)
    # per layer: 2 norms x 7 (pow, mean = sum + div, eps add + rsqrt, scale, weight),
    # 7 linears, rotary 2 x 5, cache cat 2, SDPA 1, output copy 1, SiLU + product 2, 2 adds
    per_layer = 2 * 7 + 7 + 10 + 2 + 1 + 1 + 2 + 2
    # per pass: embedding 1, rotary tables 8, final norm 7, LM head 1
    assert num_launches(kernels) == 2 * per_layer + 1 + 8 + 7 + 1
    # a 16-bit model adds the two casts of each of the 2 x 2 + 1 norms
    assert num_launches(prefill_kernels(LLM, FP16, T, "transformers-sdpa", BUFFER)) == \
        num_launches(kernels) + 2 * (2 * 2 + 1)


def test_rms_norm_passes_by_hand():
    k = by_name(prefill_kernels(LLM, FP16, T, "transformers-sdpa", BUFFER))
    n = T * 8  # hidden elements
    assert k["attn_norm.to_fp32"].op.act_read_bytes == n * 2
    assert k["attn_norm.to_fp32"].op.act_write_bytes == n * 4
    assert k["attn_norm.pow"].op.act_read_bytes == n * 4 == k["attn_norm.pow"].op.act_write_bytes
    assert k["attn_norm.scale"].op.act_read_bytes == (n + T) * 4
    assert k["attn_norm.to_input_dtype"].op.act_write_bytes == n * 2
    assert k["attn_norm.weight"].op.weight_bytes == 8 * 2
    assert all(k[name].op.count == 2 for name in k if name.startswith("attn_norm."))
    norm_bytes = sum(v.op.memory_access_bytes for name, v in k.items() if name.startswith("attn_norm."))
    # the cost model's one record reads and writes the input once: n·2 + n·2 bytes
    assert norm_bytes > 8 * (2 * n * 2)


def test_swiglu_and_residual_and_attention_by_hand():
    k = by_name(prefill_kernels(LLM, FP32, T, "transformers-sdpa", BUFFER))
    f = T * 16
    assert k["mlp_act.silu"].op.act_read_bytes == f * 4 and k["mlp_act.silu"].op.act_write_bytes == f * 4
    assert k["mlp_act.mul_up"].op.act_read_bytes == 2 * f * 4
    assert k["attn_add"].op.act_read_bytes == 2 * T * 8 * 4  # both inputs
    q = T * 8
    assert k["fused_attention.rotary_q.cat"].op.act_read_bytes == q * 4
    assert k["fused_attention.output_contiguous"].op.act_write_bytes == q * 4
    assert k["fused_attention.cache_cat"].op.kv_write_bytes == 2 * q * 4  # K and V
    assert k["fused_attention.cache_cat"].num_launches == 2
    assert k["fused_attention"].op.op_class == "attention"
    assert k["lm_head"].op.count == 1 and k["final_norm.pow"].op.count == 1


def test_fused_runtime_by_hand():
    kernels = prefill_kernels(LLM, FP32, T, "fused", BUFFER)
    # per layer: 2 fused add+norms, 7 linears, rotary 1, cache 1, flash 1, silu_and_mul 1
    assert num_launches(kernels) == 2 * (2 + 7 + 3 + 1) + 1 + 1 + 1  # + embed, final norm, head
    k = by_name(kernels)
    n = T * 8
    norm = k["attn_norm.fused_add_rms_norm"].op
    assert norm.act_read_bytes == 2 * n * 4 and norm.act_write_bytes == 2 * n * 4
    assert "attn_add" not in k and "mlp_add" not in k
    eager = prefill_kernels(LLM, FP32, T, "transformers-sdpa", BUFFER)
    moved = sum(x.op.count * x.op.memory_access_bytes for x in kernels)
    assert moved < sum(x.op.count * x.op.memory_access_bytes for x in eager)


def test_unknown_runtime():
    with pytest.raises(WorkloadError, match="runtime 'tgi' is unknown; valid: transformers-sdpa, fused"):
        prefill_kernels(LLM, FP32, T, "tgi", BUFFER)


def gpu(**kw):
    return HardwareProfile(name="g", description="", memory_bytes=1e9, hbm_bandwidth_bytes_per_s=1e9,
                           onchip_buffer_bytes=1e6, tensor_fp16_flops_per_s=1e12,
                           tensor_int8_ops_per_s=1e12, vector_fp16_flops_per_s=1e10,
                           vector_fp32_flops_per_s=1e10, **kw)


def kernel(launches=3, count=2, **terms):
    return Kernel(Op("prefill", "b", "k", "vector", "fp32", "fp32", count, **terms), launches, "k")


def test_launch_term_by_hand():
    k = kernel(vector_flops=1e4, act_read_bytes=1e3)  # compute 1 µs, memory 1 µs
    assert kernel_time_s(k, gpu()) == pytest.approx(2 * 1e-6)
    with_launch = gpu(kernel_launch_s=5e-6)
    assert kernel_time_s(k, with_launch) == pytest.approx(2 * (1e-6 + 3 * 5e-6))
    assert kernel_time_s(k, with_launch, with_launch=False) == pytest.approx(2e-6)
    assert launch_times_s([k], 5e-6)["vector"] == pytest.approx(30e-6)
    # the efficiency scales the busy time, never the launches
    slow = replace(with_launch, efficiency={"vector": 0.5})
    assert class_times_s([k], slow)["vector"] == pytest.approx(2 * (2e-6 + 15e-6))


def test_cpu_cache_and_weight_terms_by_hand():
    cpu = gpu(cache_bandwidth_bytes_per_s=1e10, cache_bytes=1e3)
    cpu = replace(cpu, device_type="cpu")
    # 3000 activation bytes: 1000 from cache (0.1 µs) + 2000 from memory (2 µs); compute 1 µs
    # overlaps them; the 1000 weight bytes (1 µs) add up
    k = kernel(launches=0, count=1, vector_flops=1e4, act_read_bytes=3e3, weight_bytes=1e3)
    assert kernel_time_s(k, cpu) == pytest.approx(2.1e-6 + 1e-6)
    assert kernel_time_s(k, gpu()) == pytest.approx(4e-6)  # GPU: every byte at the bandwidth


def test_calibrated_weight_bandwidth_by_hand():
    """With a weight bandwidth the weights stream apart at that rate, which no efficiency
    scales: max(compute, activations) / efficiency + weights / rate + launches."""
    cpu = replace(gpu(cache_bandwidth_bytes_per_s=1e10, cache_bytes=1e4, kernel_launch_s=1e-6,
                      weight_bandwidth_bytes_per_s=5e8, efficiency={"vector": 0.5}),
                  device_type="cpu")
    # compute 1 µs over activations 0.3 µs; 1000 weight bytes at 0.5 GB/s: 2 µs; 3 launches
    k = kernel(launches=3, count=2, vector_flops=1e4, act_read_bytes=3e3, weight_bytes=1e3)
    assert kernel_time_s(k, cpu) == pytest.approx(2 * (1e-6 / 0.5 + 2e-6 + 3e-6))
    scaled, fixed = split_class_times_s([k], replace(cpu, efficiency={}))
    assert scaled["vector"] == pytest.approx(2e-6)
    assert fixed["vector"] == pytest.approx(2 * (2e-6 + 3e-6))


def test_sdpa_call_time_by_hand():
    """An SDPA call's fixed time is added once per SDPA kernel instance, to no other kernel."""
    cpu = replace(gpu(kernel_launch_s=1e-6, sdpa_call_s=2e-5), device_type="cpu")
    sdpa = Kernel(Op("prefill", "b", "fused_attention", "attention", "fp32", "fp32", 3,
                     vector_flops=1e4), 1, "fused_attention")
    assert kernel_time_s(sdpa, cpu) == pytest.approx(3 * (1e-6 + 1e-6 + 2e-5))
    other = kernel(launches=1, count=3, vector_flops=1e4)
    assert kernel_time_s(other, cpu) == pytest.approx(3 * (1e-6 + 1e-6))


def test_cpu_flash_attention_tiles_by_hand():
    """PyTorch's CPU kernel: query blocks of 32 / 64 (from 192) / 256 (from 768) rows, key
    blocks of 512 up to the block's last key, each whole but cut at the sequence end."""
    assert cpu_flash_work(100, 100) == FlashWork(100 * 100, 4 * 100)  # one key block, cut
    assert cpu_flash_work(512, 512) == FlashWork(512 * 512, 8 * 512)  # no causal saving
    # 2048: 8 query blocks of 256 see 512, 512, 1024, 1024, 1536, 1536, 2048, 2048 keys
    assert cpu_flash_work(2048, 2048) == FlashWork(256 * 10240, 10240)
    gpu_sdpa = by_name(prefill_kernels(LLM, FP32, 512, "transformers-sdpa", BUFFER))
    cpu_sdpa = by_name(prefill_kernels(LLM, FP32, 512, "transformers-sdpa", BUFFER, "cpu"))
    # head_dim 4: square tiles of 4 rows skip all but 512·4/2 + 512·2 of the 512² scores
    square = 512 * 512 // 2 + 512 * 2
    ratio = cpu_sdpa["fused_attention"].op.tensor_flops / gpu_sdpa["fused_attention"].op.tensor_flops
    assert ratio == pytest.approx(512 * 512 / square)
    fused = by_name(prefill_kernels(LLM, FP32, 512, "fused", BUFFER, "cpu"))
    assert fused["fused_attention"].op == gpu_sdpa["fused_attention"].op  # vLLM-like: unchanged


def test_launch_and_cache_round_trip_through_a_profile_file(tmp_path):
    profile = gpu(kernel_launch_s=2.5e-6, cache_bandwidth_bytes_per_s=1.2e11, cache_bytes=3.2e7,
                  weight_bandwidth_bytes_per_s=1.5e10, sdpa_call_s=4e-5)
    loaded = load_profile(write_profile(profile, tmp_path / "p.toml"))
    assert loaded.weight_bandwidth_bytes_per_s == pytest.approx(1.5e10)
    assert loaded.sdpa_call_s == pytest.approx(4e-5)
    assert "weight_bandwidth_gb_per_s = 15" in (tmp_path / "p.toml").read_text()
    assert loaded.kernel_launch_s == pytest.approx(2.5e-6)
    assert loaded.cache_bandwidth_bytes_per_s == pytest.approx(1.2e11)
    assert loaded.cache_bytes == pytest.approx(3.2e7)
    assert "kernel_launch_us = 2.5" in (tmp_path / "p.toml").read_text()
    plain = load_profile(write_profile(gpu(), tmp_path / "q.toml"))
    assert plain.kernel_launch_s is None and "[runtime]" not in (tmp_path / "q.toml").read_text()


def test_the_roofline_reads_weights_at_a_calibrated_weight_bandwidth():
    """``time_op`` (estimate, sweep, serve): with a weight bandwidth the weight bytes stream
    at that rate, no efficiency applied, apart from both compute and the other bytes (which
    stay at the memory bandwidth over the efficiency). Without one (every GPU profile)
    nothing changes."""
    from fpcost.costmodel.roofline import time_op

    # a GEMV: 1e4 FLOPs (10 ns at 1 TFLOP/s), 1000 weight bytes, 100 activation bytes
    op = Op("decode", "b", "q_proj", "matmul", "fp16", "fp16", 1, tensor_flops=1e4,
            weight_bytes=1e3, act_read_bytes=1e2)
    plain = time_op(op, gpu(efficiency={"matmul": 0.5}))
    assert plain.memory_time_s == pytest.approx(1.1e3 / 1e9 / 0.5)  # all bytes at 1 GB/s
    cpu = gpu(efficiency={"matmul": 0.5}, weight_bandwidth_bytes_per_s=2.5e8)
    timing = time_op(op, cpu)
    # the 4 µs stream overlaps neither term: max(20 ns compute, 200 ns activations) + 4 µs
    assert timing.memory_time_s == pytest.approx(1e2 / 1e9 / 0.5 + 1e3 / 2.5e8)
    assert timing.compute_time_s == pytest.approx(plain.compute_time_s + 1e3 / 2.5e8)
    big = replace(op, tensor_flops=1e7)  # compute-bound: 20 µs + the stream
    assert time_op(big, cpu).compute_time_s == pytest.approx(1e7 / 1e12 / 0.5 + 4e-6)
    assert time_op(big, cpu).memory_time_s == pytest.approx(timing.memory_time_s)


def test_a_calibrated_cpu_decode_step_streams_the_weights_at_the_weight_bandwidth():
    """A decode step of a memory-bound LLM takes at least its weight bytes at the weight
    bandwidth, so a slower weight read can only slow the decode."""
    import fpcost

    base = load_profile("a6000")
    fast = replace(base, weight_bandwidth_bytes_per_s=base.hbm_bandwidth_bytes_per_s)
    slow = replace(base, weight_bandwidth_bytes_per_s=base.hbm_bandwidth_bytes_per_s / 4)
    fast_e = fpcost.estimate("llava-1.5-7b", fast, output_tokens=3)
    slow_e = fpcost.estimate("llava-1.5-7b", slow, output_tokens=3)
    decode = slow_e.stage_totals("decode")
    assert decode.time_s >= decode.weight_bytes / slow.weight_bandwidth_bytes_per_s
    assert decode.time_s > 3 * fast_e.stage_totals("decode").time_s
    assert slow_e.stage_totals("prefill").time_s >= fast_e.stage_totals("prefill").time_s
