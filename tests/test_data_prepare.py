"""Preparation helpers refuse paths that leave their folders, and copy nothing before every row is checked.

Every dataset here is a tiny fake built in tmp_path (a handful of 8x8 images).
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutswap_lib.data import DatasetError, prepare_btad, prepare_ksdd2, prepare_visa

HEADER = "object,split,label,image,mask"


def _png(path: Path, value=80, mask=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((8, 8), np.uint8) if mask else np.full((8, 8, 3), value, np.uint8)
    if mask:
        a[2:4, 2:4] = value
    Image.fromarray(a).save(path)
    return path


def _visa(tmp_path: Path, *rows: str) -> tuple[Path, Path]:
    """A VisA root with two good rows and one anomalous row first, then ``rows``; (root, csv)."""
    raw = tmp_path / "visa_raw"
    for i in range(2):
        _png(raw / f"candle/Normal/{i}.png", 100 + i)
    _png(raw / "candle/Anomaly/0.png", 30)
    _png(raw / "candle/Masks/0.png", 255, mask=True)
    good = [f"candle,train,normal,candle/Normal/{i}.png," for i in range(2)]
    bad = ["candle,test,anomaly,candle/Anomaly/0.png,candle/Masks/0.png"]
    (raw / "split.csv").write_text("\n".join([HEADER, *good, *bad, *rows]) + "\n")
    return raw, raw / "split.csv"


def _refused(tmp_path: Path, match: str, *rows: str) -> None:
    raw, csv_file = _visa(tmp_path, *rows)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=match):
        prepare_visa(raw, csv_file, out)
    assert not out.exists()  # the valid rows before the bad one were not copied either


def test_visa_fake_is_fine(tmp_path):
    raw, csv_file = _visa(tmp_path)
    out = prepare_visa(raw, csv_file, tmp_path / "out")
    assert sorted(p.name for p in (out / "candle/train/good").iterdir()) == ["0.png", "1.png"]
    assert (out / "candle/ground_truth/bad/0_mask.png").is_file()


def test_visa_image_climbing_out_is_refused(tmp_path):
    secret = tmp_path / "secret.png"
    _png(secret)
    _refused(tmp_path, r"split.csv:5: column 'image': '../secret.png' climbs out with '\.\.'",
             "candle,train,normal,../secret.png,")
    _refused(tmp_path, r"split.csv:5: column 'image': 'candle/../../secret.png' climbs out",
             "candle,train,normal,candle/../../secret.png,")


def test_visa_absolute_image_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")  # stands in for /etc/passwd
    _refused(tmp_path, rf"split.csv:5: column 'image': '{secret}' is an absolute path",
             f"candle,train,normal,{secret},")
    _refused(tmp_path, r"split.csv:5: column 'image': '/etc/passwd' is an absolute path",
             "candle,train,normal,/etc/passwd,")


def test_visa_mask_and_object_are_checked(tmp_path):
    _png(tmp_path / "outside.png", 255, mask=True)
    _refused(tmp_path, r"split.csv:5: column 'mask': '../outside.png' climbs out",
             "candle,test,anomaly,candle/Anomaly/0.png,../outside.png")
    _refused(tmp_path, r"split.csv:5: column 'object': '\.\.' is not a plain folder name",
             "..,train,normal,candle/Normal/0.png,")
    _refused(tmp_path, r"split.csv:5: column 'object': '../../elsewhere' is not a plain folder name",
             "../../elsewhere,train,normal,candle/Normal/0.png,")
    _refused(tmp_path, r"split.csv:5: column 'image' is empty", "candle,train,normal,,")


def test_visa_symlink_out_of_the_root_is_refused(tmp_path):
    secret = tmp_path / "secret.png"
    _png(secret)
    raw, csv_file = _visa(tmp_path, "candle,train,normal,candle/Normal/link.png,")
    (raw / "candle/Normal/link.png").symlink_to(secret)
    with pytest.raises(DatasetError, match=r"split.csv:5: column 'image'.*resolves to .*secret.png, outside"):
        prepare_visa(raw, csv_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_visa_destination_through_a_link_is_refused(tmp_path):
    raw, csv_file = _visa(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out/candle").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DatasetError, match=r"split.csv:2: column 'object'.*outside"):
        prepare_visa(raw, csv_file, tmp_path / "out")
    assert not any((tmp_path / "elsewhere").iterdir())


def test_visa_two_rows_one_destination_is_refused(tmp_path):
    _png(tmp_path / "visa_raw/candle/Other/0.png", 7)
    _refused(tmp_path, r"split.csv:5: .*Other/0.png would overwrite .*Normal/0.png \(line 2\)",
             "candle,train,normal,candle/Other/0.png,")


def test_btad_and_ksdd2_sources_must_stay_inside(tmp_path):
    secret = _png(tmp_path / "secret.png")
    btad = tmp_path / "btad_raw/01"
    _png(btad / "train/ok/0.png")
    _png(btad / "test/ok/0.png")
    (btad / "test/ko").mkdir(parents=True)
    (btad / "test/ok/1.png").symlink_to(secret)
    with pytest.raises(DatasetError, match=r"source image: .*1.png resolves to .*secret.png, outside"):
        prepare_btad(tmp_path / "btad_raw", tmp_path / "btad")
    assert not (tmp_path / "btad").exists()
    ksdd2 = tmp_path / "ksdd2_raw"
    for split in ("train", "test"):
        _png(ksdd2 / split / "1.png")
        _png(ksdd2 / split / "1_GT.png", 0, mask=True)
    (ksdd2 / "test/2.png").symlink_to(secret)
    _png(ksdd2 / "test/2_GT.png", 0, mask=True)
    with pytest.raises(DatasetError, match=r"source image: .*2.png resolves to .*secret.png, outside"):
        prepare_ksdd2(ksdd2, tmp_path / "ksdd2")
    assert not (tmp_path / "ksdd2").exists()


@pytest.mark.parametrize("label", [1, 2, 7])
def test_visa_label_map_masks_become_0_255(tmp_path, label):
    """VisA's masks are label maps (any non-zero value is a defect): small ids must not read as empty."""
    raw, csv_file = _visa(tmp_path)
    _png(raw / "candle/Masks/0.png", label, mask=True)  # defect pixels hold the id, not 255
    out = prepare_visa(raw, csv_file, tmp_path / "out")
    written = np.asarray(Image.open(out / "candle/ground_truth/bad/0_mask.png"))
    assert set(np.unique(written)) == {0, 255} and int((written == 255).sum()) == 4
