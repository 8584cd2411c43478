"""Unpack a downloaded archive so that nothing can land outside its folder (tar and zip).

:func:`safe_extract` checks the whole archive before it writes anything: every member's
final path, following the links the archive itself creates (and those already in the
target), must stay inside the target; absolute or escaping links, device and fifo members,
and members over the size caps are refused with :class:`UnsafeArchiveError` naming the
archive and the member. Only then are the members written (zip streams are cut at their
declared size); on any failure what the call wrote is removed again. ``tarfile.data_filter``
is used as a second line of defence where the Python has it, never relied on.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import NoReturn

from tqdm.auto import tqdm

from .errors import DatasetError, UnsafeArchiveError

_CHUNK = 1 << 20


DEFAULT_MAX_TOTAL_BYTES = 64 << 30  # 64 GiB: >10x MVTec AD (~5 GB extracted), >30x VisA (~2 GB)
DEFAULT_MAX_MEMBER_BYTES = 8 << 30  # 8 GiB: the registered datasets hold images of a few MB at most
_MAX_LINK_HOPS = 40  # links followed while resolving one path, like the kernel's ELOOP limit
_MAX_LINK_TEXT = 4096  # a zip "symlink" member longer than PATH_MAX is not a link
_SEPARATORS = re.compile(r"[/\\]" if os.name == "nt" else "/")  # what the OS splits paths on


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) is not None


def _split(path: str) -> list[str]:
    """A path's components as the OS sees them (``/`` only on POSIX, ``/`` and ``\\`` on Windows)."""
    return [p for p in _SEPARATORS.split(path) if p not in ("", ".")]


def _fold(key: tuple[str, ...]) -> str:
    """``key`` as a case- and Unicode-insensitive file system (macOS, Windows) compares it."""
    return unicodedata.normalize("NFKC", "/".join(key)).casefold()


def _check_name(archive: Path, name: str) -> str:
    """Refuse absolute names, drive letters and ``..``; return the name as a clean posix path."""
    posix = name.replace("\\", "/")
    if _is_absolute(posix):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in PurePosixPath(posix).parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} climbs out with '..'; refusing to extract")
    return "/".join(_split(name)) or "."


class _Tree:
    """The extraction folder as it will be after each member, simulated before anything is written.

    Keys are tuples of components relative to the target, *physical*: every link on the
    way has been followed, as the OS follows it when the member is written. Entries the
    archive creates are kept in ``kinds`` (``"dir"``, ``"file"`` or ``("link", text)``);
    anything else is looked up on disk, so links an earlier extraction left there count too.
    Leaving the target, at any step, raises :class:`UnsafeArchiveError`.
    """

    def __init__(self, archive: Path, target: Path):
        self.archive, self.target = archive, target
        self.kinds: dict[tuple[str, ...], object] = {}
        self.folded: dict[str, tuple[str, ...]] = {}

    def refuse(self, member: str, why: str) -> NoReturn:
        raise UnsafeArchiveError(f"{self.archive}: member {member!r} {why}; refusing to extract")

    def _is_link(self, key: tuple[str, ...]) -> bool:
        return isinstance(self.kinds.get(key), tuple)

    def link_text(self, member: str, key: tuple[str, ...]) -> str | None:
        """The target of the link at ``key`` (archive or disk), None when ``key`` is no link."""
        if key in self.kinds:
            return self.kinds[key][1] if self._is_link(key) else None
        other = self.folded.get(_fold(key))
        if other is not None and self._is_link(other):  # 'A/x' next to link 'a': the same on macOS
            self.refuse(member, f"goes through {'/'.join(key)!r}, which differs only in case from the "
                                f"link {'/'.join(other)!r}")
        path = self.target.joinpath(*key)
        return os.readlink(path) if path.is_symlink() else None

    def resolve(self, member: str, parts: list[str], base: tuple[str, ...] = (), what: str = "") -> tuple:
        """Walk ``parts`` from folder ``base`` as the OS would, following every link; the physical key.

        ``what`` starts the refusal message (e.g. "is a link to '../..', which ")."""
        current, pending, hops = list(base), list(parts), 0
        while pending:
            part = pending.pop(0)
            if part == "..":
                if not current:
                    self.refuse(member, f"{what}leads outside the extraction folder (through '..' or a link)")
                current.pop()
                continue
            current.append(part)
            text = self.link_text(member, tuple(current))
            if text is None:
                continue
            hops += 1
            if hops > _MAX_LINK_HOPS:
                self.refuse(member, f"{what}goes through more than {_MAX_LINK_HOPS} links")
            if _is_absolute(text):
                self.refuse(member, f"{what}goes through the link {'/'.join(current)!r} to the absolute path "
                                    f"{text!r}")
            current.pop()
            pending = _split(text) + pending
        return tuple(current)

    def _is_disk_dir(self, key: tuple[str, ...]) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.target.joinpath(*key)).st_mode)
        except OSError:
            return False

    def _check_case(self, member: str, key: tuple[str, ...], is_link: bool) -> None:
        other = self.folded.setdefault(_fold(key), key)
        if other != key and (is_link or self._is_link(other)):
            self.refuse(member, f"uses {'/'.join(key)!r}, which differs only in case from "
                                f"{'/'.join(other)!r}, and one of them is a link")

    def add(self, member: str, key: tuple[str, ...], kind) -> None:
        """Record what ``member`` creates at ``key``, and the folders the OS makes on the way there."""
        if not key and kind != "dir":
            self.refuse(member, "would replace the extraction folder itself")
        for i in range(1, len(key) + 1):
            self._check_case(member, key[:i], i == len(key) and isinstance(kind, tuple))
            if i < len(key) and self.kinds.setdefault(key[:i], "dir") == "file":
                self.refuse(member, f"needs {'/'.join(key[:i])!r} as a folder, but an earlier member is a file")
        old = self.kinds.get(key) or ("dir" if self._is_disk_dir(key) else None)
        if old == "dir" and kind != "dir":
            self.refuse(member, f"would replace the folder {'/'.join(key)!r}")
        if old == "file" and kind == "dir":
            self.refuse(member, f"is a folder where an earlier member is the file {'/'.join(key)!r}")
        self.kinds[key] = kind

    def check_link(self, member: str, parts: list[str], text: str) -> tuple[str, ...]:
        """Refuse a symlink ``parts -> text`` unless ``text``, read from the link's own folder, stays
        inside; returns where the link itself lands."""
        if not text:
            self.refuse(member, "is a link with an empty target")
        if _is_absolute(text):
            self.refuse(member, f"is a link to the absolute path {text!r}")
        folder = self.resolve(member, parts[:-1])
        self.resolve(member, _split(text), base=folder, what=f"is a link to {text!r}, which ")
        return folder + tuple(parts[-1:])


class _Budget:
    """The size caps: every member's declared size is charged before anything is written."""

    def __init__(self, archive: Path, max_total: int, max_member: int):
        self.archive, self.max_total, self.max_member, self.total = archive, max_total, max_member, 0

    def charge(self, member: str, size: int) -> None:
        if size < 0:
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} declares a negative size {size}; "
                                     f"refusing to extract")
        if size > self.max_member:
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} declares {size} bytes, over the "
                                     f"per-member cap max_member_bytes={self.max_member}; refusing to extract")
        self.total += size
        if self.total > self.max_total:
            raise UnsafeArchiveError(f"{self.archive}: member {member!r} takes the extracted size to "
                                     f"{self.total} bytes, over the cap max_total_bytes={self.max_total}; "
                                     f"refusing to extract")


def _plan_tar(tree: _Tree, budget: _Budget, tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, tuple]]:
    """Check every tar member (names, links, types, sizes); the (member, physical key) pairs to write."""
    plan, latest, sizes = [], {}, {}
    for m in tar.getmembers():
        name = _check_name(tree.archive, m.name)
        parts, size = _split(name), 0
        if m.isdir():
            key = tree.resolve(m.name, parts)
            tree.add(m.name, key, "dir")
        elif m.issym():
            key = tree.check_link(m.name, parts, m.linkname)
            tree.add(m.name, key, ("link", m.linkname))
        elif m.isreg():
            if m.sparse and any(offset < 0 or n < 0 or offset + n > m.size for offset, n in m.sparse):
                tree.refuse(m.name, f"is a sparse file whose blocks reach past its declared size {m.size}")
            size = m.size
            key = tree.resolve(m.name, parts)
            tree.add(m.name, key, "file")
        elif m.islnk():  # copied from its target where hard links fail: charged like the target
            size = _check_hardlink(tree, m, latest, sizes)
            key = tree.resolve(m.name, parts)
            tree.add(m.name, key, "file")
        else:
            tree.refuse(m.name, "is a device, fifo or other special file")
        budget.charge(m.name, size)
        latest[name], sizes[name] = m, size
        plan.append((m, key))
    return plan


def _check_hardlink(tree: _Tree, m: tarfile.TarInfo, latest: dict, sizes: dict) -> int:
    """A hard link must name an earlier regular-file member that is still a file there; its size."""
    link = m.linkname
    if _is_absolute(link.replace("\\", "/")) or ".." in PurePosixPath(link.replace("\\", "/")).parts:
        tree.refuse(m.name, f"is a hard link to {link!r}, outside the extraction folder")
    target = "/".join(_split(link))
    source = latest.get(target)
    if source is None or not (source.isreg() or source.islnk()):
        tree.refuse(m.name, f"is a hard link to {link!r}, which is no earlier regular file of the archive")
    if tree.kinds.get(tree.resolve(m.name, _split(link))) != "file":
        tree.refuse(m.name, f"is a hard link to {link!r}, which no longer leads to that file "
                            f"(a later member replaced it or a folder on its way)")
    return sizes[target]


def _zip_link_text(tree: _Tree, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > _MAX_LINK_TEXT:
        tree.refuse(info.filename, f"is a symlink whose target is {info.file_size} bytes long")
    with zf.open(info) as fh:
        return fh.read(_MAX_LINK_TEXT + 1).decode("utf-8", "replace")


def _plan_zip(tree: _Tree, budget: _Budget, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, tuple]]:
    """Check every zip member like :func:`_plan_tar`. Unix symlinks stored in a zip are written as
    small text files (as ``zipfile`` does), but refused when they point outside."""
    plan = []
    for info in zf.infolist():
        parts = _split(_check_name(tree.archive, info.filename))
        mode = info.external_attr >> 16
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            tree.refuse(info.filename, "is a device, fifo or socket")
        if info.is_dir():
            key = tree.resolve(info.filename, parts)
            tree.add(info.filename, key, "dir")
        else:
            if stat.S_ISLNK(mode):
                tree.check_link(info.filename, parts, _zip_link_text(tree, zf, info))
            budget.charge(info.filename, info.file_size)
            key = tree.resolve(info.filename, parts)
            tree.add(info.filename, key, "file")
        plan.append((info, key))
    return plan


def _tar_filter():
    """Python's tarfile ``data`` filter where this Python has one (3.10.12+, 3.11.4+, 3.12+), else a
    pass-through. Looked up at call time; only a second line of defence behind the checks above."""
    data_filter = getattr(tarfile, "data_filter", None)
    return data_filter if data_filter is not None else (lambda member, path: member)


def _tar_writer(tar: tarfile.TarFile, archive: Path, target: Path):
    tar.extraction_filter = _tar_filter()  # an attribute older Pythons simply ignore
    filter_error = getattr(tarfile, "FilterError", ())

    def write(member: tarfile.TarInfo, key: tuple) -> None:
        try:
            tar.extract(member, target)
        except filter_error as err:
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} refused by tarfile's data filter "
                                     f"({err}); refusing to extract") from err
    return write


def _zip_writer(zf: zipfile.ZipFile, archive: Path, target: Path):
    def write(info: zipfile.ZipInfo, key: tuple) -> None:
        path = target.joinpath(*key)
        if info.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with zf.open(info) as src, path.open("wb") as dst:
                written = 0
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > info.file_size:  # never trust the stream past what the header declared
                        raise UnsafeArchiveError(f"{archive}: member {info.filename!r} decompresses to more than "
                                                 f"the {info.file_size} bytes it declares; refusing to extract")
                    dst.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    return write


def _topmost_missing(path: Path) -> Path | None:
    """The highest folder on the way to ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    while not os.path.lexists(path):
        missing, path = path, path.parent
    return missing


def _write_all(archive: Path, target: Path, plan: list, write) -> None:
    """Write each checked member; when anything fails, remove every file and folder this call created."""
    created = [p for p in (_topmost_missing(target),) if p is not None]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for member, key in tqdm(plan, desc=f"extract {archive.name}", unit="file"):
            first_new = _topmost_missing(target.joinpath(*key))
            if first_new is not None:
                created.append(first_new)
            write(member, key)
    except BaseException:
        for path in reversed(created):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                path.unlink()
        raise


def safe_extract(archive, target, *, max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Path:
    """Extract a .zip / .tar / .tar.gz / .tar.xz / .tar.bz2 ``archive`` into ``target``; returns ``target``.

    Every member is checked *before* anything is written (``target`` is not even created
    until all pass), and any refusal raises :class:`UnsafeArchiveError` naming the archive
    and the member:

    * absolute names, drive letters and ``..``; device, fifo and other special members;
    * every member's final path is resolved the way the OS will resolve it, following the
      links the archive itself creates (and any already in ``target``): a symlink whose
      target, read from its own folder, leaves ``target`` is refused, so is an absolute link,
      a chain such as ``deep/a -> ..`` then ``deep/a/l -> ../..``, a link replacing a folder
      and a link differing only in case from another path (case-insensitive file systems);
    * a hard link must name an earlier regular-file member;
    * sizes come from the headers (tar ``size``, zip ``file_size``): a member over
      ``max_member_bytes`` (default 8 GiB) or a running total over ``max_total_bytes``
      (default 64 GiB, >10x MVTec AD's ~5 GB and >30x VisA's ~2 GB extracted) is refused.

    While writing, a zip member whose stream yields more than its declared size is cut
    off and refused, and Python's tarfile ``data`` filter is applied where this Python has
    one (a second line of defence; the checks above do not depend on it). If writing
    fails for any reason, everything this call created is removed again.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DatasetError(f"archive not found: {archive}")
    tree, budget = _Tree(archive, target), _Budget(archive, max_total_bytes, max_member_bytes)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            _write_all(archive, target, _plan_zip(tree, budget, zf), _zip_writer(zf, archive, target))
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tar:
            _write_all(archive, target, _plan_tar(tree, budget, tar), _tar_writer(tar, archive, target))
    else:
        raise DatasetError(f"{archive} is neither a zip nor a tar archive")
    return target
