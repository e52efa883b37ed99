"""Fixtures of the CLI fuzz tests: one scratch directory per session (``scratch.build``), the
tiny encoder saved in it, and calibrate's / validate's measurements replaced by a stop."""

import json
import os

import pytest
from hypothesis import HealthCheck, Phase, settings

from . import scratch

# FPCOST_FUZZ_EXAMPLES=N runs N examples per command (the suite's defaults keep the whole
# fuzz module near a minute on two cores); FPCOST_FUZZ_SHRINK=1 shrinks a failing case
# to a minimal one (slow: every shrink step is a whole command).
EXAMPLES = int(os.environ.get("FPCOST_FUZZ_EXAMPLES", "0"))
SHRINK = os.environ.get("FPCOST_FUZZ_SHRINK") == "1"


def fuzz_settings(max_examples: int):
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if SHRINK else [])
    return settings(max_examples=EXAMPLES or max_examples, deadline=None, derandomize=True,
                    database=None, phases=phases, print_blob=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


TINY_LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 64,
              "vocab_size": 128}


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory):
    """The scratch directory every case runs in (its working directory)."""
    root = scratch.build(tmp_path_factory.mktemp("fuzz"))
    (root / "configs/tiny-llama.json").write_text(json.dumps(TINY_LLAMA))
    return root


@pytest.fixture(scope="session")
def prune_root(fuzz_root):
    """``fuzz_root`` with the tiny encoder saved as ``model/`` (needs torch)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if not (fuzz_root / "model").exists():
        scratch.tiny_encoder_dir(fuzz_root)
    return fuzz_root


@pytest.fixture(scope="session")
def measured_root(prune_root):
    """``prune_root`` with a CPU profile of this machine (``profiles/this-cpu.toml``) and the
    measurements of calibrate and validate replaced by ``refuse_measurement``."""
    from fpcost.costmodel.calibration import build_profile
    from fpcost.hardware_profiles import write_profile
    from fpcost.pruner import calibrate as calibrate_module
    from fpcost.pruner import validate as validate_module
    from fpcost.pruner.timing import cpu_name
    from tests.test_calibration import measurements

    from .harness import refuse_measurement

    path = prune_root / "profiles/this-cpu.toml"
    if not path.exists():
        measured = measurements()
        measured = type(measured)(**{**measured.__dict__, "device_name": cpu_name(),
                                     "provenance": {"device": cpu_name(), "threads": "1"}})
        write_profile(build_profile(measured, "this-cpu"), path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calibrate_module, "calibrate", refuse_measurement)
        patch.setattr(validate_module, "measure_prefills", refuse_measurement)
        yield prune_root


@pytest.fixture
def fresh_specials(fuzz_root):
    """Device nodes and symlinks of the scratch directory as built (a failing case may have
    replaced one)."""
    scratch.make_specials(fuzz_root)
    return fuzz_root
