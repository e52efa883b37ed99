"""freePruner's token selection as pure tensor functions (paper §3.2–3.3, Algorithm 1).

No model code here: attention maps in, kept indices out. ``capture.py`` produces the maps
from a running encoder; ``methods.py`` wires the two together behind ``TokenPruner``.

Shapes: ``B`` images (or frames), ``H`` heads, ``T = P + N`` tokens of which the first ``P``
are prefix tokens (CLS; 0 for SigLIP) and ``N`` are patch tokens in raster order. Every index
returned here is a *patch* index in [0, N) (api.py's convention); a prefix token is never
selected.

Algorithm, with the parameters the paper leaves open named in ``FreePrunerConfig``:
1. Contribution degree per layer l in [L_s, L]: r_l[i] = sum_j A_l[j, i] - A_l[i, i] on the
   head-aggregated map (Eq. 3).
2. Pivotal tokens: union over those layers of the k tokens with the largest r_l.
3. Complementary tokens: for each pivotal p, the entries of row A[p, :] of the
   "penultimate" layer above Q3 + 1.5 IQR of that row (quartiles as numpy.percentile's
   default linear method); union over p. Reported disjoint from the pivotal set.
4. Kept = pivotal ∪ complementary, sorted (original order). An optional fixed budget then
   truncates or fills by (pivotal, complementary, other) tier and score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fpcost.pruner.api import Selection
from fpcost.pruner.errors import PruningError

HEAD_REDUCTIONS = ("mean", "max")
# numpy.percentile positions of the quartiles (default method "linear").
Q1, Q3 = 0.25, 0.75


@dataclass(frozen=True)
class FreePrunerConfig:
    """Every choice the paper leaves open, with its default and the reason for it.

    Layer indices count encoder layers from 0 (layer i's attention is the one computed inside
    encoder layer i); negative values count from the end as in Python, so -1 is the last layer.

    - ``pivotal_start_layer`` / ``pivotal_end_layer`` (L_s, L): -3 / -2, read as Algorithm 1's
      ``range(L_s, L)``: a Python slice of the encoder's layers, end excluded, negative values
      from the end and out-of-range values clamped as slices are. The default is the one layer
      just before the complementary ("penultimate", -2) layer: 9 of DINOv2-S's 12, 21 of
      CLIP-L's 24, 1 of a 4-layer test encoder. The paper takes pivotal tokens from the deeper
      layers where r_l is large (Fig. 4) and shows it fading at the penultimate layer. Each
      pivotal layer costs a full recomputation of its attention (~2-4% of a DINOv2-S forward
      on this CPU), so one layer is what keeps the whole selection within the 5% overhead
      budget (benchmarks/pruning_overhead.py); a wider union, e.g. -4 / -2 with k = 144
      (also 50% on the photographs, ~9% overhead), is a parameter away (docs/pruning.md).
    - ``k``: 192 tokens per layer (a third of 576). The paper gives no value. Tuned with the
      layers above so that the mean keep ratio of the real DINOv2-S/14 over scikit-image's
      twelve photographs at 336 px is the paper's 50% (docs/pruning.md has the sweep and
      the per-image numbers). A k above the patch count selects every token.
    - ``complementary_layer``: -2, the layer LLaVA-1.5 reads its image features from
      (``vision_feature_layer=-2``), which is the paper's "penultimate layer".
    - ``head_reduce``: "mean". Eq. 3 is written for one map; the paper's Fig. 4 is
      head-averaged, and the mean keeps r_l's "sum of attention" unit. "max" is offered.
    - ``include_cls``: False. LLaVA feeds only patch tokens to the LLM and the paper's r_l is
      "how much token i contributes to the image representation" (its 576-token scale in
      Fig. 4), so the CLS row and column are left out of the sums and of the quartiles. With
      True the CLS row counts in r_l and the CLS column in the quartiles; CLS is never selected.
    - ``iqr_factor``: 1.5, Tukey's fence that the paper's "outliers" and PruMerge use.
    - ``min_keep``: 1. No paper value; a floor for tiny encoders. Filled by score.
    - ``budget``: None (adaptive count, as for LLaVA-1.5 and Video-LLaVA). An int fixes the
      count, as the paper does for LLaVA-NeXT (App. 6.2): truncate or fill, see ``apply_budget``.
    """

    pivotal_start_layer: int = -3
    pivotal_end_layer: int = -2
    k: int = 192
    complementary_layer: int = -2
    head_reduce: str = "mean"
    include_cls: bool = False
    iqr_factor: float = 1.5
    min_keep: int = 1
    budget: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise PruningError(f"k ({self.k!r}) must be an integer >= 1")
        if self.head_reduce not in HEAD_REDUCTIONS:
            raise PruningError(
                f"head_reduce ({self.head_reduce!r}) must be one of {', '.join(HEAD_REDUCTIONS)}"
            )
        if not (math.isfinite(self.iqr_factor) and self.iqr_factor >= 0):
            raise PruningError(f"iqr_factor ({self.iqr_factor!r}) must be a finite number >= 0")
        if self.min_keep < 1:
            raise PruningError(f"min_keep ({self.min_keep}) must be >= 1")
        if self.budget is not None and self.budget < 1:
            raise PruningError(f"budget ({self.budget}) must be >= 1 or None")

    def pivotal_layers(self, num_layers: int) -> tuple[int, ...]:
        """Resolved (non-negative) pivotal layer indices: ``range(num_layers)[L_s:L]``."""
        layers = tuple(range(num_layers)[self.pivotal_start_layer : self.pivotal_end_layer])
        if not layers:
            raise PruningError(
                f"pivotal layers [{self.pivotal_start_layer}:{self.pivotal_end_layer}] "
                "select no layer "
                f"of a {num_layers}-layer encoder; give a start before the (exclusive) end"
            )
        return layers

    def layers_needed(self, num_layers: int) -> tuple[int, ...]:
        """Every resolved layer whose attention the selection reads, ascending."""
        comp = resolve_layer(self.complementary_layer, num_layers, "complementary_layer")
        return tuple(sorted({*self.pivotal_layers(num_layers), comp}))


def resolve_layer(index: int, num_layers: int, name: str = "layer") -> int:
    """A layer index in [-num_layers, num_layers) as a non-negative index."""
    if not -num_layers <= index < num_layers:
        raise PruningError(
            f"{name} ({index}) is out of range for a {num_layers}-layer encoder; "
            f"valid: {-num_layers}..{num_layers - 1}"
        )
    return index % num_layers


def aggregate_heads(attn: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Per-head attention (B, H, T, T) -> one map per sample (B, T, T), fp32."""
    if mode not in HEAD_REDUCTIONS:
        raise PruningError(f"head_reduce ({mode!r}) must be one of {', '.join(HEAD_REDUCTIONS)}")
    attn = attn.float()
    return attn.mean(dim=1) if mode == "mean" else attn.amax(dim=1)  # (B, T, T)


def check_finite(attn: torch.Tensor, layer: int) -> None:
    """Raise ``PruningError`` naming the layer and sample if ``attn`` holds NaN or inf."""
    # attention lies in [0, 1], so a per-sample sum is finite iff every entry is
    per_sample = attn.flatten(1).sum(dim=1)  # (B,)
    if not torch.isfinite(per_sample).all():
        sample = int((~torch.isfinite(per_sample)).nonzero()[0, 0])
        raise PruningError(
            f"attention at encoder layer {layer} is not finite (NaN or inf) for sample {sample}; "
            "selection needs finite attention — check the input pixels and the model weights"
        )


def contribution_degree(
    attn: torch.Tensor, num_prefix_tokens: int, include_cls: bool = False
) -> torch.Tensor:
    """Eq. 3, r[i] = sum_j A[j, i] - A[i, i], for every patch token i.

    ``attn``: (B, T, T) head-aggregated. Returns (B, N) fp32 in units of summed attention
    probability. Rows of prefix tokens count only if ``include_cls``.
    """
    p = num_prefix_tokens
    rows = attn if include_cls else attn[:, p:, :]  # (B, T or N, T)
    col_sums = rows.sum(dim=1)[:, p:]  # (B, N)
    diag = torch.diagonal(attn, dim1=1, dim2=2)[:, p:]  # (B, N)
    return col_sums - diag


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N) scores -> (B, N) bool, True for each sample's k largest (all if k >= N).

    Ties are broken towards the lower index (stable sort), so the result is deterministic."""
    num = scores.shape[-1]
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, N)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, order[:, : min(k, num)], True)


def _order_statistics(
    x: torch.Tensor, positions: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The values at sorted positions ``lo <= hi`` (hi <= lo + 1) of each row of x (..., n),
    without a full sort: a partial top-k from the nearer end, then its two extreme values."""
    n = x.shape[-1]
    lo, hi = positions
    if hi + 1 <= n - lo:  # from below: the hi + 1 smallest values; hi is their max
        smallest = torch.topk(x, hi + 1, dim=-1, largest=False, sorted=False).values
        top = torch.topk(smallest, min(2, hi + 1), dim=-1).values  # (..., 1 or 2) descending
        return top[..., hi - lo], top[..., 0]
    largest = torch.topk(x, n - lo, dim=-1, sorted=False).values  # from above: lo is their min
    bottom = torch.topk(largest, min(2, n - lo), dim=-1, largest=False).values  # ascending
    return bottom[..., 0], bottom[..., hi - lo]


def quartiles(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q1 and Q3 of each row of ``x`` (..., n) exactly as ``numpy.percentile(x, [25, 75],
    axis=-1)`` computes them (default method "linear"), in float64.

    numpy's linear method: virtual index v = (n - 1) q, a = x_(floor v), b = x_(floor v + 1)
    (clamped to the last element), t = v - floor v; result a + (b - a) t, or b - (b - a)(1 - t)
    when t >= 0.5 (numpy's ``_lerp``). The order statistics are picked in the input dtype and
    cast to float64, which gives the same numbers as sorting the float64 cast.
    """
    n = x.shape[-1]
    out = []
    for q in (Q1, Q3):
        virtual = (n - 1) * q
        lo = math.floor(virtual)
        hi = min(lo + 1, n - 1)
        if virtual >= n - 1:
            lo = hi = n - 1
        t = virtual - lo
        a, b = (v.double() for v in _order_statistics(x, (lo, hi)))
        diff = b - a
        out.append(b - diff * (1 - t) if t >= 0.5 else a + diff * t)
    return out[0], out[1]


def iqr_outlier_mask(x: torch.Tensor, factor: float = 1.5) -> torch.Tensor:
    """(..., n) -> bool (..., n): entries strictly above Q3 + factor * (Q3 - Q1) of their row."""
    q1, q3 = quartiles(x)
    fence = q3 + factor * (q3 - q1)  # (...,) float64
    return x.double() > fence.unsqueeze(-1)  # (..., n) vs (..., 1)


def complementary_mask(
    attn: torch.Tensor,
    pivotal: torch.Tensor,
    num_prefix_tokens: int,
    include_cls: bool = False,
    iqr_factor: float = 1.5,
) -> torch.Tensor:
    """Union over each sample's pivotal tokens p of the IQR outliers of row A[p, :].

    ``attn``: (B, T, T) head-aggregated map of the complementary layer; ``pivotal``: (B, N)
    bool. Returns (B, N) bool over patch tokens (it may overlap ``pivotal``). The quartiles
    include the prefix columns only if ``include_cls``."""
    p = num_prefix_tokens
    rows_needed = pivotal.any(dim=0).nonzero().squeeze(-1)  # (R,) patch rows pivotal somewhere
    comp = torch.zeros_like(pivotal)
    if rows_needed.numel() == 0:
        return comp
    rows = attn[:, p + rows_needed, :]  # (B, R, T)
    if not include_cls:
        rows = rows[:, :, p:]  # (B, R, N)
    outliers = iqr_outlier_mask(rows, iqr_factor)[
        :, :, rows.shape[-1] - pivotal.shape[-1] :
    ]  # (B, R, N)
    is_pivot_row = pivotal[:, rows_needed].unsqueeze(-1)  # (B, R, 1)
    return (outliers & is_pivot_row).any(dim=1)  # (B, N)


def rank_by_tier(tier: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(B, N) order of patch indices: lower tier first, then higher score, then lower index."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, N)
    tier_in_order = torch.gather(tier, -1, order)  # (B, N)
    regroup = torch.sort(tier_in_order, dim=-1, stable=True).indices  # (B, N)
    return torch.gather(order, -1, regroup)  # (B, N)


def apply_budget(
    kept: torch.Tensor, pivotal: torch.Tensor, scores: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    """Exactly ``count[b]`` tokens per sample (B, N) bool, chosen by rank: pivotal, then the
    other kept tokens, then the rest, each by descending score. Truncates or fills."""
    tier = torch.full_like(kept, 2, dtype=torch.int64)
    tier[kept] = 1
    tier[pivotal] = 0
    order = rank_by_tier(tier, scores)  # (B, N)
    position = torch.arange(kept.shape[-1], device=kept.device).expand_as(order)  # (B, N)
    chosen = position < count.unsqueeze(-1)  # (B, N) in rank order
    return torch.zeros_like(kept).scatter_(-1, order, chosen)


def _mask_to_indices(mask: torch.Tensor) -> list[torch.Tensor]:
    return [row.nonzero().squeeze(-1).to(torch.int64) for row in mask]


def pivotal_tokens(
    maps: Mapping[int, torch.Tensor],
    config: FreePrunerConfig,
    num_layers: int,
    num_prefix_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Union over the pivotal layers of each layer's top-k by contribution degree.

    Returns the (B, N) bool pivotal mask and the (B, N) mean contribution degree over the
    pivotal layers (the score used for budgets)."""
    degrees = [
        contribution_degree(maps[layer], num_prefix_tokens, config.include_cls)
        for layer in config.pivotal_layers(num_layers)
    ]
    pivotal = torch.zeros_like(degrees[0], dtype=torch.bool)  # (B, N)
    for r in degrees:
        pivotal |= top_k_mask(r, config.k)
    return pivotal, torch.stack(degrees).mean(dim=0)  # (B, N), (B, N)


def select_freepruner(
    maps: Mapping[int, torch.Tensor],
    config: FreePrunerConfig,
    num_layers: int,
    num_prefix_tokens: int,
) -> Selection:
    """freePruner's selection from head-aggregated attention maps.

    ``maps``: resolved layer index -> (B, T, T) fp32 for at least
    ``config.layers_needed(num_layers)``. Returns a ``Selection`` with ``kept`` sorted,
    ``pivotal`` ⊆ ``kept``, ``complementary`` = kept complementary tokens not pivotal,
    ``filled`` = tokens added by ``min_keep`` or ``budget``, and ``scores`` (B, N) = the mean
    contribution degree over the pivotal layers."""
    pivotal_layers = config.pivotal_layers(num_layers)
    comp_layer = resolve_layer(config.complementary_layer, num_layers, "complementary_layer")
    missing = [layer for layer in (*pivotal_layers, comp_layer) if layer not in maps]
    if missing:
        raise PruningError(f"attention for layers {missing} was not captured; have {sorted(maps)}")
    shape = maps[comp_layer].shape
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] <= num_prefix_tokens:
        raise PruningError(
            "attention maps must be (B, T, T) with T > "
            f"{num_prefix_tokens} prefix tokens; got {tuple(shape)}"
        )
    for layer in (*pivotal_layers, comp_layer):
        if maps[layer].shape != shape:
            raise PruningError(
                f"attention at layer {layer} has shape "
                f"{tuple(maps[layer].shape)}, expected {tuple(shape)}"
            )
        check_finite(maps[layer], layer)

    pivotal, scores = pivotal_tokens(maps, config, num_layers, num_prefix_tokens)
    comp = complementary_mask(
        maps[comp_layer], pivotal, num_prefix_tokens, config.include_cls, config.iqr_factor
    )
    comp &= ~pivotal
    kept = pivotal | comp

    num_patches = pivotal.shape[-1]
    if config.budget is not None:
        if config.budget > num_patches:
            raise PruningError(
                f"budget ({config.budget}) exceeds the number of patch tokens ({num_patches})"
            )
        target = torch.full((kept.shape[0],), config.budget, dtype=torch.int64)
        kept = apply_budget(kept, pivotal, scores, target)
    else:
        floor = min(config.min_keep, num_patches)
        counts = kept.sum(dim=-1)
        if (counts < floor).any():
            kept = apply_budget(kept, pivotal, scores, counts.clamp(min=floor))
    pivotal &= kept
    comp &= kept
    filled = kept & ~pivotal & ~comp
    return Selection(
        kept=_mask_to_indices(kept),
        num_patches=num_patches,
        pivotal=_mask_to_indices(pivotal),
        complementary=_mask_to_indices(comp),
        scores=scores,
        filled=_mask_to_indices(filled),
    )
