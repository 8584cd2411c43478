"""AnomalyDataset, load_rgb, load_mask: items, conversions, mask policy, a DatasetError per bad input."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutswap_lib.data import TOY_DEFECTS, AnomalyDataset, DatasetError, load_mask, load_rgb
from cutswap_lib.data.folder import MaskWarning


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


def _block(size=(32, 32), rows=slice(8, 20), cols=slice(5, 17)) -> np.ndarray:
    """The expected ``(H, W)`` bool mask of the policy tests: one 12x12 defect."""
    m = np.zeros(size, bool)
    m[rows, cols] = True
    return m


def test_load_mask_jpeg_with_background_two(tmp_path):
    """A JPEG-saved mask, background 2 and a noisy 255 defect: the defect's area, not 100 %."""
    expected = _block()
    grey = np.where(expected, 255, 2).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "m.jpg", quality=90)
    raw = np.asarray(Image.open(tmp_path / "m.jpg"))
    assert (raw != 0).mean() > 0.5 and len(np.unique(raw[expected])) > 1  # really noisy, background not 0
    np.testing.assert_array_equal(load_mask(tmp_path / "m.jpg"), expected)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "m3.jpg", quality=90)
    np.testing.assert_array_equal(load_mask(tmp_path / "m3.jpg"), expected)


def test_load_mask_8bit_threshold_is_half_range(tmp_path):
    m = np.full((4, 4), 2, np.uint8)
    m[0, 0], m[0, 1], m[0, 2] = 127, 128, 255
    assert np.argwhere(load_mask(_save(tmp_path / "m.png", m))).tolist() == [[0, 1], [0, 2]]
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 1, 2], rgb[2, 2, 0] = 9, 200  # max over the colour channels, then the same threshold
    assert np.argwhere(load_mask(_save(tmp_path / "m3.png", rgb))).tolist() == [[2, 2]]


def test_load_mask_zero_one_masks(tmp_path):
    expected = _block()
    for dtype in (np.uint8, np.uint16):
        path = _save(tmp_path / f"m_{np.dtype(dtype).name}.png", expected.astype(dtype))
        np.testing.assert_array_equal(load_mask(path), expected)
    Image.fromarray(expected).save(tmp_path / "bool.png")  # mode "1"
    assert Image.open(tmp_path / "bool.png").mode == "1"
    np.testing.assert_array_equal(load_mask(tmp_path / "bool.png"), expected)


def test_load_mask_16bit(tmp_path):
    expected = _block()
    noisy = np.where(expected, 65535 - np.arange(expected.size).reshape(expected.shape) % 700, 300)
    path = _save(tmp_path / "m16.png", noisy.astype(np.uint16))
    assert Image.open(path).mode.startswith("I;16")
    np.testing.assert_array_equal(load_mask(path), expected)
    edge = np.zeros((2, 2), np.uint16)
    edge[0, 0], edge[0, 1] = 32767, 32768
    assert load_mask(_save(tmp_path / "edge16.png", edge)).tolist() == [[False, True], [False, False]]
    low = np.where(expected, 255, 0).astype(np.uint16)  # an 8-bit mask saved as 16-bit: below half range
    assert not load_mask(_save(tmp_path / "low16.png", low)).any()


@pytest.mark.parametrize("colour", [0, 255])
def test_load_mask_alpha_only_defect(tmp_path, colour):
    """RGBA / LA masks whose colour channels are blank (black or white paint) use the alpha channel."""
    expected = _block()
    alpha = np.where(expected, 255, 0).astype(np.uint8)
    rgba = np.dstack([np.full(expected.shape, colour, np.uint8)] * 3 + [alpha])
    np.testing.assert_array_equal(load_mask(_save(tmp_path / "rgba.png", rgba)), expected)
    la = Image.fromarray(np.dstack([np.full(expected.shape, colour, np.uint8), alpha]), mode="LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "la.png"), expected)


def test_load_mask_rgba_prefers_colour(tmp_path):
    """When the colour channels carry the defect, alpha (constant or not) is ignored."""
    expected = _block()
    colour = np.where(expected, 255, 0).astype(np.uint8)
    for name, alpha in (("opaque", np.full(expected.shape, 255, np.uint8)),
                        ("faded", np.where(_block(cols=slice(0, 32)), 255, 40).astype(np.uint8))):
        rgba = np.dstack([colour, colour, colour, alpha])
        np.testing.assert_array_equal(load_mask(_save(tmp_path / f"{name}.png", rgba)), expected)


def _mask_warnings(ds, index) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds[index]
    return [str(w.message) for w in caught if issubclass(w.category, MaskWarning)]


def test_empty_defect_mask_warns_naming_the_file(tiny):
    path = _save(tiny / "widget/ground_truth/crack/001_mask.png", np.full((8, 8), 2, np.uint8))
    ds = AnomalyDataset(tiny, "widget", "test", image_size=8)
    assert _mask_warnings(ds, 0) == []
    with pytest.warns(MaskWarning, match="empty") as record:
        _, mask, label, _ = ds[1]
    assert len(record) == 1 and str(path) in str(record[0].message)
    assert str(tiny / "widget/test/crack/001.png") in str(record[0].message)
    assert label == 1 and mask.sum() == 0  # still loaded: a warning, not an error
    assert _mask_warnings(ds, 1) == []  # once per file


def test_large_defect_mask_warns(tiny):
    big = np.full((8, 8), 255, np.uint8)
    big[:3] = 0  # 40 of 64 pixels = 62 %
    path = _save(tiny / "widget/ground_truth/crack/000_mask.png", big)
    ds = AnomalyDataset(tiny, "widget", "test", image_size=8)
    messages = _mask_warnings(ds, 0)
    assert len(messages) == 1 and str(path) in messages[0] and "62%" in messages[0]
    assert _mask_warnings(ds, 0) == [] and _mask_warnings(ds, 2) == []  # once; good images never warn
    half = np.zeros((8, 8), np.uint8)
    half[:4] = 255  # exactly half: fine
    _save(tiny / "widget/ground_truth/crack/001_mask.png", half)
    assert _mask_warnings(ds, 1) == []


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


@pytest.mark.filterwarnings("error::cutswap_lib.data.folder.MaskWarning")  # toy masks are never odd
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
