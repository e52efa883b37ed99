"""Output files from the command line: paths checked before any work, one-line errors with
exit code 2, devices and FIFOs never replaced, symlinks followed, SIGTERM like Ctrl-C (exit
143, no temporary file left), and a failing stdout reported in one line."""

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_helpers import one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]
HAS_PROC = os.path.isdir("/proc")




def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def never_called(*args, **kwargs):
    raise AssertionError("the command did work before checking its output path")


@pytest.mark.skipif(not HAS_PROC, reason="no /proc")
@pytest.mark.parametrize("args", [
    ("sweep", "--output", "/proc/x.csv"),
    ("plot", "roofline", "--output", "/proc/x.png"),
    ("validate", "--output", "/proc/x.json"),
    ("calibrate", "--output", "/proc/x.toml"),
    ("calibrate", "--output", "ok.toml", "--nominal-output", "/proc/x.toml"),
    ("prune", "img.png", "--encoder", "dinov2-s14", "--output", "/proc/x.json"),
    ("prune", "img.png", "--encoder", "dinov2-s14", "--overlay", "/proc/overlays"),
])
def test_unwritable_output_fails_before_any_work(capsys, monkeypatch, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("fpcost.api.sweep", never_called)
    monkeypatch.setattr("fpcost.api.estimate", never_called)
    pytest.importorskip("torch")
    monkeypatch.setattr("fpcost.pruner.encoders.load_encoder", never_called)
    monkeypatch.setattr("fpcost.pruner.calibrate.calibrate", never_called)
    monkeypatch.setattr("fpcost.pruner.timing.resolve_device", never_called)
    code, _, err = run_cli(capsys, *args)
    one_line_error(code, err, "cannot create files in directory /proc")
    assert listing(tmp_path) == []


def test_calibrate_refuses_one_file_for_both_outputs(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    monkeypatch.setattr("fpcost.pruner.calibrate.calibrate", never_called)
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.toml").symlink_to(tmp_path / "cpu.toml")
    for nominal in (tmp_path / "sub" / ".." / "cpu.toml", tmp_path / "link.toml"):
        code, _, err = run_cli(capsys, "calibrate", "--output", tmp_path / "cpu.toml",
                               "--nominal-output", nominal)
        one_line_error(code, err, "are the same file")
    assert listing(tmp_path) == ["link.toml", "sub"]


def test_sweep_to_dev_null_leaves_the_device(capsys):
    before = os.stat("/dev/null")
    code, out, err = run_cli(capsys, "sweep", "--format", "csv", "-o", "/dev/null")
    assert code == 0 and out == "" and "wrote 1 configurations to /dev/null" in err
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino,
                                                                             before.st_rdev)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_sweep_to_dev_full_is_one_line_exit_2(capsys):
    code, _, err = run_cli(capsys, "sweep", "--format", "csv", "-o", "/dev/full")
    one_line_error(code, err, "cannot write /dev/full: No space left on device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_sweep_into_a_directory_or_missing_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, "sweep", "--format", "csv", "-o", tmp_path / "no" / "x.csv")
    one_line_error(code, err, "does not exist")
    code, _, err = run_cli(capsys, "sweep", "--format", "csv", "-o", tmp_path)
    one_line_error(code, err, "is a directory")
    assert listing(tmp_path) == []


def test_sweep_through_a_symlink_and_into_a_fifo(capsys, tmp_path):
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "real.csv").chmod(0o640)
    (tmp_path / "link.csv").symlink_to("real.csv")
    code, _, _ = run_cli(capsys, "sweep", "-o", tmp_path / "link.csv")
    assert code == 0 and (tmp_path / "link.csv").is_symlink()
    text = (tmp_path / "real.csv").read_text()
    assert text.startswith("model,hardware,") and len(text.splitlines()) == 2
    assert stat.S_IMODE((tmp_path / "real.csv").stat().st_mode) == 0o640

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    code, _, _ = run_cli(capsys, "sweep", "--format", "csv", "-o", fifo)
    reader.join(timeout=60)
    assert code == 0 and received == [text]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert listing(tmp_path) == ["link.csv", "pipe", "real.csv"]


def test_ctrl_c_while_writing_exits_130_without_a_temporary(capsys, monkeypatch, tmp_path):
    target = tmp_path / "x.csv"
    target.write_text("old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("fpcost.files.os.fsync", interrupted)
    code, _, err = run_cli(capsys, "sweep", "-o", target)
    assert code == 130 and "Aborted" in err
    assert target.read_text() == "old" and listing(tmp_path) == ["x.csv"]


def test_main_restores_the_sigterm_handler(capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert run_cli(capsys, "hardware", "--format", "json")[0] == 0
    assert signal.getsignal(signal.SIGTERM) is before


# A driver around the real entry point: it announces each output write on stderr, and
# (SLOW_FSYNC) sleeps inside the atomic write, after the temporary file exists.
DRIVER = """
import os, sys, time
import fpcost.cli.files as cli_files
write = cli_files.write_atomic
def announced(*args, **kwargs):
    print("writing", file=sys.stderr, flush=True)
    return write(*args, **kwargs)
cli_files.write_atomic = announced
if os.environ.get("SLOW_FSYNC"):
    import fpcost.files
    fpcost.files.os.fsync = lambda fd: time.sleep(120)
from fpcost.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def terminate_while_writing(tmp_path, env_extra, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *map(str, args)], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline() == "writing\n"
        time.sleep(0.5)  # into the slow fsync, or blocked opening the FIFO
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, rest


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_mid_write_exits_143_and_removes_the_temporary(tmp_path):
    target = tmp_path / "X.csv"
    target.write_text("old")
    code, err = terminate_while_writing(tmp_path, {"SLOW_FSYNC": "1"}, "sweep", "-o", "X.csv")
    assert code == 143, err
    assert err.strip().splitlines() == ["Terminated."]
    assert target.read_text() == "old" and listing(tmp_path) == ["X.csv"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_while_blocked_on_a_fifo_exits_143(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # nobody reads: the write blocks in open()
    code, err = terminate_while_writing(tmp_path, {}, "sweep", "--format", "csv", "-o", "pipe")
    assert code == 143, err
    assert err.strip().splitlines() == ["Terminated."]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and listing(tmp_path) == ["pipe"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
@pytest.mark.parametrize("args", [("estimate", "--format", "csv"), ("estimate",),
                                  ("sweep", "--format", "csv", "-o", "/dev/stdout")])
def test_stdout_on_a_full_disk_is_one_line_exit_2(tmp_path, args):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "fpcost.cli.main", *args], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: cannot write ") and "No space left on device" in lines[0]


def test_sweep_to_dev_stdout_appends_to_a_redirected_file(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("earlier line\n")
    with open(log, "a") as handle:
        proc = subprocess.run([sys.executable, "-m", "fpcost.cli.main", "sweep", "--format", "csv",
                               "-o", "/dev/stdout"], stdout=handle, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier line" and lines[1].startswith("model,") and len(lines) == 3
    assert listing(tmp_path) == ["log.csv"]


@pytest.mark.parametrize("argv", [["sweep", "--output", "a\x00b"], ["estimate", "--config", "a\x00b"],
                                  ["prune", "a\x00b.png", "--encoder", "dinov2-s14"]])
def test_a_nul_byte_in_an_argument_is_one_line(capsys, argv):
    from fpcost.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NUL byte" in err and "a\\x00b" in err


def test_prune_refuses_to_write_its_results_over_an_input_image(capsys, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    monkeypatch.setattr("fpcost.pruner.encoders.load_encoder", never_called)
    image = tmp_path / "a.png"
    image.write_bytes(b"not really a png")
    (tmp_path / "link.json").symlink_to(image)
    for output in (image, tmp_path / "link.json"):
        code, _, err = run_cli(capsys, "prune", image, "--encoder", "dinov2-s14",
                               "--output", output)
        one_line_error(code, err, "is the input image")
    assert image.read_bytes() == b"not really a png"
