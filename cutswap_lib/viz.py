"""The figures the notebooks and the main job show (matplotlib only).

Every ``show_*`` function draws a new figure with ``plt.subplots`` and returns the
:class:`matplotlib.figure.Figure` so the caller can save it; nothing is closed here.
The main job closes its figures after saving them (``plt.close(fig)``). In Jupyter
the inline backend shows every open figure at the end of a cell, so write
``fig = viz.show_samples(...)`` (or end the line with ``;``) to see it once.

Images are ``(N, 3, H, W)`` (or ``(N, 1, H, W)``) in [0, 1], masks ``(N, H, W)`` or
``(N, 1, H, W)`` in {0, 1}; torch tensors (any device) and numpy arrays both work.
"""

from __future__ import annotations

import math
import numbers

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["overlay_mask_contour", "show_samples", "show_anomaly_maps", "show_score_histogram",
           "format_results_table"]


# --------------------------------------------------------------------------- conversions

def _numpy(x) -> np.ndarray:
    """Tensor (any device, any float dtype) or array-like -> numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.dtype.itemsize < 4:  # float16 / bfloat16
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _images_hwc(images) -> np.ndarray:
    """(N, C, H, W) | (C, H, W) with C in {1, 3} -> (N, H, W, C) float in [0, 1]."""
    a = _numpy(images).astype(np.float32)
    if a.ndim == 3:
        a = a[None]  # one image
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 3, H, W) or (N, 1, H, W); got shape {tuple(a.shape)}")
    return np.clip(a.transpose(0, 2, 3, 1), 0.0, 1.0)  # (N, H, W, C)


def _maps_nhw(x, name: str, n: int) -> np.ndarray:
    """(N, H, W) | (N, 1, H, W) -> (N, H, W) float, checked against n images."""
    a = _numpy(x).astype(np.float32)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2 and n == 1:
        a = a[None]
    if a.ndim != 3 or a.shape[0] != n:
        raise ValueError(f"{name} must be (N, H, W) or (N, 1, H, W) with N = {n}; "
                         f"got shape {tuple(_numpy(x).shape)}")
    return a


def _titles(titles, n: int) -> list:
    if titles is None:
        return [None] * n
    titles = list(titles)
    if len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    return titles


def _show_image(ax, image_hwc: np.ndarray) -> None:
    if image_hwc.shape[-1] == 1:
        ax.imshow(image_hwc[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image_hwc)
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- figures

def overlay_mask_contour(ax, mask, color: str = "red", linewidth: float = 1.0) -> None:
    """Draw the outline of ``mask`` (H, W) | (1, H, W) in {0,1} on ``ax`` in image pixel coordinates."""
    m = _numpy(mask).astype(np.float32)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W) or (1, H, W); got shape {tuple(m.shape)}")
    if m.min() == m.max():  # nothing to outline (all normal or all anomalous)
        return
    ax.contour(m, levels=[0.5], colors=[color], linewidths=linewidth)


def show_samples(images, masks=None, titles=None, ncols: int = 6) -> Figure:
    """Grid of images (N, 3, H, W) in [0,1], mask (N, H, W) | (N, 1, H, W) outlines in red; one axis per image."""
    imgs = _images_hwc(images)  # (N, H, W, C)
    n = imgs.shape[0]
    ms = None if masks is None else _maps_nhw(masks, "masks", n)
    titles = _titles(titles, n)
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
        if titles[k] is not None:
            ax.set_title(str(titles[k]), fontsize=8)
    return fig


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


# --------------------------------------------------------------------------- text

def _cell(value, floatfmt: str) -> str:
    if value is None:
        return ""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalar
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return "n/a" if math.isnan(value) else format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_results_table(rows, columns=None, floatfmt: str = ".3f") -> str:
    """list of dicts -> Markdown table: header, separator, one line per row; floats as ``floatfmt``.

    ``columns`` picks and orders the columns (default: every key, in order of first
    appearance); a missing value is an empty cell, NaN is ``n/a``; numeric columns are
    right-aligned.
    """
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    columns = list(columns)
    if not columns:
        raise ValueError("format_results_table needs at least one column")

    def numeric(col) -> bool:
        values = [r.get(col) for r in rows if r.get(col) is not None]
        return bool(values) and all(
            isinstance(v, numbers.Number) or (hasattr(v, "item") and getattr(v, "ndim", 1) == 0)
            for v in values) and not any(isinstance(v, bool) for v in values)

    header = "| " + " | ".join(_cell(c, floatfmt) for c in columns) + " |"
    separator = "|" + "|".join("---:" if numeric(c) else "---" for c in columns) + "|"
    lines = ["| " + " | ".join(_cell(r.get(c), floatfmt) for c in columns) + " |" for r in rows]
    return "\n".join([header, separator, *lines])
