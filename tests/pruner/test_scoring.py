"""scoring.py's chunked statistics equal the same quantities from whole per-head maps."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fpcost.pruner.capture import attention_from_qk
from fpcost.pruner.scoring import attention_map, attention_rows, contribution_degrees
from fpcost.pruner.selection import contribution_degree


@settings(max_examples=40, deadline=None)
@given(
    groups=st.integers(1, 3),
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    tokens=st.integers(2, 30),
    prefix=st.sampled_from([0, 1]),
    include_cls=st.booleans(),
    head_reduce=st.sampled_from(["mean", "max"]),
    chunk=st.sampled_from([1, 7, 64, 10**6, None]),
    seed=st.integers(0, 2**16),
)
def test_contribution_degrees_equal_whole_maps(
    groups, heads, head_dim, tokens, prefix, include_cls, head_reduce, chunk, seed
):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(groups, tokens, heads * head_dim, generator=generator, dtype=torch.float64)
    k = torch.randn(groups, tokens, heads * head_dim, generator=generator, dtype=torch.float64)
    scale = head_dim**-0.5
    whole = attention_from_qk(q, k, heads, scale, head_reduce).double()  # (G, T, T)
    expected = contribution_degree(whole, prefix, include_cls)
    got = contribution_degrees(q, k, heads, scale, prefix, include_cls, head_reduce, chunk)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    rows = torch.arange(tokens).flip(0)[: max(1, tokens // 2)]
    torch.testing.assert_close(
        attention_rows(q, k, rows, heads, scale, head_reduce, chunk).double(),
        whole[:, rows], rtol=1e-5, atol=1e-6,
    )
    torch.testing.assert_close(
        attention_map(q, k, heads, scale, head_reduce, chunk).double(), whole,
        rtol=1e-5, atol=1e-6,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_fp32_statistics(dtype):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 17, 16, generator=generator).to(dtype)
    k = torch.randn(1, 17, 16, generator=generator).to(dtype)
    got = contribution_degrees(q, k, 2, 8**-0.5, 1)
    assert got.dtype == torch.float32 and got.shape == (1, 16)
    reference = contribution_degree(attention_from_qk(q.float(), k.float(), 2, 8**-0.5), 1)
    torch.testing.assert_close(got, reference, rtol=0.05, atol=0.05)
