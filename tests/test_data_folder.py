"""AnomalyDataset and load_rgb: items, conversions, and a clear DatasetError for every bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutswap_lib.data import TOY_DEFECTS, AnomalyDataset, DatasetError, load_mask, load_rgb


def _save(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an image; the mode follows the array (uint16 -> 16-bit, 4 channels -> RGBA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(value: int, size=(8, 8)) -> np.ndarray:
    return np.full((*size, 3), value, dtype=np.uint8)


def _mask(size=(8, 8)) -> np.ndarray:
    m = np.zeros(size, dtype=np.uint8)
    m[2:5, 3:6] = 255
    return m


@pytest.fixture
def tiny(tmp_path) -> Path:
    """root/widget with 2 train, 1 test good, 2 test 'crack' images (8x8) and their masks."""
    cat = tmp_path / "widget"
    for i in range(2):
        _save(cat / "train/good" / f"{i:03d}.png", _rgb(100 + i))
        _save(cat / "test/crack" / f"{i:03d}.png", _rgb(50))
        _save(cat / "ground_truth/crack" / f"{i:03d}_mask.png", _mask())
    _save(cat / "test/good/000.png", _rgb(120))
    return tmp_path


def test_items_shapes_labels(tiny):
    ds = AnomalyDataset(tiny, "widget", "test", image_size=16)
    assert len(ds) == 3 and ds.defect_types == ["crack"]
    assert [s.label for s in ds.samples] == [1, 1, 0]
    assert ds.samples[0].mask == tiny / "widget/ground_truth/crack/000_mask.png"
    assert ds.samples[2].mask is None and ds.samples[2].defect_type == "good"
    image, mask, label, path = ds[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert torch.allclose(image, torch.full_like(image, 50 / 255))
    assert mask.shape == (1, 16, 16) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.sum() == 4 * 9  # 3x3 block doubled in each direction by nearest resize
    assert label == 1 and path.endswith("000.png") and isinstance(path, str)
    _, mask, label, _ = ds[2]
    assert label == 0 and mask.sum() == 0 and mask.shape == (1, 16, 16)
    native = AnomalyDataset(tiny, "widget", "train", image_size=None)
    assert native[0][0].shape == (3, 8, 8) and native.defect_types == []


def test_batches_through_a_dataloader(tiny):
    images, masks, labels, paths = next(iter(torch.utils.data.DataLoader(
        AnomalyDataset(tiny, "widget", "test", image_size=8), batch_size=3)))
    assert images.shape == (3, 3, 8, 8) and masks.shape == (3, 1, 8, 8)
    assert labels.tolist() == [1, 1, 0] and len(paths) == 3


@pytest.mark.parametrize("mode,array", [
    ("L", np.full((8, 8), 200, np.uint8)),
    ("RGBA", np.full((8, 8, 4), 200, np.uint8)),
    ("I;16", np.full((8, 8), 65535, np.uint16)),
])
def test_load_rgb_converts_to_three_channels(tmp_path, mode, array):
    path = _save(tmp_path / "img.png", array)
    with Image.open(path) as raw:
        assert raw.mode.startswith(mode[0])  # really a grey / RGBA / 16-bit file
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (8, 8)
    expected = 255 if mode == "I;16" else 200
    assert (np.asarray(img) == expected).all()


def test_palette_and_jpeg_and_bmp_load(tmp_path):
    _save(tmp_path / "p.png", np.full((8, 8, 3), 90, np.uint8))
    Image.open(tmp_path / "p.png").convert("P").save(tmp_path / "pal.png")
    assert load_rgb(tmp_path / "pal.png").mode == "RGB"
    Image.fromarray(_rgb(30)).save(tmp_path / "x.jpg")
    Image.fromarray(_rgb(30)).save(tmp_path / "x.bmp")
    assert np.asarray(load_rgb(tmp_path / "x.bmp")).shape == (8, 8, 3)
    assert np.asarray(load_rgb(tmp_path / "x.jpg")).shape == (8, 8, 3)


def test_odd_images_in_a_dataset_load_as_rgb(tiny):
    _save(tiny / "widget/train/good/002.png", np.full((8, 8), 7, np.uint8))
    _save(tiny / "widget/train/good/003.png", np.full((8, 8, 4), 7, np.uint8))
    ds = AnomalyDataset(tiny, "widget", "train", image_size=8)
    for i in range(len(ds)):
        assert ds[i][0].shape == (3, 8, 8)


def test_load_mask_any_nonzero(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[0, 0] = 1
    assert load_mask(_save(tmp_path / "m.png", m)).sum() == 1
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[1, 1, 2] = 9
    assert load_mask(_save(tmp_path / "m3.png", rgb)).sum() == 1


def _raises(match_path: Path, fn, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    assert str(match_path) in str(info.value), info.value
    return str(info.value)


def test_missing_category(tiny):
    msg = _raises(tiny / "gadget", AnomalyDataset, tiny, "gadget", "train")
    assert "widget" in msg  # lists what is there


def test_missing_split(tiny):
    _raises(tiny / "widget/validation", AnomalyDataset, tiny, "widget", "validation")


def test_empty_train_set(tiny):
    for p in (tiny / "widget/train/good").iterdir():
        p.unlink()
    msg = _raises(tiny / "widget/train/good", AnomalyDataset, tiny, "widget", "train")
    assert "empty train set" in msg
    (tiny / "widget/train/good").rmdir()
    _raises(tiny / "widget/train/good", AnomalyDataset, tiny, "widget", "train")


def test_missing_mask(tiny):
    (tiny / "widget/ground_truth/crack/001_mask.png").unlink()
    msg = _raises(tiny / "widget/test/crack/001.png", AnomalyDataset, tiny, "widget", "test")
    assert "001_mask.png" in msg


def test_missing_mask_folder(tiny):
    for p in (tiny / "widget/ground_truth/crack").iterdir():
        p.unlink()
    (tiny / "widget/ground_truth/crack").rmdir()
    msg = _raises(tiny / "widget/test/crack/000.png", AnomalyDataset, tiny, "widget", "test")
    assert "does not exist" in msg


def test_misnamed_mask_lists_candidates(tiny):
    gt = tiny / "widget/ground_truth/crack"
    (gt / "001_mask.png").rename(gt / "001.png")
    msg = _raises(tiny / "widget/test/crack/001.png", AnomalyDataset, tiny, "widget", "test")
    assert "expected" in msg and "001_mask.png" in msg and "'001.png'" in msg


def test_corrupt_image(tiny):
    bad = tiny / "widget/test/crack/001.png"
    bad.write_bytes(b"this is not a png")
    ds = AnomalyDataset(tiny, "widget", "test")  # readability is checked at load time
    ds[0]
    msg = _raises(bad, ds.__getitem__, 1)
    assert "cannot read" in msg
    _raises(bad, load_rgb, bad)
    _raises(tiny / "nope.png", load_rgb, tiny / "nope.png")


def test_mask_size_mismatch(tiny):
    _save(tiny / "widget/ground_truth/crack/000_mask.png", np.zeros((6, 8), np.uint8))
    ds = AnomalyDataset(tiny, "widget", "test")
    msg = _raises(tiny / "widget/ground_truth/crack/000_mask.png", ds.__getitem__, 0)
    assert str(tiny / "widget/test/crack/000.png") in msg and "8x6" in msg


def test_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_toy_dataset_loads(toy_root):
    for category, defects in TOY_DEFECTS.items():
        train = AnomalyDataset(toy_root, category, "train", image_size=32)
        assert len(train) == 16 and all(s.label == 0 for s in train.samples)
        test = AnomalyDataset(toy_root, category, "test", image_size=32)
        assert test.defect_types == list(defects)
        assert len(test) == 6 + 3 * len(defects)
        for i in range(len(test)):
            image, mask, label, path = test[i]
            assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32)
            assert label == (0 if "/good/" in path else 1)
            assert bool(mask.any()) == bool(label), path
