"""Registry, checksums, safe extraction, VisA/BTAD/KSDD2 preparation and offline download behaviour.

Every archive and folder here is a tiny fake built in tmp_path (a handful of 8x8 PNGs).
"""

import dataclasses
import hashlib
import io
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutswap_lib.data import (DATASETS, AnomalyDataset, ChecksumError, DownloadError, UnsafeArchiveError,
                              download_dataset, prepare_btad, prepare_ksdd2, prepare_visa, safe_extract,
                              verify_checksum)
from cutswap_lib.data import download as download_module


def _png(path: Path, value=80, mask=False, fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mask:
        a = np.zeros((8, 8), np.uint8)
        a[2:4, 2:4] = value
    else:
        a = np.full((8, 8, 3), value, np.uint8)
    Image.fromarray(a).save(path, format=fmt)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ registry

def test_registry_records():
    assert set(DATASETS) == {"mvtec", "visa", "btad", "ksdd2"}
    archives = {k: r.archive for k, r in DATASETS.items()}
    assert archives == {"mvtec": "mvtec_anomaly_detection.tar.xz", "visa": "VisA_20220922.tar",
                        "btad": "btad.zip", "ksdd2": "KolektorSDD2.zip"}
    for record in DATASETS.values():
        assert record.url.startswith("https://") and record.licence and record.folder
        if record.checksum is not None:
            length = {"sha256": 64, "md5": 32}[record.checksum_algo]
            assert len(record.checksum) == length and int(record.checksum, 16) >= 0
        assert record.sources
    assert DATASETS["mvtec"].sha256 == DATASETS["mvtec"].checksum


# ------------------------------------------------------------------------------------ checksums

def test_verify_checksum(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"cutswap")
    assert verify_checksum(f, _sha256(f)) == _sha256(f)
    assert verify_checksum(f, hashlib.md5(b"cutswap").hexdigest(), "md5")
    with pytest.raises(ChecksumError) as info:
        verify_checksum(f, "0" * 64)
    msg = str(info.value)
    assert str(f) in msg and "0" * 64 in msg and _sha256(f) in msg
    with pytest.warns(UserWarning, match="NOT verified"):
        verify_checksum(f, None)


# ------------------------------------------------------------------------------------ extraction

def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode="w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), b"hello"


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.xz", "w:xz")])
def test_extract_tar(tmp_path, suffix, mode):
    archive = _tar(tmp_path / f"a{suffix}", [_file("top/x.txt"), _link("top/l", "x.txt"),
                                              _link("top/h", "top/x.txt", kind=tarfile.LNKTYPE)], mode)
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "top/x.txt").read_bytes() == b"hello"
    assert (out / "top/l").read_bytes() == b"hello"  # links that stay inside are fine
    assert (out / "top/h").read_bytes() == b"hello"


def test_extract_zip(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("d/x.txt", "hi")
    assert (safe_extract(tmp_path / "a.zip", tmp_path / "out") / "d/x.txt").read_text() == "hi"


@pytest.mark.parametrize("bad", [
    _file("/etc/evil.txt"),
    _file("../evil.txt"),
    _file("ok/../../evil.txt"),
    _link("up", "../../outside"),
    _link("abs", "/etc/passwd"),
    _link("hard", "../outside", kind=tarfile.LNKTYPE),
])
def test_tar_escapes_are_refused(tmp_path, bad):
    archive = _tar(tmp_path / "evil.tar", [_file("fine.txt"), bad])
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, tmp_path / "out")
    assert repr(bad[0].name) in str(info.value) and str(archive) in str(info.value)
    assert not (tmp_path / "out" / "fine.txt").exists()  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["/abs.txt", "../up.txt", "a/../../up.txt", "C:/win.txt"])
def test_zip_escapes_are_refused(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(zipfile.ZipInfo(name), "bad")
    with pytest.raises(UnsafeArchiveError, match="member"):
        safe_extract(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "out" / "fine.txt").exists()


def test_zip_symlink_out_is_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)  # unix symlink
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr(info, "../../etc")
    with pytest.raises(UnsafeArchiveError, match="'link'"):
        safe_extract(tmp_path / "evil.zip", tmp_path / "out")


# ------------------------------------------------------------------------------------ preparation

def test_prepare_visa(tmp_path):
    raw = tmp_path / "visa_raw"
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        _png(raw / f"candle/Data/Images/Normal/{i:04d}.JPG", 100 + i, fmt="JPEG")
        rows.append(f"candle,{'train' if i < 2 else 'test'},normal,candle/Data/Images/Normal/{i:04d}.JPG,")
    _png(raw / "candle/Data/Images/Anomaly/000.JPG", 30, fmt="JPEG")
    _png(raw / "candle/Data/Masks/Anomaly/000.png", value=1, mask=True)  # non-zero = anomalous
    rows.append("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png")
    (raw / "split_csv").mkdir()
    (raw / "split_csv/1cls.csv").write_text("\n".join(rows) + "\n")
    out = prepare_visa(raw, raw / "split_csv/1cls.csv", tmp_path / "visa")
    mask = np.asarray(Image.open(out / "candle/ground_truth/bad/000_mask.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask == 255).sum() == 4
    train = AnomalyDataset(out, "candle", "train", image_size=8)
    test = AnomalyDataset(out, "candle", "test", image_size=8)
    assert len(train) == 2 and [s.label for s in test.samples] == [1, 0] and test.defect_types == ["bad"]
    assert test[0][1].sum() == 4


def test_prepare_visa_bad_row(tmp_path):
    (tmp_path / "s.csv").write_text("object,split,label,image,mask\ncandle,train,normal,missing.JPG,\n")
    with pytest.raises(ValueError, match="s.csv:2.*missing.JPG"):
        prepare_visa(tmp_path, tmp_path / "s.csv", tmp_path / "out")


def _fake_btad(raw: Path) -> Path:
    base = raw / "BTech_Dataset_transformed"
    for cat, ext in (("01", ".bmp"), ("03", ".png")):
        for i in range(2):
            _png(base / cat / "train/ok" / f"{i:04d}{ext}", 90 + i, fmt="BMP" if ext == ".bmp" else None)
        _png(base / cat / "test/ok" / f"0000{ext}", 95, fmt="BMP" if ext == ".bmp" else None)
        _png(base / cat / "test/ko" / f"0000{ext}", 20, fmt="BMP" if ext == ".bmp" else None)
        _png(base / cat / "ground_truth/ko" / f"0000{ext}", 255, mask=True, fmt="BMP" if ext == ".bmp" else None)
    return raw


def test_prepare_btad(tmp_path):
    out = prepare_btad(_fake_btad(tmp_path / "btad_raw"), tmp_path / "btad")
    for cat in ("01", "03"):
        assert (out / cat / "ground_truth/ko/0000_mask.png").is_file()
        test = AnomalyDataset(out, cat, "test", image_size=8)
        assert test.defect_types == ["ko"] and [s.label for s in test.samples] == [0, 1]
        assert test[1][1].sum() == 4 and len(AnomalyDataset(out, cat, "train")) == 2


def test_prepare_btad_missing_mask(tmp_path):
    raw = _fake_btad(tmp_path / "btad_raw")
    (raw / "BTech_Dataset_transformed/03/ground_truth/ko/0000.png").unlink()
    with pytest.raises(ValueError, match="03/test/ko/0000.png"):
        prepare_btad(raw, tmp_path / "btad")


def test_prepare_ksdd2(tmp_path):
    raw = tmp_path / "ksdd2_raw"
    for split, base in (("train", 10000), ("test", 20000)):
        for i in range(3):
            _png(raw / split / f"{base + i}.png", 120)
            _png(raw / split / f"{base + i}_GT.png", value=255 if i == 2 else 0, mask=True)
    _png(raw / "train/10000 (copy).png", 120)
    _png(raw / "train/10000_GT (copy).png", 0, mask=True)
    out = prepare_ksdd2(raw, tmp_path / "ksdd2")
    train = AnomalyDataset(out, "ksdd2", "train", image_size=8)
    test = AnomalyDataset(out, "ksdd2", "test", image_size=8)
    assert len(train) == 2 and all(s.label == 0 for s in train.samples)
    assert [s.label for s in test.samples] == [1, 0, 0] and test.defect_types == ["defect"]
    extra = AnomalyDataset(out, "ksdd2", "train_defect", image_size=8)
    assert [s.image.name for s in extra.samples] == ["train_10002.png"] and extra[0][1].sum() == 4


# ------------------------------------------------------------------------------------ download

def _point(monkeypatch, key: str, **changes):
    monkeypatch.setitem(DATASETS, key, dataclasses.replace(DATASETS[key], **changes))


def test_download_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    _point(monkeypatch, "mvtec", url="http://127.0.0.1:9/x")
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        download_dataset("mvtec", tmp_path, timeout=5)
    assert time.perf_counter() - start < 10
    msg = str(info.value)
    assert "make_toy_dataset" in msg and str(tmp_path / "archives" / "mvtec_anomaly_detection.tar.xz") in msg
    assert not list((tmp_path / "archives").glob("*.part"))


def test_download_urlopen_failure(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(download_module.urllib.request, "urlopen", refuse)
    with pytest.raises(DownloadError, match="cannot fetch KolektorSDD2"):
        download_dataset("ksdd2", tmp_path)


def _btad_zip(tmp_path: Path) -> Path:
    raw = _fake_btad(tmp_path / "src")
    archive = tmp_path / "btad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(raw.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(raw).as_posix())
    return archive


def test_download_end_to_end_from_a_file_url(tmp_path, monkeypatch):
    archive = _btad_zip(tmp_path)
    _point(monkeypatch, "btad", url=archive.as_uri(), checksum=_sha256(archive))
    out = download_dataset("btad", tmp_path / "data")
    assert out == tmp_path / "data/btad" and (out / ".cutswap_ready.json").is_file()
    assert len(AnomalyDataset(out, "01", "test")) == 2

    def no_network(*args, **kwargs):
        raise AssertionError("fetched again although the dataset is ready")
    monkeypatch.setattr(download_module, "_fetch", no_network)
    assert download_dataset("btad", tmp_path / "data") == out


def test_download_checksum_mismatch(tmp_path, monkeypatch):
    archive = _btad_zip(tmp_path)
    _point(monkeypatch, "btad", url=archive.as_uri(), checksum="f" * 64)
    with pytest.raises(ChecksumError, match="btad.zip"):
        download_dataset("btad", tmp_path / "data")
    assert not (tmp_path / "data/btad").exists()


def test_manually_placed_archive_is_used(tmp_path, monkeypatch):
    archive = _btad_zip(tmp_path)
    (tmp_path / "data/archives").mkdir(parents=True)
    archive.rename(tmp_path / "data/archives/btad.zip")
    _point(monkeypatch, "btad", url="http://127.0.0.1:9/x", checksum=_sha256(tmp_path / "data/archives/btad.zip"))
    assert (download_dataset("btad", tmp_path / "data") / "01/test/ko").is_dir()


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        download_dataset("imagenet", tmp_path)
