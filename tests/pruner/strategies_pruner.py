"""Hypothesis strategies for the pruner's selection tests — the one place they live.

``attention_case()`` draws a batch of per-head attention maps (1-4 heads) for every layer of a
small encoder, aggregated over heads by mean or max as the capture does, in one of several
regimes that stress the selection rules:

- ``random``: row-wise softmax of normal logits (continuous, practically tie-free);
- ``ties``: rows built from a handful of repeated values (many exact ties);
- ``uniform``: near-uniform rows (1/T plus tiny noise);
- ``onehot``: every row puts all its mass on one token;
- ``mixed``: each row picks one of the regimes above.

Tensors come from a seeded torch generator (hypothesis draws the seed and the sizes), so
failing examples shrink to small sizes and replay exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from fpcost.pruner.selection import FreePrunerConfig, aggregate_heads

REGIMES = ("random", "ties", "uniform", "onehot", "mixed")


@dataclass
class AttentionCase:
    """Maps for layers 0..num_layers-1, each (B, T, T) with T = num_prefix + num_patches."""

    maps: dict[int, torch.Tensor]
    num_layers: int
    num_prefix: int
    num_patches: int
    regime: str

    @property
    def batch(self) -> int:
        return int(self.maps[0].shape[0])


def _rows(regime: str, shape: tuple[int, ...], generator: torch.Generator, dtype) -> torch.Tensor:
    tokens = shape[-1]
    if regime == "random":
        logits = torch.randn(shape, generator=generator, dtype=torch.float64) * 3
        return torch.softmax(logits, dim=-1).to(dtype)
    if regime == "ties":
        levels = torch.randint(0, 3, shape, generator=generator).to(torch.float64)  # 0, 1, 2
        weights = levels + 1
        return (weights / weights.sum(dim=-1, keepdim=True)).to(dtype)
    if regime == "uniform":
        noise = torch.rand(shape, generator=generator, dtype=torch.float64) * 1e-6
        weights = 1.0 + noise
        return (weights / weights.sum(dim=-1, keepdim=True)).to(dtype)
    if regime == "onehot":
        hot = torch.randint(0, tokens, shape[:-1], generator=generator)
        return torch.nn.functional.one_hot(hot, tokens).to(dtype)
    # mixed: each row from one regime
    parts = [_rows(r, shape, generator, dtype) for r in ("random", "ties", "uniform", "onehot")]
    pick = torch.randint(0, 4, shape[:-1], generator=generator)  # (..., rows)
    out = torch.zeros(shape, dtype=dtype)
    for i, part in enumerate(parts):
        out = torch.where((pick == i).unsqueeze(-1), part, out)
    return out


@st.composite
def attention_case(
    draw,
    regimes: tuple[str, ...] = REGIMES,
    max_batch: int = 3,
    max_patches: int = 30,
    dtype=torch.float32,
) -> AttentionCase:
    """A batch of head-aggregated attention maps for every layer of a 2..6-layer encoder."""
    batch = draw(st.integers(1, max_batch))
    heads = draw(st.integers(1, 4))
    head_reduce = draw(st.sampled_from(["mean", "max"]))
    num_patches = draw(st.integers(1, max_patches))
    num_prefix = draw(st.sampled_from([0, 1]))
    num_layers = draw(st.integers(2, 6))
    regime = draw(st.sampled_from(regimes))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    tokens = num_prefix + num_patches
    maps = {}
    for layer in range(num_layers):
        per_head = _rows(regime, (batch, heads, tokens, tokens), generator, dtype)  # (B, H, T, T)
        maps[layer] = aggregate_heads(per_head, head_reduce).to(dtype)  # (B, T, T)
    return AttentionCase(maps, num_layers, num_prefix, num_patches, regime)


@st.composite
def freepruner_config(
    draw, case: AttentionCase, with_budget: bool | None = None
) -> FreePrunerConfig:
    """A valid config for ``case``'s encoder: layers in range (negative or not), k absolute
    (1 to beyond N) or relative, either direction, either CLS treatment, optional min_keep /
    budget."""
    n_layers = case.num_layers
    start = draw(st.integers(0, n_layers - 1))
    end = draw(st.integers(start + 1, n_layers))
    if draw(st.booleans()):
        start -= n_layers  # the same layer, counted from the end
    comp = draw(st.integers(-n_layers, n_layers - 1))
    budget = None
    use_budget = draw(st.booleans()) if with_budget is None else with_budget
    if use_budget:
        budget = draw(st.integers(1, case.num_patches))
    relative = draw(st.booleans())
    return FreePrunerConfig(
        pivotal_start_layer=start,
        pivotal_end_layer=end,
        k=None if relative else draw(st.integers(1, case.num_patches + 2)),
        k_ratio=draw(st.sampled_from([0.05, 0.125, 0.3, 1.0])),
        complementary_layer=comp,
        direction=draw(st.sampled_from(["row", "column"])),
        include_cls=draw(st.booleans()),
        iqr_factor=draw(st.sampled_from([0.0, 0.5, 1.5, 3.0])),
        min_keep=draw(st.integers(1, case.num_patches + 1)) if budget is None else 1,
        budget=budget,
    )


def attention_rows(max_rows: int = 4, max_len: int = 40):
    """(R, n) float tensors for the quartile rule, with ties and repeated values."""

    @st.composite
    def _rows_strategy(draw):
        rows = draw(st.integers(1, max_rows))
        length = draw(st.integers(1, max_len))
        pool = draw(
            st.lists(
                st.floats(0, 1, allow_nan=False, width=32), min_size=1, max_size=max(1, length)
            )
        )
        values = draw(
            st.lists(st.sampled_from(pool), min_size=rows * length, max_size=rows * length)
        )
        return torch.tensor(values, dtype=torch.float32).view(rows, length)  # (R, n)

    return _rows_strategy()
