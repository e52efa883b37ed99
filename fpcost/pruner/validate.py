"""``fpcost validate``, the torch side: build a Llama decoder from an ``LLMSpec`` with
random weights and time its real prefill forward pass, in total and per operator class.

The forward pass is transformers' ``LlamaForCausalLM`` (SDPA attention, KV cache written,
logits for the last position only: the prefill the cost model describes). Per-class times
come from forward hooks attached to the model instance (removed on exit):

- matmul    = every ``nn.Linear`` (q/k/v/o, gate/up/down, LM head)
- norm      = every RMSNorm
- attention = each attention module minus its projections (rotary, SDPA, cache update)
- vector    = the rest of the pass (SwiGLU product, residual adds, embedding lookup, masks)

Hooked passes only apportion the time: the measured total comes from un-hooked passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fpcost.costmodel.hardware import OPERATOR_CLASSES
from fpcost.costmodel.noise import (
    DEFAULT_MAX_SPREAD,
    Dispersion,
    high_spread,
    non_monotonic,
    too_noisy,
)
from fpcost.costmodel.params import llm_params
from fpcost.costmodel.spec import LLMSpec
from fpcost.costmodel.units import GIGA, bytes_per_element

from .timing import (
    DTYPE_BITS,
    DTYPES,
    Device,
    DeviceError,
    fixed_threads,
    memory_bytes,
    occupancy_clock,
    summarize,
)

# The default CPU model: Llama-7B's shape scaled in depth and width so that a prefill of
# 2048 tokens takes seconds on two cores (head_dim 64 and FFN ≈ 2.7 × hidden as in Llama).
SCALED_LLAMA = LLMSpec(hidden_size=1024, num_hidden_layers=4, num_attention_heads=16,
                       num_key_value_heads=16, intermediate_size=2816, vocab_size=32000,
                       name="llama-scaled-1024x4")
# Working memory of a prefill beyond weights and KV cache, in activations of width
# hidden or intermediate per token: gate, up, their product, and fp32 norm temporaries.
ACTIVATION_FFN_TENSORS = 4
ACTIVATION_HIDDEN_TENSORS = 8
MEMORY_HEADROOM = 1.25  # allocator fragmentation and framework buffers
MEMORY_RESERVE_BYTES = 0.5 * GIGA  # the interpreter, torch and the rest of the process

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PrefillMeasurement:
    """Every timed prefill pass at ``num_tokens`` tokens: un-hooked totals, and hooked
    passes as (total, seconds per class) with vector the remainder."""

    num_tokens: int
    total_repeats_s: tuple[float, ...]
    hooked_repeats: tuple[tuple[float, dict[str, float]], ...]
    occupancies: tuple[float, ...] = ()  # CPU time / (wall × threads) of each un-hooked pass

    @property
    def dispersion(self) -> Dispersion:
        return Dispersion.of(list(self.total_repeats_s), list(self.occupancies) or None)

    def total_s(self, statistic: str = "median") -> float:
        return summarize(list(self.total_repeats_s), statistic)

    def class_s(self, statistic: str = "median") -> dict[str, float]:
        """The total (``total_s``) split by class in the proportions the hooked passes
        measured: the median share of each class over the hooked passes (normalised to sum
        to 1), or (``min``) the shares of the fastest hooked pass. Shares, not the hooked
        seconds themselves, so that load from other jobs that differs between the hooked
        and the un-hooked passes cannot make the classes disagree with the total."""
        if statistic == "min":
            hooked_total, split = min(self.hooked_repeats, key=lambda pass_: pass_[0])
            shares = {c: split[c] / hooked_total for c in OPERATOR_CLASSES}
        else:
            shares = {c: summarize([split[c] / total for total, split in self.hooked_repeats],
                                   statistic) for c in OPERATOR_CLASSES}
        norm = sum(shares.values())
        total = self.total_s(statistic)
        return {c: total * share / norm for c, share in shares.items()}


def required_memory_bytes(llm: LLMSpec, num_tokens: int, bits: int) -> float:
    """A generous estimate of the memory a prefill of ``num_tokens`` tokens needs."""
    element = bytes_per_element(bits)
    weights = llm_params(llm) * element
    kv_cache = 2 * llm.num_hidden_layers * num_tokens * llm.kv_size * element
    activations = num_tokens * (ACTIVATION_FFN_TENSORS * llm.intermediate_size
                                + ACTIVATION_HIDDEN_TENSORS * llm.hidden_size) * max(element, 4)
    return (weights + kv_cache + activations) * MEMORY_HEADROOM + MEMORY_RESERVE_BYTES


def check_fits(llm: LLMSpec, max_tokens: int, dtype: str, device: Device,
               available_bytes: float | None = None) -> None:
    """A one-line ``DeviceError`` unless a prefill of ``max_tokens`` fits the device."""
    if available_bytes is None:
        _, available_bytes = memory_bytes(device)
    needed = required_memory_bytes(llm, max_tokens, DTYPE_BITS[dtype])
    if needed > available_bytes:
        raise DeviceError(
            f"a {dtype} prefill of {max_tokens} tokens on {llm.name} needs about "
            f"{needed / GIGA:.1f} GB but {device.name} has {available_bytes / GIGA:.1f} GB "
            "available; use fewer tokens (--tokens, --tokens-from), a smaller --model or "
            "--config, or a 16-bit --dtype"
        )


def llama_config(llm: LLMSpec, max_tokens: int):
    """A transformers ``LlamaConfig`` with ``llm``'s sizes and SDPA attention."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=llm.hidden_size, intermediate_size=llm.intermediate_size,
        num_hidden_layers=llm.num_hidden_layers, num_attention_heads=llm.num_attention_heads,
        num_key_value_heads=llm.num_key_value_heads, head_dim=llm.resolved_head_dim,
        vocab_size=llm.vocab_size, tie_word_embeddings=llm.tie_word_embeddings,
        attention_bias=llm.attention_bias, mlp_bias=llm.mlp_bias,
        max_position_embeddings=max(max_tokens, 2048),
    )
    config._attn_implementation = "sdpa"
    return config


def build_llm(llm: LLMSpec, dtype: str, device: Device, max_tokens: int, seed: int = 0) -> nn.Module:
    """``LlamaForCausalLM`` with ``llm``'s sizes and random weights, in eval mode."""
    from transformers import LlamaForCausalLM

    check_fits(llm, max_tokens, dtype, device)
    torch.manual_seed(seed)
    with torch.device(device.torch_device):
        model = LlamaForCausalLM._from_config(llama_config(llm, max_tokens), dtype=DTYPES[dtype])
    return model.eval()


class ClassHooks:
    """Forward hooks that time every linear, norm and attention module of one model
    instance; ``attach`` is a context manager that always removes them."""

    def __init__(self, timer) -> None:
        self.timer = timer
        self.intervals: list[tuple[str, object, object]] = []  # (kind, start, end)
        self._open: dict[int, object] = {}

    @staticmethod
    def kind_of(name: str, module: nn.Module, attention_names: Sequence[str]) -> str | None:
        cls = type(module).__name__
        if isinstance(module, nn.Linear):
            inside = any(name.startswith(prefix + ".") for prefix in attention_names)
            return "attention_linear" if inside else "linear"
        if cls.endswith("RMSNorm"):
            return "norm"
        if cls.endswith("Attention"):
            return "attention_module"
        return None

    @contextlib.contextmanager
    def attach(self, model: nn.Module) -> Iterator[ClassHooks]:
        named = list(model.named_modules())
        attention_names = [n for n, m in named if type(m).__name__.endswith("Attention")]
        handles = []
        try:
            for name, module in named:
                kind = self.kind_of(name, module, attention_names)
                if kind is None:
                    continue
                handles.append(module.register_forward_pre_hook(self._pre))
                handles.append(module.register_forward_hook(self._post(kind)))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _pre(self, module, args):
        self._open[id(module)] = self.timer.mark()

    def _post(self, kind: str):
        def hook(module, args, output):
            self.intervals.append((kind, self._open.pop(id(module)), self.timer.mark()))

        return hook

    def class_seconds(self, total_s: float) -> dict[str, float]:
        """Seconds per operator class of the pass just run (then forgets its intervals)."""
        spent = {"linear": 0.0, "attention_linear": 0.0, "norm": 0.0, "attention_module": 0.0}
        for kind, start, end in self.intervals:
            spent[kind] += self.timer.elapsed_s(start, end)
        self.intervals.clear()
        matmul = spent["linear"] + spent["attention_linear"]
        attention = spent["attention_module"] - spent["attention_linear"]
        norm = spent["norm"]
        return {"matmul": matmul, "attention": attention, "norm": norm,
                "vector": total_s - matmul - attention - norm}


def _prefill_fn(model: nn.Module, num_tokens: int, device: Device, seed: int) -> Callable[[], object]:
    """A closure running the prefill of ``num_tokens`` random token ids (batch 1)."""
    generator = torch.Generator(device="cpu").manual_seed(seed + num_tokens)
    input_ids = torch.randint(0, model.config.vocab_size, (1, num_tokens), generator=generator)
    input_ids = input_ids.to(device.torch_device)

    def run():
        return model(input_ids=input_ids, use_cache=True, logits_to_keep=1)

    return run


def _timed_pass(run: Callable[[], object], timer, hooks: ClassHooks | None = None,
                cpu: Callable[[], float] | None = None, threads: int = 1):
    """(seconds, per-class split with ``hooks``, occupancy with a ``cpu`` clock)."""
    cpu_start = cpu() if cpu else 0.0
    start = timer.mark()
    run()
    total = timer.elapsed_s(start, timer.mark())
    occupancy = (cpu() - cpu_start) / (total * threads) if cpu else None
    return total, (hooks.class_seconds(total) if hooks is not None else None), occupancy


def measure_prefills(llm: LLMSpec, dtype: str, device: Device, token_counts: Sequence[int],
                     warmup: int = 1, repeats: int = 5, hooked_repeats: int = 3,
                     progress: Progress | None = None, seed: int = 0,
                     statistic: str = "median", max_spread: float = DEFAULT_MAX_SPREAD,
                     retries: int = 2) -> list[PrefillMeasurement]:
    """Build the model once and time its prefill at each of ``token_counts``.

    Passes are interleaved: each round times every count once, so a burst of load from
    other jobs spreads over all counts instead of biasing one. ``repeats`` un-hooked rounds
    give the totals; ``hooked_repeats`` hooked rounds the split per class. Counts whose
    passes spread more than ``max_spread`` or whose total (by ``statistic``) is below a
    smaller count's are re-measured (all their passes again) up to ``retries`` times; then
    ``TooNoisyError``. Progress: one step after building, one per round.
    """
    if dtype not in DTYPES:
        raise DeviceError(f"--dtype {dtype!r} is unknown; valid: {', '.join(DTYPES)}")
    if repeats < 1 or hooked_repeats < 1:
        raise DeviceError(f"repeats ({repeats}) and hooked repeats ({hooked_repeats}) must be ≥ 1")
    timer = device.timer
    with fixed_threads(device.num_threads), torch.inference_mode():
        model = build_llm(llm, dtype, device, max(token_counts), seed)
        runs = [_prefill_fn(model, n, device, seed) for n in token_counts]
        if progress:
            progress(f"built {llm.name} ({dtype})")
        for run in runs:
            for _ in range(warmup):
                run()
        timer.synchronize()
        cpu = occupancy_clock(device)
        totals, occupied = _rounds(runs, range(len(runs)), repeats, device, cpu, progress)
        for attempt in range(retries + 1):
            problems, flagged = prefill_problems(token_counts, totals, statistic, max_spread,
                                                 occupied if cpu else None)
            if not problems:
                break
            if attempt == retries:
                raise too_noisy("the prefill timings", problems,
                                "rerun on a quieter machine (fewer jobs, `--threads 1`), or "
                                "raise `--max-spread` knowingly")
            again, again_occupied = _rounds(runs, flagged, repeats, device, cpu, None)
            for i in flagged:
                totals[i], occupied[i] = again[i], again_occupied[i]
        hooks = ClassHooks(timer)
        hooked: list[list[tuple[float, dict[str, float]]]] = [[] for _ in runs]
        with hooks.attach(model):
            for round_index in range(hooked_repeats):
                for i, run in enumerate(runs):
                    hooked[i].append(_timed_pass(run, timer, hooks)[:2])
                if progress:
                    progress(f"hooked round {round_index + 1}/{hooked_repeats}")
    return [PrefillMeasurement(n, tuple(totals[i]), tuple(hooked[i]), tuple(occupied[i]))
            for i, n in enumerate(token_counts)]


def _rounds(runs, indices, repeats, device, cpu, progress):
    """``repeats`` interleaved rounds over ``runs[i]`` for i in ``indices``: (the seconds
    of each pass, their occupancies), per run (lists over all runs; unmeasured ones stay
    empty)."""
    totals: list[list[float]] = [[] for _ in runs]
    occupied: list[list[float]] = [[] for _ in runs]
    for round_index in range(repeats):
        for i in indices:
            total, _, occupancy = _timed_pass(runs[i], device.timer, None, cpu, device.num_threads)
            totals[i].append(total)
            if occupancy is not None:
                occupied[i].append(occupancy)
        if progress:
            progress(f"round {round_index + 1}/{repeats}")
    return totals, occupied


def prefill_problems(token_counts: Sequence[int], totals: Sequence[Sequence[float]],
                     statistic: str, max_spread: float,
                     occupancies: Sequence[Sequence[float]] | None = None
                     ) -> tuple[list[str], list[int]]:
    """(problems, indices to re-measure) of timed prefills: passes that spread more than
    ``max_spread`` or ran descheduled (``occupancies``), totals that fall as the token
    count grows."""
    dispersions = {i: Dispersion.of(list(t), occupancies[i] if occupancies else None)
                   for i, t in enumerate(totals)}
    flagged = set(high_spread(dispersions, max_spread))
    problems = [f"{token_counts[i]} tokens: {dispersions[i].problem(max_spread)}"
                for i in sorted(flagged)]
    values = [summarize(list(t), statistic) for t in totals]
    for i in non_monotonic(token_counts, values):
        flagged.add(i)
        smaller = [j for j in range(len(values)) if token_counts[j] < token_counts[i]]
        flagged.update(j for j in smaller if values[j] > values[i])
        problems.append(f"{token_counts[i]} tokens timed faster than fewer tokens")
    return problems, sorted(flagged)


def measurement_steps(repeats: int, hooked_repeats: int) -> int:
    """Progress steps ``measure_prefills`` reports."""
    return 1 + repeats + hooked_repeats
