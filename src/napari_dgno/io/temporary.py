"""Names for the hidden temporaries of atomic writes, and clearing those a killed writer left behind.

An atomic write (:func:`~napari_dgno.io.checkpoint.atomic_path`, ``atomic_file``,
:func:`~napari_dgno.io.ome_zarr.atomic_dir`) fills ``.NAME.<owner>.<random>.tmp`` next to ``NAME``
and renames it over ``NAME`` when complete; on an exception it removes it. SIGKILL (the OOM killer,
a batch scheduler's time limit) runs no clean-up, so the temporary would stay for ever, gigabytes
large for a streamed Zarr. Each write therefore first removes the temporaries of *its own*
destination (``.NAME.*.tmp`` and ``.NAME.*.old``, nothing else) whose writer is certainly gone:

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

Removal is best effort: what cannot be removed (another user's file) is left, silently.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
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
