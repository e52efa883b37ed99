"""The cost of freePruner's token selection itself (paper §3.2–3.3, Algorithm 1), as the
``selection`` stage: what fpcost.pruner does on top of the vision tower's forward pass.

The tower runs on SDPA, so the attention maps are not materialized; the pruner hooks the q
and k projections of the layers it reads and recomputes each head's map in fp32
(DESIGN.md §5). Per image (frame, crop) of T tokens (CLS included), H heads of width d:

- for every pivotal layer: ``map_qk`` q·kᵀ per head in fp32 (fp32 matmuls run on the CUDA
  cores: PyTorch leaves TF32 off), reading the captured 16-bit q and k; ``map_softmax`` in
  fp32; ``map_head_mean`` averaging the H maps into one T × T map;
- for the complementary layer, the same three on the pivotal tokens' query rows only
  (``complementary_rows_*``: the pruner computes just those rows);
- for every pivotal layer (the selection layers other than the complementary one):
  ``column_sum`` r_l[i] = Σ_rows A[:, i] − A[i, i]; ``top_k`` (a sort: T·⌈log₂T⌉ comparisons);
- once: ``iqr_threshold`` over the rows of the complementary (penultimate) layer's map of
  the pivotal tokens — quartiles by sorting each row, then one comparison per entry, a
  boolean mask out. The pivotal count is data-dependent; the cost model charges its upper
  bound min(pivotal layers × k, patches).

The defaults mirror ``fpcost.pruner.selection.FreePrunerConfig``: pivotal layers L_s..L =
range(L)[-4:-2] (a union over two layers), complementary layer -2 (the one LLaVA reads),
k = 0.25 × the patch count, i.e. 144 for LLaVA-1.5's 576 tokens — the setting that keeps
50% of the tokens on real photographs at 224 and 336 px within a 5% overhead budget
(docs/pruning.md). A results file
records the settings it was made with (``settings``), which override these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import WorkloadError
from .llm import SOFTMAX_FLOPS_PER_ELEMENT
from .ops import ATTENTION, VECTOR, Op, matmul_flops
from .spec import VisionSpec
from .units import bytes_per_element

MAP_BITS = 32  # the maps are recomputed in fp32
BOOL_BYTES = 1.0  # torch.bool masks: one byte per element


@dataclass(frozen=True)
class SelectionSpec:
    """What freePruner's selection reads. ``selection_layers``: encoder layers whose attention
    maps are recomputed (pivotal layers L_s..L and the penultimate one; negative = from the
    end); ``complementary_layer``: the layer whose rows give the complementary tokens;
    ``k``: top tokens per pivotal layer."""

    selection_layers: tuple[int, ...] = (-4, -3, -2)
    complementary_layer: int = -2
    k: int = 144  # round(0.25 * 576): FreePrunerConfig.k_ratio on LLaVA-1.5's 576 tokens

    def __post_init__(self) -> None:
        if not self.selection_layers or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in self.selection_layers
        ):
            raise WorkloadError(f"selection_layers {self.selection_layers!r} must be a non-empty "
                                "tuple of integer layer indices")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise WorkloadError(f"selection k = {self.k!r} must be an integer ≥ 1")

    def resolved_layers(self, num_layers: int) -> tuple[int, ...]:
        """Selection layers as sorted, unique, non-negative indices of a ``num_layers`` tower."""
        return tuple(sorted({_resolve(i, num_layers) for i in self.selection_layers}))

    def complementary_layer_resolved(self, num_layers: int) -> int:
        return _resolve(self.complementary_layer, num_layers)

    def pivotal_layers(self, num_layers: int) -> tuple[int, ...]:
        complementary = self.complementary_layer_resolved(num_layers)
        return tuple(i for i in self.resolved_layers(num_layers) if i != complementary)


DEFAULT_SELECTION = SelectionSpec()


def _resolve(index: int, num_layers: int) -> int:
    if not -num_layers <= index < num_layers:
        raise WorkloadError(
            f"selection layer {index} is out of range for a {num_layers}-layer vision tower; "
            f"valid: {-num_layers}..{num_layers - 1}"
        )
    return index % num_layers


def selection_ops(
    vision: VisionSpec,
    selection: SelectionSpec,
    num_images,
    num_layers_run: int,
    act_bits: int = 16,
    stage: str = "selection",
) -> list[Op]:
    """Operators of freePruner's selection over ``num_images`` images (int or array);
    ``act_bits`` is the width of the captured q and k."""
    layers = selection.resolved_layers(vision.num_hidden_layers)
    if layers[-1] >= num_layers_run:
        raise WorkloadError(
            f"selection reads encoder layer {layers[-1]}, but only {num_layers_run} layers run; "
            "use --vision-layers all or earlier selection layers"
        )
    pivotal = len(selection.pivotal_layers(vision.num_hidden_layers))
    t, heads, d = vision.num_positions, vision.num_attention_heads, vision.head_dim
    n = num_images
    f = bytes_per_element(MAP_BITS)
    a = bytes_per_element(act_bits)
    maps = n * t * t  # elements of the head-averaged maps
    sort_comparisons = math.ceil(math.log2(t))  # per element, a comparison sort
    num_pivotal = min(pivotal * selection.k, vision.num_patches)
    block = "freepruner"

    def op(name, op_class, count, **terms):
        return Op(stage, block, name, op_class, "fp32", "fp32", count, **terms)

    # Pivotal layers: full T × T maps. The complementary layer only needs the rows of the
    # pivotal tokens (fpcost.pruner computes just those): num_pivotal query rows, not T.
    complementary_only = selection.complementary_layer_resolved(vision.num_hidden_layers) not in (
        selection.pivotal_layers(vision.num_hidden_layers))
    full_layers = len(layers) - int(complementary_only)
    ops = []
    for name, count, rows_per_image in (("map", full_layers, t),
                                        ("complementary_rows", int(complementary_only), num_pivotal)):
        if count == 0:
            continue
        q_rows = n * rows_per_image
        per_head_maps = q_rows * heads * t  # elements of all heads' (rows × T) maps
        ops += [
            op(f"{name}_qk", ATTENTION, count, tensor_flops=matmul_flops(q_rows * heads, d, t),
               act_read_bytes=(q_rows + n * t) * heads * d * a,  # the q rows and every key
               act_write_bytes=per_head_maps * f),
            op(f"{name}_softmax", VECTOR, count,
               vector_flops=SOFTMAX_FLOPS_PER_ELEMENT * per_head_maps,
               act_read_bytes=per_head_maps * f, act_write_bytes=per_head_maps * f),
            op(f"{name}_head_mean", VECTOR, count, vector_flops=per_head_maps,
               act_read_bytes=per_head_maps * f, act_write_bytes=q_rows * t * f),
        ]
    if pivotal:
        ops += [
            op("column_sum", VECTOR, pivotal, vector_flops=maps + n * t,
               act_read_bytes=maps * f, act_write_bytes=n * t * f),
            op("top_k", VECTOR, pivotal, vector_flops=n * t * sort_comparisons,
               act_read_bytes=n * t * f, act_write_bytes=n * selection.k * f),
        ]
    rows = n * num_pivotal * t  # entries of the pivotal rows of the complementary map
    ops.append(op("iqr_threshold", VECTOR, 1, vector_flops=rows * (sort_comparisons + 1),
                  act_read_bytes=rows * f, act_write_bytes=rows * BOOL_BYTES))
    return ops
