"""freePruner's nested family of selections, and the fixed-budget rule built on it.

For a fixed score map, the adaptive selection kept(k) = P(k) ∪ C(k) only grows with k: the
top-k of each layer is nested (stable order), so P(k) is, and C(k) is a union over P(k).
So every patch has an *entry* k, the smallest k that keeps it, and kept(k) = {entry <= k}.
A fixed budget n takes kept(k') for the largest k' with |kept(k')| <= n and fills the rest
from kept(k' + 1), pivotal tokens first, each by score: the proportion of pivotal to
complementary tokens is the one the adaptive rule itself gives at that k. Ordering the
patches by (entry, pivotal before complementary, score desc, index) and taking the first n
is exactly that rule; ``admission`` encodes the first two keys as 2 * entry + tier.

Pure tensor functions, shapes (B, N) over patch tokens; ``selection.py`` and
``methods.FreePruner`` compute the entries, the LLaVA-NeXT adapter reuses ``budget_order``.
"""

from __future__ import annotations

import torch

from fpcost.pruner.api import Selection
from fpcost.pruner.errors import PruningError

NEVER = 2**60  # entry of a token that no computed pivotal row makes complementary


def pivotal_entry(degrees: torch.Tensor) -> torch.Tensor:
    """(L, B, N) contribution degrees of the pivotal layers -> (B, N) int64: the smallest k
    whose top-k in some layer holds the token (1 + its best rank; ties to the lower index)."""
    order = torch.sort(degrees, dim=-1, descending=True, stable=True).indices  # (L, B, N)
    ranks = torch.arange(degrees.shape[-1], device=degrees.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, ranks)  # (L, B, N) rank of each token
    return rank.amin(dim=0) + 1  # (B, N)


def complementary_entry(outliers: torch.Tensor, row_entry: torch.Tensor) -> torch.Tensor:
    """(B, R, N) outliers of R pivotal rows and (B, R) those rows' pivotal entry -> (B, N)
    int64: the smallest k at which some pivotal row marks the token (NEVER if none does)."""
    marked = torch.where(outliers, row_entry.unsqueeze(-1), NEVER)  # (B, R, N)
    if marked.shape[1] == 0:
        return torch.full(outliers.shape[::2], NEVER, dtype=torch.int64)
    return marked.amin(dim=1)  # (B, N)


def admission(pivot_entry: torch.Tensor, comp_entry: torch.Tensor) -> torch.Tensor:
    """(B, N) int64 key 2 * entry + tier, tier 0 if the token enters as pivotal, 1 if as
    complementary: lower keys are kept first. ``key // 2`` is the entry k."""
    entry = torch.minimum(pivot_entry, comp_entry)
    return 2 * entry + (comp_entry < pivot_entry).to(torch.int64)


def budget_order(admission_key: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(B, N) patch indices in the order a budget takes them: admission key ascending, then
    score descending, then index ascending. Works on any flat set of tokens (LLaVA-NeXT
    orders the packed positions of several crops with it)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, N)
    key_in_order = torch.gather(admission_key, -1, order)  # (B, N)
    regroup = torch.sort(key_in_order, dim=-1, stable=True).indices  # (B, N)
    return torch.gather(order, -1, regroup)  # (B, N)


def budget_entry(admission_key: torch.Tensor, scores: torch.Tensor, count: int) -> torch.Tensor:
    """(B,) the entry k of the last token a budget of ``count`` takes (the rows needed)."""
    order = budget_order(admission_key, scores)[:, :count]  # (B, count)
    return (torch.gather(admission_key, -1, order) // 2).amax(dim=-1)  # (B,)


def _mask_to_indices(mask: torch.Tensor) -> list[torch.Tensor]:
    return [row.nonzero().squeeze(-1).to(torch.int64) for row in mask]


def select_from_entries(
    pivot_entry: torch.Tensor,
    comp_entry: torch.Tensor,
    scores: torch.Tensor,
    k: int,
    budget: int | None = None,
    min_keep: int = 1,
) -> Selection:
    """freePruner's selection from each patch's pivotal and complementary entry (B, N).

    Adaptive: pivotal = {pivot_entry <= k}, complementary = {comp_entry <= k} minus pivotal;
    if fewer than ``min_keep``, the next tokens in budget order are added as ``filled``.
    Budget n: the first n tokens in budget order, split into pivotal / complementary at the
    entry k of the last one taken (no filled tokens). ``comp_entry`` must be exact up to that
    k (``budget_entry`` tells the caller how far the pivotal rows must go)."""
    num_patches = pivot_entry.shape[-1]
    key = admission(pivot_entry, comp_entry)  # (B, N)
    if budget is not None:
        if budget > num_patches:
            raise PruningError(
                f"budget ({budget}) exceeds the number of patch tokens ({num_patches})"
            )
        order = budget_order(key, scores)[:, :budget]  # (B, n)
        kept = torch.zeros_like(pivot_entry, dtype=torch.bool).scatter_(-1, order, True)
        last = (torch.gather(key, -1, order) // 2).amax(dim=-1, keepdim=True)  # (B, 1)
        pivotal = kept & (pivot_entry <= last)
        comp = kept & ~pivotal
        filled = torch.zeros_like(kept)
    else:
        pivotal = pivot_entry <= k  # (B, N)
        comp = (comp_entry <= k) & ~pivotal
        kept = pivotal | comp
        floor = min(min_keep, num_patches)
        if (kept.sum(dim=-1) < floor).any():
            order = budget_order(key, scores)[:, :floor]  # (B, floor)
            kept = kept.scatter(-1, order, True)
        filled = kept & ~pivotal & ~comp
    return Selection(
        kept=_mask_to_indices(kept),
        num_patches=num_patches,
        pivotal=_mask_to_indices(pivotal),
        complementary=_mask_to_indices(comp),
        scores=scores,
        filled=_mask_to_indices(filled),
        admission=key,
    )
