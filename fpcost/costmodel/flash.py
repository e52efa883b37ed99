"""FlashAttention's work and traffic, tile by tile (FlashAttention-2, arXiv:2307.08691).

The kernel walks the query rows in tiles of ``B`` rows; each query tile streams the K and V
rows it needs from memory once, so K and V are re-read once per query tile. With a causal
mask the kernel stops at the diagonal: query tile i (rows i·B .. i·B+B-1, offset by
``s_kv - s_q`` cached positions) only visits K/V blocks up to the one holding its last
row's position (flash_fwd_kernel.h: ``n_block_max``). Tiles on the diagonal are computed
whole and masked; tiles above it are skipped. K/V blocks are ``B`` rows too (square tiles;
the tile size follows LLM-Viewer's rule, see ``flash_attention_row_block``).

Everything here is arithmetic on token counts, so ints and numpy integer arrays both work:
ceilings are ``-(-a // b)`` and ``max(0, x)`` is ``x * (x > 0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def flash_attention_row_block(onchip_buffer_bytes: float, kv_bytes_per_element: float, head_dim: int) -> int:
    """Query rows per FlashAttention tile, LLM-Viewer's rule after FlashAttention-2:
    B_r = min(ceil(on-chip bytes / (kv bytes · d)), d)."""
    return min(math.ceil(onchip_buffer_bytes / (kv_bytes_per_element * head_dim)), head_dim)


@dataclass(frozen=True)
class FlashWork:
    """Per (sample, query head): score elements computed and K (or V) rows read."""

    score_elements: object
    kv_rows_read: object


def flash_work(num_query_tokens, num_kv_tokens, rows_per_tile: int, causal: bool) -> FlashWork:
    """Score elements computed and K/V rows streamed by one head of one sample.

    Without the causal skip every query tile reads all ``s_kv`` rows and every score is
    computed. With it (``s_kv ≥ s_q``; the last query row sees every key), non-last query
    tile i reads ``min((i + 1 + c) · B, s_kv)`` rows, c = ceil((s_kv − s_q) / B), and the last
    tile reads all ``s_kv``; only the largest of the non-last terms can exceed ``s_kv``.
    """
    s_q, s_kv, b = num_query_tokens, num_kv_tokens, rows_per_tile
    num_row_tiles = -(-s_q // b)
    if not causal:
        return FlashWork(s_q * s_kv, num_row_tiles * s_kv)
    offset_blocks = -(-(s_kv - s_q) // b)
    inner = num_row_tiles - 1  # query tiles before the last one
    blocks = inner * (inner + 1) // 2 + inner * offset_blocks
    overflow = (inner + offset_blocks) * b - s_kv
    overflow = overflow * (overflow > 0) * (inner > 0)
    inner_rows = blocks * b - overflow
    last_tile_rows = s_q - inner * b
    return FlashWork(b * inner_rows + last_tile_rows * s_kv, inner_rows + s_kv)
