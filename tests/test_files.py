"""fpcost.files: the one output writer. Regular files are replaced atomically with their mode
kept; devices and FIFOs are written straight through and never replaced; symlinks are
followed; directories, missing parents, block devices and sockets are refused. Safe as root:
everything happens in tmp_path, /dev/null and /dev/full are only written, never replaced."""

import errno
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from fpcost.costmodel.errors import FpcostError, OutputError
from fpcost.files import check_output_dir, check_output_path, write_output

HAS_PROC = os.path.isdir("/proc/self/fd")


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_new_file_gets_0666_less_the_umask(tmp_path, umask_022):
    target = write_output(tmp_path / "new.csv", "a,b\n")
    assert target.read_text() == "a,b\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    os.umask(0o077)
    write_output(tmp_path / "private.csv", b"x")
    assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600
    assert listing(tmp_path) == ["new.csv", "private.csv"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_existing_file_keeps_its_mode_and_is_replaced(tmp_path, mode):
    target = tmp_path / "report.json"
    target.write_text("old content, longer than the new one")
    target.chmod(mode)
    inode = target.stat().st_ino
    write_output(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert target.stat().st_ino != inode  # a new file moved over the old one: atomic
    assert listing(tmp_path) == ["report.json"]


def test_symlink_is_followed_and_stays_a_link(tmp_path):
    real = tmp_path / "data" / "out.csv"
    real.parent.mkdir()
    real.write_text("old")
    real.chmod(0o600)
    link = tmp_path / "link.csv"
    link.symlink_to(Path("data") / "out.csv")
    write_output(link, "new")
    assert link.is_symlink() and os.readlink(link) == os.path.join("data", "out.csv")
    assert real.read_text() == "new" and stat.S_IMODE(real.stat().st_mode) == 0o600
    assert listing(tmp_path) == ["data", "link.csv"] and listing(real.parent) == ["out.csv"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "target.csv")
    write_output(link, "new")
    assert link.is_symlink() and (tmp_path / "target.csv").read_text() == "new"


def test_symlink_loop_is_refused(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(OutputError, match="symbolic links"):
        check_output_path(loop)
    with pytest.raises(OutputError, match="symbolic links"):
        write_output(loop, "x")


def test_directory_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    for call in (check_output_path, lambda p: write_output(p, "x")):
        with pytest.raises(OutputError, match=r"^cannot write .*out: it is a directory"):
            call(tmp_path / "out")
    assert (tmp_path / "out").is_dir() and listing(tmp_path / "out") == []


def test_missing_parent_is_refused_and_nothing_created(tmp_path):
    target = tmp_path / "no" / "such" / "x.json"
    with pytest.raises(OutputError, match=f"directory {tmp_path / 'no' / 'such'} does not exist"):
        check_output_path(target, option="--output")
    with pytest.raises(OutputError, match="does not exist"):
        write_output(target, "x", what="results file")
    assert listing(tmp_path) == []


def test_parent_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="Not a directory"):
        check_output_path(tmp_path / "file" / "x.csv")
    assert (tmp_path / "file").read_text() == "x"


def test_check_names_the_option_and_leaves_nothing(tmp_path):
    (tmp_path / "keep.csv").write_text("old")
    assert check_output_path(tmp_path / "keep.csv", option="--output") == tmp_path / "keep.csv"
    assert check_output_path(tmp_path / "new.csv") == tmp_path / "new.csv"
    assert listing(tmp_path) == ["keep.csv"] and (tmp_path / "keep.csv").read_text() == "old"
    with pytest.raises(OutputError, match="^cannot write --output: the path is empty$"):
        check_output_path("", option="--output")


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="no /proc")
def test_a_directory_that_takes_no_files_is_refused_even_as_root():
    # /proc refuses new files whatever the permission bits say (os.access says yes to root).
    with pytest.raises(OutputError, match=r"^cannot write --output /proc/x\.json: cannot create "
                                          r"files in directory /proc \("):
        check_output_path("/proc/x.json", option="--output")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write read-only files")
def test_read_only_file_is_refused(tmp_path):
    target = tmp_path / "ro.csv"
    target.write_text("old")
    target.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        check_output_path(target)
    assert target.read_text() == "old"


def test_dev_null_is_written_through_and_stays_a_device():
    before = os.stat("/dev/null")
    assert stat.S_ISCHR(before.st_mode)
    write_output("/dev/null", "a,b\n" * 1000)
    check_output_path("/dev/null")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_dev_full_gives_a_one_line_error_and_stays_a_device():
    before = os.stat("/dev/full")
    with pytest.raises(OutputError) as caught:
        write_output("/dev/full", "x" * 10, what="results file")
    assert str(caught.value) == "cannot write results file /dev/full: No space left on device"
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino,
                                                                             before.st_rdev)


def test_fifo_is_written_through_to_its_reader(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    payload = b"0123456789" * 20_000  # larger than a pipe buffer: written in several pieces
    write_output(fifo, payload)
    reader.join(timeout=30)
    assert not reader.is_alive() and received == [payload]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and listing(tmp_path) == ["pipe"]


def test_fifo_reader_gone_is_a_broken_pipe(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def read_one_byte_and_leave():
        with open(fifo, "rb") as handle:
            handle.read(1)

    reader = threading.Thread(target=read_one_byte_and_leave)
    reader.start()
    with pytest.raises(BrokenPipeError):  # the CLI reports it as click does any broken pipe
        write_output(fifo, b"x" * 10_000_000)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="no /dev/fd")
def test_descriptor_paths_write_to_the_open_descriptor(tmp_path):
    # /dev/fd/N (and /dev/stdout = /proc/self/fd/1) keep the shell's redirection: here an
    # append-mode file (``>> log``) is appended to, not replaced or truncated.
    log = tmp_path / "log"
    log.write_text("first\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        check_output_path(f"/dev/fd/{fd}")
        write_output(f"/dev/fd/{fd}", "second\n")
        if HAS_PROC:
            write_output(f"/proc/self/fd/{fd}", "third\n")
    finally:
        os.close(fd)
    assert log.read_text() == "first\nsecond\n" + ("third\n" if HAS_PROC else "")
    assert listing(tmp_path) == ["log"]
    read_end, write_end = os.pipe()
    try:
        write_output(f"/dev/fd/{write_end}", b"through a pipe")
        assert os.read(read_end, 100) == b"through a pipe"
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(OutputError, match=f"file descriptor {write_end} is not open"):
        check_output_path(f"/dev/fd/{write_end}")


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(path))
        except OSError as exc:  # a path too long for AF_UNIX on some systems
            pytest.skip(str(exc))
        with pytest.raises(OutputError, match="it is a socket or other special file, not a file"):
            write_output(path, "x")
        assert stat.S_ISSOCK(path.stat().st_mode)


def test_block_device_is_refused(tmp_path):
    node = tmp_path / "blk"
    try:
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 250))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    for call in (check_output_path, lambda p: write_output(p, "x")):
        with pytest.raises(OutputError, match="it is a block device, not a file"):
            call(node)
    assert stat.S_ISBLK(node.stat().st_mode)


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr("fpcost.files.os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_output(target, "new" * 1000)
    assert target.read_text() == "old" and listing(tmp_path) == ["report.json"]


def test_disk_full_mid_write_is_an_output_error(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("fpcost.files.os.fsync", full)
    with pytest.raises(OutputError, match=r"^cannot write validation report .*report\.json: No space"):
        write_output(target, "new", what="validation report")
    assert target.read_text() == "old" and listing(tmp_path) == ["report.json"]
    assert issubclass(OutputError, FpcostError)


def test_check_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", option="--overlay") == tmp_path / "a" / "b"
    assert listing(tmp_path) == []  # checked, not created
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"^cannot write --overlay directory .*file: is not a "):
        check_output_dir(tmp_path / "file", option="--overlay")
    with pytest.raises(OutputError, match=r"file is not a directory"):
        check_output_dir(tmp_path / "file" / "sub")
    if os.path.isdir("/proc"):
        with pytest.raises(OutputError, match="cannot create files in directory /proc"):
            check_output_dir("/proc/overlays")


def test_every_writer_follows_the_same_rule(tmp_path, umask_022):
    """The profile writer, the results-file writer, the overlay writer and the CLI's writer
    are one function: same permissions (profiles were 0600, the rest 0644), same refusals."""
    from fpcost.cli.files import write_atomic
    from fpcost.hardware_profiles import load_profile, write_profile
    from fpcost.pruner.results import write_json_atomic

    writers = {
        "profile.toml": lambda p: write_profile(load_profile("a6000"), p),
        "results.json": lambda p: write_json_atomic(p, {"images": []}),
        "sweep.csv": lambda p: write_atomic(p, "a,b\n"),
    }
    try:
        from PIL import Image

        from fpcost.pruner.results import ImageResult
        from fpcost.pruner.run import save_overlay

        result = ImageResult("x.png", 4, [0], [0], [], [], 0.0, (2, 2))
        writers["overlay.png"] = lambda p: save_overlay(result, Image.new("RGB", (28, 28)), 14, p)
    except ImportError:  # the base install: no torch
        pass
    for name, write in writers.items():
        write(tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        (tmp_path / name).chmod(0o600)
        write(tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        with pytest.raises(OutputError, match="does not exist"):
            write(tmp_path / "missing" / name)
        before = os.stat("/dev/null")
        write("/dev/null")
        assert os.stat("/dev/null").st_ino == before.st_ino
    assert listing(tmp_path) == sorted(writers)
