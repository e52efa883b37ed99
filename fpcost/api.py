"""The Python API, for scripts and notebooks: ``fpcost.estimate``, ``fpcost.sweep`` and
``fpcost.serve``.

Both take names or objects: a model is a preset name (``"llava-1.5-7b"``), a path to a
Hugging Face ``config.json`` (or its directory), or a ``ModelSpec``; hardware is a profile
name (``"a6000"``, ``"h100"``), a profile ``.toml`` path, or a ``HardwareProfile``. The
workload arguments of ``sweep`` are those of ``estimate``, each also accepting a list.

    >>> import fpcost
    >>> e = fpcost.estimate("llava-1.5-7b", "a6000", bits=4, keep_ratio=0.5)
    >>> e.totals()["prefill"].time_s          # seconds
    >>> e.to_frame()                          # one row per operator per layer
    >>> fpcost.sweep(hardware=["a6000", "h100"], bits=[16, 4], keep_ratio=[0.25, 0.5, 1])
    >>> s = fpcost.serve("qwen2.5-vl-72b", "a100-80g", rate=2, tensor_parallel=4)
    >>> s.summary["throughput_requests_per_s"]  # the JSON summary of `fpcost serve`
    >>> s.to_frame()                          # one row per request
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fpcost.costmodel.accounting import Accounting
from fpcost.costmodel.anyres import parse_image_size
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import Estimate
from fpcost.costmodel.estimate import estimate as _estimate
from fpcost.costmodel.families import family_of
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.parallel import Parallelism
from fpcost.costmodel.pipeline import ALL_STAGES, PipelineSettings, make_workload
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.pruning import DEFAULT_SELECTION, SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec

__all__ = ["ServeResult", "estimate", "resolve_hardware", "resolve_model", "resolve_quant",
           "serve", "sweep"]


def resolve_model(model: ModelSpec | str | os.PathLike[str]) -> ModelSpec:
    """A ``ModelSpec`` from itself, a preset name, or a config.json file or directory."""
    if isinstance(model, ModelSpec):
        return model
    text = os.fspath(model)
    path = Path(text).expanduser()
    # an empty name is no path (Path('') is '.'): get_preset refuses it, listing the valid ones
    if text.strip() and (text.endswith(".json") or os.sep in text or "/" in text or path.is_dir()):
        return load_config_json(path)
    return get_preset(text)


def resolve_hardware(hardware: HardwareProfile | str | os.PathLike[str]) -> HardwareProfile:
    """A ``HardwareProfile`` from itself, a built-in profile name, or a profile .toml path."""
    if isinstance(hardware, HardwareProfile):
        return hardware
    from fpcost.hardware_profiles import load_profile

    return load_profile(hardware)


def resolve_quant(bits: int | None = None, quant: QuantPlan | str | None = None) -> QuantPlan:
    """``bits`` (weights, activations, KV all at N bits) or ``quant`` (a ``QuantPlan`` or
    ``"w4a16kv16"``); FP16 throughout when neither is given."""
    if bits is not None and quant is not None:
        raise WorkloadError("give either bits or quant, not both")
    if isinstance(quant, QuantPlan):
        return quant
    if quant is not None:
        return QuantPlan.parse(str(quant))
    if bits is not None:
        return QuantPlan.uniform(int(bits) if isinstance(bits, str) and bits.isdigit() else bits)
    return QuantPlan()


def estimate(
    model: ModelSpec | str = "llava-1.5-7b",
    hardware: HardwareProfile | str = "a6000",
    bits: int | None = None,
    quant: QuantPlan | str | None = None,
    keep_ratio: float | None = None,
    visual_tokens: int | None = None,
    text_tokens: int = 40,
    tokens: int | None = None,
    batch: int = 1,
    accounting: Accounting | str = "fpcost",
    flash_attention: bool = False,
    stages: tuple[str, ...] | None = None,
    *,
    output_tokens: int = 2,
    image_size: tuple[int, int] | str | None = None,
    frame_tokens: tuple[int, ...] | None = None,
    vision_quant: QuantPlan | str | None = None,
    vision_layers: str = "all",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    frames: int | None = None,
    selection: SelectionSpec | None = DEFAULT_SELECTION,
) -> Estimate:
    """Roofline estimate of one request; the same numbers as ``fpcost estimate``.

    The LLM's prompt is ``visual_tokens`` (default: all of the model's; or a fraction
    ``keep_ratio`` of them; or a video's per-frame ``frame_tokens``) plus ``text_tokens``;
    ``tokens`` instead sets the whole prompt. ``image_size`` ((width, height) or "WxH")
    drives LLaVA-NeXT's AnyRes and Qwen2-VL / Qwen2.5-VL's dynamic resolution (resized
    within ``min_pixels`` .. ``max_pixels``, by default the checkpoints').
    ``output_tokens`` N counts generated tokens as ``generate(max_new_tokens=N)``: the
    prefill yields the first, N − 1 decode steps the rest (the default 2: one decode step
    over the prompt, LLM-Viewer's decode). Every stage the
    request runs is estimated; ``stages`` (default all: vision, selection when pruned,
    projector, prefill, decode) chooses the ones ``.totals()`` lists, while ``.ttft_s``,
    ``.tpot_s`` and ``.end_to_end()`` always describe the whole request. Returns an
    ``Estimate``: ``.totals()`` maps each listed stage to its ``StageTotals`` (SI units),
    ``.end_to_end()`` sums every stage, ``.to_frame()`` is a per-operator pandas DataFrame.
    ``tensor_parallel`` / ``pipeline_parallel``: the GPU split (docs/parallelism.md);
    ``frames``: each sample a video of that many frames. ``selection``: what a pruned
    request's selection reads (``SelectionSpec``; the default is freePruner's defaults; None:
    a method that reads no attention map, no selection stage).
    """
    model = resolve_model(model)
    if isinstance(image_size, str):
        image_size = parse_image_size(image_size)
    workload = make_workload(model, tokens=tokens, visual_tokens=visual_tokens,
                             keep_ratio=keep_ratio, frame_tokens=frame_tokens,
                             text_tokens=text_tokens, batch=batch, image_size=image_size,
                             output_tokens=output_tokens, min_pixels=min_pixels,
                             max_pixels=max_pixels, frames=frames)
    vision_plan = resolve_quant(quant=vision_quant) if vision_quant is not None else None
    return _estimate(model, workload, resolve_hardware(hardware), resolve_quant(bits, quant),
                     accounting, flash_attention, None if stages is None else tuple(stages),
                     vision_quant=vision_plan, vision_layers=vision_layers, selection=selection,
                     parallelism=Parallelism(tensor_parallel, pipeline_parallel))


def sweep(
    model="llava-1.5-7b",
    hardware="a6000",
    bits=None,
    quant=None,
    keep_ratio=None,
    visual_tokens=None,
    text_tokens: int = 40,
    batch=1,
    accounting: Accounting | str = "fpcost",
    flash_attention: bool = False,
    stages: tuple[str, ...] = ALL_STAGES,
    force: bool = False,
    *,
    output_tokens: int = 2,
    image_size: tuple[int, int] | str | None = None,
    vision_quant: QuantPlan | str | None = None,
    vision_layers: str = "all",
    selection: SelectionSpec | None = DEFAULT_SELECTION,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    tensor_parallel=1,
    pipeline_parallel=1,
    frames: int | None = None,
):
    """Every combination of the given models, devices, plans, visual tokens and batch sizes,
    as a pandas DataFrame (one row each; columns in ``fpcost.costmodel.sweep.sweep``).

    ``model``, ``hardware``, ``bits``, ``quant``, ``keep_ratio``, ``visual_tokens`` and
    ``batch`` each take one value or a list; ``bits`` and ``quant`` together give the plans
    of both. ``output_tokens``, ``image_size``, ``min_pixels``, ``max_pixels``,
    ``vision_quant`` and ``vision_layers`` are
    ``estimate``'s, shared by every row (each row equals ``estimate`` of its request);
    ``selection`` is what freePruner's selection reads (None: its cost left out);
    ``tensor_parallel`` and ``pipeline_parallel`` each take one degree or a list (every
    combination: the rows under each split, split-major, with ``tensor_parallel``,
    ``pipeline_parallel``, ``num_gpus`` and the traffic columns), ``frames`` as
    ``estimate``'s. More than ``MAX_CONFIGURATIONS`` rows raise ``WorkloadError`` unless
    ``force``.
    """
    from fpcost.costmodel.sweep import sweep as _sweep

    plans = [resolve_quant(bits=b) for b in _listed(bits)]
    plans += [resolve_quant(quant=q) for q in _listed(quant)]
    return _sweep(
        [resolve_model(m) for m in _listed(model)],
        [resolve_hardware(h) for h in _listed(hardware)],
        plans or [QuantPlan()],
        keep_ratios=None if keep_ratio is None else _listed(keep_ratio),
        num_visual_tokens=None if visual_tokens is None else _listed(visual_tokens),
        batch_sizes=_listed(batch),
        num_text_tokens=text_tokens,
        accounting=accounting,
        flash_attention=flash_attention,
        stages=tuple(stages),
        force=force,
        num_output_tokens=output_tokens,
        image_size=parse_image_size(image_size) if isinstance(image_size, str) else image_size,
        vision_quant=resolve_quant(quant=vision_quant) if vision_quant is not None else None,
        vision_layers=vision_layers,
        selection=selection,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        parallelism=[Parallelism(t, p) for t in _listed(tensor_parallel)
                     for p in _listed(pipeline_parallel)],
        num_frames=frames,
    )


@dataclass(frozen=True)
class ServeResult:
    """A simulated server's run (``fpcost.serve``): ``summary``, ``kv_cache`` and ``server``
    are the JSON objects of ``fpcost serve --format json`` (same keys, SI units);
    ``to_frame()`` (or ``.requests``) the per-request records as a pandas DataFrame."""

    summary: dict
    kv_cache: dict
    server: dict
    records: tuple[dict, ...]

    def to_frame(self):
        """One row per submitted request, in arrival order: ``request``, ``arrival_s``,
        ``first_token_s``, ``completion_s``, ``ttft_s``, ``tpot_s``, ``latency_s``,
        ``num_output_tokens``, ``num_preemptions``, ``rejected`` (imports pandas)."""
        import pandas as pd

        return pd.DataFrame(list(self.records))

    @property
    def requests(self):
        return self.to_frame()


def serve(
    model: ModelSpec | str = "llava-1.5-7b",
    hardware: HardwareProfile | str = "a6000",
    *,
    rate: float | None = None,
    num_requests: int = 1000,
    seed: int = 0,
    output_tokens: int = 128,
    text_tokens: int = 40,
    image_size: tuple[int, int] | str | None = None,
    keep_ratio: float | None = None,
    trace: str | os.PathLike[str] | None = None,
    bits: int | None = None,
    quant: QuantPlan | str | None = None,
    accounting: Accounting | str = "fpcost",
    flash_attention: bool = True,
    chunked_prefill: bool = False,
    max_num_batched_tokens: int = 8192,
    max_num_seqs: int = 256,
    gpu_memory_utilization: float = 0.9,
    slo_ttft: float | None = None,
    slo_tpot: float | None = None,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    frames: int | None = None,
) -> ServeResult:
    """Simulate a continuous-batching server; the numbers of ``fpcost serve`` for one server.

    Requests arrive as a Poisson process at ``rate`` per second (``num_requests`` of them,
    ``seed``), or from a JSONL / CSV ``trace`` file (docs/serving.md gives the columns).
    Each asks for the model's visual tokens (or ``keep_ratio`` of them: the pruned server,
    its freePruner selection costed as in ``estimate``) plus ``text_tokens``, and generates
    ``output_tokens``. The scheduler settings are vLLM's (``max_num_batched_tokens``,
    ``max_num_seqs``, ``gpu_memory_utilization``, ``chunked_prefill``); FlashAttention is on
    by default, as vLLM runs it (``estimate``'s default is off). ``slo_ttft`` / ``slo_tpot``
    (seconds) add the SLO attainment. ``tensor_parallel`` / ``pipeline_parallel``: the GPU
    split (docs/serving.md, "More than one GPU"). ``frames``: each Poisson request a video of
    that many frames (as ``estimate``'s). A text-only LLM config serves text requests (no
    visual tokens). Compare pruned and unpruned with two calls.
    """
    from fpcost.costmodel.accounting import get_accounting
    from fpcost.costmodel.serve.capacity import ServerSettings
    from fpcost.costmodel.serve.parallel import server_payload
    from fpcost.costmodel.serve.requests import check_rate, poisson_requests
    from fpcost.costmodel.serve.run import Server
    from fpcost.costmodel.serve.trace import parse_trace, trace_requests

    spec, profile = resolve_model(model), resolve_hardware(hardware)
    if isinstance(image_size, str):
        image_size = parse_image_size(image_size)
    if isinstance(accounting, str):
        accounting = get_accounting(accounting)
    for name, value in (("slo_ttft", slo_ttft), ("slo_tpot", slo_tpot)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 < value < float("inf")):
            raise WorkloadError(f"{name} {value!r} must be a finite number of seconds > 0")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise WorkloadError(f"seed {seed!r} must be an integer in 0..2**63 - 1")
    if (trace is None) == (rate is None):
        raise WorkloadError("give either rate (Poisson requests per second) or trace (a file), "
                            "exactly one")
    if trace is not None and frames is not None:
        raise WorkloadError(f"frames {frames!r} sets the Poisson requests' videos; a trace's "
                            "requests carry their own visual tokens")
    settings = PipelineSettings(resolve_quant(bits, quant), accounting, flash_attention,
                                profile.onchip_buffer_bytes, QuantPlan(), "all", DEFAULT_SELECTION)
    server = Server(spec, profile, settings,
                    ServerSettings(max_num_seqs, max_num_batched_tokens, chunked_prefill,
                                   gpu_memory_utilization),
                    Parallelism(tensor_parallel, pipeline_parallel))
    if trace is not None:
        path = Path(trace)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkloadError(f"trace {path}: cannot read it ({exc})") from None
        requests = trace_requests(parse_trace(text, str(path)), str(path), spec, text_tokens,
                                  output_tokens, keep_ratio)
    else:
        text_only = not family_of(spec).has_vision
        if text_only and keep_ratio is not None:
            raise WorkloadError(f"keep_ratio needs a model with a vision tower; {spec.name!r} is "
                                "a text-only LLM config")
        workload = make_workload(spec, keep_ratio=keep_ratio, text_tokens=text_tokens,
                                 image_size=image_size, output_tokens=output_tokens,
                                 frames=frames, visual_tokens=0 if text_only else None)
        requests = poisson_requests([workload], check_rate(rate, "rate"), num_requests, seed)
    run = server.run(requests, slo_ttft, slo_tpot)
    return ServeResult(run.summary, server.capacity.as_dict(),
                       server_payload(spec, profile, server.parallelism,
                                      server.capacity.pipeline_stage),
                       tuple(run.request_records()))


def _listed(value) -> list:
    """``value`` as a list: None → [], a scalar, string, path or object → [value]."""
    if value is None:
        return []
    if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Iterable):
        return [value]
    return list(value)
