"""Operator graph of a ViT vision tower (CLIP, SigLIP, DINOv2) and of LLaVA's projector.

The tower runs ``num_images`` images at once (batch × images, frames or AnyRes crops per
sample), each of ``vision.num_positions`` tokens T (577 for CLIP ViT-L/14 at 336 px: 576
patches + CLS; 257 at 224 px; SigLIP has no CLS). Operators, as transformers runs them:

- ``patch_embed``: the stride-p convolution as a matmul, (images·patches) × (C·p²) @ (C·p²) × h
  (bias-free in CLIP); ``pos_embed_add``: CLS prepended, position embeddings added;
  ``pre_layernorm``: CLIP's ``pre_layrnorm``;
- per encoder layer (``count`` = layers executed): ``layer_norm1``, q/k/v/o projections with
  biases, attention (q·kᵀ, softmax, scores·v; or one fused FlashAttention operator, no causal
  mask), ``attn_add``, ``layer_norm2``, ``fc1``, ``mlp_act`` (GELU), ``fc2``, ``mlp_add``,
  and DINOv2's two LayerScale multiplies;
- after the last layer, only when the whole tower runs: CLIP's ``post_layernorm`` on the CLS
  token, DINOv2's final LayerNorm, SigLIP's ``post_layernorm`` and attention-pooling head.

The tower and the projector are costed with fpcost's own conventions in every accounting
mode (LLM-Viewer has no vision stage): element-wise work on the CUDA cores, each matmul at
its own precision, all at ``quant`` (16-bit unless asked otherwise: quantization plans
target the LLM). A linear layer's bias add is one FLOP per output element in the matmul's
epilogue. K and V of the tower are activations, not a cache.

Token and image counts may be ints or numpy integer arrays; only the model is branched on.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import WorkloadError
from .flash import flash_attention_row_block, flash_work
from .llm import ADD_FLOPS_PER_ELEMENT, NORM_FLOPS_PER_ELEMENT, SOFTMAX_FLOPS_PER_ELEMENT
from .ops import ATTENTION, MATMUL, NORM, VECTOR, Op, matmul_flops
from .quant import QuantPlan
from .spec import ProjectorSpec, VisionSpec

# GELU (erf or tanh form; CLIP's quick_gelu x·sigmoid(1.702x) is cheaper): a convention,
# like LLM-Viewer's 5 FLOPs per softmax element. Element-wise work is memory-bound anyway.
GELU_FLOPS_PER_ELEMENT = 8
MUL_FLOPS_PER_ELEMENT = 1
LAYER_NORM_PARAMS_PER_CHANNEL = 2
VISION_LAYER_MODES = ("all", "feature")


def num_vision_layers_run(vision: VisionSpec, mode: str) -> int:
    """Encoder layers executed: ``all`` (transformers runs the whole tower although LLaVA
    reads hidden state ``feature_layer``), or ``feature`` (stop at the feature layer)."""
    if mode == "all":
        return vision.num_hidden_layers
    if mode == "feature":
        return vision.num_feature_layers
    raise WorkloadError(f"vision layers {mode!r} is unknown; valid: {', '.join(VISION_LAYER_MODES)}")


class _Builder:
    """Shared arguments of one stage's operators, so each is one line."""

    def __init__(self, stage: str, quant: QuantPlan):
        self.stage, self.quant = stage, quant
        self.a = quant.act_bytes_per_element
        self.w = quant.weight_bytes_per_element

    def linear(self, block, name, rows, in_features, out_features, count, bias=True) -> Op:
        q = self.quant
        return Op(self.stage, block, name, MATMUL, q.linear_precision, q.vector_precision, count,
                  tensor_flops=matmul_flops(rows, in_features, out_features)
                  + (rows * out_features if bias else 0),
                  weight_bytes=(in_features * out_features + (out_features if bias else 0)) * self.w,
                  act_read_bytes=rows * in_features * self.a,
                  act_write_bytes=rows * out_features * self.a)

    def vector(self, block, name, elements, flops_per_element, count, num_inputs=1,
               weight_elements=0, op_class=VECTOR) -> Op:
        q = self.quant
        return Op(self.stage, block, name, op_class, q.vector_precision, q.vector_precision, count,
                  vector_flops=flops_per_element * elements,
                  weight_bytes=weight_elements * self.w,
                  act_read_bytes=num_inputs * elements * self.a,
                  act_write_bytes=elements * self.a)

    def norm(self, block, name, rows, width, count) -> Op:
        return self.vector(block, name, rows * width, NORM_FLOPS_PER_ELEMENT, count,
                           weight_elements=LAYER_NORM_PARAMS_PER_CHANNEL * width, op_class=NORM)

    def attention(self, block, num_seqs, heads, s_q, s_kv, d, count, flash, onchip_buffer_bytes,
                  prefix="") -> list[Op]:
        """Bidirectional attention of ``num_seqs`` sequences: s_q queries over s_kv keys."""
        q, a = self.quant, self.a
        if flash:
            rows_per_tile = flash_attention_row_block(onchip_buffer_bytes, a, d)
            work = flash_work(s_q, s_kv, rows_per_tile, causal=False)
            return [Op(self.stage, block, prefix + "fused_attention", ATTENTION,
                       q.attention_precision, q.vector_precision, count,
                       tensor_flops=2 * matmul_flops(num_seqs * heads, d, work.score_elements),
                       vector_flops=SOFTMAX_FLOPS_PER_ELEMENT * num_seqs * heads * work.score_elements,
                       act_read_bytes=num_seqs * heads * (s_q + 2 * work.kv_rows_read) * d * a,
                       act_write_bytes=num_seqs * heads * s_q * d * a)]
        scores = num_seqs * heads * s_q * s_kv
        return [
            Op(self.stage, block, prefix + "qk_matmul", ATTENTION, q.attention_precision,
               q.vector_precision, count,
               tensor_flops=matmul_flops(num_seqs * heads * s_q, d, s_kv),
               act_read_bytes=num_seqs * heads * (s_q + s_kv) * d * a,
               act_write_bytes=scores * a),
            self.vector(block, prefix + "softmax", scores, SOFTMAX_FLOPS_PER_ELEMENT, count),
            Op(self.stage, block, prefix + "sv_matmul", ATTENTION, q.attention_precision,
               q.vector_precision, count,
               tensor_flops=matmul_flops(num_seqs * heads * s_q, s_kv, d),
               act_read_bytes=scores * a + num_seqs * heads * s_kv * d * a,
               act_write_bytes=num_seqs * heads * s_q * d * a),
        ]


def vision_tower_ops(
    vision: VisionSpec,
    quant: QuantPlan,
    num_images,
    num_layers: int,
    flash_attention: bool,
    onchip_buffer_bytes: float,
    stage: str = "vision",
) -> list[Op]:
    """Operators of one forward pass of the tower over ``num_images`` images, running
    ``num_layers`` encoder layers (the final norm and SigLIP's head only when all run)."""
    h, ffn, heads = vision.hidden_size, vision.intermediate_size, vision.num_attention_heads
    seq = vision.num_positions
    rows = num_images * seq  # token rows of every per-token operator
    patch_rows = num_images * vision.num_patches
    patch_in = vision.num_channels * vision.patch_size**2
    b = _Builder(stage, quant)
    traits = vision.traits
    ops = [
        # the convolution reads every pixel once (stride = kernel = patch)
        b.linear("embeddings", "patch_embed", patch_rows, patch_in, h, 1, bias=traits.patch_bias),
        b.vector("embeddings", "pos_embed_add", rows * h, ADD_FLOPS_PER_ELEMENT, 1,
                 weight_elements=seq * h + h * vision.has_cls_token),
    ]
    if traits.pre_layernorm:
        ops.append(b.norm("embeddings", "pre_layernorm", rows, h, 1))
    block, n = "encoder", num_layers
    ops.append(b.norm(block, "layer_norm1", rows, h, n))
    ops += [b.linear(block, name, rows, h, h, n) for name in ("q_proj", "k_proj", "v_proj")]
    ops += b.attention(block, num_images, heads, seq, seq, vision.head_dim, n, flash_attention,
                       onchip_buffer_bytes)
    ops.append(b.linear(block, "o_proj", rows, h, h, n))
    if traits.layer_scale:
        ops.append(b.vector(block, "layer_scale1", rows * h, MUL_FLOPS_PER_ELEMENT, n, weight_elements=h))
    ops.append(b.vector(block, "attn_add", rows * h, ADD_FLOPS_PER_ELEMENT, n, num_inputs=2))
    ops.append(b.norm(block, "layer_norm2", rows, h, n))
    ops.append(b.linear(block, "fc1", rows, h, ffn, n))
    ops.append(b.vector(block, "mlp_act", rows * ffn, GELU_FLOPS_PER_ELEMENT, n))
    ops.append(b.linear(block, "fc2", rows, ffn, h, n))
    if traits.layer_scale:
        ops.append(b.vector(block, "layer_scale2", rows * h, MUL_FLOPS_PER_ELEMENT, n, weight_elements=h))
    ops.append(b.vector(block, "mlp_add", rows * h, ADD_FLOPS_PER_ELEMENT, n, num_inputs=2))
    if num_layers == vision.num_hidden_layers:
        ops += _tower_output_ops(vision, b, num_images, rows, flash_attention, onchip_buffer_bytes)
    return ops


def _tower_output_ops(vision, b: _Builder, num_images, rows, flash_attention, onchip_buffer_bytes):
    """The final norm (CLIP's on the pooled CLS output only) and SigLIP's head."""
    h, ffn, traits = vision.hidden_size, vision.intermediate_size, vision.traits
    ops = [b.norm("post", traits.final_norm, rows if traits.final_norm_on_all_tokens else num_images,
                  h, 1)]
    if traits.attention_pool_head and vision.use_head:  # one probe query per image
        q_proj = b.linear("head", "head_q_proj", num_images, h, h, 1)
        ops += [
            replace(q_proj, weight_bytes=q_proj.weight_bytes + h * b.w),  # + the probe vector
            b.linear("head", "head_kv_proj", rows, h, 2 * h, 1),
            *b.attention("head", num_images, vision.num_attention_heads, 1, vision.num_positions,
                         vision.head_dim, 1, flash_attention, onchip_buffer_bytes, prefix="head_"),
            b.linear("head", "head_out_proj", num_images, h, h, 1),
            b.norm("head", "head_layernorm", num_images, h, 1),
            b.linear("head", "head_fc1", num_images, h, ffn, 1),
            b.vector("head", "head_act", num_images * ffn, GELU_FLOPS_PER_ELEMENT, 1),
            b.linear("head", "head_fc2", num_images, ffn, h, 1),
            b.vector("head", "head_add", num_images * h, ADD_FLOPS_PER_ELEMENT, 1, num_inputs=2),
        ]
    return ops


def projector_ops(projector: ProjectorSpec, quant: QuantPlan, num_tokens,
                  stage: str = "projector") -> list[Op]:
    """LLaVA's two-layer GELU projector over ``num_tokens`` visual tokens (all samples)."""
    v, t = projector.vision_hidden_size, projector.text_hidden_size
    b = _Builder(stage, quant)
    return [
        b.linear("projector", "linear_1", num_tokens, v, t, 1, bias=projector.bias),
        b.vector("projector", "act", num_tokens * t, GELU_FLOPS_PER_ELEMENT, 1),
        b.linear("projector", "linear_2", num_tokens, t, t, 1, bias=projector.bias),
    ]
