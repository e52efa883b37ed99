import os

import pytest
from hypothesis import settings

from fpcost.hardware_profiles import load_profile

# CI runs the property tests on a fixed sequence of examples, so a red run reproduces.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def a6000():
    return load_profile("a6000")


@pytest.fixture(scope="session")
def a100():
    return load_profile("a100-40g")
