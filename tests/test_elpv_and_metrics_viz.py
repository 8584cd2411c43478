"""The elpv loader (cutswap_lib.data.elpv) and the figures of notebook 00b (cutswap_lib.viz.metrics).

The elpv tests need the PyPI package ``elpv-dataset`` (a dependency of the course) and are skipped
without it, except the one that checks the error a missing package gives.
"""

import importlib.util

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cutswap_lib import metrics  # noqa: E402
from cutswap_lib.data import DatasetError  # noqa: E402
from cutswap_lib.data import elpv  # noqa: E402
from cutswap_lib.viz import metrics as vm  # noqa: E402

HAVE_ELPV = importlib.util.find_spec("elpv_dataset") is not None
needs_elpv = pytest.mark.skipif(not HAVE_ELPV, reason="the PyPI package elpv-dataset is not installed")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- elpv loader

def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(elpv.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match="pip install elpv-dataset"):
        elpv.elpv_folder()
    with pytest.raises(DatasetError, match="elpv-dataset"):
        elpv.load_elpv([0])


@pytest.fixture(scope="module")
def package_data():
    """The package's own loader: all 2,624 cells (about 4 s), read once."""
    pytest.importorskip("elpv_dataset")
    from elpv_dataset.utils import load_dataset

    return load_dataset()


@needs_elpv
def test_labels_agree_with_the_package(package_data):
    images, probs, types = package_data
    paths, our_probs, our_types = elpv.elpv_labels()
    assert len(paths) == len(our_probs) == len(our_types) == 2624 == len(images)
    np.testing.assert_array_equal(our_probs, probs)
    np.testing.assert_array_equal(our_types, types)
    assert set(np.round(3 * our_probs).astype(int).tolist()) == {0, 1, 2, 3}
    assert set(our_types.tolist()) == {"mono", "poly"}
    counts = {p: int(np.isclose(our_probs, p).sum()) for p in (0, 1 / 3, 2 / 3, 1)}
    assert counts == {0: 1508, 1 / 3: 295, 2 / 3: 106, 1: 715}


@needs_elpv
def test_cells_are_the_package_s_images_in_three_channels(package_data):
    images, probs, types = package_data
    rows = [0, 7, 1500, 2623]
    cells = elpv.load_elpv(rows)
    assert cells.images.shape == (4, 3, 300, 300) and cells.images.dtype == torch.float32
    assert torch.equal(cells.images[:, 0], cells.images[:, 1]) and torch.equal(cells.images[:, 0], cells.images[:, 2])
    np.testing.assert_array_equal((cells.images[:, 0] * 255).round().to(torch.uint8).numpy(), images[rows])
    np.testing.assert_array_equal(cells.probabilities.numpy(), probs[rows])
    assert cells.types == list(types[rows]) and cells.indices.tolist() == rows


@needs_elpv
def test_resized_cells_keep_their_range_and_labels():
    cells = elpv.load_elpv(torch.tensor([3, 4]), image_size=64)
    assert cells.images.shape == (2, 3, 64, 64)
    assert 0.0 <= float(cells.images.min()) <= float(cells.images.max()) <= 1.0
    assert cells.probabilities.dtype == torch.float64 and len(cells.types) == 2
    with pytest.raises(IndexError, match="2624"):
        elpv.load_elpv([2624])


@needs_elpv
def test_split_is_disjoint_seeded_and_labelled_by_the_threshold():
    _, probs, types = elpv.elpv_labels()
    split = elpv.elpv_split(30, 10, 12, cell_type="mono", seed=3)
    assert len(split.train) == 30 and len(split.test) == 22 and split.test_labels.tolist() == [0] * 10 + [1] * 12
    assert not set(split.train.tolist()) & set(split.test.tolist())
    assert (probs[split.train] == 0).all() and (types[np.r_[split.train, split.test]] == "mono").all()
    test_probs = probs[split.test]
    assert (test_probs[:10] == 0).all() and (test_probs[10:] >= 2 / 3 - 1e-9).all()
    again = elpv.elpv_split(30, 10, 12, cell_type="mono", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(split, again))
    other = elpv.elpv_split(30, 10, 12, cell_type="mono", seed=4)
    assert not torch.equal(split.train, other.train)

    loose = elpv.elpv_split(5, 5, 300, defect_threshold=1 / 3, cell_type=None, seed=0)
    assert np.isclose(probs[loose.test[5:]], 1 / 3).any()               # the 1/3 cells count now
    with pytest.raises(ValueError, match="588 normal"):
        elpv.elpv_split(500, 100, 10, cell_type="mono")
    with pytest.raises(ValueError, match="cell_type"):
        elpv.elpv_split(1, 1, 1, cell_type="thin-film")


@needs_elpv
def test_write_elpv_mvtec_copies_the_split_into_a_loadable_mvtec_folder(tmp_path):
    from cutswap_lib.data import AnomalyDataset

    paths, _, _ = elpv.elpv_labels()
    split = elpv.elpv_split(4, 2, 3, cell_type="mono", seed=1)
    folder = elpv.write_elpv_mvtec(tmp_path, split, category="cells", defect="crack")
    assert folder == tmp_path / "cells"
    train = AnomalyDataset(tmp_path, "cells", "train", image_size=None)
    test = AnomalyDataset(tmp_path, "cells", "test", image_size=None)
    assert len(train) == 4 and [s.label for s in test.samples].count(1) == 3 and len(test) == 5
    assert test.defect_types == ["crack"]
    source = elpv.elpv_folder()
    for j, row in enumerate(split.train.tolist()):                   # the cells' bytes, in the split's order
        assert (folder / "train" / "good" / f"{j:03d}.png").read_bytes() == (source / paths[row]).read_bytes()
    defect_rows = split.test[split.test_labels == 1].tolist()
    assert (folder / "test" / "crack" / "002.png").read_bytes() == (source / paths[defect_rows[2]]).read_bytes()
    _, mask, label, _ = test[[s.label for s in test.samples].index(1)]
    assert label == 1 and mask.shape == (1, elpv.SIDE, elpv.SIDE)
    assert mask.mean().item() == 0.25 and mask[0, elpv.SIDE // 2, elpv.SIDE // 2] == 1  # the placeholder square

    again = elpv.write_elpv_mvtec(tmp_path, elpv.elpv_split(2, 1, 1, cell_type="mono", seed=2), category="cells")
    assert len(list((again / "train" / "good").iterdir())) == 2       # an existing folder is replaced, not merged


# --------------------------------------------------------------------------- figures

def test_covering_radii_equal_brute_force():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 2))
    order = rng.permutation(50)[:10]
    expected = [np.linalg.norm(points[:, None] - points[order[:k]][None], axis=-1).min(1).max() for k in range(1, 11)]
    np.testing.assert_allclose(vm.covering_radii(torch.from_numpy(points), order), expected)


def test_show_coreset_2d():
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(80, 2, generator=gen)
    order = torch.randperm(80, generator=gen)[:16]
    fig = vm.show_coreset_2d(points, order, sizes=(2, 8, 16), random_order=torch.arange(16))
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert fig.axes[1].get_title().startswith("k = 8")
    assert len(vm.show_coreset_2d(points.numpy(), order, sizes=(4,)).axes) == 2
    with pytest.raises(ValueError, match="sizes"):
        vm.show_coreset_2d(points, order, sizes=(32,))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        vm.show_coreset_2d(torch.randn(10, 3), order[:4], sizes=(2,))


def test_show_masks_and_maps_numbers_the_regions():
    masks = torch.zeros(2, 6, 6)
    masks[1, 0, 0] = masks[1, 1, 1] = 1                               # one 8-connected region
    masks[1, 4:, 4:] = 1                                               # and another
    maps = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(0))
    fig = vm.show_masks_and_maps(masks, maps, titles=["normal", "two"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 + 1
    assert fig.axes[1].get_title() == "two: 2 region(s)"
    assert len(fig.axes[1].texts) == 6                                 # one number per anomalous pixel
    assert len(fig.axes[3].texts) == 36                                # one value per pixel
    with pytest.raises(ValueError):
        vm.show_masks_and_maps(masks, maps[:1])


def test_show_pro_curve_shades_the_aupro():
    rng = np.random.default_rng(0)
    masks = np.zeros((3, 16, 16))
    masks[1, 3:8, 3:8] = 1
    masks[2, 10:12, 1:4] = 1
    maps = rng.random((3, 16, 16)) + masks
    fpr, pro = metrics.pro_curve(masks, maps)
    fig = vm.show_pro_curve({"toy": (fpr, pro), "half": (fpr, pro / 2)}, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels[0] == f"toy ({metrics.aupro(masks, maps):.3f})"
    with pytest.raises(ValueError):
        vm.show_pro_curve({})


def test_show_elpv_cells():
    images = torch.rand(5, 3, 12, 12)
    probs = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0, 0.0], dtype=torch.float64)
    fig = vm.show_elpv_cells(images, probs, ["mono", "mono", "poly", "poly", "mono"], ncols=3,
                             scores=torch.arange(5.0))
    assert isinstance(fig, Figure) and len(fig.axes) == 5              # 2 x 3 grid, the empty cell removed
    assert fig.axes[1].get_title().startswith("p = 1/3 · mono")
    assert "score 2.00" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="probabilities"):
        vm.show_elpv_cells(images, probs[:2])


@needs_elpv
def test_show_elpv_cells_on_real_cells():
    cells = elpv.load_elpv([0, 1, 2], image_size=32)
    fig = vm.show_elpv_cells(cells.images, cells.probabilities, cells.types)
    assert len(fig.axes) == 3
