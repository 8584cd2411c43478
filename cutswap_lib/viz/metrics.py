"""Figures of notebook 00b: PatchCore's coreset on 2-D points, worked metric images, PRO curves, elpv cells.

Same contract as :mod:`cutswap_lib.viz.common`: every ``show_*`` function draws a new figure
with ``plt.subplots`` and returns the :class:`matplotlib.figure.Figure`; nothing is closed
here. Torch tensors (any device, any float dtype) and numpy arrays both work.

* :func:`show_coreset_2d` – greedy k-center (PatchCore Sec. 3.2) on a scatter of points: the
  centres chosen first, the covering radius drawn around them, and the radius as the coreset grows.
* :func:`show_masks_and_maps` – tiny hand-made masks (their 8-connected regions numbered) above
  their score maps (every value written), for the worked metric examples.
* :func:`show_pro_curve` – PRO curves over the false-positive rate (MVTec AD evaluation,
  Bergmann et al., IJCV 2021), the area up to the FPR limit shaded, beside a zoom on that range.
* :func:`show_elpv_cells` – a grid of elpv solar cells titled with their defect probability and type.

:func:`covering_radii` is the small computation behind the coreset figure (numpy, exact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from scipy import ndimage

from .common import _images_hwc, _maps_nhw, _numpy, _show_image, _titles, overlay_mask_contour

__all__ = ["covering_radii", "show_coreset_2d", "show_masks_and_maps", "show_pro_curve", "show_elpv_cells"]


# --------------------------------------------------------------------------- coreset

def covering_radii(points, order) -> np.ndarray:
    """points (N, 2+) and the order (K,) in which centres were chosen -> radius (K,) after each.

    ``radius[k-1]`` = max over all points of the distance to the nearest of the first k centres:
    the worst score a normal point can get from a memory bank of those k (PatchCore Eq. 5's objective).
    """
    p = _numpy(points).astype(np.float64)
    idx = _numpy(order).astype(np.int64).reshape(-1)
    nearest = np.full(len(p), np.inf)
    radii = np.empty(len(idx))
    for k, i in enumerate(idx):
        nearest = np.minimum(nearest, np.linalg.norm(p - p[i], axis=1))  # (N,)
        radii[k] = nearest.max()
    return radii


def show_coreset_2d(points, order, sizes: Sequence[int] = (4, 16, 64), random_order=None) -> Figure:
    """Greedy k-center on 2-D points: one panel per coreset size, then the radius as it grows.

    points (N, 2); order (K,) the greedy selection order (K >= max(sizes)); ``random_order``
    (K',) an optional random selection drawn for comparison in the last panel. Each size panel
    shows every point (grey), the first ``k`` centres (red), a circle of the covering radius
    around each centre (every point lies inside one) and the point that sets the radius (ring).
    """
    p = _numpy(points).astype(np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must be (N, 2); got shape {tuple(p.shape)}")
    idx = _numpy(order).astype(np.int64).reshape(-1)
    if max(sizes) > len(idx):
        raise ValueError(f"sizes go up to {max(sizes)} but only {len(idx)} centres are given")
    radii = covering_radii(p, idx)
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(3.3 * (len(sizes) + 1), 3.4), layout="constrained")
    for ax, k in zip(axes, sizes):
        centres = p[idx[:k]]
        dist = np.linalg.norm(p[:, None] - centres[None], axis=-1).min(1)  # (N,)
        ax.scatter(p[:, 0], p[:, 1], s=5, c="0.6", label="points")
        for c in centres:
            ax.add_patch(plt.Circle(c, radii[k - 1], fill=False, color="tab:red", alpha=0.25, lw=0.8))
        ax.scatter(centres[:, 0], centres[:, 1], s=18, c="tab:red", label="centres")
        far = p[int(dist.argmax())]
        ax.scatter([far[0]], [far[1]], s=80, facecolors="none", edgecolors="k", label="farthest point")
        ax.set_title(f"k = {k}: radius {radii[k - 1]:.3f}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, loc="lower left")
    ax = axes[-1]
    ks = np.arange(1, len(idx) + 1)
    ax.plot(ks, radii, color="tab:red", label="greedy k-center")
    if random_order is not None:
        ridx = _numpy(random_order).astype(np.int64).reshape(-1)
        ax.plot(np.arange(1, len(ridx) + 1), covering_radii(p, ridx), color="tab:blue", label="random subset")
    ax.plot(ks, radii / 2, color="tab:red", ls=":", label="greedy / 2 (no k-subset beats it)")
    ax.set_xscale("log")
    ax.set_xlabel("coreset size k")
    ax.set_ylabel("covering radius")
    ax.set_title("the radius shrinks as k grows", fontsize=9)
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- worked metric images

def show_masks_and_maps(masks, maps, titles=None, annotate: bool = True) -> Figure:
    """Row 1: masks (N, H, W) in {0,1}, each 8-connected region numbered; row 2: maps (N, H, W).

    With ``annotate`` every map value is written in its pixel (meant for maps of about 8 x 8).
    All maps share one colour scale; the masks' outlines are drawn on the maps.
    """
    m = _maps_nhw(masks, "masks", len(_numpy(masks)))
    a = _maps_nhw(maps, "maps", len(m))
    if m.shape != a.shape:
        raise ValueError(f"masks and maps must have the same shape; got {m.shape} and {a.shape}")
    titles = _titles(titles, len(m))
    vmin, vmax = float(a.min()), float(a.max())
    fig, axes = plt.subplots(2, len(m), figsize=(2.6 * len(m), 5.4), squeeze=False, layout="constrained")
    offset = 0
    for i in range(len(m)):
        regions, count = ndimage.label(m[i] > 0.5, structure=np.ones((3, 3), int))
        top, bottom = axes[0, i], axes[1, i]
        top.imshow(m[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for r in range(1, count + 1):
            ys, xs = np.nonzero(regions == r)
            for y, x in zip(ys, xs):
                top.text(x, y, str(offset + r), ha="center", va="center", fontsize=7, color="tab:red")
        offset += count
        top.set_title(("" if titles[i] is None else f"{titles[i]}: ") + f"{count} region(s)", fontsize=8)
        last = bottom.imshow(a[i], cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        if annotate:
            for y in range(a.shape[1]):
                for x in range(a.shape[2]):
                    bright = (a[i, y, x] - vmin) > 0.6 * (vmax - vmin)
                    bottom.text(x, y, f"{a[i, y, x]:.1f}", ha="center", va="center", fontsize=5.5,
                                color="k" if bright else "w")
        overlay_mask_contour(bottom, m[i], color="tab:red", linewidth=1.2)
        bottom.set_title("score map", fontsize=8)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(last, ax=list(axes[1]), shrink=0.8, label="score")
    return fig


# --------------------------------------------------------------------------- PRO curve

def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The polyline (x, y) cut at x = limit (interpolated there)."""
    keep = x <= limit
    xs, ys = x[keep], y[keep]
    if keep.sum() < len(x) and (len(xs) == 0 or xs[-1] < limit):
        j = int(keep.sum())
        t = (limit - x[j - 1]) / (x[j] - x[j - 1])
        xs, ys = np.r_[xs, limit], np.r_[ys, y[j - 1] + t * (y[j] - y[j - 1])]
    return xs, ys


def show_pro_curve(curves: Mapping[str, tuple], fpr_limit: float = 0.3, title: str | None = None) -> Figure:
    """PRO over FPR, ``{label: (fpr (T,), pro (T,))}`` (e.g. from :func:`cutswap_lib.metrics.pro_curve`).

    Left: the whole curve, FPR 0..1, the integration limit marked. Right: FPR 0..``fpr_limit``
    stretched to the panel, the area that AUPRO normalises shaded and, in the legend, that area /
    ``fpr_limit`` (the fraction of the panel it fills: AUPRO, for a curve with every threshold).
    """
    if not curves:
        raise ValueError("show_pro_curve needs at least one curve")
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, (fpr, pro)) in enumerate(curves.items()):
        x, y = _numpy(fpr).astype(np.float64), _numpy(pro).astype(np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"{label}: fpr and pro must be 1-D of the same length; got {x.shape}, {y.shape}")
        colour = colours[n % len(colours)]
        full.plot(x, y, color=colour, label=label)
        xs, ys = _area_to(x, y, fpr_limit)
        area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2)) / fpr_limit
        zoom.plot(xs, ys, color=colour, label=f"{label} ({area:.3f})", marker="." if len(xs) < 60 else None)
        zoom.fill_between(xs, ys, color=colour, alpha=0.25 if len(curves) == 1 else 0.08)
    full.axvline(fpr_limit, color="k", ls="--", lw=0.8)
    full.text(fpr_limit, 0.03, f" FPR {fpr_limit:g}", fontsize=8)
    full.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate (all normal pixels)",
             ylabel="PRO (mean overlap per region)", title="the whole PRO curve")
    zoom.set(xlim=(0, fpr_limit), ylim=(0, 1.02), xlabel="false-positive rate",
             title=f"up to FPR {fpr_limit:g}: AUPRO = shaded area / {fpr_limit:g}")
    zoom.legend(fontsize=8, loc="lower right")
    if title is not None:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- elpv

def _fraction(p: float) -> str:
    return str(Fraction(float(p)).limit_denominator(3))


def show_elpv_cells(images, probabilities, types=None, ncols: int = 8, scores=None) -> Figure:
    """A grid of solar cells (N, 3, S, S) titled "p = 1/3 · mono" (and the score, when given)."""
    imgs = _images_hwc(images)
    n = len(imgs)
    probs = _numpy(probabilities).astype(np.float64).reshape(-1)
    if len(probs) != n:
        raise ValueError(f"got {len(probs)} probabilities for {n} images")
    types = _titles(types, n)
    s = None if scores is None else _numpy(scores).astype(np.float64).reshape(-1)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 1.9 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.remove()
    for i, ax in enumerate(axes.flat[:n]):
        _show_image(ax, imgs[i])
        label = f"p = {_fraction(probs[i])}" + ("" if types[i] is None else f" · {types[i]}")
        if s is not None:
            label += f"\nscore {s[i]:.2f}"
        ax.set_title(label, fontsize=8, color="tab:red" if probs[i] > 0 else "k")
    return fig
