"""tools/make_hard_toy.py: the hard toy category, on drawn wood or on real elpv solar cells."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_tool
from PIL import Image

from cutswap_lib.data import AnomalyDataset
from cutswap_lib.data.elpv import elpv_folder, elpv_labels, elpv_split


@pytest.fixture(scope="module")
def hard_toy():
    return load_tool("make_hard_toy")


def test_elpv_backgrounds_are_distinct_normal_cells_resized(hard_toy):
    paths, probs, types = elpv_labels()
    cells = list(hard_toy.elpv_backgrounds(5, 64, seed=3))
    assert len(cells) == 5 and all(c.shape == (64, 64, 3) for c in cells)
    assert all(np.array_equal(c[..., 0], c[..., 2]) for c in cells)           # gray: the channels agree
    rows = elpv_split(5, 0, 0, cell_type="mono", seed=3).train.tolist()       # the cells it may draw from
    assert all(probs[r] == 0 and types[r] == "mono" for r in rows)
    # each background is one of those cells, each used once: match on the cells' mean gray
    means = []
    for r in rows:
        with Image.open(elpv_folder() / paths[r]) as im:
            means.append(np.asarray(im.convert("L"), np.float64).mean() / 255)
    matched = [int(np.argmin([abs(c.mean() - m) for m in means])) for c in cells]
    assert sorted(matched) == list(range(5))
    assert all(abs(cells[i].mean() - means[j]) < 0.01 for i, j in enumerate(matched))


@pytest.mark.parametrize("background", ["wood", "elpv"])
def test_make_category_writes_exact_masks_that_load(hard_toy, tmp_path, background):
    folder = hard_toy.make_category(tmp_path, "cells", n_train=3, n_test_good=2, n_defect=4, seed=1, size=96,
                                    background=background)
    train = AnomalyDataset(tmp_path, "cells", "train", image_size=None)
    test = AnomalyDataset(tmp_path, "cells", "test", image_size=None)
    assert len(train) == 3 and len(test) == 6 and sorted(test.defect_types) == ["crack", "stain"]
    for defect in ("crack", "stain"):
        for mask_file in sorted((folder / "ground_truth" / defect).iterdir()):
            mask = np.asarray(Image.open(mask_file))
            assert mask.shape == (96, 96) and set(np.unique(mask)) == {0, 255}
            image = np.asarray(Image.open(folder / "test" / defect / mask_file.name.replace("_mask", "")))
            if background == "elpv":                                       # gray stains on gray cells
                assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    # a second call replaces the folder
    hard_toy.make_category(tmp_path, "cells", n_train=1, n_test_good=1, n_defect=2, seed=2, size=96,
                           background=background)
    assert len(list((folder / "train" / "good").iterdir())) == 1


def test_the_mask_is_exactly_the_changed_pixels_on_a_real_cell(hard_toy):
    cell = next(hard_toy.elpv_backgrounds(1, 128, seed=0))
    for add in (hard_toy.add_crack, lambda img, rng, s: hard_toy.add_stains(img, rng, s, gray=True)):
        out, mask = add(cell, np.random.default_rng(5), 1.0)
        changed = np.abs(out - cell).max(axis=-1) > 0
        assert mask.any() and not (changed & ~mask).any()                   # nothing changed outside the mask
        assert changed[mask].mean() > 0.95                                   # and the mask is what changed


def test_the_command_refuses_more_cells_than_elpv_has(hard_toy, tmp_path, capsys):
    rc = hard_toy.main(["--root", str(tmp_path), "--background", "elpv", "--n-train", "5000"])
    assert rc == 2 and not (tmp_path / "hardwood").exists()
    assert "588 normal" in capsys.readouterr().err
