"""A discrete-event simulation of a continuous-batching server, scheduled as vLLM V1 does.

The scheduler follows vLLM V1's ``Scheduler.schedule`` (vllm/v1/core/sched/scheduler.py),
read for this module; time advances one iteration (one forward pass) at a time:

1. Running requests first, oldest first, under a token budget of
   ``max_num_batched_tokens``: each gets its next tokens — one for a decoding request, its
   (rest of the) prompt for a prefilling one (with ``chunked_prefill``, at most the budget
   left: a chunk). Its KV cache grows in blocks of 16 tokens, allocated for the tokens it
   stores after this step. When no block is free, the newest running request is preempted
   (``self.running.pop()``): its blocks are freed and it goes back to the front of the
   waiting queue, to be recomputed from its prompt plus the tokens it had generated (vLLM
   V1 preempts by recompute only); if it is the request being scheduled, this stops.
2. Then, only if nothing was preempted in this step, waiting requests in arrival order
   (FCFS) while the budget, ``max_num_seqs`` and the free blocks allow: each is admitted
   with its whole prompt (or, with ``chunked_prefill``, its first chunk). Without chunked
   prefill a prompt larger than the budget left waits for the next iteration; one larger
   than the whole budget (a preempted request's prompt plus its tokens) runs alone.
3. The iteration's time is the roofline time of what it runs (``iteration.py``): the vision
   side of every request whose prefill starts in it (again after a preemption: vLLM frees
   the encoder cache too), all its tokens through the LLM, and the LM head for the requests
   that emit a token. A request emits a token when its cache catches up with its prompt plus
   the tokens generated so far; it completes at its last one.

Arrivals during an iteration join the waiting queue when it ends (iteration-level
scheduling). A request that cannot ever run is rejected on arrival, with the reason: its
final context (prompt + output − 1 tokens) needs more blocks than the whole cache, or,
without chunked prefill, its prompt exceeds ``max_num_batched_tokens`` (as vLLM refuses it).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from .capacity import ServerSettings
from .iteration import IterationCost, PrefillChunk
from .requests import Request


class _State:
    """A request in flight (mutable; slots for the event loop's speed)."""

    __slots__ = ("index", "prompt", "output", "workload", "computed", "generated", "blocks",
                 "prefilled", "first_token_s", "done")

    def __init__(self, index: int, request: Request):
        self.index = index
        self.prompt = request.num_prompt_tokens
        self.output = request.num_output_tokens
        self.workload = request.workload
        self.computed = 0  # tokens whose K/V are in the cache
        self.generated = 0  # tokens emitted so far
        self.blocks = 0
        self.prefilled = False  # caught up since admission (decoding)
        self.first_token_s: float | None = None
        self.done = False


@dataclass(frozen=True)
class SimulationResult:
    """Per request (in the order given): arrival, first token and completion times (None
    for a rejected request), output tokens and preemptions; the rejected, with why; and
    the time integrals behind the time-averaged metrics, over [first arrival, last
    completion]."""

    arrival_s: tuple[float, ...]
    first_token_s: tuple[float | None, ...]
    completion_s: tuple[float | None, ...]
    num_output_tokens: tuple[int, ...]
    num_preemptions_per_request: tuple[int, ...]
    rejected: tuple[tuple[int, str], ...]
    start_s: float
    end_s: float
    requests_in_system_area_s: float  # ∫ (requests arrived and not completed) dt
    kv_blocks_used_area_s: float  # ∫ (blocks held) dt
    num_kv_blocks: int
    num_iterations: int
    num_scheduled_request_steps: int  # Σ over iterations of requests run in it
    num_batched_tokens: int  # Σ over iterations of tokens run through the LLM
    busy_s: float  # Σ iteration times

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def rejection(request: Request, server: ServerSettings, num_blocks: int) -> str | None:
    """Why ``request`` can never run on this server, or None."""
    final = request.num_prompt_tokens + request.num_output_tokens - 1
    need = _blocks(final, server.block_size_tokens)
    if need > num_blocks:
        return (f"its final context of {final} tokens (prompt {request.num_prompt_tokens} + "
                f"{request.num_output_tokens} output - 1) needs {need} KV blocks; the cache holds "
                f"{num_blocks}")
    if not server.chunked_prefill and request.num_prompt_tokens > server.max_num_batched_tokens:
        return (f"its prompt of {request.num_prompt_tokens} tokens exceeds --max-num-batched-tokens "
                f"{server.max_num_batched_tokens} (give --chunked-prefill or a larger budget)")
    return None


def simulate(requests: list[Request], cost: IterationCost, server: ServerSettings,
             num_blocks: int) -> SimulationResult:
    """Serve ``requests`` (sorted by arrival) on a KV cache of ``num_blocks`` blocks, each
    iteration timed by ``cost`` (module docstring)."""
    n = len(requests)
    arrivals = [r.arrival_time_s for r in requests]
    if any(b < a for a, b in zip(arrivals, arrivals[1:], strict=False)):
        raise ValueError("requests must be sorted by arrival time")
    bs, budget_max, chunked = server.block_size_tokens, server.max_num_batched_tokens, server.chunked_prefill
    max_seqs = server.max_num_seqs
    states = [_State(i, r) for i, r in enumerate(requests)]
    first_token: list[float | None] = [None] * n
    completion: list[float | None] = [None] * n
    preemptions = [0] * n
    rejected: list[tuple[int, str]] = []
    waiting: deque[_State] = deque()
    running: list[_State] = []
    free = num_blocks
    t = arrivals[0] if n else 0.0
    start = t
    last_t, in_system, area, kv_area = t, 0, 0.0, 0.0
    iterations = steps = tokens_total = 0
    busy = 0.0
    next_arrival = finished = 0

    def absorb(until: float) -> None:
        """Arrivals up to ``until`` join the waiting queue (or are rejected)."""
        nonlocal next_arrival, last_t, in_system, area, finished
        while next_arrival < n and arrivals[next_arrival] <= until:
            i = next_arrival
            next_arrival += 1
            why = rejection(requests[i], server, num_blocks)
            if why is not None:
                rejected.append((i, why))
                finished += 1
                continue
            area += in_system * (arrivals[i] - last_t)
            last_t = arrivals[i]
            in_system += 1
            waiting.append(states[i])

    absorb(t)
    while finished < n:
        if not running and not waiting:
            t = arrivals[next_arrival]
            absorb(t)
            continue
        budget = budget_max
        scheduled: list[tuple[_State, int]] = []
        num_decodes = decode_context = 0
        chunks: list[PrefillChunk] = []
        vision: Counter | None = None  # made when a prefill starts (most iterations: none)
        preempted = False
        index = 0
        while index < len(running) and budget > 0:
            r = running[index]
            num_new = r.prompt + r.generated - r.computed
            if chunked and num_new > budget:
                num_new = budget
            need = -(-(r.computed + num_new) // bs) - r.blocks  # blocks, rounded up
            self_preempted = False
            while need > free:  # preempt the newest running request, by recompute
                victim = running.pop()
                free += victim.blocks
                victim.blocks = victim.computed = 0
                victim.prefilled = False
                waiting.appendleft(victim)
                preemptions[victim.index] += 1
                preempted = True
                if victim is r:
                    self_preempted = True
                    break
            if self_preempted:
                break
            free -= need
            r.blocks += need
            scheduled.append((r, num_new))
            budget -= num_new
            if r.prefilled:
                num_decodes += 1
                decode_context += r.computed  # step i of a request reads prompt + i tokens
            else:
                kv = r.computed + num_new
                chunks.append(PrefillChunk(num_new, kv, kv == r.prompt + r.generated))
            index += 1
        if not preempted:
            while waiting and budget > 0 and len(running) < max_seqs:
                r = waiting[0]
                num_new = r.prompt + r.generated
                if num_new > budget:
                    if chunked:
                        num_new = budget
                    elif scheduled:
                        break
                need = -(-num_new // bs)
                if need > free:
                    break
                waiting.popleft()
                running.append(r)
                free -= need
                r.blocks = need
                scheduled.append((r, num_new))
                budget -= num_new
                if vision is None:
                    vision = Counter()
                vision[r.workload] += 1
                chunks.append(PrefillChunk(num_new, num_new, num_new == r.prompt + r.generated))
        if not scheduled:  # cannot happen after the rejections; never loop forever
            raise RuntimeError("the scheduler made no progress; this is a bug in fpcost serve")
        dt = cost.parts_time_s(num_decodes, decode_context, chunks,
                               tuple(vision.items()) if vision else ())
        t_end = t + dt
        kv_area += (num_blocks - free) * dt
        busy += dt
        iterations += 1
        steps += len(scheduled)
        done_now = 0
        for r, num_new in scheduled:
            r.computed += num_new
            tokens_total += num_new
            if r.computed == r.prompt + r.generated:
                r.generated += 1
                r.prefilled = True
                if first_token[r.index] is None:
                    first_token[r.index] = t_end
                if r.generated >= r.output:
                    r.done = True
                    free += r.blocks
                    r.blocks = 0
                    completion[r.index] = t_end
                    done_now += 1
        absorb(t_end)
        area += in_system * (t_end - last_t)
        last_t = t_end
        if done_now:
            in_system -= done_now
            finished += done_now
            running = [r for r in running if not r.done]
        t = t_end
    return SimulationResult(
        tuple(arrivals), tuple(first_token), tuple(completion),
        tuple(s.output for s in states), tuple(preemptions), tuple(rejected),
        start, last_t if n else 0.0, area, kv_area, num_blocks, iterations, steps, tokens_total,
        busy)
