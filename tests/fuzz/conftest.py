"""Fixtures of the CLI fuzz tests: one scratch directory per session (``scratch.build``), the
tiny encoder saved in it, and calibrate's / validate's measurements replaced by a stop."""

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


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory):
    """The scratch directory every case runs in (its working directory)."""
    return scratch.build(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="session")
def prune_root(fuzz_root):
    """``fuzz_root`` with the tiny encoder saved as ``model/`` (needs torch)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    scratch.tiny_encoder_dir(fuzz_root)
    return fuzz_root


@pytest.fixture(scope="session")
def cpu_profile_root(prune_root):
    """``prune_root`` with a CPU profile of this machine (``profiles/this-cpu.toml``)."""
    scratch.write_cpu_profile(prune_root)
    return prune_root


@pytest.fixture
def measured_root(cpu_profile_root, monkeypatch):
    """``cpu_profile_root``, with the measurements of calibrate and validate replaced by
    ``refuse_measurement`` for the duration of one test."""
    from fpcost.pruner import calibrate as calibrate_module
    from fpcost.pruner import validate as validate_module

    from .harness import refuse_measurement

    monkeypatch.setattr(calibrate_module, "calibrate", refuse_measurement)
    monkeypatch.setattr(validate_module, "measure_prefills", refuse_measurement)
    return cpu_profile_root
