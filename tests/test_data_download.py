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
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["/abs.txt", "../up.txt", "a/../../up.txt", "C:/win.txt"])
def test_zip_escapes_are_refused(tmp_path, name):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(zipfile.ZipInfo(name), "bad")
    with pytest.raises(UnsafeArchiveError, match="member"):
        safe_extract(tmp_path / "evil.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_symlink_out_is_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)  # unix symlink
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr(info, "../../etc")
    with pytest.raises(UnsafeArchiveError, match="'link'"):
        safe_extract(tmp_path / "evil.zip", tmp_path / "out")


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _no_data_filter(monkeypatch):
    """Pretend to be Python 3.10.0-3.10.11 / 3.11.0-3.11.3, whose tarfile has no ``data`` filter."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)


def _only(folder: Path, *names: str) -> None:
    """Nothing but ``names`` under ``folder``: no partial extraction, nothing escaped."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


@pytest.mark.parametrize("data_filter", [True, False], ids=["this-python", "no-data-filter"])
def test_symlink_chain_is_refused(tmp_path, monkeypatch, data_filter):
    # deep/a -> .. is the target itself; deep/a/l therefore sits at the top, and ../.. from there leaves
    if not data_filter:
        _no_data_filter(monkeypatch)
    archive = _tar(tmp_path / "chain.tar", [_file("fine.txt"), _link("deep/a", ".."), _link("deep/a/l", "../.."),
                                            _file("deep/a/l/escaped.txt")])
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, tmp_path / "box" / "out")
    assert "'deep/a/l'" in str(info.value) and str(archive) in str(info.value)
    _only(tmp_path, "chain.tar")  # neither box/out nor escaped.txt


@pytest.mark.parametrize("bad,members", [
    ("up", [_dir("d"), _link("d/in", "."), _link("up", "d/in/../..")]),  # '..' after a link, from the link's target
    ("abs", [_link("abs", "/tmp")]),
    ("l", [_link("a", "b/c"), _link("b", "."), _link("l", "a/../..")]),  # a -> b/c -> ./c: 'a/..' is the top
    ("d", [_file("d/x.txt"), _link("d", "x")]),  # a link replacing a folder
    ("h", [_link("h", "nowhere.txt", kind=tarfile.LNKTYPE)]),  # hard link to no member
    ("h", [_file("d1/d2/f"), _link("d1/d2/f", "../.."), _link("h", "d1/d2/f", kind=tarfile.LNKTYPE)]),
    ("A/x.txt", [_link("a", "sub"), _file("A/x.txt")]),  # the same path as the link on macOS / Windows
    ("fifo", [_link("fifo", "", kind=tarfile.FIFOTYPE)]),
    ("char", [_link("char", "", kind=tarfile.CHRTYPE)]),
])
def test_tar_link_tricks_are_refused(tmp_path, monkeypatch, bad, members):
    _no_data_filter(monkeypatch)
    archive = _tar(tmp_path / "evil.tar", [_file("fine.txt"), *members])
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, tmp_path / "box" / "out")
    assert f"member {bad!r}" in str(info.value) and str(archive) in str(info.value)
    _only(tmp_path, "evil.tar")


def test_links_already_in_the_target_count(tmp_path, monkeypatch):
    # an earlier extraction left out/d1/d2/x -> ../.. (the top): a new link under it is judged from there
    _no_data_filter(monkeypatch)
    out = tmp_path / "box" / "out"
    (out / "d1/d2").mkdir(parents=True)
    (out / "d1/d2/x").symlink_to("../..")
    archive = _tar(tmp_path / "evil.tar", [_link("d1/d2/x/l", "../.."), _file("d1/d2/x/l/escaped.txt")])
    with pytest.raises(UnsafeArchiveError, match="'d1/d2/x/l'"):
        safe_extract(archive, out)
    _only(tmp_path, "evil.tar", "box")
    _only(out, "d1")


@pytest.mark.parametrize("data_filter", [True, False], ids=["this-python", "no-data-filter"])
def test_extract_keeps_inside_links(tmp_path, monkeypatch, data_filter):
    if not data_filter:
        _no_data_filter(monkeypatch)
    archive = _tar(tmp_path / "ok.tar.gz", [
        _dir("top"), _dir("top/sub"), _file("top/sub/x.txt"),
        _link("top/up", "sub"),  # a link to a folder ...
        _file("top/up/y.txt"),  # ... written through: lands in top/sub
        _link("top/sub/back", "../up/x.txt"),  # a link through a link
        _link("top/h", "top/sub/x.txt", kind=tarfile.LNKTYPE),
        _link("top/here", "."),
    ], "w:gz")
    out = tmp_path / "out"
    for _ in range(2):  # extracting again over the first result works too (download_dataset(force=True))
        assert safe_extract(archive, out) == out
        assert (out / "top/sub/y.txt").read_bytes() == b"hello" and (out / "top/up").is_symlink()
        assert (out / "top/sub/back").read_bytes() == b"hello" and (out / "top/h").read_bytes() == b"hello"
        assert (out / "top/here/here/sub/x.txt").read_bytes() == b"hello"
        _only(out / "top", "sub", "up", "h", "here")


def test_tar_size_caps(tmp_path):
    archive = _tar(tmp_path / "bomb.tar.gz", [_file("fine.txt"), (tarfile.TarInfo("big.bin"), bytes(4 << 20))],
                   "w:gz")
    assert archive.stat().st_size < 64 << 10  # 4 MiB of zeros packs into a few KB
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"'big.bin' declares 4194304 bytes.*max_member_bytes=1048576"):
        safe_extract(archive, out, max_member_bytes=1 << 20)
    with pytest.raises(UnsafeArchiveError, match=r"'big.bin' takes .* over the cap max_total_bytes=4194304"):
        safe_extract(archive, out, max_total_bytes=4 << 20)
    _only(tmp_path, "bomb.tar.gz")
    assert (safe_extract(archive, out, max_total_bytes=(4 << 20) + 5) / "big.bin").stat().st_size == 4 << 20


def test_sparse_member_claiming_100_gib_is_refused_by_default(tmp_path):
    # a PAX sparse 1.0 member: 5 bytes of data stored, 100 GiB once expanded; the archive is 10 KB
    payload = b"1\n0\n5\n".ljust(512, b"\0") + b"hello"
    info = tarfile.TarInfo("GNUSparseFile.0/big.bin")
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "big.bin",
                        "GNU.sparse.realsize": str(100 << 30)}
    info.size = len(payload)
    with tarfile.open(tmp_path / "sparse.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_file("fine.txt")[0], io.BytesIO(b""))
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(UnsafeArchiveError, match=r"'big.bin' declares 107374182400 bytes.*max_member_bytes"):
        safe_extract(tmp_path / "sparse.tar", tmp_path / "out")
    _only(tmp_path, "sparse.tar")


def test_zip_size_caps(tmp_path):
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("big.bin", bytes(4 << 20))
    assert (tmp_path / "bomb.zip").stat().st_size < 64 << 10
    with pytest.raises(UnsafeArchiveError, match=r"'big.bin' declares 4194304 bytes.*max_member_bytes"):
        safe_extract(tmp_path / "bomb.zip", tmp_path / "out", max_member_bytes=1 << 20)
    with pytest.raises(UnsafeArchiveError, match=r"'big.bin' takes .* max_total_bytes"):
        safe_extract(tmp_path / "bomb.zip", tmp_path / "out", max_total_bytes=1 << 20)
    _only(tmp_path, "bomb.zip")


def test_zip_stream_longer_than_declared_is_cut_off(tmp_path, monkeypatch):
    # CPython's zipfile stops at the declared size itself; the extractor must not rely on that
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr("short.bin", b"12345")
    real_open = zipfile.ZipFile.open

    def lying_open(self, name, *args, **kwargs):
        if getattr(name, "filename", name) == "short.bin":
            return io.BytesIO(bytes(3 << 20))
        return real_open(self, name, *args, **kwargs)
    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    with pytest.raises(UnsafeArchiveError, match="'short.bin' decompresses to more than the 5 bytes"):
        safe_extract(tmp_path / "a.zip", tmp_path / "out")
    _only(tmp_path, "a.zip")  # fine.txt, already written, was removed again


def test_failed_extraction_removes_what_it_wrote(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "a.tar", [_file("a.txt"), _file("b/c.txt"), _file("b/d.txt")])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    real_makefile = tarfile.TarFile.makefile

    def disk_full(self, tarinfo, targetpath):
        if tarinfo.name == "b/d.txt":
            raise OSError(28, "No space left on device")
        real_makefile(self, tarinfo, targetpath)
    monkeypatch.setattr(tarfile.TarFile, "makefile", disk_full)
    with pytest.raises(OSError, match="No space left"):
        safe_extract(archive, out)
    _only(out, "keep.txt")


def test_zip_links_are_checked_and_stay_files(tmp_path):
    def link(name):
        info = zipfile.ZipInfo(name)
        info.external_attr = 0o120777 << 16
        return info
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("d/x.txt", "hi")
        zf.writestr(link("d/l"), "x.txt")
    out = safe_extract(tmp_path / "a.zip", tmp_path / "out")
    assert (out / "d/l").read_text() == "x.txt" and not (out / "d/l").is_symlink()
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("fine.txt", "ok")
        zf.writestr(link("d/l"), "../..")
    with pytest.raises(UnsafeArchiveError, match="'d/l'"):
        safe_extract(tmp_path / "evil.zip", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


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
