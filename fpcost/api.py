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
from fpcost.costmodel.errors import WorkloadError
from fpcost.costmodel.estimate import STAGES, Estimate
from fpcost.costmodel.estimate import estimate as _estimate
from fpcost.costmodel.hardware import HardwareProfile
from fpcost.costmodel.hfconfig import load_config_json
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.spec import ModelSpec
from fpcost.costmodel.workload import Workload, visual_tokens_for_ratio

__all__ = ["estimate", "resolve_hardware", "resolve_model", "resolve_quant", "sweep"]


def resolve_model(model: ModelSpec | str | os.PathLike[str]) -> ModelSpec:
    """A ``ModelSpec`` from itself, a preset name, or a config.json file or directory."""
    if isinstance(model, ModelSpec):
        return model
    text = os.fspath(model)
    path = Path(text).expanduser()
    if text.endswith(".json") or os.sep in text or "/" in text or path.is_dir():
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
    stages: tuple[str, ...] = STAGES,
) -> Estimate:
    """Roofline estimate of one workload; the same numbers as ``fpcost estimate``.

    The LLM's prompt is ``visual_tokens`` (default: all of the model's; or a fraction
    ``keep_ratio`` of them) plus ``text_tokens``; ``tokens`` instead sets the whole prompt.
    Returns an ``Estimate``: ``.totals()`` maps each stage to its ``StageTotals`` (SI units),
    ``.to_frame()`` is a per-operator pandas DataFrame.
    """
    model = resolve_model(model)
    workload = _workload(model, keep_ratio, visual_tokens, text_tokens, tokens, batch)
    return _estimate(model, workload, resolve_hardware(hardware), resolve_quant(bits, quant),
                     accounting, flash_attention, tuple(stages))


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
    stages: tuple[str, ...] = STAGES,
    force: bool = False,
):
    """Every combination of the given models, devices, plans, visual tokens and batch sizes,
    as a pandas DataFrame (one row each; columns in ``fpcost.costmodel.sweep.sweep``).

    ``model``, ``hardware``, ``bits``, ``quant``, ``keep_ratio``, ``visual_tokens`` and
    ``batch`` each take one value or a list; ``bits`` and ``quant`` together give the plans
    of both. More than ``MAX_CONFIGURATIONS`` rows raise ``WorkloadError`` unless ``force``.
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
    )


def _listed(value) -> list:
    """``value`` as a list: None → [], a scalar, string, path or object → [value]."""
    if value is None:
        return []
    if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _workload(model: ModelSpec, keep_ratio, visual_tokens, text_tokens, tokens, batch) -> Workload:
    """The workload the token arguments describe (as ``fpcost estimate``'s options)."""
    if tokens is not None and (visual_tokens is not None or keep_ratio is not None):
        raise WorkloadError("tokens sets the whole prompt; do not combine it with "
                            "visual_tokens or keep_ratio")
    if visual_tokens is not None and keep_ratio is not None:
        raise WorkloadError("give either visual_tokens or keep_ratio, not both")
    if tokens is not None:
        return Workload.from_total(tokens, model.default_num_visual_tokens, batch)
    if model.kind == "llm" and visual_tokens is None:
        raise WorkloadError(f"model {model.name!r} is a text-only LLM config; give tokens=N")
    if keep_ratio is not None:
        visual_tokens = visual_tokens_for_ratio(model.default_num_visual_tokens, keep_ratio)
    elif visual_tokens is None:
        visual_tokens = model.default_num_visual_tokens
    return Workload(visual_tokens, text_tokens, batch)
