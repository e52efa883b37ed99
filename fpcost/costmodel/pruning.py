"""The cost of freePruner's token selection itself (paper §3.2–3.3, Algorithm 1), as the
``selection`` stage: what fpcost.pruner does on top of the vision tower's forward pass.

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

The defaults mirror ``fpcost.pruner.selection.FreePrunerConfig``: pivotal layers L_s..L =
range(L)[-4:-2] (a union over two layers), complementary layer -2 (the one LLaVA reads),
k = 0.25 × the patch count, i.e. 144 for LLaVA-1.5's 576 tokens — the setting that keeps
50% of the tokens on real photographs at 224 and 336 px within a 5% overhead budget
(docs/pruning.md). A results file
records the settings it was made with (``settings``), which override these.
``DEFAULT_SELECTION`` is those defaults as fpcost prune / generate run them: moved with the
hidden state the LLM reads (``anchored_selection``; LLaVA-OneVision: pivotal 23, 24 /
complementary 25 of 26).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    # k: an absolute count, or (None) round(k_ratio x the tower's patches), at least 1 —
    # FreePrunerConfig's rule: 144 of LLaVA-1.5's 576 tokens, 64 of a Video-LLaVA frame's 256
    k: int | None = None
    k_ratio: float = 0.25
    pivotal: tuple[int, ...] | None = None  # explicit pivotal layers (may hold the complementary)
    # "row": complementary tokens from the pivotal tokens' rows A[p, :] (Alg. 1; only those
    # rows are computed); "column": from their columns A[:, p] (§3.3's prose; every row of
    # the complementary layer's map is needed)
    direction: str = "row"
    # True: freePruner's default layers, which a family moves with the hidden state its LLM
    # reads (``anchored_selection``), as fpcost.pruner does (pruner/anchoring.py); layers a
    # user gives are taken as given
    anchored: bool = False

    def __post_init__(self) -> None:
        for name, layers in (("selection_layers", self.selection_layers),
                             ("pivotal layers", () if self.pivotal is None else self.pivotal)):
            if not isinstance(layers, tuple) or not all(_is_int(i) for i in layers) or (
                    name == "selection_layers" and not layers):
                raise WorkloadError(f"{name} {layers!r} must be a non-empty tuple of integer "
                                    "layer indices")
        if not _is_int(self.complementary_layer):
            raise WorkloadError(f"complementary layer {self.complementary_layer!r} must be an "
                                "integer layer index")
        if self.k is not None and (not _is_int(self.k) or self.k < 1):
            raise WorkloadError(f"selection k = {self.k!r} must be an integer ≥ 1")
        if isinstance(self.k_ratio, bool) or not isinstance(self.k_ratio, (int, float)) or not (
                0 < self.k_ratio <= 1):
            raise WorkloadError(f"selection k_ratio = {self.k_ratio!r} must be a number in (0, 1]")
        if self.direction not in DIRECTIONS:
            raise WorkloadError(f"selection direction {self.direction!r} is unknown; valid: "
                                f"{', '.join(DIRECTIONS)}")

    def resolved_k(self, num_patches: int) -> int:
        """Pivotal tokens per layer for a tower of ``num_patches`` patch tokens."""
        return self.k if self.k is not None else max(1, round(self.k_ratio * num_patches))

    @classmethod
    def from_layers(cls, pivotal: tuple[int, ...], complementary_layer: int, k: int,
                    direction: str = "row") -> SelectionSpec:
        """A selection with its pivotal layers given (a union over layers, which may include
        the complementary layer itself, as a results file's ``settings`` records it)."""
        pivotal = tuple(pivotal)
        return cls(pivotal + (complementary_layer,), complementary_layer, k=k, pivotal=pivotal,
                   direction=direction)

    def resolved_layers(self, num_layers: int) -> tuple[int, ...]:
        """Selection layers as sorted, unique, non-negative indices of a ``num_layers`` tower."""
        return tuple(sorted({_resolve(i, num_layers) for i in self.selection_layers}))

    def complementary_layer_resolved(self, num_layers: int) -> int:
        return _resolve(self.complementary_layer, num_layers)

    def pivotal_layers(self, num_layers: int) -> tuple[int, ...]:
        if self.pivotal is not None:
            return tuple(sorted({_resolve(i, num_layers) for i in self.pivotal}))
        complementary = self.complementary_layer_resolved(num_layers)
        return tuple(i for i in self.resolved_layers(num_layers) if i != complementary)


DIRECTIONS = ("row", "column")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DEFAULT_SELECTION = SelectionSpec(anchored=True)  # what fpcost prune / generate run by default
REFERENCE_FEATURE_LAYER = -2  # the hidden state LLaVA-1.5 reads, to which the defaults refer


def anchored_selection(selection: SelectionSpec, num_layers: int,
                       feature_layer: int) -> SelectionSpec:
    """``selection`` with its default layers moved to the hidden state ``feature_layer`` that
    the LLM reads from an encoder of ``num_layers`` layers (``hidden_states`` holds the
    embeddings, then each layer's output), as fpcost.pruner's ``anchored_layers`` moves them:
    the complementary layer is the one whose output the LLM reads, the pivotal layers the two
    before it. LLaVA-1.5 (-2 of 24) keeps -4, -3 / -2; LLaVA-OneVision (-1 of 26) gets -3, -2
    / -1 (layers 23, 24 / 25). Unchanged unless ``selection.anchored``, or where the read
    layer leaves fewer than two layers before it."""
    if not selection.anchored or not -(num_layers + 1) <= feature_layer <= num_layers:
        return selection
    producing = feature_layer % (num_layers + 1) - 1  # the encoder layer whose output is read
    shift = producing - REFERENCE_FEATURE_LAYER % (num_layers + 1) + 1
    if producing < 2 or shift == 0:
        return selection
    pivotal = range(num_layers)[max(-4 + shift, -num_layers):-2 + shift]  # FreePrunerConfig's
    complementary = -2 + shift
    return replace(selection, selection_layers=tuple(i - num_layers for i in pivotal)
                   + (complementary,), complementary_layer=complementary, pivotal=None,
                   anchored=False)


def _resolve(index: int, num_layers: int) -> int:
    if not -num_layers <= index < num_layers:
        raise WorkloadError(
            f"selection layer {index} is out of range for a {num_layers}-layer vision tower; "
            f"valid: {-num_layers}..{num_layers - 1}"
        )
    return index % num_layers


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
    tower; ``act_bits`` is the width of the captured q and k."""
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

    def op(name, op_class, count, **terms):
        return Op(stage, block, name, op_class, "fp32", "fp32", count, **terms)

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
            op(f"{name}_qk", ATTENTION, count, tensor_flops=matmul_flops(n * heads, d, pairs),
               act_read_bytes=(q_rows + n * t) * heads * d * a,  # the q rows and every key
               act_write_bytes=per_head_maps * f),
            op(f"{name}_softmax", VECTOR, count,
               vector_flops=SOFTMAX_FLOPS_PER_ELEMENT * per_head_maps,
               act_read_bytes=per_head_maps * f, act_write_bytes=per_head_maps * f),
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


# Methods of ``fpcost prune`` whose selection needs no attention map: nothing to cost.
FREE_METHODS = ("random", "uniform", "keep-all")
# Methods whose selection reads attention in their own way; their cost is not modelled.
UNMODELLED_METHODS = ("cls", "prumerge+")
# freePruner's defaults before results files recorded their ``settings`` (fpcost.pruner's
# FreePrunerConfig then): pivotal layers range(L)[-3:-2], complementary -2, k = 192.
LEGACY_PARAMS = {"pivotal_start_layer": -3, "pivotal_end_layer": -2, "complementary_layer": -2,
                 "k": 192}


@dataclass(frozen=True)
class FileSelection:
    """How a results file's selection is costed: ``spec`` (None: the selection stage is
    left out) and a one-line ``description`` saying where the settings came from."""

    spec: SelectionSpec | None
    description: str


def selection_from_file(method: str | None, params: dict, settings: dict | None,
                        num_layers: int, num_tokens: int, where: str = "results file",
                        windowed_layers: tuple[int, ...] = ()) -> FileSelection:
    """The selection a results file was made with, for a vision tower of ``num_layers``
    layers (``num_tokens``: the file's patch tokens per image, for a fractional k).

    freePruner: the file's ``settings`` (``pivotal_layers``: resolved layer indices, ``k``,
    ``complementary_layer``) when present, else its ``params`` (``pivotal_start_layer``,
    ``pivotal_end_layer``, ``complementary_layer``, ``k``) over the defaults fpcost prune
    used before it recorded settings. random / uniform / keep-all: no selection cost. cls /
    prumerge+: their selection cost is not modelled (left out, and said so).
    ``windowed_layers``: the model's layers that attend within windows (Qwen2.5-VL); the
    description names those the selection reads, and the file's own ``windowed_layers``
    (what the pruned tower windowed) where they differ: the cost is this model's."""
    method = method or "freepruner"
    if method in FREE_METHODS:
        return FileSelection(None, f"{method}: reads no attention map, no selection cost")
    if method in UNMODELLED_METHODS:
        return FileSelection(None, f"{method}: selection cost not modelled (left out)")
    if method != "freepruner":
        raise WorkloadError(f"{where}: method {method!r} is unknown; valid: freepruner, "
                            f"{', '.join(FREE_METHODS + UNMODELLED_METHODS)}")
    if settings is not None and "pivotal_layers" in settings:
        layers = settings["pivotal_layers"]
        if not isinstance(layers, list) or not layers or not all(_is_int(i) for i in layers):
            raise WorkloadError(f"{where}: settings.pivotal_layers = {_brief(layers)} must be a "
                                "non-empty list of integer layer indices")
        k = _file_k(settings.get("k", params.get("k", LEGACY_PARAMS["k"])), num_tokens, where)
        complementary = _file_int(settings, params, "complementary_layer", where)
        direction = settings.get("direction", "row")
        if direction not in DIRECTIONS:
            raise WorkloadError(f"{where}: settings.direction = {_brief(direction)} is unknown; "
                                f"valid: {', '.join(DIRECTIONS)}")
        source = "the file's settings"
    else:
        start = _file_int({}, params, "pivotal_start_layer", where)
        end = _file_int({}, params, "pivotal_end_layer", where)
        layers = list(range(num_layers)[start:end])
        if not layers:
            raise WorkloadError(f"{where}: pivotal layers range({num_layers})[{start}:{end}] is "
                                "empty for this vision tower")
        k = _file_k(params.get("k", LEGACY_PARAMS["k"]), num_tokens, where)
        complementary = _file_int({}, params, "complementary_layer", where)
        direction = "row"
        source = "the file's params" if params else "fpcost prune's defaults (no settings in the file)"
    for index in (*layers, complementary):
        if not -num_layers <= index < num_layers:
            raise WorkloadError(f"{where}: selection layer {index} is out of range for this "
                                f"model's {num_layers}-layer vision tower")
    spec = SelectionSpec.from_layers(tuple(layers), complementary, k, direction)
    resolved = spec.pivotal_layers(num_layers)
    read = spec.resolved_layers(num_layers)
    windows = ": every layer has the same cost"
    if windowed_layers or (settings or {}).get("windowed_layers"):
        here = [i for i in read if i in windowed_layers]
        windows = f"; windowed here: {','.join(map(str, here)) or 'none'}"
        recorded = (settings or {}).get("windowed_layers")
        if recorded is not None and (not isinstance(recorded, list) or not all(
                _is_int(i) for i in recorded)):
            raise WorkloadError(f"{where}: settings.windowed_layers = {_brief(recorded)} must be "
                                "a list of integer layer indices")
        if recorded is not None and sorted(recorded) != here:
            windows += f" (the file's tower: {','.join(map(str, recorded)) or 'none'})"
    return FileSelection(spec, f"freepruner, from {source}: pivotal layers "
                               f"{','.join(map(str, resolved))}, complementary layer "
                               f"{spec.complementary_layer_resolved(num_layers)} ({direction}s), "
                               f"k = {k} (the file's layer indices, read in this model's "
                               f"{num_layers}-layer tower{windows})")


def _file_int(settings: dict, params: dict, key: str, where: str) -> int:
    value = settings.get(key, params.get(key, LEGACY_PARAMS[key]))
    if not _is_int(value):
        raise WorkloadError(f"{where}: {key} = {_brief(value)} must be an integer layer index")
    return value


def _file_k(value, num_tokens: int, where: str) -> int:
    """k as an integer ≥ 1, or a fraction in (0, 1] of the image's patch tokens."""
    if _is_int(value) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return max(1, round(value * num_tokens))
    raise WorkloadError(f"{where}: k = {_brief(value)} must be an integer ≥ 1 or a fraction "
                        "in (0, 1] of the patch tokens")


def _brief(value) -> str:
    if _is_int(value) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
