"""Figures of the data tour (notebook 00): a grid of images with their defect masks outlined (and boxes).

Taught in ``notebooks/00_data_tour.ipynb``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .common import _images_hwc, _maps_nhw, _show_image, _titles, overlay_mask_contour

__all__ = ["show_samples"]


def show_samples(images, masks=None, titles=None, ncols: int = 6, boxes=None) -> Figure:
    """Grid of images (N, 3, H, W) in [0,1], mask (N, H, W) | (N, 1, H, W) outlines in red; one axis per image.

    ``boxes``: for each image a list of ``(x0, y0, x1, y1)`` pixel boxes (end exclusive, as
    :func:`cutswap_lib.semirest.boxes.boxes_from_mask` returns them), drawn in yellow.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    n = imgs.shape[0]
    ms = None if masks is None else _maps_nhw(masks, "masks", n)
    titles = _titles(titles, n)
    if boxes is not None and len(boxes) != n:
        raise ValueError(f"boxes must hold one list of boxes per image ({n}), got {len(boxes)}")
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.0 * nrows + 0.3),
                             squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.remove()  # empty cells of the last row
            continue
        _show_image(ax, imgs[k])
        if ms is not None:
            overlay_mask_contour(ax, ms[k])
        for x0, y0, x1, y1 in (boxes[k] if boxes is not None else ()):
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="yellow",
                                   linewidth=1.0))  # pixel centres at integers: a box's edge at -0.5
        if titles[k] is not None:
            ax.set_title(str(titles[k]), fontsize=8)
    return fig
