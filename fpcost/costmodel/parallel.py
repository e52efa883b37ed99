"""Tensor and pipeline parallelism: what one GPU holds and computes, and what the GPUs send
each other, for a model split over ``tensor`` × ``pipeline`` GPUs.

Tensor parallelism (Megatron-LM's sharding, as vLLM applies it to Llama / Qwen2 decoders):

- q/k/v and gate/up projections are column-parallel (each rank holds 1/N of the output
  features: its heads, its slice of the FFN); o and down projections are row-parallel (1/N
  of the input features; each rank writes a full-width partial sum, then all-reduces it);
- attention runs on each rank's H/N query heads; KV heads are split N ways when N divides
  them, and replicated when N is a multiple of their count (each rank then holds one KV
  head, N / kv_heads ranks the same one: vLLM's ``QKVParallelLinear``); anything else is
  refused, as vLLM refuses it;
- the embedding and the LM head are vocabulary-parallel (each rank ceil(V / N) rows);
- norms, residual adds and the final norm are replicated (every rank, full width).

This is exactly an LLM of H/N heads, KV/N (or 1) KV heads, FFN/N and ceil(V/N) vocabulary
at the full hidden size and head size (``shard_llm``), so one rank's operators and
parameters come from the ordinary operator builders on that spec: nothing is scaled by a
factor after the fact. Only the ``fpcost`` accounting is sharded: ``llm-viewer`` sizes q
and o from the hidden size, which a shard does not have.

The vision tower and projector are replicated on every tensor-parallel rank (vLLM's
``--mm-encoder-tp-mode data``; vLLM's default, ``weights``, shards the tower too, which
fpcost does not model) and run on the first pipeline stage, where their output enters the
LLM. They run whole on one GPU's time line: no speed-up from parallelism, no traffic.

Pipeline parallelism splits the decoder layers into contiguous stages as vLLM's
``get_pp_indices`` does: L // P each, the L % P remaining layers one each to the stages
before the last (the last also holds the final norm and LM head). One request passes
through the stages one after another, so its latency is that of every layer on one rank
plus the sends between stages; no overlap between requests is modelled here.

Traffic of one forward pass over ``s`` new tokens per sample, batch ``b``, hidden ``h``,
activation bytes ``a`` (``transfers``):

- tensor parallel, per pass: one all-reduce of the vocabulary-parallel embedding's output
  (b·s·h·a), two per decoder layer (after o_proj and after down_proj, b·s·h·a each), and a
  gather of the logits (b·V·a, V the padded vocabulary) to one rank;
- pipeline parallel: P − 1 sends between consecutive stages, each of the hidden state and
  the residual stream (2·b·s·h·a; vLLM's Llama passes both as ``IntermediateTensors``).

Costs on the link of the hardware profile (bandwidth β per direction, latency α per step),
ring algorithms: an all-reduce of B bytes over N GPUs moves 2(N−1)/N·B per GPU in 2(N−1)
steps; a gather (N−1)/N·B in N−1 steps; a send B in one step. Time = bytes / β + steps · α.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .errors import HardwareError, WorkloadError
from .spec import LLMSpec, ModelSpec, show

MAX_PARALLEL = 2**31 - 1  # GPUs along one axis, as MAX_BATCH: the int32 range
ALL_REDUCE = "all_reduce"
GATHER = "gather"
SEND = "send"
VISION_PLACEMENT = ("vision tower and projector replicated on every tensor-parallel rank "
                    "(vLLM's --mm-encoder-tp-mode data), on the first pipeline stage")


@dataclass(frozen=True)
class Parallelism:
    """``tensor`` GPUs share each layer; ``pipeline`` stages hold consecutive layers."""

    tensor: int = 1
    pipeline: int = 1

    def __post_init__(self) -> None:
        for flag, value in (("--tensor-parallel", self.tensor),
                            ("--pipeline-parallel", self.pipeline)):
            if isinstance(value, bool) or not isinstance(value, int) or not (
                    1 <= value <= MAX_PARALLEL):
                raise WorkloadError(f"{flag} {show(value)} must be an integer in "
                                    f"1..{MAX_PARALLEL:,}")

    @property
    def num_gpus(self) -> int:
        return self.tensor * self.pipeline

    @property
    def is_single(self) -> bool:
        return self.num_gpus == 1


SINGLE = Parallelism()


def check_parallelism(model: ModelSpec, parallelism: Parallelism, accounting_name: str = "fpcost"
                      ) -> None:
    """Refuse (``WorkloadError``, one line) a split the model does not allow."""
    llm, n, p = model.llm, parallelism.tensor, parallelism.pipeline
    if n > 1:
        if accounting_name != "fpcost":
            raise WorkloadError(f"--tensor-parallel {n} needs the fpcost accounting (--accounting "
                                f"{accounting_name} sizes q and o from the hidden size, which a "
                                "shard does not have)")
        if llm.num_attention_heads % n:
            raise WorkloadError(f"--tensor-parallel {n} must divide the {model.name} LLM's "
                                f"{llm.num_attention_heads} attention heads")
        kv = llm.num_key_value_heads
        if kv % n and n % kv:
            raise WorkloadError(f"--tensor-parallel {n} must divide the {kv} KV heads of "
                                f"{model.name}, or be a multiple of them (KV heads replicated)")
        if llm.intermediate_size % n:
            raise WorkloadError(f"--tensor-parallel {n} must divide the {model.name} LLM's "
                                f"intermediate_size {llm.intermediate_size}")
    if p > llm.num_hidden_layers:
        raise WorkloadError(f"--pipeline-parallel {p} is more than the {llm.num_hidden_layers} "
                            f"decoder layers of {model.name}; valid: 1..{llm.num_hidden_layers}")


def kv_heads_per_rank(llm: LLMSpec, tensor: int) -> int:
    """KV heads one tensor-parallel rank holds: kv / N, or 1 when N ≥ kv (replicated)."""
    return max(llm.num_key_value_heads // tensor, 1)


def shard_llm(llm: LLMSpec, tensor: int) -> LLMSpec:
    """The LLM one of ``tensor`` ranks runs (module docstring); ``llm`` itself for 1."""
    if tensor == 1:
        return llm
    return replace(llm, num_attention_heads=llm.num_attention_heads // tensor,
                   num_key_value_heads=kv_heads_per_rank(llm, tensor),
                   intermediate_size=llm.intermediate_size // tensor,
                   vocab_size=math.ceil(llm.vocab_size / tensor),
                   head_dim=llm.resolved_head_dim, name=f"{llm.name} (1/{tensor} shard)")


def shard_model(model: ModelSpec, parallelism: Parallelism) -> ModelSpec:
    """``model`` as one tensor-parallel rank runs it: the sharded LLM (every layer), the
    vision side whole. Build any stage's operators on it for one GPU's share."""
    if parallelism.tensor == 1:
        return model
    return replace(model, llm=shard_llm(model.llm, parallelism.tensor))


def stage_layers(num_layers: int, pipeline: int) -> tuple[int, ...]:
    """Decoder layers of each pipeline stage (vLLM's ``get_pp_indices``): L // P each, the
    remainder one each to the stages just before the last. 80 over 3: (27, 27, 26)."""
    layers = [num_layers // pipeline] * pipeline
    for i in range(2, num_layers % pipeline + 2):
        layers[-i] += 1
    return tuple(layers)


@dataclass(frozen=True)
class Transfer:
    """``count`` identical collectives (or sends) of ``message_bytes`` each among
    ``num_gpus`` GPUs, in one pass of ``stage``. Values may be numpy arrays (a sweep)."""

    stage: str
    name: str
    collective: str  # ALL_REDUCE, GATHER or SEND
    count: int
    message_bytes: object
    num_gpus: int

    @property
    def bytes_per_gpu(self):
        """Bytes each GPU sends (and receives) per instance, ring algorithms."""
        n = self.num_gpus
        if self.collective == ALL_REDUCE:
            return 2 * (n - 1) * self.message_bytes / n
        if self.collective == GATHER:
            return (n - 1) * self.message_bytes / n
        return self.message_bytes

    @property
    def num_steps(self) -> int:
        """Latency terms per instance: 2(N−1) for a ring all-reduce, N−1 for a gather, 1 send."""
        n = self.num_gpus
        return {ALL_REDUCE: 2 * (n - 1), GATHER: n - 1}.get(self.collective, 1)

    def time_s(self, hardware):
        """Seconds of all ``count`` instances on the profile's interconnect."""
        bandwidth, latency = link(hardware)
        return self.count * (self.bytes_per_gpu / bandwidth + self.num_steps * latency)


def link(hardware) -> tuple[float, float]:
    """(bandwidth bytes/s per direction, latency s per step) of the profile's interconnect,
    or a ``HardwareError`` saying what to add."""
    bandwidth, latency = hardware.interconnect_bandwidth_bytes_per_s, hardware.interconnect_latency_s
    if bandwidth is None or latency is None:
        why = ("is not linked to other GPUs" if hardware.interconnect_kind == "none"
               else "gives no [interconnect]")
        raise HardwareError(f"hardware profile {hardware.name!r} {why}; tensor and pipeline "
                            "parallelism need its bandwidth_gb_per_s and latency_us "
                            "(docs/hardware.md)")
    return bandwidth, latency


def transfers(model: ModelSpec, parallelism: Parallelism, stage: str, num_query_tokens,
              batch_size, act_bytes_per_element: float) -> list[Transfer]:
    """The traffic of one LLM pass (``stage`` "prefill" or one "decode" step) of
    ``num_query_tokens`` new tokens per sample (module docstring); none on one GPU."""
    llm, n, p = model.llm, parallelism.tensor, parallelism.pipeline
    hidden = batch_size * num_query_tokens * llm.hidden_size * act_bytes_per_element
    out = []
    if n > 1:
        logits = batch_size * n * math.ceil(llm.vocab_size / n) * act_bytes_per_element
        out += [Transfer(stage, "embed_all_reduce", ALL_REDUCE, 1, hidden, n),
                Transfer(stage, "attn_all_reduce", ALL_REDUCE, llm.num_hidden_layers, hidden, n),
                Transfer(stage, "mlp_all_reduce", ALL_REDUCE, llm.num_hidden_layers, hidden, n),
                Transfer(stage, "logits_gather", GATHER, 1, logits, n)]
    if p > 1:  # the hidden state and the residual stream
        out.append(Transfer(stage, "stage_send", SEND, p - 1, 2 * hidden, 2))
    return out


def communication_time_s(model: ModelSpec, parallelism: Parallelism, hardware, stage: str,
                         num_query_tokens, batch_size, act_bytes_per_element: float):
    """Seconds of one pass's traffic (``transfers``) on ``hardware``'s link; 0 on one GPU."""
    if parallelism.is_single:
        return 0.0
    return sum(t.time_s(hardware) for t in transfers(model, parallelism, stage, num_query_tokens,
                                                      batch_size, act_bytes_per_element))
