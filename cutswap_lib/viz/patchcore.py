"""Figures of PatchCore's outputs: anomaly maps beside the ground truth, image-score histograms.

Used by the main job, notebooks 00, 00b and 03.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .common import _images_hwc, _maps_nhw, _numpy, _show_image, _titles, overlay_mask_contour

__all__ = ["show_anomaly_maps", "show_score_histogram"]


def show_anomaly_maps(images, maps, masks=None, titles=None, vmax=None) -> Figure:
    """Rows = samples; columns image | ground truth | map overlay (jet, alpha 0.5), shared colour scale.

    images (N, 3, H, W) in [0,1]; maps (N, H, W) | (N, 1, H, W), any resolution (stretched
    over the image); masks like maps at image resolution, or None (then no ground-truth
    column). The scale runs from the lowest map value to ``vmax`` (default: the highest),
    the same for every row, with one colour bar.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    n, h, w = imgs.shape[:3]
    amaps = _maps_nhw(maps, "maps", n)
    ms = None if masks is None else _maps_nhw(masks, "masks", n)
    titles = _titles(titles, n)
    vmin = float(amaps.min())
    vmax = float(amaps.max()) if vmax is None else float(vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-6  # constant maps still get a valid scale

    ncols = 2 if ms is None else 3
    fig, axes = plt.subplots(n, ncols, figsize=(2.4 * ncols + 0.6, 2.3 * n),
                             squeeze=False, layout="constrained")
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # stretch a low-resolution map over the image
    last = None
    for i in range(n):
        row = axes[i]
        _show_image(row[0], imgs[i])
        row[0].set_title("image" if titles[i] is None else str(titles[i]), fontsize=8)
        if ms is not None:
            row[1].imshow(ms[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            row[1].set_xticks([])
            row[1].set_yticks([])
            row[1].set_title("ground truth", fontsize=8)
        _show_image(row[-1], imgs[i])
        last = row[-1].imshow(amaps[i], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax,
                              extent=extent, interpolation="bilinear")
        if ms is not None:
            overlay_mask_contour(row[-1], ms[i], color="white")
        row[-1].set_title("anomaly map", fontsize=8)
    fig.colorbar(last, ax=list(axes[:, -1]), shrink=0.8, label="anomaly score")
    return fig


def show_score_histogram(labels, scores, title=None, bins: int = 20) -> Figure:
    """Histogram of image scores (N,) split by labels (N,) in {0,1}: normal vs anomalous, shared bins."""
    y = _numpy(labels).reshape(-1)
    s = _numpy(scores).astype(np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length; got {y.shape[0]} and {s.shape[0]}")
    edges = np.histogram_bin_edges(s, bins=bins)
    fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
    for value, name, colour in ((0, "normal", "tab:blue"), (1, "anomalous", "tab:red")):
        part = s[y == value]
        if part.size:
            ax.hist(part, bins=edges, alpha=0.6, color=colour, label=f"{name} ({part.size})")
    ax.set_xlabel("image anomaly score")
    ax.set_ylabel("images")
    ax.legend()
    if title is not None:
        ax.set_title(title)
    return fig
