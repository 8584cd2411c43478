"""Figures of saliency and clustering (CutSwap Sec. III-A), taught in notebook 01.

Same contract as :mod:`cutswap_lib.viz.common`: every ``show_*`` function draws a new figure
with ``plt.subplots`` and returns the :class:`matplotlib.figure.Figure`; nothing is
closed here. Torch tensors (any device, any float dtype) and numpy arrays both work.

Images are ``(3, H, W)`` (one) or ``(N, 3, H, W)`` in [0, 1]; saliency maps are in [0, 1]
at any resolution ``(h, w)`` (stretched over the image). Anchors are ``(row, col)`` pixel
positions on the maps' grid, the top-left corners of the patches CutSwap swaps; a
patch side is given in the same grid, and both are scaled by ``W / w`` for the figure.

Colours: saliency in ``jet`` (blue low, red high); k-means clusters in ``viridis`` by
centroid rank (cluster 0 = lowest saliency, dark; cluster K-1 = highest, yellow); the
two anchors in cyan and magenta.

:func:`show_map_anchors` clusters one map and draws its anchors in one call;
:func:`saliency_explorer` puts the same figure behind ipywidgets controls (imported only
when it is called: ipywidgets is in the ``notebooks`` extra, not a core dependency).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..cutswap.clustering import kmeans_saliency, sample_anchor_pairs
from .common import _images_hwc, _numpy, _show_image

__all__ = ["show_saliency_levels", "draw_anchor_boxes", "show_kmeans_histogram",
           "show_clusters", "show_cluster_choices", "show_object_share", "show_map_anchors",
           "saliency_explorer"]

SALIENCY_CMAP = "jet"
ANCHOR_COLOURS = ("cyan", "magenta")


def _one_image(image) -> np.ndarray:
    """``(3, H, W)`` | ``(1, 3, H, W)`` -> ``(H, W, 3)``."""
    a = _images_hwc(image)  # (N, H, W, C)
    if a.shape[0] != 1:
        raise ValueError(f"expected one image (3, H, W); got {a.shape[0]} images")
    return a[0]


def _map2d(x, name: str) -> np.ndarray:
    """``(h, w)`` | ``(1, h, w)`` -> ``(h, w)`` float."""
    a = _numpy(x)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be one map (h, w); got shape {tuple(a.shape)}")
    return a


def _cluster_colours(k: int) -> np.ndarray:
    """``(k, 4)`` RGBA, viridis by rank (cluster 0 dark, cluster k-1 yellow)."""
    return plt.get_cmap("viridis")(np.linspace(0.0, 1.0, max(int(k), 1)))


def _overlay(ax, image_hwc: np.ndarray, m: np.ndarray, alpha: float, cmap=SALIENCY_CMAP, **kw):
    """The image with ``m`` (h, w) stretched over it; returns the map's AxesImage."""
    h, w = image_hwc.shape[:2]
    _show_image(ax, image_hwc)
    return ax.imshow(m, cmap=cmap, alpha=alpha, extent=(-0.5, w - 0.5, h - 0.5, -0.5), **kw)


def _highlight(ax, image_hwc: np.ndarray, mask: np.ndarray, colour) -> None:
    """The image with the pixels of ``mask`` (h, w) tinted in ``colour`` and the others dimmed."""
    h, w = image_hwc.shape[:2]
    _show_image(ax, image_hwc)
    veil = np.zeros(mask.shape + (4,))
    veil[~mask] = (0.0, 0.0, 0.0, 0.45)  # dim what anchors cannot come from
    veil[mask] = tuple(np.asarray(colour, dtype=float)[:3]) + (0.5,)
    ax.imshow(veil, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")


def draw_anchor_boxes(ax, anchors, patch_size: float | None = None, scale: float = 1.0,
                      colours=ANCHOR_COLOURS, linewidth: float = 1.5) -> None:
    """Draw anchors ``(P, 2)`` (row, col) as dots and their patches as squares on ``ax``.

    ``patch_size``: the patch side on the anchors' grid (None: dots only); ``scale``: the
    displayed image's pixels per grid pixel (image side / map side). Patches that run
    past the border are clipped by the axes, as CutSwap clips them to the image.
    """
    a = _numpy(anchors).reshape(-1, 2).astype(np.float64)
    for i, (row, col) in enumerate(a):
        colour = colours[i % len(colours)]
        top, left = row * scale - 0.5, col * scale - 0.5  # the anchor pixel's corner, displayed
        if patch_size is not None:
            side = float(patch_size) * scale
            ax.add_patch(Rectangle((left, top), side, side, fill=False, edgecolor=colour,
                                   linewidth=linewidth))
        ax.plot([left + 0.5 * scale], [top + 0.5 * scale], marker="o", markersize=4, color=colour,
                markeredgecolor="black", markeredgewidth=0.5)


def show_saliency_levels(images, maps, titles=None, level_names=None, alpha: float = 0.5) -> Figure:
    """Rows = images; columns: the image, then each level's map over it (jet, 0..1), one colour bar.

    ``images`` ``(N, 3, H, W)`` in [0, 1]; ``maps`` ``(N, L, h, w)`` in [0, 1] (stretched over
    the image); ``titles`` N row labels; ``level_names`` L column titles.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    m = _numpy(maps).astype(np.float32)
    n = imgs.shape[0]
    if m.ndim != 4 or m.shape[0] != n:
        raise ValueError(f"maps must be (N, L, h, w) with N = {n} images; got shape {tuple(m.shape)}")
    levels = m.shape[1]
    names = [f"level {i + 1}" for i in range(levels)] if level_names is None else list(level_names)
    if len(names) != levels:
        raise ValueError(f"got {len(names)} level names for {levels} levels")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    fig, axes = plt.subplots(n, levels + 1, figsize=(1.9 * (levels + 1) + 0.6, 1.9 * n + 0.3),
                             squeeze=False, layout="constrained")
    shown = None
    for i in range(n):
        _show_image(axes[i, 0], imgs[i])
        axes[i, 0].set_title("image" if titles is None else str(titles[i]), fontsize=8)
        for j in range(levels):
            shown = _overlay(axes[i, j + 1], imgs[i], m[i, j], alpha, vmin=0.0, vmax=1.0,
                             interpolation="bilinear")
            if i == 0:
                axes[i, j + 1].set_title(names[j], fontsize=8)
    fig.colorbar(shown, ax=list(axes[:, -1]), shrink=0.8, label="saliency")
    return fig


def show_kmeans_histogram(values, centroids, chosen: int | None = None, bins: int = 64,
                          title=None, log: bool = True) -> Figure:
    """Histogram of one map's values ``(h, w)`` with its k-means centroids ``(k,)`` and cuts.

    Bars are coloured by the cluster their bin centre falls in (1-D k-means clusters are
    intervals between the midpoints of sorted centroids, dashed); centroids are solid
    lines; ``chosen`` (an index into the sorted centroids) is named in the legend.
    ``log``: logarithmic counts (saliency maps are mostly near 0).
    """
    v = _numpy(values).astype(np.float64).reshape(-1)
    c = np.sort(_numpy(centroids).astype(np.float64).reshape(-1))
    k = c.size
    if k < 1 or v.size < 2:
        raise ValueError(f"need >= 2 values and >= 1 centroid; got {v.size} and {k}")
    cuts = (c[1:] + c[:-1]) / 2  # cluster j = values in (cut_{j-1}, cut_j]
    colours = _cluster_colours(k)
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    counts, edges, patches = ax.hist(v, bins=bins, log=log, edgecolor="none")
    centres = (edges[1:] + edges[:-1]) / 2
    for p, cluster in zip(patches, np.searchsorted(cuts, centres, side="left")):
        p.set_facecolor(colours[cluster])
    for j, cj in enumerate(c):
        label = f"centroid {j}: {cj:.2f}" + (" (chosen)" if chosen is not None and j == chosen else "")
        ax.axvline(cj, color=colours[j], linewidth=2.5 if j == chosen else 1.5, label=label)
        ax.axvline(cj, color="black", linewidth=0.5)
    for cut in cuts:
        ax.axvline(cut, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("saliency value (dashed: cluster boundaries = midpoints of centroids)")
    ax.set_ylabel("pixels" + (" (log)" if log else ""))
    ax.legend(fontsize=7, loc="upper right")
    if title is not None:
        ax.set_title(title, fontsize=9)
    return fig


def show_clusters(image, assignments, k: int, saliency=None, chosen: int | None = None,
                  anchors=None, patch_size: float | None = None, title=None) -> Figure:
    """One map's k-means partition: [saliency over the image |] clusters | chosen cluster + anchors.

    ``image`` ``(3, H, W)``; ``assignments`` ``(h, w)`` cluster ids in [0, k) ordered by
    centroid; ``saliency`` ``(h, w)`` in [0, 1] or None (no first panel); ``chosen`` the
    cluster tinted on the last panel, the rest dimmed (None: k - 1, the highest); ``anchors`` ``(2, 2)``
    (row, col) on the ``(h, w)`` grid, drawn with patches of side ``patch_size`` (same grid).
    """
    img = _one_image(image)  # (H, W, 3)
    a = _map2d(assignments, "assignments").astype(np.int64)
    h, w = a.shape
    scale = img.shape[1] / w  # display pixels per map pixel
    chosen = k - 1 if chosen is None else int(chosen)
    colours = _cluster_colours(k)
    panels = 2 if saliency is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 2.9), squeeze=False,
                             layout="constrained")
    axes = axes[0]
    if saliency is not None:
        _overlay(axes[0], img, _map2d(saliency, "saliency"), 0.5, vmin=0.0, vmax=1.0,
                 interpolation="bilinear")
        axes[0].set_title("saliency", fontsize=8)
    ax = axes[-2]
    extent = (-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5)
    shown = ax.imshow(a, cmap=ListedColormap(colours), norm=BoundaryNorm(np.arange(k + 1) - 0.5, k),
                      interpolation="nearest", extent=extent)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"k-means partition, K = {k}", fontsize=8)
    bar = fig.colorbar(shown, ax=ax, ticks=np.arange(k), shrink=0.8)
    bar.set_label("cluster (by centroid)", fontsize=7)
    ax = axes[-1]
    _highlight(ax, img, a == chosen, colours[chosen])
    if anchors is not None:
        draw_anchor_boxes(ax, anchors, patch_size, scale)
    ax.set_title(f"cluster {chosen} ({(a == chosen).mean():.0%} of pixels) + anchors", fontsize=8)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def show_cluster_choices(image, masks, anchors=None, titles=None, patch_size: float | None = None,
                         ncols: int = 3) -> Figure:
    """The pixel set anchors are drawn from under several settings, one panel each.

    ``image`` ``(3, H, W)``; ``masks`` ``(S, h, w)`` bool (e.g. ``salient_cluster_mask``),
    tinted yellow on the image (the rest dimmed); ``anchors`` ``(S, 2, 2)`` (row, col) on the masks' grid
    or None; ``titles`` S panel titles; ``patch_size`` on the masks' grid.
    """
    img = _one_image(image)
    m = _numpy(masks).astype(bool)
    if m.ndim != 3:
        raise ValueError(f"masks must be (S, h, w); got shape {tuple(m.shape)}")
    s, h, w = m.shape
    a = None if anchors is None else _numpy(anchors).reshape(s, 2, 2)
    if titles is not None and len(titles) != s:
        raise ValueError(f"got {len(titles)} titles for {s} masks")
    ncols = max(1, min(int(ncols), s))
    nrows = -(-s // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.4 * nrows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.ravel()):
        if i >= s:
            ax.remove()
            continue
        _highlight(ax, img, m[i], (1.0, 0.85, 0.0))
        if a is not None:
            draw_anchor_boxes(ax, a[i], patch_size, img.shape[1] / w)
        label = "" if titles is None else f"{titles[i]}\n"
        ax.set_title(f"{label}{int(m[i].sum())} px", fontsize=8)
    return fig


def show_object_share(shares: Mapping[str, object], chance=None, level_names=None,
                      title=None) -> Figure:
    """Grouped bars: per level, the object share of the most salient cluster, one bar per network.

    ``shares``: label -> ``(B, L)`` (bar = mean over images, error bar = std) or ``(L,)``;
    ``chance``: the object's area fraction, drawn as a dashed line (None: no line);
    ``level_names``: L tick labels.
    """
    if not shares:
        raise ValueError("shares is empty: pass {label: (B, L) or (L,) object shares}")
    rows = {}
    for label, v in shares.items():
        a = _numpy(v).astype(np.float64)
        a = a[None] if a.ndim == 1 else a
        if a.ndim != 2:
            raise ValueError(f"shares[{label!r}] must be (B, L) or (L,); got shape {tuple(a.shape)}")
        rows[label] = a
    levels = {a.shape[1] for a in rows.values()}
    if len(levels) != 1:
        raise ValueError(f"every entry of shares needs the same number of levels; got {sorted(levels)}")
    levels = levels.pop()
    names = [f"level {i + 1}" for i in range(levels)] if level_names is None else list(level_names)
    if len(names) != levels:
        raise ValueError(f"got {len(names)} level names for {levels} levels")
    fig, ax = plt.subplots(figsize=(1.2 * levels + 2.5, 3.2), layout="constrained")
    width = 0.8 / len(rows)
    x = np.arange(levels)
    for i, (label, a) in enumerate(rows.items()):
        err = a.std(0) if a.shape[0] > 1 else None
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, a.mean(0), width, yerr=err, capsize=2,
               label=label)
    if chance is not None:
        ax.axhline(float(chance), color="black", linestyle="--", linewidth=1,
                   label=f"chance (object area {float(chance):.2f})")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("object share of top cluster")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title is not None:
        ax.set_title(title, fontsize=9)
    return fig


def show_map_anchors(image, saliency_map, k: int = 4, patch_size: float | None = None, seed: int = 0,
                     title=None) -> Figure:
    """One map clustered and its anchors drawn: :func:`show_clusters` after k-means and one anchor draw.

    ``image`` ``(3, H, W)``; ``saliency_map`` ``(h, w)`` in [0, 1] (torch or numpy); ``k`` clusters
    (:func:`~cutswap_lib.cutswap.kmeans_saliency`); one anchor pair drawn from the highest-centroid
    cluster by :func:`~cutswap_lib.cutswap.sample_anchor_pairs` with a generator seeded ``seed``
    (same seed, same anchors); ``patch_size`` on the map's grid.
    """
    m = torch.as_tensor(_map2d(saliency_map, "saliency_map"), dtype=torch.float32)  # (h, w)
    _, assign = kmeans_saliency(m[None], k=int(k))  # (1, h, w) ids by centroid rank
    pair = sample_anchor_pairs(m[None], int(k), torch.Generator().manual_seed(int(seed)))[0]  # (2, 2)
    return show_clusters(image, assign[0], int(k), saliency=m, anchors=pair, patch_size=patch_size,
                         title=title)


def saliency_explorer(images, maps: Mapping[str, object], names: Sequence[str] | None = None,
                      k: int = 4, patch_size: float | None = None, seed: int = 0, level: int | None = None,
                      max_k: int = 8, dpi: int = 80):
    """Controls (image, level, K, network) over :func:`show_map_anchors`; returns an ``ipywidgets.VBox``.

    ``images`` ``(N, 3, H, W)`` in [0, 1]; ``maps``: network label -> ``(N, L, h, w)`` saliency maps of
    those images (e.g. ``{"pretrained": ..., "random init": ...}``, every entry the same shape);
    ``names`` N image labels; ``k`` the starting K (slider 1..``max_k``); ``level`` the starting level,
    1-based (None: the deepest but one); ``patch_size`` and ``seed`` as in :func:`show_map_anchors`.

    The figure is redrawn as a PNG into an ``ipywidgets.Image`` whenever a control changes (and
    once now), not through ``ipywidgets.interact``, whose output widget can make headless runs
    (``jupyter nbconvert --execute``) hang now and then (jupyter/nbclient#312). The figures are
    closed after drawing. The returned box holds ``.controls`` (name -> widget) and ``.view`` (the
    image widget) for tests and scripts. Raises ImportError with the install command when
    ipywidgets is missing.
    """
    try:
        import ipywidgets as widgets
    except ImportError as err:
        raise ImportError("saliency_explorer needs ipywidgets: pip install ipywidgets "
                          "(or the course's notebooks extra); the static figures work without it") from err
    if not maps:
        raise ValueError("maps is empty: pass {network label: (N, L, h, w) saliency maps}")
    imgs = _images_hwc(images)  # (N, H, W, C), checks the shape
    arrays = {label: _numpy(m).astype(np.float32) for label, m in maps.items()}
    shapes = {a.shape for a in arrays.values()}
    first = next(iter(shapes))
    if len(shapes) != 1 or len(first) != 4 or first[0] != len(imgs):
        raise ValueError(f"every entry of maps must be (N, L, h, w) with N = {len(imgs)} images and the "
                         f"same shape; got {sorted(shapes)}")
    n, levels = first[:2]
    names = [f"image {i}" for i in range(n)] if names is None else [str(x) for x in names]
    if len(names) != n:
        raise ValueError(f"got {len(names)} names for {n} images")
    level = max(1, levels - 1) if level is None else int(level)
    if not 1 <= level <= levels:
        raise ValueError(f"level must be in 1..{levels}, got {level}")
    controls = {"image": widgets.Dropdown(options=[(c, i) for i, c in enumerate(names)], description="image"),
                "level": widgets.IntSlider(value=level, min=1, max=levels, description="level"),
                "k": widgets.IntSlider(value=int(k), min=1, max=max(int(max_k), int(k)), description="K"),
                "network": widgets.ToggleButtons(options=list(arrays), description="network")}
    view = widgets.Image(format="png")
    image_chw = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))  # (N, C, H, W) for show_clusters

    def redraw(_change=None):
        i, lv, kk, net = (controls[c].value for c in ("image", "level", "k", "network"))
        fig = show_map_anchors(image_chw[i], arrays[net][i, lv - 1], kk, patch_size, seed,
                               title=f"{names[i]}, level {lv}, K = {kk}, {net}")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        plt.close(fig)
        view.value = buffer.getvalue()

    for w in controls.values():
        w.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([controls["image"], controls["level"], controls["k"]]),
                        controls["network"], view])
    box.controls, box.view = controls, view
    return box
