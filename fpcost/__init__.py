"""fpcost: a roofline cost model of LLaVA-style multimodal models, with a real
freePruner visual-token pruning backend.

    >>> import fpcost
    >>> fpcost.estimate("llava-1.5-7b", "a6000", bits=4, keep_ratio=0.5).totals()
    >>> fpcost.sweep(hardware=["a6000", "h100"], bits=[16, 4], keep_ratio=[0.25, 0.5, 1])
    >>> fpcost.serve("llava-1.5-7b", "a6000", rate=2, keep_ratio=0.25).summary

Importing this package is cheap: the names below load on first use (module-level
``__getattr__``), so ``import fpcost`` imports neither numpy nor pandas, and torch is never
imported from here (only ``fpcost.pruner`` imports torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> module defining it, imported on first access.
_LAZY = {
    "estimate": "fpcost.api",
    "sweep": "fpcost.api",
    "serve": "fpcost.api",
    "ServeResult": "fpcost.api",
    "Estimate": "fpcost.costmodel.estimate",
    "StageTotals": "fpcost.costmodel.estimate",
    "ModelSpec": "fpcost.costmodel.spec",
    "QuantPlan": "fpcost.costmodel.quant",
    "Workload": "fpcost.costmodel.workload",
    "HardwareProfile": "fpcost.costmodel.hardware",
    "Parallelism": "fpcost.costmodel.parallel",
    "FpcostError": "fpcost.costmodel.errors",
    "load_profile": "fpcost.hardware_profiles",
    "list_profiles": "fpcost.hardware_profiles",
    "model_names": "fpcost.costmodel.presets",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fpcost' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
