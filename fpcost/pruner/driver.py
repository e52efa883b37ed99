"""The driver every pruner shares: one encoder pass with q/k hooks, then a selection rule.

``_Pruner.encode_and_select`` runs the vision model once (SDPA kept) with ``QKCapture`` on
the layers the rule reads, packs what the rule needs into an ``EncoderRun`` and times the
rule (``selection_time_s`` = time in the hooks + the rule's own time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from fpcost.pruner.api import EncoderOutput, Selection
from fpcost.pruner.capture import AttentionLayer, QKCapture, find_attention_layers
from fpcost.pruner.errors import PruningError
from fpcost.pruner.scoring import attention_map
from fpcost.pruner.selection import check_finite


@dataclass
class EncoderRun:
    """What one encoder pass gives a selection rule: the captured q and k by resolved layer
    (each (B, T, H·D)) with each layer's geometry, all hidden states, and the token geometry.
    ``map(layer)`` computes (and caches) a whole head-aggregated (B, T, T) map when a rule
    needs one."""

    qk: dict[int, tuple[torch.Tensor, torch.Tensor]]
    attention_layers: list[AttentionLayer]
    hidden_states: tuple[torch.Tensor, ...]
    num_layers: int
    num_prefix_tokens: int
    rows: int
    cols: int
    head_reduce: str = "mean"
    _maps: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    @property
    def batch(self) -> int:
        return int(self.hidden_states[-1].shape[0])

    def geometry(self, layer: int) -> tuple[int, float]:
        """(num_heads, scale) of a resolved layer."""
        found = self.attention_layers[layer]
        return found.num_heads, found.scale

    def map(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s head-aggregated attention (B, T, T) fp32, checked finite."""
        if layer not in self._maps:
            q, k = self.qk[layer]
            heads, scale = self.geometry(layer)
            attn = attention_map(q, k, heads, scale, self.head_reduce)  # (B, T, T)
            check_finite(attn, layer)
            self._maps[layer] = attn
        return self._maps[layer]

    @property
    def maps(self) -> dict[int, torch.Tensor]:
        """Every captured layer's whole map (the reference path; costs a map per layer)."""
        return {layer: self.map(layer) for layer in self.qk}

    @property
    def keys(self) -> dict[int, torch.Tensor]:
        return {layer: k for layer, (_, k) in self.qk.items()}


def _patch_grid(vision_model: nn.Module, pixel_values: torch.Tensor) -> tuple[int, int]:
    """(rows, cols) of patch tokens the encoder makes from (B, C, H, W) pixels."""
    patch = getattr(getattr(vision_model, "config", None), "patch_size", None)
    if isinstance(patch, (tuple, list)):
        patch_h, patch_w = patch
    elif isinstance(patch, int):
        patch_h = patch_w = patch
    else:
        raise PruningError(
            f"{type(vision_model).__name__} has no config.patch_size; cannot count patches"
        )
    return pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w


def _all_indices(num: int, batch: int) -> list[torch.Tensor]:
    return [torch.arange(num) for _ in range(batch)]


class _Pruner:
    """Shared driver: run the encoder once with q/k hooks on the needed layers, then
    ``choose``. ``selection_time_s`` = time in the hooks + scoring + choosing."""

    name = ""
    head_reduce = "mean"
    # the clock of selection_time_s: wall time; benchmarks/pruning_overhead.py --clock thread
    # sets time.thread_time (CPU time of the calling thread, immune to descheduling)
    clock = staticmethod(time.perf_counter)

    def capture_layers(self, num_layers: int) -> tuple[int, ...]:
        return ()

    def choose(self, run: EncoderRun) -> tuple[Selection, list[torch.Tensor] | None, int | None]:
        raise NotImplementedError

    def encode_and_select(
        self, vision_model: nn.Module, pixel_values: torch.Tensor
    ) -> EncoderOutput:
        if pixel_values.ndim != 4:
            raise PruningError(
                f"pixel_values must be (B, C, H, W); got shape {tuple(pixel_values.shape)}"
            )
        rows, cols = _patch_grid(vision_model, pixel_values)
        qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        hook_s, num_layers, attention_layers = 0.0, 0, []
        with torch.no_grad():
            layers: tuple[int, ...] = ()
            if type(self).capture_layers is not _Pruner.capture_layers:
                attention_layers = find_attention_layers(vision_model)
                num_layers = len(attention_layers)
                layers = self.capture_layers(num_layers)
            if layers:
                with QKCapture(vision_model, layers, attention_layers, self.clock) as capture:
                    outputs = vision_model(pixel_values, output_hidden_states=True)
                qk, hook_s = capture.qk, capture.elapsed_s
            else:
                outputs = vision_model(pixel_values, output_hidden_states=True)
            hidden_states = tuple(outputs.hidden_states)
            num_prefix = int(hidden_states[-1].shape[1]) - rows * cols
            if num_prefix < 0:
                raise PruningError(
                    f"encoder emits {hidden_states[-1].shape[1]} "
                    f"tokens, fewer than its {rows}x{cols} patches"
                )
            run = EncoderRun(
                qk, attention_layers, hidden_states, num_layers, num_prefix, rows, cols,
                self.head_reduce,
            )
            start = self.clock()
            selection, merged, feature_layer = self.choose(run)
            selection_time_s = hook_s + self.clock() - start
        return EncoderOutput(
            hidden_states,
            selection,
            merged_features=merged,
            feature_layer=feature_layer,
            selection_time_s=selection_time_s,
        )
