"""Atomic writes, in one place: a file, a file object or a folder appears at its destination only
once complete, and a failed, interrupted or killed writer leaves nothing behind.

Each write fills a hidden temporary ``.NAME.<owner>.<random>.tmp`` next to ``NAME`` and renames it
over ``NAME`` when complete; on an exception it removes it. SIGKILL (the OOM killer, a batch
scheduler's time limit) runs no clean-up, so the temporary would stay for ever, gigabytes large for a
streamed Zarr. Each write therefore first removes the temporaries of *its own* destination
(``.NAME.*.tmp`` and ``.NAME.*.old``, nothing else) whose writer is certainly gone:

* ``<owner>`` is ``HOST-PID`` of the writing process. It is part of the name from the moment the
  temporary exists (a marker file written afterwards would leave a moment without an owner).
* While writing, the writer also holds an advisory ``flock`` on the temporary (POSIX). The kernel
  drops it when the process dies, however it dies. A temporary whose lock is held is never removed:
  this protects writers the PID check cannot see (another PID namespace, a container sharing the
  host name).
* Written on this host (same host name), a temporary is abandoned once no process has its PID. A
  PID reused since only keeps it a little longer, until that process ends: the safe direction.
* Written on another host (a shared file system under a dask cluster), or named by an older
  napari-dgno without an owner, it cannot be checked from here: it is abandoned once it has not been
  modified for :data:`STALE_AFTER_S` (a week; no single image takes that long to write).

Removal is best effort: what cannot be removed (another user's file) is left, silently. This module
imports neither torch nor the model, so writing an image never loads them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

STALE_AFTER_S = 7 * 24 * 3600
SUFFIXES = (".tmp", ".old")
# Between ".NAME." and the suffix: "HOST-PID.RANDOM" (this module), or what older versions wrote:
# mkstemp's 8 random characters, or atomic_file's "PID-FD".
_OWNED = re.compile(r"(?P<host>[A-Za-z0-9-]+)-(?P<pid>[0-9]+)\.[A-Za-z0-9_]+")
_UNOWNED = re.compile(r"[a-z0-9_]{8}|[0-9]+-[0-9]+")


def _host() -> str:
    """The short host name, reduced to letters, digits and hyphens (it goes into file names)."""
    name = re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname().split(".")[0])[:24]
    return name or "host"


def temp_prefix(dest: str | os.PathLike) -> str:
    """``.NAME.HOST-PID.``: the prefix for ``tempfile.mkstemp`` / ``mkdtemp`` next to ``dest``."""
    return f".{Path(dest).name}.{_host()}-{os.getpid()}."


def hold_lock(fd: int) -> bool:
    """Take an exclusive advisory lock on ``fd`` (a file or a folder) for as long as it stays open;
    False where that is not possible (Windows, some network file systems)."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (ImportError, OSError):
        return False


def lock_folder(path: str | os.PathLike) -> int | None:
    """Open ``path`` (a folder) and lock it, see :func:`hold_lock`; the descriptor to close, or None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder
        return None
    if hold_lock(fd):
        return fd
    os.close(fd)
    return None


def _locked_by_someone(path: Path) -> bool:
    """Someone holds the lock on ``path``; False where locks cannot be taken at all."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:  # a shared probe conflicts with the writer's exclusive lock, and needs only read access
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # locks not supported here: decide by PID and age
        return False
    finally:
        os.close(fd)  # also releases the lock we may have taken
    return False


def _pid_running(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            import psutil
        except ImportError:
            return True  # cannot tell: leave it to the age rule
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or a PID out of range)
        return True
    return True


def is_abandoned(path: Path, middle: str, now: float | None = None) -> bool:
    """Whether the temporary ``path`` (``middle``: its name between ``.NAME.`` and the suffix) was
    left by a writer that is gone; see the module docstring for the rules."""
    owned = _OWNED.fullmatch(middle)
    if owned is None and _UNOWNED.fullmatch(middle) is None:
        return False  # not one of ours (another destination's, or the user's)
    if _locked_by_someone(path):
        return False
    if owned is not None and owned["host"] == _host() and not _pid_running(int(owned["pid"])):
        return True
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S


def clear_abandoned(dest: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``dest`` that a dead writer left next to it; the paths removed."""
    dest = Path(dest)
    prefix = f".{dest.name}."
    removed: list[Path] = []
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
        if suffix is None or not name.startswith(prefix) or len(name) <= len(prefix) + len(suffix):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not (is_dir or entry.is_file(follow_symlinks=False)):
                continue  # a link, a pipe: nothing an atomic write makes
        except OSError:
            continue
        if not is_abandoned(path, name[len(prefix) : -len(suffix)]):
            continue
        with contextlib.suppress(OSError):
            if is_dir:
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------------
# Atomic writing


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temporary path next to ``dest``; on success fsync it and rename it over ``dest``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``dest`` is left
    exactly as it was. A temporary that a killed process left (SIGKILL runs no clean-up) is removed
    by the next write to ``dest`` (see the module's docstring).
    """
    dest = Path(dest)
    clear_abandoned(dest)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent)
    if not hold_lock(fd):  # the lock lives as long as fd: kept open on POSIX, closed at once elsewhere
        os.close(fd)
        fd = None
    tmp = Path(tmp)
    try:
        _set_new_file_mode(tmp)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)
    _fsync_dir(dest.parent)


def _set_new_file_mode(path: Path) -> None:
    """The mode ``open()`` would give (0o666 less the umask): mkstemp's 0o600 would hide results
    and models from the user's group on a shared server. Linux reads the umask from /proc."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
        os.chmod(path, 0o666 & ~umask)


def _anonymous_file(folder: Path) -> int | None:
    """An unnamed file in ``folder`` (Linux ``O_TMPFILE``), or None where that is not supported.

    Why: a process killed with SIGKILL (the OOM killer, a batch scheduler) runs no clean-up, so a
    named temporary file that a long streamed write fills would stay behind, gigabytes large. The
    kernel frees an unnamed file when its last descriptor closes; it gets a name once complete.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_RDWR, 0o666)  # the umask applies, as for any new file
    except OSError:  # the file system cannot (NFS, some FUSE mounts): use a named temporary file
        return None


def _name_anonymous(f, name: Path) -> None:
    """Give the unnamed file ``f`` the name ``name``; copy it there where linking is refused."""
    folder = os.open(name.parent, os.O_RDONLY)
    try:  # a dst_dir_fd makes os.link use linkat(AT_SYMLINK_FOLLOW), which /proc/self/fd/N needs
        os.link(f"/proc/self/fd/{f.fileno()}", name.name, dst_dir_fd=folder, follow_symlinks=True)
        return
    except OSError:
        pass
    finally:
        os.close(folder)
    f.seek(0)
    with open(name, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike):
    """Yield a binary file (``w+b``) that appears at ``dest`` only once complete, like
    :func:`atomic_path`, for writers that take a file object and run long (streamed results).

    On Linux the file has no name while it is written, so not even SIGKILL leaves it behind (only
    the instant between naming it and renaming it over ``dest`` is not covered; the next write to
    ``dest`` clears what such a kill leaves). Elsewhere it is a hidden ``.NAME.*.tmp`` file, removed
    on any exception, and by the next write after a kill (see :func:`atomic_path`).
    """
    dest = Path(dest)
    fd = _anonymous_file(dest.parent)
    if fd is None:
        with atomic_path(dest) as tmp, open(tmp, "w+b") as f:
            yield f
        return
    clear_abandoned(dest)
    with os.fdopen(fd, "w+b") as f:
        f.raw.name = str(dest)  # writers (tifffile) want a str name, not the descriptor number
        yield f
        f.flush()
        os.fsync(f.fileno())
        hold_lock(f.fileno())  # for the instant it has a name (see the module's docstring)
        name = dest.with_name(f"{temp_prefix(dest)}{fd}.tmp")
        try:
            name.unlink(missing_ok=True)
            _name_anonymous(f, name)
            os.replace(name, dest)
        except BaseException:
            name.unlink(missing_ok=True)
            raise
    _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows), hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike):
    """Yield a temporary folder next to ``dest``; on success it replaces ``dest``; on any exception
    (KeyboardInterrupt included) it is removed and ``dest`` is left as it was.

    The folder is ``.NAME.HOST-PID.XXXXXXXX.tmp`` and stays locked (``flock``) while it is filled.
    A process killed outright (SIGKILL, the OOM killer) cleans nothing up, so each call first
    removes the ``.NAME.*.tmp`` / ``.NAME.*.old`` folders of the same ``dest`` whose writer is
    certainly gone (not locked, and its PID not running on this host, or untouched for a week);
    a concurrent writer's folder is left alone (rules in the module's docstring).
    """
    dest = Path(dest)
    clear_abandoned(dest)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".tmp", dir=dest.parent))
    lock = lock_folder(tmp)
    try:
        yield tmp
        if dest.exists():  # a rename cannot replace a non-empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(dest), suffix=".old", dir=dest.parent))
            os.replace(dest, old / "x")
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
