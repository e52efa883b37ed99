"""Output files: the one place fpcost writes a file the user named.

Every command that writes (``prune --output``/``--overlay``, ``calibrate``, ``validate
--output``, ``sweep -o``, ``plot --output``) goes through ``write_output``, and checks its
paths with ``check_output_path`` / ``check_output_dir`` before doing any work. The rules:

- a regular file, or a new path, is written atomically: a temporary file beside the target
  (``.NAME.XXXX.tmp``), fsync, ``os.replace``; a reader sees the old file or the whole new
  one, and an interrupted write (Ctrl-C, SIGTERM, a full disk) leaves no temporary file;
- a new file gets 0666 less the umask; an existing file keeps its permission bits;
- a symlink is followed: its target is replaced, the link stays a link;
- a character device or a FIFO (``/dev/null``, a terminal, ``mkfifo``) is written straight
  through, never replaced; ``/dev/stdout``, ``/dev/stderr`` and ``/dev/fd/N`` write to the
  open descriptor, so shell redirections (``>``, ``>>``, pipes) keep their meaning;
- a directory, a missing parent directory, a block device or a socket is refused.

Errors are ``OutputError``: one line naming the path and the reason. No click, rich or torch
here: the CLI, the pruner and the profile writer all use this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fpcost.costmodel.errors import OutputError

# /dev/stdout -> /proc/self/fd/1 on Linux; /dev/fd/N on Linux and the BSDs.
_STANDARD_STREAMS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_ALIAS = re.compile(r"^/(?:dev/fd|proc/(?:self|thread-self|(?P<pid>\d+))/fd)/(?P<fd>\d+)$")
_MAX_LINKS = 40  # Linux's own limit on symlinks followed in one lookup
# Signals fpcost turns into exceptions (cli/main.py); held while a temporary file is made,
# so one cannot arrive between its creation and the code that removes it.
_HELD_SIGNALS = {signal.SIGINT, getattr(signal, "SIGTERM", signal.SIGINT)}


@dataclass(frozen=True)
class _Target:
    """Where and how a path is written. ``kind``: ``descriptor`` (an open fd of this
    process), ``stream`` (char device or FIFO, opened and written), ``replace`` (an
    existing regular file) or ``create`` (a new file)."""

    kind: str
    path: str  # the file actually written: the symlink's target for replace / create
    fd: int | None = None
    st: os.stat_result | None = None


def check_output_path(path: str | os.PathLike[str], option: str | None = None,
                      what: str | None = None) -> Path:
    """Refuse, before any work, an output path that ``write_output`` could not write: a
    directory, a missing or unwritable parent directory, a read-only file, a block device or
    socket. Creates nothing that stays (the parent directory is probed with a temporary file
    that is removed at once). Returns ``path`` as a ``Path``."""
    label = _label(path, option, what)
    target = _resolve(path, label)
    if target.kind in ("replace", "create"):
        _probe_directory(os.path.dirname(target.path), label)
    return Path(path)


def check_output_dir(path: str | os.PathLike[str], option: str | None = None) -> Path:
    """Refuse an output directory (``prune --overlay DIR``) that cannot be created or written:
    an existing non-directory, or no writable directory to create it in."""
    label = _label(path, option, "directory")
    existing = os.path.abspath(os.fspath(path))
    while not os.path.lexists(existing):  # the nearest ancestor that exists: mkdir -p starts there
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is" if existing == os.path.abspath(os.fspath(path)) else f"{existing} is"
        raise OutputError(f"cannot write {label}: {what} not a directory")
    _probe_directory(existing, label)
    return Path(path)


def write_output(path: str | os.PathLike[str], data: str | bytes, what: str | None = None) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` by the rules in the module
    docstring. Returns ``path``; raises ``OutputError`` naming ``what`` and the path."""
    label = _label(path, None, what)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    target = _resolve(path, label)
    try:
        if target.kind == "descriptor":
            if target.fd in (1, 2):  # whatever Python buffered goes first
                (sys.stdout if target.fd == 1 else sys.stderr).flush()
            _write_all(target.fd, payload)
        elif target.kind == "stream":
            fd = os.open(target.path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
            try:
                _write_all(fd, payload)
            finally:
                os.close(fd)
        else:
            _replace(target, payload, label)
    except BrokenPipeError:
        raise  # the reader went away (``| head``): not an error of the path
    except OSError as exc:
        raise OutputError(f"cannot write {label}: {_reason(exc)}") from None
    return Path(path)


def _replace(target: _Target, payload: bytes, label: str) -> None:
    """Temporary file beside ``target.path``, fsync, ``os.replace``; the temporary file is
    removed on any failure or interruption."""
    directory, name = os.path.split(target.path)
    fd, tmp = -1, None
    try:
        with _signals_held():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        if target.st is not None:  # keep the existing file's owner (as root) and mode
            if (target.st.st_uid, target.st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(OSError):
                    os.fchown(fd, target.st.st_uid, target.st.st_gid)
            os.fchmod(fd, stat.S_IMODE(target.st.st_mode))
        else:
            os.fchmod(fd, 0o666 & ~_umask())
        _write_all(fd, payload)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target.path)
        tmp = None
        _fsync_directory(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _resolve(path: str | os.PathLike[str], label: str) -> _Target:
    """Classify ``path`` (following symlinks) into a ``_Target``, or raise ``OutputError``."""
    text = os.fspath(path)
    if not text:
        raise OutputError(f"cannot write {label}: the path is empty")
    fd = _descriptor_alias(text)
    if fd is not None:
        try:
            os.fstat(fd)
        except OSError:
            raise OutputError(f"cannot write {label}: file descriptor {fd} is not open") from None
        return _Target("descriptor", text, fd=fd)
    try:
        st = os.stat(text)  # follows symlinks
    except FileNotFoundError:
        real = os.path.realpath(text)  # a dangling symlink: create its target
        parent = os.path.dirname(real if os.path.islink(text) else text) or "."
        if not os.path.exists(parent):
            raise OutputError(f"cannot write {label}: directory {parent} does not exist") from None
        if not os.path.isdir(parent):
            raise OutputError(f"cannot write {label}: {parent} is not a directory") from None
        return _Target("create", real)
    except OSError as exc:  # ELOOP, ENOTDIR, EACCES, ENAMETOOLONG
        raise OutputError(f"cannot write {label}: {_reason(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {label}: it is a directory; give a file name")
    if stat.S_ISREG(st.st_mode):
        if not os.access(text, os.W_OK):
            raise OutputError(f"cannot write {label}: the file is read-only (permission denied)")
        return _Target("replace", os.path.realpath(text), st=st)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        if not os.access(text, os.W_OK):
            raise OutputError(f"cannot write {label}: permission denied")
        return _Target("stream", text)
    kind = "a block device" if stat.S_ISBLK(st.st_mode) else "a socket or other special file"
    raise OutputError(f"cannot write {label}: it is {kind}, not a file")


def is_stream(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a stream rather than a file: an open descriptor (/dev/stdout,
    /dev/fd/N), a character device (/dev/null) or a FIFO. A stream has no file name to
    check a suffix on."""
    try:
        return _resolve(path, os.fspath(path)).kind in ("descriptor", "stream")
    except OutputError:
        return False


def _descriptor_alias(text: str) -> int | None:
    """The descriptor number if ``text`` (or a symlink on its way) names one of this
    process's open descriptors (/dev/stdout, /dev/fd/3, /proc/self/fd/1), else None."""
    current = os.path.abspath(text)
    for _ in range(_MAX_LINKS):
        if current in _STANDARD_STREAMS and not os.path.islink(current):
            return _STANDARD_STREAMS[current]  # a system without the /proc link
        match = _FD_ALIAS.match(current)
        if match and (match["pid"] is None or int(match["pid"]) == os.getpid()):
            return int(match["fd"])
        try:
            link = os.readlink(current)
        except OSError:  # not a link, or unreadable: os.stat has the last word
            return None
        current = os.path.abspath(os.path.join(os.path.dirname(current), link))
    return None  # a loop: os.stat reports it


def _probe_directory(directory: str, label: str) -> None:
    """Create and remove a temporary file in ``directory``: the only test that holds for
    root and for file systems such as /proc that refuse new files whatever the mode bits."""
    directory = directory or "."
    fd, tmp = -1, None
    try:
        with _signals_held():
            fd, tmp = tempfile.mkstemp(prefix=".fpcost-probe.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(
            f"cannot write {label}: cannot create files in directory {directory} ({_reason(exc)})"
        ) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Block SIGINT and SIGTERM at the OS level for the duration: a signal arriving then is
    delivered when the block ends, after the caller can clean up."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; some file systems cannot open or fsync a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _label(path: str | os.PathLike[str], option: str | None, what: str | None) -> str:
    return " ".join(part for part in (option, what, os.fspath(path)) if part)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
