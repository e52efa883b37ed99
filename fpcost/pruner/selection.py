"""freePruner's token selection as pure tensor functions (paper §3.2–3.3, Algorithm 1).

No model code here: attention maps (or the statistics ``scoring.py`` computes from q and k)
in, kept indices out. ``methods.py`` wires capture, scoring and selection behind
``TokenPruner``.

Shapes: ``B`` images (or frames), ``H`` heads, ``T = P + N`` tokens of which the first ``P``
are prefix tokens (CLS; 0 for SigLIP) and ``N`` are patch tokens in raster order. Every index
returned here is a *patch* index in [0, N) (api.py's convention); a prefix token is never
selected.

Algorithm, with the parameters the paper leaves open named in ``FreePrunerConfig``:
1. Contribution degree per layer l in range(L_s, L): r_l[i] = sum_j A_l[j, i] - A_l[i, i] on
   the head-aggregated map (Eq. 3).
2. Pivotal tokens: union over those layers of the k tokens with the largest r_l, k relative
   to the patch count.
3. Complementary tokens: for each pivotal p, the entries of row A[p, :] (or column A[:, p])
   of the "penultimate" layer above Q3 + 1.5 IQR of that vector (quartiles as
   numpy.percentile's default linear method); union over p. Reported disjoint from the
   pivotal set.
4. Kept = pivotal ∪ complementary, sorted (original order). A fixed budget takes the
   adaptive selection at the k where its count reaches the budget (``budget_order``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fpcost.pruner.api import Selection
from fpcost.pruner.budget import complementary_entry, pivotal_entry, select_from_entries
from fpcost.pruner.errors import PruningError

HEAD_REDUCTIONS = ("mean", "max")
# numpy.percentile positions of the quartiles (default method "linear").
Q1, Q3 = 0.25, 0.75


DIRECTIONS = ("row", "column")


@dataclass(frozen=True)
class FreePrunerConfig:
    """Every choice the paper leaves open, with its default and the reason for it
    (docs/pruning.md has the measurements behind each).

    Layer indices count encoder layers from 0 (layer i's attention is the one computed inside
    encoder layer i); negative values count from the end as in Python, so -1 is the last layer.

    - ``pivotal_start_layer`` / ``pivotal_end_layer`` (L_s, L): -4 / -2, Algorithm 1's
      ``range(L_s, L)`` read as a Python slice of the encoder's layers (end excluded, negative
      from the end, clamped as slices are): the union over the two layers before the
      complementary ("penultimate") one — 8-9 of DINOv2-S's 12, 20-21 of CLIP-L's 24. The
      paper takes pivotal tokens from the middle-to-deep layers where r_l is large, before it
      fades at the penultimate layer (Fig. 4, 6). Each layer costs one recomputation of
      softmax(QKᵀ) (~1.5% of a DINOv2-S forward on this CPU): two layers keep the whole
      selection within 5% of the DINOv2-S forward (4.9% measured), three (-5, 7-9) cost 7.5%
      (docs/pruning.md); ``pivotal_start_layer=-5, k_ratio=0.225`` is that wider union.
    - ``k_ratio``: 0.25 — k, the pivotal tokens per layer, as a fraction of the patch count
      N (k = round(k_ratio · N), at least 1: 144 of 576 at 336 px, 64 of 256 at 224 px), so
      the rule scales from Video-LLaVA's 256 tokens per frame to LLaVA-1.5's 576. The paper
      gives no k; with these layers this one keeps 50.1% (224 px) and 50.0% (336 px) of the
      tokens of scikit-image's twelve photographs on the trained DINOv2, the paper's ~50%
      (benchmarks/freepruner_sweep.py).
    - ``k``: None; an absolute k overrides ``k_ratio`` (a k above N selects every token).
    - ``complementary_layer``: -2, the layer LLaVA-1.5 reads its image features from
      (``vision_feature_layer=-2``), which is the paper's "penultimate layer".
    - ``direction``: "row". Algorithm 1 takes outliers of the pivotal token's row A[p, :]
      (what p attends to); §3.3's prose speaks of tokens attending *towards* p, the column
      A[:, p]. The algorithm box is the precise statement, and a row needs only the pivotal
      tokens' rows of the map (a column needs the whole map); "column" is offered.
    - ``head_reduce``: "mean". Eq. 3 is written for one map; the paper's Fig. 4 is
      head-averaged, and the mean keeps r_l's "sum of attention" unit. "max" is offered.
    - ``include_cls``: False. LLaVA feeds only patch tokens to the LLM and the paper's r_l is
      "how much token i contributes to the image representation" (its 576-token scale in
      Fig. 4), so the CLS row and column are left out of the sums and of the quartiles. With
      True the CLS row counts in r_l and the CLS column in the quartiles; CLS is never selected.
    - ``iqr_factor``: 1.5, Tukey's fence that the paper's "outliers" and PruMerge use.
    - ``min_keep``: 1. No paper value; a floor for tiny encoders, filled in budget order.
    - ``budget``: None (adaptive count, as for LLaVA-1.5 and Video-LLaVA). An int fixes the
      count, as the paper does for LLaVA-NeXT (App. 6.2), by shrinking (or growing) k until
      pivotal ∪ complementary reaches the budget (``budget_order``), so both kinds stay.
    """

    pivotal_start_layer: int = -4
    pivotal_end_layer: int = -2
    k_ratio: float = 0.25
    k: int | None = None
    complementary_layer: int = -2
    direction: str = "row"
    head_reduce: str = "mean"
    include_cls: bool = False
    iqr_factor: float = 1.5
    min_keep: int = 1
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.k is not None and (
            isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1
        ):
            raise PruningError(f"k ({self.k!r}) must be an integer >= 1")
        if isinstance(self.k_ratio, bool) or not (
            isinstance(self.k_ratio, (int, float))
            and math.isfinite(self.k_ratio)
            and 0 < self.k_ratio <= 1
        ):
            raise PruningError(f"k_ratio ({self.k_ratio!r}) must be a number in (0, 1]")
        if self.head_reduce not in HEAD_REDUCTIONS:
            raise PruningError(
                f"head_reduce ({self.head_reduce!r}) must be one of {', '.join(HEAD_REDUCTIONS)}"
            )
        if self.direction not in DIRECTIONS:
            raise PruningError(
                f"direction ({self.direction!r}) must be one of {', '.join(DIRECTIONS)}"
            )
        if not (math.isfinite(self.iqr_factor) and self.iqr_factor >= 0):
            raise PruningError(f"iqr_factor ({self.iqr_factor!r}) must be a finite number >= 0")
        if self.min_keep < 1:
            raise PruningError(f"min_keep ({self.min_keep}) must be >= 1")
        if self.budget is not None and self.budget < 1:
            raise PruningError(f"budget ({self.budget}) must be >= 1 or None")

    def resolve_k(self, num_patches: int) -> int:
        """Pivotal tokens per layer for N = ``num_patches``: ``k`` if given, else
        round(k_ratio · N) (at least 1), never above N."""
        k = self.k if self.k is not None else max(1, round(self.k_ratio * num_patches))
        return min(k, num_patches)

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

    def settings(self, num_layers: int, num_patches: int) -> dict:
        """The resolved settings a results file records (what the cost model's selection
        stage reads): pivotal layers, k, the k rule, complementary layer and direction."""
        return {
            "pivotal_layers": list(self.pivotal_layers(num_layers)),
            "k": self.resolve_k(num_patches),
            "k_rule": f"k = {self.k}" if self.k is not None
            else f"k = max(1, round({self.k_ratio} * num_tokens))",
            "k_ratio": None if self.k is not None else self.k_ratio,
            "complementary_layer": resolve_layer(
                self.complementary_layer, num_layers, "complementary_layer"
            ),
            "direction": self.direction,
            "head_reduce": self.head_reduce,
            "include_cls": self.include_cls,
            "iqr_factor": self.iqr_factor,
            "budget": self.budget,
        }


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


def outlier_vectors(
    attn: torch.Tensor,
    rows: torch.Tensor,
    num_prefix_tokens: int,
    direction: str = "row",
    include_cls: bool = False,
) -> torch.Tensor:
    """For each patch index p in ``rows`` (R,), the attention vector whose outliers are p's
    complementary tokens: row A[p, :] ("row", Algorithm 1) or column A[:, p] ("column",
    §3.3's prose). ``attn``: (B, T, T). Returns (B, R, T) with the prefix entries, or
    (B, R, N) without them unless ``include_cls``."""
    p = num_prefix_tokens
    if direction == "row":
        vectors = attn[:, p + rows, :]  # (B, R, T)
    else:
        vectors = attn[:, :, p + rows].transpose(1, 2)  # (B, R, T): column p as a vector
    return vectors if include_cls else vectors[:, :, p:]


def outlier_matrix(vectors: torch.Tensor, num_patches: int, factor: float = 1.5) -> torch.Tensor:
    """(B, R, T or N) vectors -> (B, R, N) bool: patch entries above their vector's fence."""
    return iqr_outlier_mask(vectors, factor)[:, :, vectors.shape[-1] - num_patches :]


def complementary_mask(
    attn: torch.Tensor,
    pivotal: torch.Tensor,
    num_prefix_tokens: int,
    include_cls: bool = False,
    iqr_factor: float = 1.5,
    direction: str = "row",
) -> torch.Tensor:
    """Union over each sample's pivotal tokens p of the IQR outliers of row A[p, :] (or
    column A[:, p]). ``attn``: (B, T, T); ``pivotal``: (B, N) bool. Returns (B, N) bool over
    patch tokens (it may overlap ``pivotal``): the reference form of the complementary rule."""
    rows_needed = pivotal.any(dim=0).nonzero().squeeze(-1)  # (R,) patch rows pivotal somewhere
    if rows_needed.numel() == 0:
        return torch.zeros_like(pivotal)
    vectors = outlier_vectors(attn, rows_needed, num_prefix_tokens, direction, include_cls)
    outliers = outlier_matrix(vectors, pivotal.shape[-1], iqr_factor)  # (B, R, N)
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
    other kept tokens, then the rest, each by descending score. Truncates or fills (the
    baselines' budget rule; freePruner's is ``budget_order``)."""
    tier = torch.full_like(kept, 2, dtype=torch.int64)
    tier[kept] = 1
    tier[pivotal] = 0
    order = rank_by_tier(tier, scores)  # (B, N)
    position = torch.arange(kept.shape[-1], device=kept.device).expand_as(order)  # (B, N)
    chosen = position < count.unsqueeze(-1)  # (B, N) in rank order
    return torch.zeros_like(kept).scatter_(-1, order, chosen)


def select_freepruner(
    maps: Mapping[int, torch.Tensor],
    config: FreePrunerConfig,
    num_layers: int,
    num_prefix_tokens: int,
) -> Selection:
    """freePruner's selection from whole head-aggregated attention maps (the reference form;
    ``methods.FreePruner`` computes only what it needs from q and k, with the same result).

    ``maps``: resolved layer index -> (B, T, T) fp32 for at least
    ``config.layers_needed(num_layers)``. Returns a ``Selection`` with ``kept`` sorted,
    ``pivotal`` ⊆ ``kept``, ``complementary`` = kept complementary tokens not pivotal,
    ``filled`` = tokens added by ``min_keep``, ``scores`` (B, N) = the mean contribution
    degree over the pivotal layers and ``admission`` (B, N) the budget order key."""
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

    degrees = torch.stack(
        [
            contribution_degree(maps[layer], num_prefix_tokens, config.include_cls)
            for layer in pivotal_layers
        ]
    )  # (L, B, N)
    num_patches = degrees.shape[-1]
    pivot_entry = pivotal_entry(degrees)  # (B, N)
    every_row = torch.arange(num_patches)
    vectors = outlier_vectors(
        maps[comp_layer], every_row, num_prefix_tokens, config.direction, config.include_cls
    )
    outliers = outlier_matrix(vectors, num_patches, config.iqr_factor)  # (B, N, N)
    comp_entry = complementary_entry(outliers, pivot_entry)  # rows = every patch, in order
    return select_from_entries(
        pivot_entry,
        comp_entry,
        degrees.mean(dim=0),
        config.resolve_k(num_patches),
        config.budget,
        config.min_keep,
    )
