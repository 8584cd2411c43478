"""Every dataset record is well-formed, and a moved download can be fetched from a new address.

The address can be given to ``download_dataset(..., url=...)`` or, for every call, in
``$CUTSWAP_<KEY>_URL`` (read in ``cutswap_lib.config``); the recorded checksum still applies.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import pytest

from cutswap_lib import config
from cutswap_lib.data import DATASETS, ChecksumError, DownloadError, download_dataset
from cutswap_lib.data import download as download_module

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_record_is_well_formed(key):
    record = DATASETS[key]
    where = f"DATASETS[{key!r}] in cutswap_lib/data/registry.py"
    assert record.url.startswith("https://") and " " not in record.url, where
    assert record.checksum_algo == "sha256" and HEX64.fullmatch(record.checksum or ""), where
    if record.size_bytes is None:   # allowed only where no source records it, and the record says so
        assert "size not published" in record.notes.lower(), where
    else:
        assert isinstance(record.size_bytes, int) and record.size_bytes > 1_000_000, where
    assert record.licence.strip() and record.sources, where
    for folder in (record.folder, record.unpacks_to):
        assert folder and Path(folder).name == folder and folder not in (".", ".."), where
    assert record.archive and Path(record.archive).name == record.archive, where
    assert record.categories and len(set(record.categories)) == len(record.categories), where


def test_recorded_sizes_of_the_large_archives():
    # Public dataset manifests; MVTec quotes "about 4.9 GB" for its archive (5 264 982 680 B = 4.9 GiB).
    assert DATASETS["mvtec"].size_bytes == 5_264_982_680
    assert DATASETS["visa"].size_bytes == 1_929_840_640
    assert any("manifest" in s for s in DATASETS["mvtec"].sources + DATASETS["visa"].sources)


def test_folders_do_not_collide():
    folders = [r.folder for r in DATASETS.values()] + [r.unpacks_to for r in DATASETS.values()
                                                       if r.unpacks_to != r.folder]
    assert len(folders) == len(set(folders)) and "archives" not in folders


# ------------------------------------------------------------------ url override

def _zip_of_one_file(tmp_path: Path) -> tuple[Path, str]:
    archive = tmp_path / "served" / "KolektorSDD2.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "not the real archive")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def _fetched(monkeypatch) -> list[str]:
    """Replace the download with a recorder of the address asked for (then fail, as offline)."""
    asked = []

    def fetch(url, dest, **kwargs):
        asked.append(url)
        raise OSError("offline")
    monkeypatch.setattr(download_module, "_fetch", fetch)
    return asked


def test_url_argument_replaces_the_recorded_address(tmp_path, monkeypatch):
    monkeypatch.delenv("CUTSWAP_MVTEC_URL", raising=False)
    asked = _fetched(monkeypatch)
    with pytest.raises(DownloadError, match="new.example/mvtec.tar.xz") as info:
        download_dataset("mvtec", tmp_path, url="https://new.example/mvtec.tar.xz")
    assert asked == ["https://new.example/mvtec.tar.xz"]
    assert "CUTSWAP_MVTEC_URL" in str(info.value) and "url=" in str(info.value)


def test_environment_variable_replaces_the_recorded_address(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTSWAP_MVTEC_URL", "https://mirror.example/mvtec_anomaly_detection.tar.xz")
    assert config.url_env("mvtec") == "CUTSWAP_MVTEC_URL"
    assert config.dataset_url("mvtec") == "https://mirror.example/mvtec_anomaly_detection.tar.xz"
    asked = _fetched(monkeypatch)
    with pytest.raises(DownloadError):
        download_dataset("mvtec", tmp_path)
    assert asked == ["https://mirror.example/mvtec_anomaly_detection.tar.xz"]
    with pytest.raises(DownloadError):   # the argument wins over the variable
        download_dataset("mvtec", tmp_path, url="https://other.example/x.tar.xz")
    assert asked[-1] == "https://other.example/x.tar.xz"


def test_without_override_the_record_is_used(tmp_path, monkeypatch):
    monkeypatch.delenv("CUTSWAP_VISA_URL", raising=False)
    assert config.dataset_url("visa") is None
    asked = _fetched(monkeypatch)
    with pytest.raises(DownloadError):
        download_dataset("visa", tmp_path)
    assert asked == [DATASETS["visa"].url]


@pytest.mark.parametrize("bad", ["ftp://host/x.tar", "mvtec.tar.xz", "javascript:alert(1)"])
def test_a_bad_override_is_refused_naming_where_it_came_from(tmp_path, monkeypatch, bad):
    monkeypatch.setenv("CUTSWAP_BTAD_URL", bad)
    with pytest.raises(ValueError, match=r"\$CUTSWAP_BTAD_URL"):
        download_dataset("btad", tmp_path)
    with pytest.raises(ValueError, match="url argument"):
        download_dataset("btad", tmp_path, url=bad)


def test_an_overridden_address_is_still_checked_against_the_recorded_checksum(tmp_path, monkeypatch):
    archive, _ = _zip_of_one_file(tmp_path)
    monkeypatch.setenv("CUTSWAP_KSDD2_URL", archive.as_uri())   # a "moved" file that is not the real one
    with pytest.raises(ChecksumError, match="KolektorSDD2.zip"):
        download_dataset("ksdd2", tmp_path / "data")
    assert not (tmp_path / "data" / "ksdd2").exists()
