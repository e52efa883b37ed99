"""The Python API, for scripts and notebooks: ``fpcost.estimate`` and ``fpcost.sweep``.

Both take names or objects: a model is a preset name (``"llava-1.5-7b"``), a path to a
Hugging Face ``config.json`` (or its directory), or a ``ModelSpec``; hardware is a profile
name (``"a6000"``, ``"h100"``), a profile ``.toml`` path, or a ``HardwareProfile``. The
workload arguments of ``sweep`` are those of ``estimate``, each also accepting a list.

    >>> import fpcost
    >>> e = fpcost.estimate("llava-1.5-7b", "a6000", bits=4, keep_ratio=0.5)
    >>> e.totals()["prefill"].time_s          # seconds
    >>> e.to_frame()                          # one row per operator per layer
    >>> fpcost.sweep(hardware=["a6000", "h100"], bits=[16, 4], keep_ratio=[0.25, 0.5, 1])
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from fpcost.costmodel.accounting import Accounting
from fpcost.costmodel.anyres import parse_image_size
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import Estimate
from fpcost.costmodel.estimate import estimate as _estimate
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.parallel import Parallelism
from fpcost.costmodel.pipeline import ALL_STAGES, make_workload
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.pruning import DEFAULT_SELECTION, SelectionSpec
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec

__all__ = ["estimate", "resolve_hardware", "resolve_model", "resolve_quant", "sweep"]


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
    ``frames``: each sample a video of that many frames.
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
                     vision_quant=vision_plan, vision_layers=vision_layers,
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
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
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
    ``tensor_parallel``, ``pipeline_parallel`` and ``frames`` as ``estimate``'s. More
    than ``MAX_CONFIGURATIONS`` rows raise ``WorkloadError`` unless ``force``.
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
        parallelism=Parallelism(tensor_parallel, pipeline_parallel),
        num_frames=frames,
    )


def _listed(value) -> list:
    """``value`` as a list: None → [], a scalar, string, path or object → [value]."""
    if value is None:
        return []
    if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Iterable):
        return [value]
    return list(value)
