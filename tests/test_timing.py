"""The device layer: CPU timers, a mocked CUDA device, bad devices and clocks. No timing
assertions: fake timers make every number deterministic."""

import types

import pytest
import torch

from fpcost.costmodel.errors import FpcostError
from fpcost.pruner.timing import (
    CudaTimer,
    DeviceError,
    ThreadTimer,
    WallTimer,
    fixed_threads,
    measure_s,
    memory_bytes,
    resolve_device,
    time_repeats,
)

HAS_CUDA = torch.cuda.is_available()


class FakeEvent:
    """A CUDA event whose record() takes the next tick of a shared clock (milliseconds)."""

    clock_ms = 0.0
    synchronized = 0

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.at_ms = None

    def record(self):
        FakeEvent.clock_ms += 10.0
        self.at_ms = FakeEvent.clock_ms

    def synchronize(self):
        FakeEvent.synchronized += 1

    def elapsed_time(self, end):
        return end.at_ms - self.at_ms


def fake_cuda(available=True):
    return types.SimpleNamespace(
        is_available=lambda: available, current_device=lambda: 0,
        get_device_name=lambda index: "Fake GPU 80GB", Event=FakeEvent,
        synchronize=lambda: None, mem_get_info=lambda device: (30e9, 80e9),
    )


class CountingTimer(WallTimer):
    """Each mark is the next integer: every timed call lasts exactly 1 s."""

    def __init__(self):
        self.ticks = 0

    def mark(self):
        self.ticks += 1
        return float(self.ticks)


def test_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda", cuda=fake_cuda(available=False))
    message = str(info.value)
    assert "no CUDA GPU" in message and "\n" not in message
    assert isinstance(info.value, FpcostError)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_real_torch_here_has_no_cuda():
    with pytest.raises(DeviceError, match="no CUDA GPU is available"):
        resolve_device("cuda")


def test_mocked_cuda_device_uses_events():
    device = resolve_device("cuda", cuda=fake_cuda())
    assert device.type == "cuda" and device.profile_device_type == "gpu"
    assert device.name == "Fake GPU 80GB"
    assert isinstance(device.timer, CudaTimer)
    start, end = device.timer.mark(), device.timer.mark()
    before = FakeEvent.synchronized
    assert device.timer.elapsed_s(start, end) == pytest.approx(0.010)  # 10 ms in seconds
    assert FakeEvent.synchronized == before + 1  # read only after synchronising on the end
    assert memory_bytes(device, cuda=fake_cuda()) == (80e9, 30e9)
    with pytest.raises(DeviceError, match="--clock thread applies to --device cpu only"):
        resolve_device("cuda", clock="thread", cuda=fake_cuda())


def test_cuda_timer_times_repeats():
    timer = CudaTimer(fake_cuda())
    assert time_repeats(lambda: None, timer, warmup=2, repeats=3) == pytest.approx([0.01] * 3)


def test_cpu_device_and_clocks():
    device = resolve_device("cpu", num_threads=1)
    assert device.type == "cpu" and device.profile_device_type == "cpu"
    assert isinstance(device.timer, WallTimer) and device.num_threads == 1
    assert isinstance(resolve_device("cpu", clock="thread", num_threads=1).timer, ThreadTimer)
    total, available = memory_bytes(device)
    assert total >= available > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "tpu"}, "--device 'tpu' is unknown"),
    ({"name": "cpu", "clock": "sundial"}, "--clock 'sundial' is unknown"),
    ({"name": "cpu", "clock": "thread", "num_threads": 2}, "needs --threads 1"),
    ({"name": "cpu", "num_threads": 0}, "--threads 0 must be a positive integer"),
])
def test_bad_device_arguments(kwargs, match):
    with pytest.raises(DeviceError, match=match):
        resolve_device(**kwargs)


def test_warmup_is_not_timed_and_median_is_taken():
    calls = []
    timer = CountingTimer()
    times = time_repeats(lambda: calls.append(1), timer, warmup=2, repeats=3)
    assert len(calls) == 5 and times == [1.0, 1.0, 1.0]
    assert measure_s(lambda: None, CountingTimer(), 0, 1) == 1.0
    with pytest.raises(DeviceError):
        time_repeats(lambda: None, timer, 0, 0)


def test_fixed_threads_restores_the_count():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_real_cuda_events():
    device = resolve_device("cuda")
    x = torch.randn(256, 256, device=device.torch_device)
    assert measure_s(lambda: x @ x, device.timer, 1, 3) > 0
