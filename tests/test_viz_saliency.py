"""Tests for cutswap_lib.viz.saliency: every figure builds on tiny inputs, tensors and numpy alike."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cutswap_lib.viz import saliency as vs  # noqa: E402
from cutswap_lib.cutswap import kmeans_saliency, salient_cluster_mask, sample_anchor_pairs  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tiny(n=2, levels=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, size, size)).astype(np.float32)
    maps = rng.random((n, levels, size, size)).astype(np.float32)
    return images, maps


@pytest.mark.parametrize("as_tensor", [False, True])
def test_show_saliency_levels(as_tensor):
    images, maps = tiny()
    if as_tensor:
        images, maps = torch.from_numpy(images), torch.from_numpy(maps)
    fig = vs.show_saliency_levels(images, maps, titles=["a", "b"], level_names=["x", "y", "z"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4 + 1  # image + 3 levels per row, one colour bar
    assert fig.axes[0].get_title() == "a" and fig.axes[1].get_title() == "x"


def test_show_saliency_levels_low_resolution_maps_and_errors():
    images, _ = tiny(size=16)
    maps = np.random.default_rng(1).random((2, 5, 4, 4)).astype(np.float32)  # coarser than images
    assert len(vs.show_saliency_levels(images, maps).axes) == 2 * 6 + 1
    with pytest.raises(ValueError, match="maps must be"):
        vs.show_saliency_levels(images, maps[0])
    with pytest.raises(ValueError, match="level names"):
        vs.show_saliency_levels(images, maps, level_names=["only one"])


def test_draw_anchor_boxes_scales_corners_and_sides():
    fig, ax = plt.subplots()
    ax.imshow(np.zeros((32, 32)))
    vs.draw_anchor_boxes(ax, torch.tensor([[2, 3], [5, 1]]), patch_size=4, scale=2.0)
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == 2
    # map pixel (2, 3) starts at display (3 * 2 - 0.5, 2 * 2 - 0.5); side 4 map px = 8 display px
    assert boxes[0].get_xy() == (5.5, 3.5) and boxes[0].get_width() == 8.0
    assert len(ax.lines) == 2  # one dot per anchor
    vs.draw_anchor_boxes(ax, np.array([[0, 0], [1, 1]]))  # dots only
    assert len([p for p in ax.patches if isinstance(p, Rectangle)]) == 2


def test_show_kmeans_histogram_colours_bins_by_cluster():
    values = torch.cat([torch.full((50,), 0.1), torch.full((30,), 0.5), torch.full((20,), 0.9)])
    centroids, _ = kmeans_saliency(values.view(1, 10, 10), k=3)
    fig = vs.show_kmeans_histogram(values.view(10, 10), centroids[0], chosen=2, bins=10, log=False)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert "(chosen)" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    filled = [p for p in ax.patches if p.get_height() > 0]
    assert len({tuple(p.get_facecolor()) for p in filled}) == 3  # three clusters, three colours
    with pytest.raises(ValueError):
        vs.show_kmeans_histogram(values[:1], centroids[0])


@pytest.mark.parametrize("with_saliency", [False, True])
def test_show_clusters(with_saliency):
    images, maps = tiny(n=1, levels=1, size=16)
    m = torch.from_numpy(maps[0, 0])
    centroids, assign = kmeans_saliency(m[None], k=4)
    anchors = sample_anchor_pairs(m[None], k=4, generator=torch.Generator().manual_seed(0))[0]
    fig = vs.show_clusters(images[0], assign[0], 4, saliency=m if with_saliency else None,
                           anchors=anchors, patch_size=3, title="t")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == (3 if with_saliency else 2)
    last = panels[-1]
    assert last.get_title().startswith("cluster 3")
    assert len([p for p in last.patches if isinstance(p, Rectangle)]) == 2


def test_show_clusters_rejects_a_batch():
    images, maps = tiny(n=2, levels=1)
    with pytest.raises(ValueError, match="one image"):
        vs.show_clusters(images, np.zeros((16, 16), int), 4)


def test_show_cluster_choices():
    images, maps = tiny(n=1, levels=1, size=16)
    m = torch.from_numpy(maps[0, 0]).expand(3, 16, 16)
    masks = torch.stack([salient_cluster_mask(m[:1], 4)[0], salient_cluster_mask(m[:1], 4, cluster="min")[0],
                         salient_cluster_mask(m[:1], method="sort", top_n=10)[0]])
    anchors = sample_anchor_pairs(m, 4, torch.Generator().manual_seed(0))
    fig = vs.show_cluster_choices(images[0], masks, anchors, titles=["max", "min", "sort"],
                                  patch_size=2, ncols=2)
    assert len(fig.axes) == 3  # 2 x 2 grid, the empty cell removed
    assert fig.axes[2].get_title() == f"sort\n{int(masks[2].sum())} px"
    with pytest.raises(ValueError, match="titles"):
        vs.show_cluster_choices(images[0], masks, titles=["one"])


def test_show_object_share():
    shares = {"pretrained": torch.rand(4, 5), "random": np.random.default_rng(0).random(5)}
    fig = vs.show_object_share(shares, chance=0.27, level_names=list("abcde"), title="disc")
    ax = fig.axes[0]
    assert len(ax.patches) == 10  # 5 levels x 2 networks
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    with pytest.raises(ValueError, match="same number of levels"):
        vs.show_object_share({"a": np.zeros(5), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="empty"):
        vs.show_object_share({})


def test_show_map_anchors_clusters_one_map_and_draws_its_anchors():
    images, maps = tiny(n=1, levels=1, size=16)
    m = torch.from_numpy(maps[0, 0])
    fig = vs.show_map_anchors(images[0], m, k=3, patch_size=2, seed=0, title="t")
    last = [ax for ax in fig.axes if ax.get_title()][-1]
    assert last.get_title().startswith("cluster 2")  # the highest of K = 3
    assert len([p for p in last.patches if isinstance(p, Rectangle)]) == 2
    same = vs.show_map_anchors(images[0], maps[0, 0], k=3, patch_size=2, seed=0)  # numpy works too
    corners = [[p.get_xy() for p in [a for a in f.axes if a.get_title()][-1].patches] for f in (fig, same)]
    assert corners[0] == corners[1]  # same seed, same anchors


def test_saliency_explorer_builds_headlessly_and_redraws():
    widgets = pytest.importorskip("ipywidgets")
    images, maps = tiny(n=2, levels=3, size=16)
    box = vs.saliency_explorer(images, {"a": maps, "b": torch.from_numpy(maps[:, ::-1].copy())},
                               names=["x", "y"], k=2, patch_size=3)
    assert isinstance(box, widgets.VBox)
    assert set(box.controls) == {"image", "level", "k", "network"} and box.controls["level"].value == 2
    first = box.view.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"  # drawn once on creation
    box.controls["network"].value = "b"
    box.controls["image"].value = 1
    assert box.view.value != first  # a control change redraws
    assert plt.get_fignums() == []  # every figure drawn was closed
    with pytest.raises(ValueError, match="same shape"):
        vs.saliency_explorer(images, {"a": maps, "b": maps[:1]})
    with pytest.raises(ValueError, match="names"):
        vs.saliency_explorer(images, {"a": maps}, names=["only one"])
    with pytest.raises(ValueError, match="level"):
        vs.saliency_explorer(images, {"a": maps}, level=4)
