import pytest

from fpcost.hardware_profiles import load_profile


@pytest.fixture(scope="session")
def a6000():
    return load_profile("a6000")


@pytest.fixture(scope="session")
def a100():
    return load_profile("a100-40g")
