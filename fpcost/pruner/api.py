"""The contract between token selection and the model adapters.

A ``TokenPruner`` runs a vision encoder once and returns both the hidden states the model
would use and a ``Selection`` of patch tokens to keep. Adapters (LLaVA, Video-LLaVA,
LLaVA-NeXT, bare encoders) only ever talk to this interface, so every method (freePruner
and the baselines) runs through the same harness.

Index convention: selections index *patch* tokens only, 0..num_patches-1, in the encoder's
raster order; a CLS token, where the encoder has one, is never indexed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn


@dataclass
class Selection:
    """Kept patch tokens for each image (or frame) of a batch.

    ``kept[b]``: sorted, unique int64 indices in [0, num_patches).
    ``pivotal[b]`` / ``complementary[b]``: how ``kept[b]`` came about (freePruner);
    baselines put all kept tokens in ``pivotal`` and leave ``complementary`` empty.
    ``scores``: (B, num_patches) importance used to truncate or fill to a fixed budget.
    ``filled[b]``: kept tokens that are neither pivotal nor complementary, added only to
    reach a fixed budget or a minimum count (optional; empty when nothing was filled).
    So ``kept[b]`` = ``pivotal[b]`` ∪ ``complementary[b]`` ∪ ``filled[b]``, disjoint.
    ``admission``: (B, num_patches) int64, freePruner only: the order in which a fixed budget
    takes tokens (``selection.budget_order`` with ``scores``); ``admission // 2`` is the
    smallest k whose adaptive selection keeps the token. None for the baselines.
    ``settings``: the resolved method settings (freePruner: ``FreePrunerConfig.settings``).
    """

    kept: list[torch.Tensor]
    num_patches: int
    pivotal: list[torch.Tensor] = field(default_factory=list)
    complementary: list[torch.Tensor] = field(default_factory=list)
    scores: torch.Tensor | None = None
    filled: list[torch.Tensor] = field(default_factory=list)
    admission: torch.Tensor | None = None
    settings: dict | None = None

    @property
    def num_kept(self) -> list[int]:
        return [int(k.numel()) for k in self.kept]


@dataclass
class EncoderOutput:
    """What an adapter needs from one encoder pass."""

    hidden_states: tuple[torch.Tensor, ...]  # every layer's output, each (B, N_tokens, D)
    selection: Selection
    # Optional, set only by merging methods (PruMerge+): per sample (num_kept[b], D) features
    # that replace the gathered ``hidden_states[feature_layer][b, prefix + kept[b]]``; they
    # are computed from ``hidden_states[feature_layer]`` (patch tokens only, CLS dropped).
    merged_features: list[torch.Tensor] | None = None
    feature_layer: int | None = None
    # Optional: wall time spent on selection proper (attention capture + scoring + choosing),
    # in seconds, excluding the encoder's own forward pass.
    selection_time_s: float | None = None


class TokenPruner(Protocol):
    """Runs ``vision_model`` once on ``pixel_values`` (B, C, H, W) and selects tokens."""

    def encode_and_select(self, vision_model: nn.Module, pixel_values: torch.Tensor) -> EncoderOutput:
        ...
