"""The toy dataset: determinism, layout, counts, exact masks, foregrounds, ensure/regenerate."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutswap_lib.data import (TOY_CATEGORIES, TOY_DEFECTS, DatasetError, ensure_toy_dataset,
                              make_toy_dataset, render_toy_sample, toy_foreground_path)

SMALL = dict(n_train=4, n_test_good=2, n_test_defect=2, image_size=64)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_small")
    for category in TOY_CATEGORIES:
        make_toy_dataset(root, category, seed=0, **SMALL)
    return root


def test_categories_and_defect_kinds():
    assert TOY_CATEGORIES == ("fabric", "disc", "board")
    for category in TOY_CATEGORIES:
        assert len(TOY_DEFECTS[category]) >= 3
        assert list(TOY_DEFECTS[category]) == sorted(TOY_DEFECTS[category])
    assert {"missing", "misplaced"} <= set(TOY_DEFECTS["board"])


@pytest.mark.parametrize("category", TOY_CATEGORIES)
def test_same_seed_gives_identical_bytes(small, tmp_path, category):
    again = make_toy_dataset(tmp_path, category, seed=0, **SMALL)
    assert _files(again) == _files(small / category)


def test_different_seed_gives_different_images(small, tmp_path):
    other = make_toy_dataset(tmp_path, "disc", seed=1, **SMALL)
    a, b = _files(small / "disc"), _files(other)
    assert a.keys() == b.keys()
    images = [k for k in a if k.startswith(("train", "test"))]
    assert all(a[k] != b[k] for k in images)


@pytest.mark.parametrize("category", TOY_CATEGORIES)
def test_layout_and_counts(small, category):
    folder = small / category
    expected = {"toy_meta.json"}
    groups = [("train", "good", SMALL["n_train"]), ("test", "good", SMALL["n_test_good"])]
    groups += [("test", d, SMALL["n_test_defect"]) for d in TOY_DEFECTS[category]]
    for split, kind, count in groups:
        for i in range(count):
            expected |= {f"{split}/{kind}/{i:03d}.png", f"foreground/{split}/{kind}/{i:03d}.png"}
            if kind != "good":
                expected.add(f"ground_truth/{kind}/{i:03d}_mask.png")
    assert set(_files(folder)) == expected
    meta = json.loads((folder / "toy_meta.json").read_text())
    assert meta["category"] == category and meta["seed"] == 0
    assert meta["image_size"] == SMALL["image_size"] and meta["defect_types"] == list(TOY_DEFECTS[category])
    image = _png(folder / "train/good/000.png")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("category", TOY_CATEGORIES)
def test_masks_are_exactly_the_changed_pixels(small, category):
    for defect in TOY_DEFECTS[category]:
        for i in range(SMALL["n_test_defect"]):
            image = _png(small / category / "test" / defect / f"{i:03d}.png")
            mask = _png(small / category / "ground_truth" / defect / f"{i:03d}_mask.png")
            assert set(np.unique(mask)) <= {0, 255}
            assert mask.any(), f"{category}/{defect}/{i}: empty mask"
            clean = render_toy_sample(category, f"test/{defect}", i, defect=None,
                                      image_size=SMALL["image_size"], seed=0).image
            changed = (image != clean).any(axis=-1)
            np.testing.assert_array_equal(mask > 0, changed)


def test_defects_are_visible(small):
    """Mean change inside the mask is large compared with the sensor noise (about 3 grey levels)."""
    for category in TOY_CATEGORIES:
        for defect in TOY_DEFECTS[category]:
            image = _png(small / category / "test" / defect / "000.png").astype(float)
            clean = render_toy_sample(category, f"test/{defect}", 0, image_size=64).image.astype(float)
            mask = _png(small / category / "ground_truth" / defect / "000_mask.png") > 0
            assert np.abs(image - clean).max(axis=-1)[mask].mean() > 20, (category, defect)


def test_normal_samples_vary(small):
    for category in TOY_CATEGORIES:
        a = _png(small / category / "train/good/000.png").astype(float)
        b = _png(small / category / "train/good/001.png").astype(float)
        assert np.abs(a - b).mean() > 3, category


def test_foregrounds(small):
    fabric = _png(toy_foreground_path(small / "fabric/test/stain/000.png"))
    assert (fabric == 255).all()
    for category in ("disc", "board"):
        fg = _png(toy_foreground_path(small / category / "train/good/000.png"))
        assert set(np.unique(fg)) == {0, 255}
        assert 0.2 < (fg > 0).mean() < 0.9, category
        assert fg.shape == (64, 64)
    with pytest.raises(DatasetError):
        toy_foreground_path("nowhere.png")


def test_defects_lie_on_the_foreground(small):
    """Surface defects are clipped to the object; structural ones change it (chips remove metal)."""
    for category in ("disc", "board"):
        for defect in ("scratch", "stain"):
            mask = _png(small / category / "ground_truth" / defect / "000_mask.png") > 0
            fg = _png(toy_foreground_path(small / category / "test" / defect / "000.png")) > 0
            assert (fg | ~mask).all(), (category, defect)


def test_render_matches_files_and_validates(small):
    sample = render_toy_sample("board", "test/missing", 1, defect="missing", image_size=64, seed=0)
    np.testing.assert_array_equal(sample.image, _png(small / "board/test/missing/001.png"))
    np.testing.assert_array_equal(sample.foreground, _png(small / "board/foreground/test/missing/001.png") > 0)
    with pytest.raises(ValueError, match="unknown defect"):
        render_toy_sample("board", "test/chip", 0, defect="chip")
    with pytest.raises(ValueError, match="unknown toy category"):
        make_toy_dataset(small, "carpet")
    with pytest.raises(ValueError, match="n_train"):
        make_toy_dataset(small, "disc", n_train=0)


def test_ensure_reuses_regenerates_and_protects(tmp_path):
    path = ensure_toy_dataset(tmp_path, "fabric", seed=3, **SMALL)
    stamp = (path / "toy_meta.json").stat().st_mtime_ns
    assert ensure_toy_dataset(tmp_path, "fabric", seed=3, **SMALL) == path
    assert (path / "toy_meta.json").stat().st_mtime_ns == stamp  # reused, not rewritten

    ensure_toy_dataset(tmp_path, "fabric", seed=3, **{**SMALL, "n_train": 2})  # other parameters
    assert sorted(p.name for p in (path / "train/good").iterdir()) == ["000.png", "001.png"]
    assert json.loads((path / "toy_meta.json").read_text())["n_train"] == 2

    (path / "test/good/000.png").unlink()  # incomplete -> regenerated
    ensure_toy_dataset(tmp_path, "fabric", seed=3, **{**SMALL, "n_train": 2})
    assert (path / "test/good/000.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left

    (tmp_path / "disc").mkdir()
    (tmp_path / "disc" / "mine.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not a toy dataset"):
        ensure_toy_dataset(tmp_path, "disc", **SMALL)
    assert (tmp_path / "disc" / "mine.txt").is_file()


USER_FILES = {"boxes.json": b'{"test/cut/000.png": [[1, 2, 10, 12]]}\n',
              "mine/labels.csv": b"image,label\n000.png,ok\n",
              "train/good/notes.txt": b"my notes, inside a generator folder\n"}


def _add_user_files(folder: Path) -> None:
    for rel, data in USER_FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)


def _assert_regenerated(folder: Path, fresh: Path) -> None:
    """``folder`` = a fresh generation byte for byte, plus the user's files unchanged."""
    files = _files(folder)
    assert {k: files.pop(k) for k in USER_FILES} == USER_FILES
    assert files == _files(fresh)


@pytest.mark.parametrize("change", ["image_size", "profile", "deleted image"])
def test_regeneration_keeps_user_files(tmp_path, change):
    path = ensure_toy_dataset(tmp_path / "data", "fabric", **SMALL)
    _add_user_files(path)
    params = {"image_size": {**SMALL, "image_size": 48},
              "profile": {**SMALL, "n_train": 3, "n_test_defect": 1},
              "deleted image": SMALL}[change]
    if change == "deleted image":
        (path / "test/good/001.png").unlink()
    assert ensure_toy_dataset(tmp_path / "data", "fabric", **params) == path
    _assert_regenerated(path, make_toy_dataset(tmp_path / "fresh", "fabric", **params))
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]


def test_regeneration_removes_stale_generated_files(tmp_path):
    big = {**SMALL, "n_train": 6, "n_test_defect": 3}
    path = make_toy_dataset(tmp_path / "data", "disc", **big)
    _add_user_files(path)
    stale = ["train/good/005.png", "foreground/train/good/005.png", "test/chip/002.png",
             "ground_truth/chip/002_mask.png", "foreground/test/chip/002.png"]
    assert all((path / rel).is_file() for rel in stale)
    make_toy_dataset(tmp_path / "data", "disc", **SMALL)
    assert not any((path / rel).exists() for rel in stale)
    _assert_regenerated(path, make_toy_dataset(tmp_path / "fresh", "disc", **SMALL))


def test_regeneration_removes_defect_kinds_of_an_older_generator(tmp_path):
    """Folders of a defect kind the previous toy_meta.json listed but this generator no longer makes."""
    path = make_toy_dataset(tmp_path / "data", "disc", **SMALL)
    meta = json.loads((path / "toy_meta.json").read_text())
    meta = {**meta, "seed": 9, "defect_types": ["dent", *meta["defect_types"]]}
    (path / "toy_meta.json").write_text(json.dumps(meta))
    for rel in ("test/dent/000.png", "ground_truth/dent/000_mask.png", "foreground/test/dent/000.png"):
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(b"old")
    (path / "test/unlisted/000.png").parent.mkdir()
    (path / "test/unlisted/000.png").write_bytes(b"user's")  # not a folder the generator ever owned
    ensure_toy_dataset(tmp_path / "data", "disc", **SMALL)
    assert not (path / "test/dent").exists() and not (path / "ground_truth/dent").exists()
    assert not (path / "foreground/test/dent").exists()
    assert (path / "test/unlisted/000.png").read_bytes() == b"user's"


def test_interrupted_regeneration_never_looks_complete(tmp_path, monkeypatch):
    from cutswap_lib.data import toy

    path = make_toy_dataset(tmp_path / "data", "board", **SMALL)
    _add_user_files(path)
    other = {**SMALL, "n_train": 2}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while moving files into place")

    monkeypatch.setattr(toy, "_stale_files", crash)
    with pytest.raises(KeyboardInterrupt):
        make_toy_dataset(tmp_path / "data", "board", **other)
    monkeypatch.undo()
    assert not toy._complete(path, toy._params("board", seed=0, **SMALL))
    assert not toy._complete(path, toy._params("board", seed=0, **other))
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]
    ensure_toy_dataset(tmp_path / "data", "board", **other)  # still a toy folder: repaired, not refused
    _assert_regenerated(path, make_toy_dataset(tmp_path / "fresh", "board", **other))


def test_toy_root_at_keeps_other_sizes_in_their_own_folder(tmp_path, monkeypatch):
    import dataclasses

    from cutswap_lib.config import get_profile, toy_root
    from cutswap_lib.runs import ensure_toy_at, toy_root_at

    monkeypatch.setenv("CUTSWAP_HOME", str(tmp_path))
    fast = dataclasses.replace(get_profile("fast"), toy_train=2, toy_test_good=1, toy_test_defect=1)
    assert toy_root_at(fast, fast.image_size) == toy_root(fast)
    other = fast.image_size * 2
    assert toy_root_at(fast, other) == toy_root(fast).with_name(f"toy_fast_{other}px")
    root = ensure_toy_at(fast, other, "disc")
    assert root == toy_root_at(fast, other)
    from PIL import Image
    image = Image.open(next((root / "disc" / "train" / "good").iterdir()))
    assert image.size == (other, other)
    assert not toy_root(fast).exists()   # the profile's own folder is left alone
