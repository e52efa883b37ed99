"""Vision-tower FLOPs of Qwen2-VL / Qwen2.5-VL against ``FlopCounterMode`` on transformers'
own modules, and hand counts for the merger and one window layout.

What ``torch.utils.flop_counter.FlopCounterMode`` counts: matmuls (``mm``, ``addmm``,
``bmm``), convolutions and the fused attention kernels it knows, at 2 FLOPs per multiply-add.
It does not count: bias adds (``addmm``'s bias), norms, rotary, softmax, activations,
residual adds, gathers; nor, on a CPU build of torch, the CPU SDPA kernel
(``_scaled_dot_product_flash_attention_for_cpu`` is not in its registry). So the towers run
with ``attn_implementation="eager"`` (q·kᵀ and scores·v as counted matmuls), and the model's
``tensor_flops`` minus its bias adds must equal the count exactly.

The towers' shapes are data-dependent (windows, per-image segments), so fake tensors do not
work: full-width towers of depth 1 and 2 run on real tensors for two small inputs (an image
whose windows are partial, and a 3-frame video) and the depth difference gives one block.
"""

import pytest

from fpcost.costmodel.families.qwen_vl_layout import VisionGrid, window_attention_seqlens
from fpcost.costmodel.families.qwen_vl_ops import qwen_vision_tower_ops
from fpcost.costmodel.families.qwen_vl_presets import qwen_vl_preset
from fpcost.costmodel.ops import MATMUL
from fpcost.costmodel.quant import QuantPlan

QUANT = QuantPlan()
# an image of 280 x 168 px (20 x 12 patches, 10 x 6 merged: windows 4/4/2 by 4/2, partial),
# and a video of 3 frames at 112 x 112 (padded to 4: t = 2 temporal patches of 8 x 8)
GRIDS = [VisionGrid(1, 20, 12), VisionGrid(2, 8, 8)]


def _flops_without_bias(ops, block=None):
    """Σ count · tensor FLOPs, less the linear layers' bias adds (one per output element,
    i.e. the output bytes over the activation width), over the ops of ``block`` (or all)."""
    total = 0
    for op in ops:
        if block is not None and op.block != block:
            continue
        flops = op.tensor_flops
        if op.op_class == MATMUL and op.name != "patch_embed":  # every other linear has a bias
            flops -= op.act_write_bytes / QUANT.act_bytes_per_element
        total += op.count * flops
    return total


def test_merger_by_hand():
    vision = qwen_vl_preset("qwen2-vl-7b").vision
    ops = qwen_vision_tower_ops(vision, QUANT, [VisionGrid(1, 52, 92)], False, 0)
    merger = {op.name: op for op in ops if op.block == "merger"}
    merged = 52 * 92 // 4  # 1196 tokens
    assert merger["mlp_0"].tensor_flops == 2 * merged * 5120 * 5120 + merged * 5120
    assert merger["mlp_2"].tensor_flops == 2 * merged * 5120 * 3584 + merged * 3584
    assert merger["mlp_0"].weight_bytes == (5120 * 5120 + 5120) * 2
    assert merger["ln_q"].vector_flops == 7 * 4784 * 1280  # LayerNorm over every patch
    assert merger["mlp_act"].vector_flops == 8 * merged * 5120


def test_window_attention_by_hand():
    # GRIDS[0] windows (patches): rows of 4,4,2 merged units by columns 4,2: 64,32,64,32,32,16
    assert window_attention_seqlens(GRIDS[:1], 112) == [64, 32, 64, 32, 32, 16]
    vision = qwen_vl_preset("qwen2.5-vl-7b").vision
    ops = qwen_vision_tower_ops(vision, QUANT, GRIDS[:1], False, 0)
    qk = next(op for op in ops if op.block == "window_blocks" and op.name == "qk_matmul")
    squares = 2 * 64**2 + 3 * 32**2 + 16**2
    assert qk.tensor_flops == 2 * 16 * squares * 80  # 16 heads of 80
    assert qk.count == 28
    softmax = next(op for op in ops if op.block == "window_blocks" and op.name == "softmax")
    assert softmax.vector_flops == 5 * 16 * squares
    full = next(op for op in ops if op.block == "full_blocks" and op.name == "qk_matmul")
    assert full.tensor_flops == 2 * 16 * 240**2 * 80 and full.count == 4


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _hf_tower_flops(model_type, depth, fullatt_block_indexes=()):
    """FlopCounterMode total of a full-width transformers tower of ``depth`` blocks on GRIDS."""
    torch.manual_seed(0)
    if model_type == "qwen2_vl":
        config = transformers.Qwen2VLVisionConfig(depth=depth, hidden_size=3584)
        cls = transformers.models.qwen2_vl.modeling_qwen2_vl.Qwen2VisionTransformerPretrainedModel
    else:
        config = transformers.Qwen2_5_VLVisionConfig(  # its default width is 3584, not 1280
            depth=depth, hidden_size=1280, out_hidden_size=3584,
            fullatt_block_indexes=list(fullatt_block_indexes))
        cls = transformers.models.qwen2_5_vl.modeling_qwen2_5_vl.Qwen2_5_VisionTransformerPretrainedModel
    config._attn_implementation = "eager"
    with torch.device("meta"):  # no weight initialisation: replaced by empty tensors below
        tower = cls(config)
    tower = tower.to_empty(device="cpu").eval()
    for module in tower.modules():  # to_empty leaves the rotary buffer uninitialised
        if hasattr(module, "compute_axial_rope_parameters"):
            module.inv_freq.copy_(module.compute_axial_rope_parameters(config)[0])
    rows = sum(g.num_patches for g in GRIDS)
    pixels = torch.randn(rows, 3 * 2 * 14 * 14)
    grid_thw = torch.tensor([[g.t, g.h, g.w] for g in GRIDS])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = tower(pixels, grid_thw=grid_thw)
    assert out.pooler_output.shape == (rows // 4, 3584)
    return counter.get_total_flops()


def test_qwen2_vl_tower_equals_flop_counter():
    vision = qwen_vl_preset("qwen2-vl-7b").vision
    ops = qwen_vision_tower_ops(vision, QUANT, GRIDS, flash_attention=False, onchip_buffer_bytes=0)
    one, two = _hf_tower_flops("qwen2_vl", 1), _hf_tower_flops("qwen2_vl", 2)
    block = two - one
    assert _flops_without_bias(ops, "blocks") == vision.depth * block
    assert (_flops_without_bias(ops, "embeddings") + _flops_without_bias(ops, "merger")
            == one - block)


def test_qwen2_5_vl_window_and_full_blocks_equal_flop_counter():
    vision = qwen_vl_preset("qwen2.5-vl-7b").vision
    ops = qwen_vision_tower_ops(vision, QUANT, GRIDS, flash_attention=False, onchip_buffer_bytes=0)
    full_one = _hf_tower_flops("qwen2_5_vl", 1, fullatt_block_indexes=[0])
    full_two = _hf_tower_flops("qwen2_5_vl", 2, fullatt_block_indexes=[0, 1])
    window_two = _hf_tower_flops("qwen2_5_vl", 2, fullatt_block_indexes=[0])  # 1 full + 1 window
    full_block, window_block = full_two - full_one, window_two - full_one
    assert window_block < full_block  # the windows do attend over fewer keys
    assert _flops_without_bias(ops, "full_blocks") == 4 * full_block
    assert _flops_without_bias(ops, "window_blocks") == 28 * window_block
    assert (_flops_without_bias(ops, "embeddings") + _flops_without_bias(ops, "merger")
            == full_one - full_block)
