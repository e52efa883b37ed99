"""The baselines' selection rules as pure tensor functions (no model code).

Index convention as in api.py: patch indices in [0, N) in raster order over a
``rows x cols`` grid; prefix (CLS) tokens are never selected.

- random: a seeded uniform draw without replacement.
- uniform: a spatially uniform grid of exactly the requested count.
- cls: the top-k patch tokens by the CLS row of one layer's attention; for encoders without
  CLS (SigLIP) the mean attention each patch receives from all patches.
- PruMerge+ (Shang et al., arXiv:2403.15388, "LLaVA-PruMerge"): the IQR outliers of the CLS
  attention (an adaptive count) plus spatially uniform samples, then each kept token absorbs
  its nearest tokens by key similarity, weighted by their CLS attention. It is the merging
  contrast the freePruner paper draws (§1, Table 1).
"""

from __future__ import annotations

import math

import torch

from fpcost.pruner.errors import PruningError
from fpcost.pruner.selection import iqr_outlier_mask


def resolve_count(num_patches: int, ratio: float | None = None, count: int | None = None) -> int:
    """Tokens to keep out of ``num_patches`` from a ratio in (0, 1] or a count in [1, N]."""
    if ratio is not None and count is not None:
        raise PruningError(f"give a ratio ({ratio}) or a count ({count}), not both")
    if count is not None:
        if count < 1 or count > num_patches:
            raise PruningError(
                f"count ({count}) must be in 1..{num_patches} (the number of patch tokens)"
            )
        return int(count)
    if ratio is None:
        raise PruningError("a ratio or a count is needed")
    if not (0 < ratio <= 1):
        raise PruningError(f"ratio ({ratio}) must be in (0, 1]")
    return max(1, min(num_patches, round(ratio * num_patches)))


def random_indices(num_patches: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` sorted distinct indices drawn uniformly from [0, num_patches)."""
    return torch.randperm(num_patches, generator=generator)[:count].sort().values


def _evenly_spaced(values: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` entries of the 1-D ``values`` at evenly spaced positions (both ends kept)."""
    if count >= values.numel():
        return values
    positions = torch.linspace(0, values.numel() - 1, count).round().long()  # (count,) distinct
    return values[positions]


def uniform_grid_indices(rows: int, cols: int, count: int) -> torch.Tensor:
    """Exactly ``count`` sorted patch indices spread evenly over a ``rows x cols`` grid.

    A lattice of ``n_rows x n_cols >= count`` points at cell centres is laid over the patch
    grid, with the shape that leaves the largest gap between points smallest (then the
    fewest surplus points, then the squarest lattice); surplus points are thinned evenly,
    in raster order."""
    num = rows * cols
    if count >= num:
        return torch.arange(num)
    shapes = [(r, math.ceil(count / r)) for r in range(1, rows + 1) if math.ceil(count / r) <= cols]
    n_rows, n_cols = min(
        shapes, key=lambda s: (max(rows / s[0], cols / s[1]), s[0] * s[1] - count, abs(s[0] - s[1]))
    )
    r = ((torch.arange(n_rows) + 0.5) * rows / n_rows).floor().long()  # (n_rows,)
    c = ((torch.arange(n_cols) + 0.5) * cols / n_cols).floor().long()  # (n_cols,)
    grid = (r[:, None] * cols + c[None, :]).flatten()  # (n_rows * n_cols,) raster order
    return _evenly_spaced(grid, count).sort().values


def cls_attention_scores(attn: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """(B, T, T) head-aggregated attention -> (B, N) importance of each patch token.

    With a CLS token: the CLS row's attention to each patch. Without one: the mean attention
    each patch receives from the patches (column mean, the usual stand-in)."""
    p = num_prefix_tokens
    if p > 0:
        return attn[:, 0, p:]  # (B, N)
    return attn.mean(dim=1)  # (B, N)


def top_count_indices(scores: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Per sample, the ``count`` highest-scoring indices, sorted (ties -> lower index)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, N)
    return [row[:count].sort().values for row in order]


def prumerge_plus_masks(
    attn: torch.Tensor,
    num_prefix_tokens: int,
    rows: int,
    cols: int,
    iqr_factor: float = 1.5,
    spatial_factor: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PruMerge+'s adaptive selection. Returns (outliers, spatial, scores), (B, N) each.

    ``outliers``: patches whose CLS attention (``cls_attention_scores``) is an IQR outlier of
    the sample's scores (the adaptive count m). ``spatial``: ``spatial_factor * m`` spatially
    uniform patches (the reference code's raster stride of a third of N / m), less the
    outliers. At least one outlier is kept (the top-scoring patch)."""
    scores = cls_attention_scores(attn, num_prefix_tokens).float()  # (B, N)
    outliers = iqr_outlier_mask(scores, iqr_factor)  # (B, N)
    top = scores.argmax(dim=-1, keepdim=True)  # (B, 1)
    outliers.scatter_(-1, top, True)
    spatial = torch.zeros_like(outliers)
    num = rows * cols
    for b in range(scores.shape[0]):
        extra = min(num, round(spatial_factor * int(outliers[b].sum())))
        spatial[b, uniform_grid_indices(rows, cols, extra)] = True
    spatial &= ~outliers
    return outliers, spatial, scores


def merge_by_key_similarity(
    features: torch.Tensor,
    keys: torch.Tensor,
    weights: torch.Tensor,
    kept: list[torch.Tensor],
    num_neighbors: int = 32,
) -> list[torch.Tensor]:
    """PruMerge's merge: each kept token plus the weighted sum of its nearest tokens.

    ``features``: (B, N, D) patch features; ``keys``: (B, N, C) patch keys; ``weights``:
    (B, N) CLS attention. For kept token i, its ``num_neighbors`` most cosine-similar other
    patch tokens j (kept or pruned) by key are found and x_i + sum_j w_j x_j is returned,
    unnormalised as in the reference. Returns per sample (K_b, D)."""
    keys = torch.nn.functional.normalize(keys.float(), dim=-1)  # (B, N, C)
    merged = []
    for b, idx in enumerate(kept):
        if idx.numel() == 0:
            merged.append(features.new_zeros(0, features.shape[-1]))
            continue
        sim = keys[b, idx] @ keys[b].T  # (K, N)
        sim[torch.arange(idx.numel()), idx] = float("-inf")  # not itself
        k = min(num_neighbors, keys.shape[1] - 1)
        if k <= 0:
            merged.append(features[b, idx])
            continue
        nbr = sim.topk(k, dim=-1).indices  # (K, k)
        w = weights[b, nbr].unsqueeze(-1).to(features.dtype)  # (K, k, 1)
        merged.append(features[b, idx] + (features[b, nbr] * w).sum(dim=1))  # (K, D)
    return merged
