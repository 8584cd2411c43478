"""Files that survive interruptions and neighbours: atomic writes and a folder lock.

* :func:`atomic_write` / :func:`atomic_write_text`: write into a uniquely named temporary
  file in the same folder, then ``os.replace`` it over the target. An interrupt leaves the
  old file intact (and at worst a stray ``.<name>.*.tmp``); two writers never share a
  temporary file. ``os.replace`` is atomic on one file system (POSIX and Windows).
* :class:`FolderLock`: a ``.lock`` file created with ``O_EXCL`` that names the process
  holding the folder. A second run on the same folder is refused with a clear message
  while the first is alive; a lock left by a process that is gone (same host) is taken
  over with a note. Used for checkpoint folders, so that one run never prunes or
  overwrites the checkpoint another run is loading.

Shared by the method (checkpoints, box files) and the command layer (CSV, Markdown).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import warnings
from pathlib import Path

__all__ = ["FolderLock", "FolderLockedError", "atomic_write", "atomic_write_text"]


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **open_kwargs):
    """``with atomic_write(path) as fh:`` – ``fh`` is a temporary file that replaces ``path`` on success.

    ``mode`` is ``"w"`` (text; ``open_kwargs`` such as ``newline=""`` pass through) or
    ``"wb"``. On an exception the temporary file is removed and ``path`` is untouched.
    Parent folders are created.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the usual mode (0644)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)


class FolderLockedError(RuntimeError):
    """Another live process holds the folder's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """``with FolderLock(folder):`` – exclusive use of ``folder`` by this process (see the module doc)."""

    NAME = ".lock"

    def __init__(self, folder, purpose: str = "a run"):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self.purpose = purpose
        self._held = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose}
        for _ in range(2):  # second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                if isinstance(pid, int) and host == me["host"] and not _alive(pid):
                    warnings.warn(f"{self.path}: taking over the lock of process {pid}, which is gone",
                                  stacklevel=3)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise FolderLockedError(
                    f"{self.folder} is in use by {owner.get('purpose', 'another run')} (process "
                    f"{pid} on {host}); wait for it to finish, use another --results folder, or "
                    f"delete {self.path} if that run is gone") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._held = True
            return self
        raise FolderLockedError(f"could not lock {self.folder}")  # pragma: no cover (race)

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
