"""The attention statistics freePruner reads, computed from captured q and k without ever
holding a (heads, T, T) map.

Under SDPA the encoder never materialises its attention, so the selection recomputes it from
the q/k projections that ``capture.QKCapture`` keeps (DESIGN: recomputing beside SDPA is
cheaper than switching layers to eager). The costs that matter (paper Eq. 1 and 3):

- ``contribution_degrees``: r_l[i] = Σ_j A_l[j, i] − A_l[i, i] of the head-averaged map for
  several layers at once. The query rows are processed in chunks so that one chunk of logits
  (layers·B, H, R, T) stays in cache (``CHUNK_ELEMENTS_PER_THREAD``): matmul → softmax → one reduction
  over heads *and* rows together (the head mean fused into the column sums); the diagonal
  A[i, i] is read from the chunk's (R, R) block. All selected layers are stacked on the batch
  axis, so there is one Python loop over chunks, none over heads or layers.
- ``attention_rows``: a few head-aggregated rows A[rows, :] (the complementary layer only
  needs the pivotal tokens' rows).
- ``attention_map``: a whole head-aggregated map, chunked the same way (the column direction
  of the complementary rule, and the baselines' CLS rows).

Matmuls run in the model's dtype (fp32 on CPU, fp16/bf16 on GPU); the softmax and every sum
are taken in fp32. Shapes: B images, T = P + N tokens (P prefix/CLS tokens), H heads of
width D; q and k arrive as (B, T, H·D).
"""

from __future__ import annotations

import torch

# Elements of one chunk of logits (layers·B·H·R·T) per torch thread: 2**18 fp32 values =
# 1 MiB, so each thread's share of a chunk stays in its core's L2 cache. Measured on this
# project's 2-core CPU (median of 7): 1 thread, two DINOv2-S layers, 577 tokens, CPU time:
# 2**18: 9.5 ms, 2**19: 10.5, 2**20: 14.8; 2 threads, two CLIP-L layers, wall clock: 2**18:
# 15.3 ms, 2**19: 13.2, 2**20: 12.9. Under heavy load from other jobs, 2 threads in 2**18
# chunks stalled (377 ms vs 130 ms in 2**20): small chunks multiply the parallel regions,
# each waiting for a descheduled thread; hence one 2**18 share per thread.
CHUNK_ELEMENTS_PER_THREAD = 2**18


def chunk_elements_default() -> int:
    """The default chunk size: ``CHUNK_ELEMENTS_PER_THREAD`` per torch intra-op thread."""
    return CHUNK_ELEMENTS_PER_THREAD * torch.get_num_threads()


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, H·D) -> (B, H, T, D), contiguous: a batched matmul on the strided view is
    2-3x slower on CPU than the copy plus a contiguous matmul."""
    batch, tokens, width = x.shape
    return x.reshape(batch, tokens, num_heads, width // num_heads).transpose(1, 2).contiguous()


def _chunk_rows(batch_heads: int, tokens: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, batch_heads * tokens))


def contribution_degrees(
    q: torch.Tensor,
    k: torch.Tensor,
    num_heads: int,
    scale: float,
    num_prefix: int,
    include_cls: bool = False,
    head_reduce: str = "mean",
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Eq. 3 on the head-aggregated softmax(q kᵀ · scale), for patch tokens.

    ``q``, ``k``: (G, T, H·D) where G stacks layers and images (every entry independent).
    Returns (G, N) fp32: for each patch i, the attention it receives from every patch row
    (and the prefix rows if ``include_cls``) minus its own self-attention."""
    groups, tokens, _ = q.shape
    p = num_prefix
    qh = _heads(q * scale, num_heads)  # (G, H, T, D), scale folded into the queries
    kt = _heads(k, num_heads).transpose(-1, -2).contiguous()  # (G, H, D, T)
    first = 0 if include_cls else p
    columns = torch.zeros(groups, tokens, dtype=torch.float32, device=q.device)  # (G, T)
    diagonal = torch.zeros(groups, tokens, dtype=torch.float32, device=q.device)  # (G, T)
    step = _chunk_rows(groups * num_heads, tokens, chunk_elements or chunk_elements_default())
    for start in range(first, tokens, step):
        stop = min(start + step, tokens)
        logits = torch.matmul(qh[:, :, start:stop], kt)  # (G, H, R, T), model dtype
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # (G, H, R, T)
        # A[i, i] for the chunk's rows i: the diagonal of the (R, R) block at columns start:stop
        block = probs[..., start:stop]  # (G, H, R, R)
        if head_reduce == "mean":
            columns += probs.sum(dim=(1, 2))  # (G, T): heads and rows in one reduction
            diagonal[:, start:stop] = torch.diagonal(block, dim1=-2, dim2=-1).sum(dim=1)
        else:
            agg = probs.amax(dim=1)  # (G, R, T)
            columns += agg.sum(dim=1)
            diagonal[:, start:stop] = torch.diagonal(agg[..., start:stop], dim1=-2, dim2=-1)
    degrees = (columns - diagonal)[:, p:]  # (G, N)
    return degrees / num_heads if head_reduce == "mean" else degrees


def attention_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    num_heads: int,
    scale: float,
    head_reduce: str = "mean",
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Head-aggregated attention rows: ``rows`` (R,) token indices -> (B, R, T) fp32."""
    batch, tokens, _ = q.shape
    qh = _heads(q[:, rows] * scale, num_heads)  # (B, H, R, D)
    kt = _heads(k, num_heads).transpose(-1, -2).contiguous()  # (B, H, D, T)
    out = torch.empty(batch, rows.numel(), tokens, dtype=torch.float32, device=q.device)
    step = _chunk_rows(batch * num_heads, tokens, chunk_elements or chunk_elements_default())
    for start in range(0, rows.numel(), step):
        stop = min(start + step, rows.numel())
        logits = torch.matmul(qh[:, :, start:stop], kt)  # (B, H, R', T), model dtype
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # (B, H, R', T)
        out[:, start:stop] = probs.mean(dim=1) if head_reduce == "mean" else probs.amax(dim=1)
    return out  # (B, R, T)


def attention_map(
    q: torch.Tensor,
    k: torch.Tensor,
    num_heads: int,
    scale: float,
    head_reduce: str = "mean",
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """The whole head-aggregated map (B, T, T) fp32, computed in row chunks."""
    rows = torch.arange(q.shape[1], device=q.device)
    return attention_rows(q, k, rows, num_heads, scale, head_reduce, chunk_elements)
