"""The cost of freePruner's token selection itself (paper §3.2–3.3, Algorithm 1), as the
``selection`` stage: what fpcost.pruner does on top of the vision tower's forward pass, for
the selection a ``pruning.SelectionSpec`` describes.

The tower runs on SDPA, so the attention maps are not materialized; the pruner hooks the q
and k projections of the layers it reads and recomputes each head's map in fp32
(docs/pruning.md). Per image (frame, crop) of T tokens (CLS included), H heads of width d:

- for every pivotal layer: ``map_qk`` q·kᵀ per head in fp32 (fp32 matmuls run on the CUDA
  cores: PyTorch leaves TF32 off), reading the captured 16-bit q and k; ``map_softmax`` in
  fp32; ``map_head_mean`` averaging the H maps into one T × T map;
- for the complementary layer, the same three on the pivotal tokens' query rows only
  (``complementary_rows_*``: the pruner computes just those rows); with
  ``direction="column"`` (complementary tokens from the pivotal tokens' columns A[:, p], the
  reading of §3.3's prose) every query row is needed (``complementary_map_*``);
- for every pivotal layer (the selection layers other than the complementary one):
  ``column_sum`` r_l[i] = Σ_rows A[:, i] − A[i, i]; ``top_k`` (a sort: T·⌈log₂T⌉ comparisons);
- once: ``iqr_threshold`` over the rows of the complementary (penultimate) layer's map of
  the pivotal tokens — quartiles by sorting each row, then one comparison per entry, a
  boolean mask out. The pivotal count is data-dependent; the cost model charges its upper
  bound min(pivotal layers × k, patches).

The same operators cost the selection on other towers through a ``SelectionGeometry``
(a family hook): Qwen-VL scores merged tokens of 2×2 patches (``select_merged``): each
layer's map is block-diagonal over its attention segments (temporal slices; windows in a
Qwen2.5-VL windowed block), so a map holds Σ s² query-key pairs, not T²; the degrees and the
complementary rows are pooled 2×2 (``degree_pool``, ``*_rows_pool``), and top-k and the IQR
rule run over merged tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import WorkloadError
from .llm import SOFTMAX_FLOPS_PER_ELEMENT
from .ops import ATTENTION, VECTOR, Op, matmul_flops
from .pruning import SelectionSpec
from .spec import VisionSpec
from .units import bytes_per_element

MAP_BITS = 32  # softmax and everything after it in fp32 (fpcost.pruner.scoring)
BOOL_BYTES = 1.0  # torch.bool masks: one byte per element


@dataclass(frozen=True)
class SelectionGeometry:
    """What one selection unit (an image, frame or crop; a Qwen-VL image or video) is scored
    over. ``num_tokens`` T: tokens per unit in the tower (CLS included; the sides of a full
    map); ``num_scored`` N: tokens scored and selected (patches; Qwen-VL: merged tokens);
    ``score_len``: entries of one score vector and of one complementary row (LLaVA: T, as
    the cost model has always charged it; Qwen-VL: N, the rows pooled to merged tokens);
    ``merge_unit``: tower tokens per scored token (Qwen-VL: 2×2 = 4 patches, pooled);
    ``segments``: the attention segments of a full-attention layer (Σ = T: one for a LLaVA
    image, one per temporal slice of a Qwen-VL video); ``windows``: those of a windowed
    layer; ``windowed_layers``: the layers (non-negative) that attend within ``windows``."""

    num_tokens: int
    num_scored: int
    num_heads: int
    head_dim: int
    num_layers: int
    score_len: int
    merge_unit: int = 1
    segments: tuple[int, ...] | None = None  # None: one segment of num_tokens
    windows: tuple[int, ...] = ()
    windowed_layers: frozenset[int] = frozenset()

    def layer_segments(self, layer: int) -> tuple[int, ...]:
        if layer in self.windowed_layers:
            return self.windows
        return self.segments or (self.num_tokens,)


def vision_geometry(vision: VisionSpec) -> SelectionGeometry:
    """A ViT image of T = ``num_positions`` tokens, its ``num_patches`` patches scored."""
    return SelectionGeometry(vision.num_positions, vision.num_patches, vision.num_attention_heads,
                             vision.head_dim, vision.num_hidden_layers, vision.num_positions)


def selection_ops(
    vision: VisionSpec,
    selection: SelectionSpec,
    num_images,
    num_layers_run: int,
    act_bits: int = 16,
    stage: str = "selection",
) -> list[Op]:
    """Operators of freePruner's selection over ``num_images`` images (int or array) of a ViT
    tower; ``act_bits`` is the width of the captured q and k, and of the q·kᵀ logits."""
    return geometry_selection_ops(vision_geometry(vision), selection, num_images,
                                  num_layers_run, act_bits, stage)


def _pairs(segments: tuple[int, ...]) -> int:
    """Query-key pairs of one unit's map: Σ s² over its attention segments."""
    return sum(s * s for s in segments)


def _row_pairs(rows: int, segments: tuple[int, ...], tokens: int):
    """Query-key pairs of ``rows`` query rows spread over ``segments`` as the tokens are
    (exact for one segment and for equal ones; the rows' windows are data-dependent):
    rows · Σ s² / T, an integer where it divides."""
    total = rows * _pairs(segments)
    return total // tokens if total % tokens == 0 else total / tokens


def geometry_selection_ops(
    geometry: SelectionGeometry,
    selection: SelectionSpec,
    num_units,
    num_layers_run: int,
    act_bits: int = 16,
    stage: str = "selection",
) -> list[Op]:
    """Operators of freePruner's selection over ``num_units`` units (int or array) of
    ``geometry`` (module docstring); the maps of a windowed layer hold only its windows'
    query-key pairs, and a merged geometry adds the 2×2 pooling of the degrees and rows."""
    g = geometry
    layers = selection.resolved_layers(g.num_layers)
    if layers[-1] >= num_layers_run:
        raise WorkloadError(
            f"selection reads encoder layer {layers[-1]}, but only {num_layers_run} layers run; "
            "use --vision-layers all or earlier selection layers"
        )
    pivotal_layers = selection.pivotal_layers(g.num_layers)
    pivotal = len(pivotal_layers)
    t, heads, d, s = g.num_tokens, g.num_heads, g.head_dim, g.score_len
    n = num_units
    f = bytes_per_element(MAP_BITS)
    a = bytes_per_element(act_bits)
    sort_comparisons = math.ceil(math.log2(s))  # per element, a comparison sort
    k = min(selection.resolved_k(g.num_scored), g.num_scored)  # a larger k keeps all
    num_pivotal = min(pivotal * k, g.num_scored)
    unit = g.merge_unit
    block = "freepruner"

    def op(name, op_class, count, precision="fp32", **terms):
        return Op(stage, block, name, op_class, precision, "fp32", count, **terms)

    # q·kᵀ runs in the tower's dtype (scoring.py: tensor cores at 16 bits, as the tower's
    # own attention), its logits in that dtype; the softmax reads them and writes fp32
    logit_bits = 32 if act_bits >= 32 else 16
    qk_precision = "fp32" if logit_bits == 32 else "fp16"
    logit = bytes_per_element(logit_bits)

    # Pivotal layers: full T × T maps (within windows for a windowed layer). The
    # complementary layer only needs the rows of the pivotal tokens (fpcost.pruner computes
    # just those): num_pivotal query rows (× merge_unit patches each), not T.
    complementary_layer = selection.complementary_layer_resolved(g.num_layers)
    complementary_only = complementary_layer not in pivotal_layers
    full_layers = [i for i in layers if i in pivotal_layers or not complementary_only]
    windowed = sum(i in g.windowed_layers for i in full_layers)
    # a column-direction complementary layer needs its whole map (every query row)
    comp_name, comp_rows = (("complementary_map", t) if selection.direction == "column"
                            else ("complementary_rows", num_pivotal * unit))
    comp_segments = g.layer_segments(complementary_layer)
    comp_prefix = "window_" if complementary_layer in g.windowed_layers else ""
    groups = [("map", len(full_layers) - windowed, t, _pairs(g.segments or (t,))),
              ("window_map", windowed, t, _pairs(g.windows)),
              (comp_prefix + comp_name, int(complementary_only), comp_rows,
               _row_pairs(comp_rows, comp_segments, t))]
    ops = []
    for name, count, rows_per_unit, pairs in groups:
        if count == 0:
            continue
        q_rows = n * rows_per_unit
        per_head_maps = n * heads * pairs  # elements of all heads' (rows × keys) maps
        ops += [
            op(f"{name}_qk", ATTENTION, count, qk_precision,
               tensor_flops=matmul_flops(n * heads, d, pairs),
               act_read_bytes=(q_rows + n * t) * heads * d * a,  # the q rows and every key
               act_write_bytes=per_head_maps * logit),
            op(f"{name}_softmax", VECTOR, count,
               vector_flops=SOFTMAX_FLOPS_PER_ELEMENT * per_head_maps,
               act_read_bytes=per_head_maps * logit, act_write_bytes=per_head_maps * f),
            op(f"{name}_head_mean", VECTOR, count, vector_flops=per_head_maps,
               act_read_bytes=per_head_maps * f, act_write_bytes=n * pairs * f),
        ]
        if unit > 1 and name.endswith(comp_name):  # rows pooled over 2×2 queries and keys
            ops.append(op(f"{name}_pool", VECTOR, count, vector_flops=n * pairs,
                          act_read_bytes=n * pairs * f,
                          act_write_bytes=n * (rows_per_unit // unit) * s * f))
    # per pivotal layer: column sums of its head-averaged map (less the diagonal), the
    # 2×2 pooling of a merged geometry, a top-k sort over the scores
    pivotal_windowed = sum(i in g.windowed_layers for i in pivotal_layers)
    for prefix, count, pairs in (("", pivotal - pivotal_windowed, _pairs(g.segments or (t,))),
                                 ("window_", pivotal_windowed, _pairs(g.windows))):
        if count == 0:
            continue
        ops.append(op(f"{prefix}column_sum", VECTOR, count, vector_flops=n * pairs + n * t,
                      act_read_bytes=n * pairs * f, act_write_bytes=n * t * f))
    if pivotal:
        if unit > 1:  # per-patch degrees averaged over each merged token's patches
            ops.append(op("degree_pool", VECTOR, pivotal, vector_flops=n * t,
                          act_read_bytes=n * t * f, act_write_bytes=n * s * f))
        ops.append(op("top_k", VECTOR, pivotal, vector_flops=n * s * sort_comparisons,
                      act_read_bytes=n * s * f, act_write_bytes=n * k * f))
    rows = n * num_pivotal * s  # entries of the pivotal rows of the complementary map
    ops.append(op("iqr_threshold", VECTOR, 1, vector_flops=rows * (sort_comparisons + 1),
                  act_read_bytes=rows * f, act_write_bytes=rows * BOOL_BYTES))
    return ops
