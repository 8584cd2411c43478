"""Tests for cutswap_lib.viz: every figure builds on tiny inputs, tensors and numpy alike."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cutswap_lib import viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tiny(n=3, size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.float32)
    masks[1:, 2:5, 3:6] = 1.0
    maps = rng.random((n, size, size)).astype(np.float32) + masks
    return images, masks, maps


@pytest.mark.parametrize("as_tensor", [False, True])
def test_show_samples(as_tensor):
    images, masks, _ = tiny(n=5)
    if as_tensor:
        images, masks = torch.from_numpy(images), torch.from_numpy(masks)[:, None]
    fig = viz.show_samples(images, masks, titles=list("abcde"), ncols=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # 2 x 3 grid, the empty cell removed
    assert fig.axes[1].get_title() == "b"
    assert len(viz.show_samples(images[:1]).axes) == 1


def test_show_samples_draws_boxes():
    images, masks, _ = tiny(n=2)
    fig = viz.show_samples(images, masks, boxes=[[(1, 2, 5, 7)], []])
    first, second = fig.axes[0].patches, fig.axes[1].patches
    assert len(first) == 1 and len(second) == 0
    assert first[0].get_xy() == (0.5, 1.5) and (first[0].get_width(), first[0].get_height()) == (4, 5)
    with pytest.raises(ValueError, match="one list of boxes per image"):
        viz.show_samples(images, boxes=[[]])


@pytest.mark.parametrize("as_tensor", [False, True])
def test_show_anomaly_maps(as_tensor):
    images, masks, maps = tiny(n=3)
    if as_tensor:
        images, masks, maps = (torch.from_numpy(a) for a in (images, masks, maps))
    fig = viz.show_anomaly_maps(images, maps, masks, titles=["x", "y", "z"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 3 + 1  # image | ground truth | overlay, plus one colour bar
    # shared colour scale across rows
    overlays = [fig.axes[3 * i + 2].get_images()[-1] for i in range(3)]
    assert len({im.get_clim() for im in overlays}) == 1
    # no masks: two columns; a lower-resolution (N, 1, h, w) map is stretched over the image
    fig = viz.show_anomaly_maps(images[:2], maps[:2, None, ::2, ::2], vmax=2.0)
    assert len(fig.axes) == 2 * 2 + 1
    assert fig.axes[1].get_images()[-1].get_clim()[1] == 2.0


def test_show_score_histogram():
    labels = torch.tensor([0, 0, 1, 1, 1])
    scores = torch.tensor([0.1, 0.2, 0.8, 0.9, 0.5])
    fig = viz.show_score_histogram(labels, scores, title="toy")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.axes[0].get_title() == "toy"
    assert len(viz.show_score_histogram(np.zeros(3), np.arange(3.0)).axes) == 1


def test_overlay_mask_contour_draws_only_when_there_is_an_edge():
    fig, ax = plt.subplots()
    viz.overlay_mask_contour(ax, np.zeros((6, 6)))
    assert not ax.collections
    mask = np.zeros((1, 6, 6))
    mask[0, 2:4, 2:4] = 1
    viz.overlay_mask_contour(ax, torch.from_numpy(mask))
    assert ax.collections


def test_bad_shapes_are_reported():
    images, masks, maps = tiny(n=2)
    with pytest.raises(ValueError, match="images must be"):
        viz.show_samples(images[:, :2])
    with pytest.raises(ValueError, match="maps must be"):
        viz.show_anomaly_maps(images, maps[:1])
