"""fpcost plot: the commands write PNG files; without matplotlib, a one-line error."""

import os
import re
import stat
import sys
import threading

import pytest

from tests.cli_helpers import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



def test_roofline_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "roofline.png"
    code, _, err = run_cli(capsys, "plot", "roofline", "--model", "llava-1.5-7b", "--hardware",
                           "a6000", "--keep-ratio", "0.5", "--output", str(target))
    assert code == 0, err
    data = target.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofline.png"]


def test_sweep_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "sweep.png"
    code, _, err = run_cli(capsys, "plot", "sweep", "--model", "videollava", "--hardware", "h100",
                           "--bits", "16", "--bits", "4", "--keep-ratios", "0.1:1:0.1",
                           "--output", str(target))
    assert code == 0, err
    assert target.read_bytes().startswith(PNG_MAGIC)


def test_roofline_points_and_ceilings(a6000):
    pytest.importorskip("matplotlib")
    import fpcost
    from fpcost import plot

    result = fpcost.estimate(bits=4, hardware=a6000)
    points = plot.operator_points(result)
    assert len(points) == len(result.operators)
    for stage in ("prefill", "decode"):
        assert sum(p["time_share"] for p in points if p["stage"] == stage) == pytest.approx(1.0)
    for point in points:  # nothing is above the roof
        assert point["attained_flops_per_s"] <= min(
            a6000.hbm_bandwidth_bytes_per_s * point["intensity_flops_per_byte"],
            max(peak for _, peak in plot.ceilings([result]))) * (1 + 1e-12)
    # the LLM at INT4; the vision tower and projector at FP16 (tensor and vector)
    assert [label for label, _ in plot.ceilings([result])] == ["INT4 tensor", "FP16 tensor", "FP16 vector"]


@pytest.mark.parametrize("args, message", [
    (["roofline", "--output", "roof.jpg"], "roof.jpg must end in .png"),
    (["roofline", "--keep-ratio", "0", "--output", "r.png"],
     r"Invalid value for --keep-ratio: 0\.0 is not a fraction in \(0, 1\]"),
    (["sweep", "--keep-ratios", "2", "--output", "s.png"], r"keep ratio 2 is outside \(0, 1\]"),
    (["roofline"], "Missing option '--output'"),
])
def test_plot_errors_are_one_line(capsys, tmp_path, monkeypatch, args, message):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "plot", *args)
    assert code != 0 and err.count("\n") == 1
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # hide already-imported submodules too
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.delitem(sys.modules, "fpcost.plot", raising=False)
    code, _, err = run_cli(capsys, "plot", "roofline", "--output", str(tmp_path / "r.png"))
    assert code == 2
    assert err == "Error: fpcost plot needs matplotlib: pip install 'fpcost[plot]'\n"


def test_plot_writes_to_a_stream_without_a_png_suffix(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    code, _, err = run_cli(capsys, "plot", "roofline", "--output", str(fifo))
    reader.join(timeout=60)
    assert code == 0, err
    assert received and received[0].startswith(b"\x89PNG\r\n\x1a\n")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the FIFO, not replaced by a file
