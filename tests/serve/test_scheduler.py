"""The scheduler by hand: block accounting, preemption by recompute, chunked prefill under
the token budget, rejections (every iteration takes 1 s under ``UnitCost``)."""

from fpcost.costmodel.serve.capacity import ServerSettings
from fpcost.costmodel.serve.iteration import PrefillChunk
from fpcost.costmodel.serve.metrics import summarize
from fpcost.costmodel.serve.scheduler import simulate

from .helpers import UnitCost, text_request


def test_one_request_prefill_then_decodes():
    """Prompt 31, 3 output tokens: the prefill (1 s) yields the first, two decodes the rest;
    decode step i reads prompt + i tokens; the cache ends at 33 tokens = 3 blocks."""
    cost = UnitCost()
    result = simulate([text_request(0, 31, 3)], cost, ServerSettings(), num_blocks=3)
    assert result.first_token_s == (1.0,) and result.completion_s == (3.0,)
    assert cost.batches[0][2] == (PrefillChunk(31, 31, True),)
    assert [b[:2] for b in cost.batches[1:]] == [(1, 31), (1, 32)]
    # blocks held: 2 (31 tokens), 2 (32), 3 (33) over the three 1-s iterations
    assert result.kv_blocks_used_area_s == 2 + 2 + 3
    # with two blocks the final context (33 tokens) cannot fit: rejected, with the reason
    result = simulate([text_request(0, 31, 3)], UnitCost(), ServerSettings(), num_blocks=2)
    assert result.completion_s == (None,) and "needs 3 KV blocks; the cache holds 2" in result.rejected[0][1]


def test_preemption_newest_first_by_recompute():
    """Two 16-token prompts, 20 output tokens each, 4 blocks: both run until request 0 needs
    its third block (its cache at 33 tokens, having generated 17): request 1, the newest, is
    preempted (its blocks freed) and recomputed — prompt + its 17 tokens — once request 0
    completes at 20 s; it then needs 18 → 20 tokens: 3 more iterations."""
    requests = [text_request(0, 16, 20), text_request(0, 16, 20)]
    cost = UnitCost()
    result = simulate(requests, cost, ServerSettings(), num_blocks=4)
    assert result.num_preemptions_per_request == (0, 1)
    assert result.completion_s == (20.0, 23.0)
    assert cost.batches[20][2] == (PrefillChunk(33, 33, True),)  # the recompute
    assert summarize(result)["num_completed"] == 2


def test_chunked_prefill_respects_the_token_budget():
    """Budget 10: a 25-token prompt runs as chunks 10, 10, 5 (the last emits); a second
    request arriving later shares iterations, decodes first, within the budget."""
    server = ServerSettings(max_num_batched_tokens=10, chunked_prefill=True)
    cost = UnitCost()
    result = simulate([text_request(0, 25, 2), text_request(2.5, 12, 2)], cost, server, num_blocks=10)
    chunks = [b[2] for b in cost.batches]
    assert chunks[:3] == [(PrefillChunk(10, 10, False),), (PrefillChunk(10, 20, False),),
                          (PrefillChunk(5, 25, True),)]
    assert result.first_token_s[0] == 3.0 and result.completion_s[0] == 4.0
    # iteration 4: request 0's decode (1 token) + request 1's first chunk (9 of 12)
    assert cost.batches[3][:3] == (1, 25, (PrefillChunk(9, 9, False),))
    for decodes, _, batch_chunks, _ in cost.batches:
        assert decodes + sum(c.num_query_tokens for c in batch_chunks) <= 10


def test_without_chunking_a_prompt_above_the_budget_is_rejected():
    server = ServerSettings(max_num_batched_tokens=10)
    result = simulate([text_request(0, 25, 2), text_request(0, 5, 2)], UnitCost(), server, 10)
    assert result.completion_s[0] is None and result.completion_s[1] == 2.0
    assert "exceeds --max-num-batched-tokens 10" in result.rejected[0][1]
    summary = summarize(result)
    assert summary["num_completed"] + summary["num_rejected"] == summary["num_requests"] == 2


def test_max_num_seqs_caps_the_running_requests():
    cost = UnitCost()
    simulate([text_request(0, 4, 3) for _ in range(5)], cost, ServerSettings(max_num_seqs=2), 100)
    assert all(len(b[2]) + b[0] <= 2 for b in cost.batches)
