"""The Python API: fpcost.estimate / fpcost.sweep with names or objects, and a cheap
``import fpcost``."""

import json
import subprocess
import sys

import pandas as pd
import pytest

import fpcost
from fpcost.costmodel.errors import ConfigError, FpcostError, HardwareError, WorkloadError
from fpcost.costmodel.estimate import Estimate, estimate
from fpcost.costmodel.presets import get_preset
from fpcost.costmodel.quant import QuantPlan
from fpcost.costmodel.workload import Workload

from .test_hfconfig import LLAVA_15_7B


def test_import_fpcost_loads_no_numpy_pandas_or_torch():
    code = ("import sys, fpcost; fpcost.__version__; "
            "print([m for m in ('numpy', 'pandas', 'torch', 'transformers', 'matplotlib', 'click') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_estimate_loads_no_pandas_until_a_frame_is_asked_for():
    code = ("import sys, fpcost; e = fpcost.estimate(bits=4, keep_ratio=0.5); e.totals(); "
            "print('pandas' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_lazy_attributes():
    assert {"estimate", "sweep", "Estimate", "QuantPlan", "load_profile"} <= set(dir(fpcost))
    assert fpcost.QuantPlan is QuantPlan
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fpcost.nope  # noqa: B018


def test_estimate_by_name_equals_the_cost_model(a6000):
    result = fpcost.estimate("llava-1.5-7b", "A6000", bits=4, keep_ratio=0.5, batch=2)
    direct = estimate(get_preset("llava-1.5-7b"), Workload(288, 40, 2), a6000, QuantPlan.uniform(4))
    assert isinstance(result, Estimate)
    assert result.totals() == direct.totals()
    assert set(result.totals()) == {"vision", "selection", "projector", "prefill", "decode"}
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert frame.groupby("stage").time_s.sum()["prefill"] == pytest.approx(
        result.totals()["prefill"].time_s, rel=1e-12)


def test_estimate_takes_objects_config_paths_and_token_options(tmp_path, a100):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAVA_15_7B))
    from_file = fpcost.estimate(path, a100, quant="w4a16kv16", visual_tokens=100)
    from_dir = fpcost.estimate(str(tmp_path), a100, quant=QuantPlan(4, 16, 16), visual_tokens=100)
    from_spec = fpcost.estimate(get_preset("llava-1.5-7b"), a100, quant="w4a16", visual_tokens=100)
    assert from_file.totals() == from_dir.totals() == from_spec.totals()
    assert fpcost.estimate(tokens=100).workload == Workload(100, 0, 1)
    assert fpcost.estimate(stages=("decode",)).shown == ("decode",)
    assert tuple(fpcost.estimate(stages=("decode",)).totals()) == ("decode",)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"bits": 4, "quant": "w4a4"}, WorkloadError, "either bits or quant"),
    ({"bits": 3}, WorkloadError, "weight_bits = 3 is not supported"),
    ({"tokens": 10, "keep_ratio": 0.5}, WorkloadError, "give only one of tokens"),
    ({"visual_tokens": 10, "keep_ratio": 0.5}, WorkloadError, "give only one of tokens"),
    ({"keep_ratio": 2.0}, WorkloadError, r"keep ratio 2\.0 must be in \(0, 1\]"),
    ({"model": "llava-2"}, ConfigError, "unknown model 'llava-2'"),
    ({"model": "missing/config.json"}, ConfigError, "does not exist"),
    ({"hardware": "tpu"}, HardwareError, "unknown hardware profile 'tpu'"),
])
def test_estimate_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        fpcost.estimate(**kwargs)
    assert issubclass(error, FpcostError)


def test_sweep_by_name_takes_values_or_lists():
    frame = fpcost.sweep(model="llava-1.5-7b", hardware=["a6000", "h100"], bits=[16, 4],
                         quant="w4a16kv16", keep_ratio=[0.25, 0.5, 1], batch=[1, 8])
    assert len(frame) == 2 * 3 * 3 * 2
    assert list(dict.fromkeys(frame.quant)) == ["w16a16kv16", "w4a4kv4", "w4a16kv16"]
    assert list(dict.fromkeys(frame.hardware)) == ["a6000", "h100-sxm"]
    one = fpcost.sweep(visual_tokens=288)
    single = fpcost.estimate(visual_tokens=288).totals()["prefill"]
    assert one.prefill_time_s.tolist() == [single.time_s]
