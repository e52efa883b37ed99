"""q and k of the Qwen2-VL / Qwen2.5-VL vision towers, exactly as their attention uses them,
and the per-image attention statistics freePruner reads, over merged tokens.

The towers (transformers' ``Qwen2VisionTransformerPretrainedModel`` and
``Qwen2_5_VisionTransformerPretrainedModel``) differ from the LLaVA towers in four ways that
shape this module:

- one fused ``qkv`` Linear per block: q and k are the first two thirds of its output,
  (S, 3, H, D) per token, and both get the 2-D rotary embedding the block receives as
  ``position_embeddings`` = (cos, sin), applied in fp32 and cast back
  (``apply_rotary_pos_emb_vision`` in modeling_qwen2_vl.py / modeling_qwen2_5_vl.py);
- every image of a batch is packed on one token axis of sum(t·h·w) patches; attention runs
  within the segments of ``cu_seqlens`` (each temporal slice of each image) — never across
  images;
- Qwen2.5-VL's windowed blocks (all but ``fullatt_block_indexes``) attend within windows
  (``cu_window_seqlens``), and the whole tower runs in a window-major token order: the
  merged tokens (groups of 2×2 = 4 consecutive patches) are permuted by ``window_index``
  before the blocks, and the merger output is put back by its inverse;
- no CLS token: every token is a patch.

``QwenQKCapture`` hooks the attention modules of the layers a selection reads — a forward
pre-hook with kwargs for ``cu_seqlens`` and ``position_embeddings`` (what the layer really
uses), a forward hook on ``qkv`` for its output — and keeps q, k after the rotary embedding
(S, H·D) and that layer's segments. No class is patched; hooks come off on exit.

``ImageAttention`` gives, for one image, what ``methods.select_from_scores`` needs, over
*merged* tokens in the image's original order (the processor's: merged raster order, the
order the LLM receives): per-patch contribution degrees (Eq. 3) of the block-diagonal map
the layer computes, averaged over each 2×2 merge group; and head-averaged attention rows,
averaged over the 4 query patches and the 4 key patches of each merged token (the IQR rule
is unchanged by that positive scale).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fpcost.pruner.capture import LayerHooks
from fpcost.pruner.errors import PruningError
from fpcost.pruner.scoring import attention_rows, contribution_degrees
from fpcost.pruner.selection import check_finite, resolve_layer


@dataclass(frozen=True)
class QwenAttentionLayer:
    """One block's attention module: its fused projection and head geometry."""

    index: int
    module: nn.Module
    qkv: nn.Linear
    num_heads: int
    head_dim: int
    scale: float


def find_qwen_attention_layers(visual: nn.Module) -> list[QwenAttentionLayer]:
    """Every attention module of a Qwen-VL tower (one with a fused ``qkv`` Linear), in
    module order = block order."""
    layers = []
    for _, module in visual.named_modules():
        qkv = getattr(module, "qkv", None)
        heads = getattr(module, "num_heads", None)
        if not isinstance(qkv, nn.Linear) or not isinstance(heads, int) or heads < 1:
            continue
        if qkv.out_features % (3 * heads):
            raise PruningError(f"{type(module).__name__}: qkv width {qkv.out_features} is not "
                               f"3 x {heads} heads")
        head_dim = qkv.out_features // (3 * heads)
        scale = float(getattr(module, "scaling", None) or head_dim**-0.5)
        layers.append(QwenAttentionLayer(len(layers), module, qkv, heads, head_dim, scale))
    if not layers:
        raise PruningError(f"no attention blocks with a fused qkv projection in "
                           f"{type(visual).__name__}; expected a Qwen2-VL / Qwen2.5-VL vision tower")
    return layers


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_vision_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The towers' 2-D rotary embedding, as ``apply_rotary_pos_emb_vision`` computes it:
    x (S, H, D), cos / sin (S, D), in fp32, cast back to x's dtype."""
    dtype = x.dtype
    x = x.float()
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()  # (S, 1, D)
    return ((x * cos) + (_rotate_half(x) * sin)).to(dtype)  # (S, H, D)


class QwenQKCapture(LayerHooks):
    """Context manager: for each resolved layer of ``layers``, after one tower forward,
    ``qk[i]`` = (q, k), each (S, H·D) after the rotary embedding, in the model's dtype, and
    ``segments[i]`` the (S_segments + 1,) ``cu_seqlens`` that layer attended within.
    ``elapsed_s``: time inside the hooks by ``clock``."""

    def __init__(self, layers_found: list[QwenAttentionLayer], layers: Sequence[int],
                 clock: Callable[[], float] = time.perf_counter):
        self.attention_layers = layers_found
        self.layers = sorted({resolve_layer(i, len(layers_found)) for i in layers})
        self.clock = clock
        self.qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.segments: dict[int, torch.Tensor] = {}
        self.elapsed_s = 0.0
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _attach(self, index: int) -> list:
        layer = self.attention_layers[index]
        return [layer.module.register_forward_pre_hook(self._pre_hook(index), with_kwargs=True),
                layer.qkv.register_forward_hook(self._qkv_hook(layer))]

    def _pre_hook(self, index: int):
        def hook(_module, args, kwargs):
            start = self.clock()
            cu_seqlens = kwargs.get("cu_seqlens", args[1] if len(args) > 1 else None)
            rotary = kwargs.get("position_embeddings", args[2] if len(args) > 2 else None)
            if cu_seqlens is None or rotary is None:
                raise PruningError(f"vision block {index}'s attention was called without "
                                   "cu_seqlens / position_embeddings; cannot redo its attention")
            self.segments[index] = cu_seqlens.detach().to("cpu", torch.int64)
            self._pending[index] = (rotary[0].detach(), rotary[1].detach())
            self.elapsed_s += self.clock() - start

        return hook

    def _qkv_hook(self, layer: QwenAttentionLayer):
        def hook(_module, _args, output: torch.Tensor) -> None:
            start = self.clock()
            cos, sin = self._pending.pop(layer.index)
            tokens = output.shape[0]
            qkv = output.detach().reshape(tokens, 3, layer.num_heads, layer.head_dim)  # (S, 3, H, D)
            q = apply_vision_rotary(qkv[:, 0], cos, sin).reshape(tokens, -1)  # (S, H·D)
            k = apply_vision_rotary(qkv[:, 1], cos, sin).reshape(tokens, -1)  # (S, H·D)
            self.qk[layer.index] = (q, k)
            self.elapsed_s += self.clock() - start

        return hook


def image_segments(cu_seqlens: torch.Tensor, start: int, stop: int, layer: int) -> list[tuple[int, int]]:
    """The attention segments (a, b) of ``cu_seqlens`` inside one image's patch range
    [start, stop); ``PruningError`` unless they tile it exactly (no segment crosses images)."""
    bounds = cu_seqlens.tolist()
    inside = [b for b in bounds if start <= b <= stop]
    if not inside or inside[0] != start or inside[-1] != stop:
        raise PruningError(f"vision block {layer}'s attention segments do not tile the image's "
                           f"patches [{start}, {stop}); cannot score it alone")
    return list(zip(inside[:-1], inside[1:], strict=True))


class ImageAttention:
    """One image's attention statistics over its merged tokens, original order.

    ``qk`` / ``segments``: a ``QwenQKCapture``'s results; ``start`` / ``stop``: the image's
    patch range on the packed token axis; ``order`` (M,): the original merged index of each
    merged token at tower position j (identity for Qwen2-VL, ``window_index`` for 2.5-VL);
    ``merge_unit``: patches per merged token (4)."""

    def __init__(self, qk, segments, layers_found: list[QwenAttentionLayer], start: int,
                 stop: int, order: torch.Tensor, merge_unit: int, head_reduce: str = "mean"):
        self.qk, self.segments, self.layers_found = qk, segments, layers_found
        self.start, self.stop = start, stop
        self.order = order  # (M,) original index at each tower position
        self.position = torch.argsort(order)  # (M,) tower position of each original index
        self.unit = merge_unit
        self.head_reduce = head_reduce
        self.num_merged = int(order.numel())

    def _segments(self, layer: int) -> list[tuple[int, int]]:
        return image_segments(self.segments[layer], self.start, self.stop, layer)

    def _to_original(self, tower: torch.Tensor) -> torch.Tensor:
        """(..., M) in tower order -> (..., M) in original merged order."""
        out = torch.empty_like(tower)
        out[..., self.order] = tower
        return out

    def degrees(self, layer: int) -> torch.Tensor:
        """(M,) fp32: Eq. 3 per patch on the layer's block-diagonal map (head mean), averaged
        over each merged token's patches. Segments of equal length go through
        ``scoring.contribution_degrees`` together."""
        found = self.layers_found[layer]
        q, k = self.qk[layer]
        per_patch = torch.empty(self.stop - self.start, dtype=torch.float32, device=q.device)
        by_length: dict[int, list[int]] = {}
        for a, b in self._segments(layer):
            by_length.setdefault(b - a, []).append(a)
        for length, starts in by_length.items():
            index = torch.tensor(starts, device=q.device)[:, None] + torch.arange(length, device=q.device)
            got = contribution_degrees(q[index], k[index], found.num_heads, found.scale, 0,
                                       head_reduce=self.head_reduce)  # (G, length)
            per_patch[index - self.start] = got
        check_finite(per_patch[None], layer)
        pooled = per_patch.view(self.num_merged, self.unit).mean(dim=1)  # (M,) tower order
        return self._to_original(pooled)

    def rows(self, layer: int, rows: torch.Tensor | None) -> torch.Tensor:
        """(R, M) fp32: the head-aggregated attention rows of merged tokens ``rows`` (R,)
        (original indices; None = all), each averaged over the token's 4 query patches and,
        per key token, its 4 key patches; zero outside the query's segment (window). A merged
        token's patches share one segment (segments hold whole merged tokens), so each
        segment's rows are pooled as soon as they are computed: memory (R, M), not (4R, S)."""
        found = self.layers_found[layer]
        q, k = self.qk[layer]
        unit = self.unit
        rows = torch.arange(self.num_merged) if rows is None else rows.cpu()
        tower_rows = self.position[rows]  # (R,) tower positions of the wanted tokens
        out = torch.zeros(rows.numel(), self.num_merged, dtype=torch.float32,
                          device=q.device)  # (R, M) tower-order columns
        for a, b in self._segments(layer):
            if (a - self.start) % unit or (b - a) % unit:
                raise PruningError(f"vision block {layer}'s attention segment [{a}, {b}) splits "
                                   f"a merged token of {unit} patches")
            first, last = (a - self.start) // unit, (b - self.start) // unit  # merged range
            inside = ((tower_rows >= first) & (tower_rows < last)).nonzero().squeeze(-1)  # (r,)
            if inside.numel() == 0:
                continue
            local = ((tower_rows[inside] - first)[:, None] * unit
                     + torch.arange(unit)).flatten().to(q.device)  # (4r,) patch rows
            attn = attention_rows(q[None, a:b], k[None, a:b], local, found.num_heads,
                                  found.scale, self.head_reduce)[0]  # (4r, b - a)
            pooled = attn.view(inside.numel(), unit, last - first, unit).mean(dim=(1, 3))
            out[inside.to(out.device), first:last] = pooled  # (r, merged in segment)
        check_finite(out[None], layer)
        return self._to_original(out)  # (R, M)

    def map(self, layer: int) -> torch.Tensor:
        """(M, M) the whole merged map of ``layer``, rows and columns in original order."""
        return self.rows(layer, None)
