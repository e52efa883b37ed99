"""A fixture that switches the noise detectors off, for tests that run real (tiny,
unrepresentative) kernels only to check shapes, keys and files: their timings are
microseconds on a shared machine, and the detectors would rightly refuse them."""

import pytest


@pytest.fixture
def quiet_machine(monkeypatch):
    from fpcost.pruner import calibrate as calibrate_module
    from fpcost.pruner import request as request_module
    from fpcost.pruner import validate as validate_module

    for module in (calibrate_module, validate_module, request_module):
        monkeypatch.setattr(module, "high_spread", lambda *args, **kwargs: [])
    for module in (calibrate_module, validate_module):
        monkeypatch.setattr(module, "non_monotonic", lambda *args, **kwargs: [])
    monkeypatch.setattr(calibrate_module, "efficiencies_out_of_range", lambda *args, **kwargs: [])
    # tiny modules can time below their launches at a real launch time: 1 ns, the least a
    # profile accepts
    monkeypatch.setattr(calibrate_module, "measure_launch_s", lambda *args, **kwargs: 1e-9)
    # and validate accepts the resulting (meaningless) efficiencies
    from fpcost.costmodel import noise

    monkeypatch.setattr(noise, "efficiencies_out_of_range", lambda *args, **kwargs: [])
