"""Download, verify and safely unpack the real datasets of :data:`~cutswap_lib.data.registry.DATASETS`.

Layout under a data root (e.g. ``data/``)::

    archives/<archive>          the downloaded file (or one you placed there by hand)
    <unpacks_to>/               the extracted archive (VisA, BTAD, KSDD2: raw layout)
    <folder>/                   MVTec layout, what AnomalyDataset(root/<folder>, category, split) reads
    <folder>/.cutswap_ready.json  written last; its presence means "done"

On a machine without internet (CI, this course's dev boxes) every call ends in a
:class:`DownloadError` that points to the toy dataset and to manual placement.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from ..config import dataset_url, url_env
from .errors import ChecksumError, DatasetError, DownloadError
from .extract import safe_extract
from .prepare import prepare_btad, prepare_ksdd2, prepare_visa
from .registry import DATASETS, DatasetRecord

READY_MARKER = ".cutswap_ready.json"
_CHUNK = 1 << 20


def verify_checksum(path, expected: str | None, algo: str = "sha256") -> str:
    """Hash ``path`` with ``algo`` and compare with ``expected`` (hex); returns the digest.

    Mismatch raises :class:`ChecksumError`; ``expected=None`` (nothing published) only warns.
    """
    path = Path(path)
    if algo not in hashlib.algorithms_guaranteed:
        raise ValueError(f"unknown checksum algorithm {algo!r}")
    h = hashlib.new(algo)
    size = path.stat().st_size
    with path.open("rb") as fh, tqdm(total=size, unit="B", unit_scale=True, desc=f"{algo} {path.name}",
                                     disable=size < (64 << 20)) as bar:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    digest = h.hexdigest()
    if expected is None:
        warnings.warn(f"no published {algo} checksum for {path.name}: its integrity is NOT verified "
                      f"(computed {algo} {digest})", stacklevel=2)
    elif digest.lower() != expected.strip().lower():
        raise ChecksumError(f"{path}: {algo} checksum mismatch: expected {expected}, got {digest}. "
                            f"The file is truncated, corrupt or a different release; delete it and "
                            f"download again (download_dataset(..., force=True)).")
    return digest


# ------------------------------------------------------------------------------------ download

def _fetch(url: str, dest: Path, *, size_hint: int | None, timeout: float) -> None:
    """Stream ``url`` to ``dest`` with a progress bar (via ``dest.part``, renamed when complete)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "cutswap-lib (python urllib)"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp, part.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or size_hint
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)


def _source_url(key: str, record: DatasetRecord, url: str | None) -> str:
    """The address to fetch: ``url`` if given, else ``$CUTSWAP_<KEY>_URL``, else the record's.

    Hosts rotate share links (MVTec AD's recorded one answers 404 since November 2025) while the
    archive and its checksum stay the same, so a new address needs no new release. It must be
    http(s) or file, and is checked before any work, even when the dataset is already there.
    """
    chosen, origin = (url, "the url argument") if url else (dataset_url(key), f"${url_env(key)}")
    if not chosen:
        return record.url
    if urllib.parse.urlsplit(chosen).scheme not in ("https", "http", "file"):
        raise ValueError(f"{record.name}: the download address from {origin} must start with https://, "
                         f"http:// or file://, got {chosen!r}")
    return chosen


def _offline_message(record: DatasetRecord, key: str, url: str, archive: Path, root: Path,
                     err: BaseException) -> str:
    return (f"cannot fetch {record.name} from {url} from this machine ({type(err).__name__}: {err}). "
            f"If the host has moved the file, pass the new address as download_dataset({key!r}, ..., url=...) "
            f"or set ${url_env(key)} (the recorded checksum still verifies it). "
            f"Offline (CI, a sandbox)? Use the generated toy dataset instead: "
            f"cutswap_lib.data.make_toy_dataset({str(root)!r}, 'disc') (categories fabric, disc, board). "
            f"Or fetch {record.archive} elsewhere and place it at {archive}, then call "
            f"download_dataset({key!r}, {str(root)!r}) again (it verifies and unpacks it); "
            f"an already unpacked MVTec-layout copy can be read directly with AnomalyDataset.")


def _prepare(key: str, raw: Path, out: Path) -> None:
    """Turn the extracted archive at ``raw`` into MVTec layout at ``out`` (nothing to do for MVTec AD)."""
    if key == "visa":
        split_csv = raw / "split_csv" / "1cls.csv"
        if not split_csv.is_file():
            found = sorted(raw.rglob("1cls.csv"))
            if not found:
                raise DatasetError(f"VisA split file split_csv/1cls.csv not found under {raw}")
            split_csv = found[0]
        prepare_visa(split_csv.parent.parent, split_csv, out)
    elif key == "btad":
        prepare_btad(raw, out)
    elif key == "ksdd2":
        prepare_ksdd2(raw, out)


def download_dataset(name: str, root, *, force: bool = False, timeout: float = 30.0,
                     url: str | None = None) -> Path:
    """Download, verify, extract and prepare dataset ``name`` (a key of ``DATASETS``) under ``root``.

    Returns ``root/<folder>``, an MVTec-layout folder for :class:`AnomalyDataset`. Does
    nothing when that folder is already marked ready, unless ``force`` (which also
    re-downloads the archive). ``url`` (or ``$CUTSWAP_<NAME>_URL``) replaces the recorded
    address when the host has moved the file; the recorded checksum still applies.
    Network failures raise :class:`DownloadError` (with what to do offline), checksum
    mismatches :class:`ChecksumError`.
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    record, root = DATASETS[key], Path(root)
    source = _source_url(key, record, url)
    out, archive = root / record.folder, root / "archives" / record.archive
    if (out / READY_MARKER).is_file() and not force:
        return out
    if force or not archive.is_file():
        try:
            _fetch(source, archive, size_hint=record.size_bytes, timeout=timeout)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            raise DownloadError(_offline_message(record, key, source, archive, root, err)) from err
    digest = verify_checksum(archive, record.checksum, record.checksum_algo)
    raw = root / record.unpacks_to
    safe_extract(archive, raw)
    _prepare(key, raw, out)
    (out / READY_MARKER).write_text(json.dumps({"dataset": key, "archive": record.archive,
                                                record.checksum_algo: digest}, indent=2) + "\n")
    return out
