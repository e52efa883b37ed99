"""Attention capture that leaves the encoder on SDPA (docs/pruning.md).

Under SDPA, ``output_attentions=True`` gives nothing useful, and switching the tower to eager
attention costs time and memory for every layer. Instead, forward hooks on the q and k
projections of only the layers the selection reads recompute each head's
softmax(q kᵀ · scale) in fp32, reduce over heads at once (no per-head map is kept) and
store one (B, T, T) map per layer. This reproduces the eager attention maps exactly (the
test compares them with ``output_attentions=True`` of an eager copy of the same weights).

The hooks are attached to one model instance by ``AttentionCapture`` (a context manager) and
removed on exit, also when the forward raises. No class is patched. ``QKCapture`` is the lean
form the pruners use: its hooks only keep q and k, and ``scoring.py`` computes what the
selection needs from them after the forward pass (all layers at once, no (B, T, T) map for
the pivotal layers).

Layers are found by walking the modules: an attention module is one with q and k linear
projections under either name pair (``q_proj``/``k_proj``: CLIP, SigLIP, transformers-5
DINOv2; ``query``/``key``: older DINOv2 and ViT), in module order, which is layer order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fpcost.pruner.errors import PruningError
from fpcost.pruner.selection import aggregate_heads, resolve_layer

_QK_NAMES = (("q_proj", "k_proj"), ("query", "key"))


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module: its projections and the geometry needed to redo softmax(q kᵀ)."""

    index: int
    module: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    num_heads: int
    head_dim: int
    scale: float


def _num_heads(module: nn.Module, model: nn.Module) -> int | None:
    for owner in (module, getattr(module, "config", None), getattr(model, "config", None)):
        for name in ("num_heads", "num_attention_heads"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def find_attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Every self-attention module of ``model`` with linear q/k projections, in layer order."""
    layers: list[AttentionLayer] = []
    for _, module in model.named_modules():
        for q_name, k_name in _QK_NAMES:
            q = getattr(module, q_name, None)
            k = getattr(module, k_name, None)
            if isinstance(q, nn.Linear) and isinstance(k, nn.Linear):
                break
        else:
            continue
        num_heads = _num_heads(module, model)
        if num_heads is None or q.out_features % num_heads:
            raise PruningError(
                f"cannot tell the head count of {type(module).__name__} "
                f"(q width {q.out_features}, heads {num_heads})"
            )
        head_dim = getattr(module, "head_dim", None) or q.out_features // num_heads
        scale = getattr(module, "scaling", None) or getattr(module, "scale", None) or head_dim**-0.5
        layers.append(AttentionLayer(len(layers), module, q, k, num_heads, head_dim, float(scale)))
    if not layers:
        raise PruningError(
            f"no attention layers with q/k projections found in {type(model).__name__}; "
            "supported: modules with q_proj/k_proj or "
            "query/key linear layers (CLIP, SigLIP, DINOv2)"
        )
    return layers


def attention_from_qk(
    q: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float, head_reduce: str = "mean"
) -> torch.Tensor:
    """Per-head softmax(q kᵀ · scale) in fp32, reduced over heads.

    ``q``: (B, R, H * D) projections of the R query tokens wanted (R = T for the full map);
    ``k``: (B, T, H * D). Returns (B, R, T) fp32."""
    batch, rows, width = q.shape
    tokens = k.shape[1]
    head_dim = width // num_heads
    # scale the (R, D) queries, not the (R, T) logits: fewer multiplications
    q = (q.float() * scale).view(batch, rows, num_heads, head_dim).transpose(1, 2)  # (B, H, R, D)
    k = k.float().view(batch, tokens, num_heads, head_dim).permute(0, 2, 3, 1)  # (B, H, D, T)
    logits = torch.matmul(q, k)  # (B, H, R, T)
    return aggregate_heads(torch.softmax(logits, dim=-1), head_reduce)  # (B, R, T)


class LayerHooks:
    """Hooks on the attention layers ``self.layers`` (resolved indices into
    ``self.attention_layers``), attached on ``__enter__`` and always removed on exit.
    ``_attach(index)`` registers one layer's hooks; by default forward hooks on its q and k
    projections, each from the subclass's ``_hook_for(index, role)``. Qwen's fused-qkv capture
    (qwen_capture.py) overrides ``_attach``."""

    _handles: list
    _pending: dict

    def _attach(self, index: int) -> list:
        layer = self.attention_layers[index]
        return [layer.q_proj.register_forward_hook(self._hook_for(index, "q")),
                layer.k_proj.register_forward_hook(self._hook_for(index, "k"))]

    def __enter__(self):
        try:
            for i in self.layers:
                self._handles.extend(self._attach(i))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this capture registered (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()


class AttentionCapture(LayerHooks):
    """Context manager: head-aggregated attention of chosen layers of one model instance.

    ``layers``: encoder layer indices (negative allowed; None = all). After a forward pass
    inside the ``with`` block, ``maps[i]`` is layer i's (B, T, T) fp32 map (resolved,
    non-negative i) and, if ``keep_keys``, ``keys[i]`` its (B, T, H * D) key projection.
    A later forward pass overwrites them. ``num_layers`` is the encoder depth found;
    ``elapsed_s`` the wall time spent inside the hooks, in seconds.

    ``query_rows(layer, maps_so_far)``, if given, may return the (R,) token indices whose
    attention rows a layer needs (None: all). Only those rows are computed; the others of
    ``maps[layer]`` stay zero and ``rows[layer]`` records which were filled. freePruner uses
    it for the complementary layer, which reads only the pivotal tokens' rows.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[int] | None = None,
        head_reduce: str = "mean",
        keep_keys: bool = False,
        query_rows: Callable[[int, dict[int, torch.Tensor]], torch.Tensor | None] | None = None,
        attention_layers: list[AttentionLayer] | None = None,
    ):
        self.model = model
        self.head_reduce = head_reduce
        self.keep_keys = keep_keys
        self.keys: dict[int, torch.Tensor] = {}
        self.rows: dict[int, torch.Tensor] = {}
        self.query_rows = query_rows
        self.elapsed_s = 0.0
        # ``attention_layers``: the result of ``find_attention_layers(model)`` if already known
        self.attention_layers = (
            attention_layers if attention_layers is not None else find_attention_layers(model)
        )
        self.num_layers = len(self.attention_layers)
        wanted = range(self.num_layers) if layers is None else layers
        self.layers = sorted({resolve_layer(i, self.num_layers) for i in wanted})
        self.maps: dict[int, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pending: dict[int, dict[str, torch.Tensor]] = {}

    def _hook_for(self, index: int, role: str):
        return self._hook(self.attention_layers[index], role)

    def _hook(self, layer: AttentionLayer, role: str):
        def hook(_module: nn.Module, _args, output: torch.Tensor) -> None:
            start = time.perf_counter()
            pending = self._pending.setdefault(layer.index, {})
            pending[role] = output.detach()
            if len(pending) == 2:
                del self._pending[layer.index]
                q, k = pending["q"], pending["k"]
                rows = self.query_rows(layer.index, self.maps) if self.query_rows else None
                if rows is None:
                    self.maps[layer.index] = attention_from_qk(
                        q, k, layer.num_heads, layer.scale, self.head_reduce
                    )
                    self.rows.pop(layer.index, None)
                else:
                    partial = attention_from_qk(
                        q[:, rows], k, layer.num_heads, layer.scale, self.head_reduce
                    )
                    full = partial.new_zeros(q.shape[0], k.shape[1], k.shape[1])  # (B, T, T)
                    full[:, rows] = partial  # (B, R, T) rows filled
                    self.maps[layer.index] = full
                    self.rows[layer.index] = rows
                if self.keep_keys:
                    self.keys[layer.index] = pending["k"]
            self.elapsed_s += time.perf_counter() - start

        return hook



class QKCapture(LayerHooks):
    """Context manager: the q and k projections of chosen layers of one model instance,
    exactly as the forward pass computes them; the hooks only keep references (no compute),
    so the selection can score all its layers at once afterwards (``scoring.py``).

    After a forward pass inside the ``with`` block, ``qk[i]`` = (q, k), each (B, T, H·D) in
    the model's dtype, for every resolved layer i of ``layers``; ``attention_layers[i]`` has
    its head count and scale. ``elapsed_s``: time spent inside the hooks, in seconds, by
    ``clock`` (default wall clock).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[int],
        attention_layers: list[AttentionLayer] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.clock = clock
        self.attention_layers = (
            attention_layers if attention_layers is not None else find_attention_layers(model)
        )
        self.num_layers = len(self.attention_layers)
        self.layers = sorted({resolve_layer(i, self.num_layers) for i in layers})
        self.qk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.elapsed_s = 0.0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pending: dict[int, dict[str, torch.Tensor]] = {}

    def _hook(self, index: int, role: str):
        def hook(_module: nn.Module, _args, output: torch.Tensor) -> None:
            start = self.clock()
            pending = self._pending.setdefault(index, {})
            pending[role] = output.detach()
            if len(pending) == 2:
                del self._pending[index]
                self.qk[index] = (pending["q"], pending["k"])
            self.elapsed_s += self.clock() - start

        return hook

    def _hook_for(self, index: int, role: str):
        return self._hook(index, role)
