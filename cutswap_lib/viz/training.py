"""Figures of backbone training and PatchCore on its features (CutSwap Sec. III-B, IV), notebook 03.

Same contract as :mod:`cutswap_lib.viz.common`: every ``show_*`` function draws a new figure
with ``plt.subplots`` and returns the :class:`matplotlib.figure.Figure`; nothing is
closed here. Torch tensors (any device, any float dtype) and numpy arrays both work.

* :func:`show_training_curves` – loss, accuracy and learning rate per epoch of several
  runs (the ``history`` lists of :func:`cutswap_lib.cutswap.train.train_three_way`).
* :func:`show_three_way_step` – one 3-way batch, one row per class, each sample's
  probability of its own class before and after a training step.
* :func:`show_memory_bank_projection` – per backbone, a 2-D PCA of its normal patch
  features, the PatchCore memory bank(s) drawn on top, anomalous patches marked.
* :func:`show_anomaly_maps_by_backbone` – the same test images scored by several
  backbones, side by side, one colour scale per backbone.

:func:`pca_basis` is the small PCA behind the projection (hand-written so the figure
needs no scikit-learn; ``tests/test_viz_training.py`` compares it with
``sklearn.decomposition.PCA``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .common import _images_hwc, _maps_nhw, _numpy, _show_image, _titles, overlay_mask_contour

__all__ = ["show_training_curves", "show_three_way_step", "pca_basis", "show_memory_bank_projection",
           "show_anomaly_maps_by_backbone"]


# --------------------------------------------------------------------------- training

def show_training_curves(histories: Mapping[str, Sequence[Mapping]], chance: float | None = 1 / 3,
                         title: str | None = None) -> Figure:
    """Loss | accuracy | learning rate per epoch, one line per run (``{name: history}``).

    A history is a list of rows ``{"epoch", "loss", "accuracy", "lr", ...}`` (epochs
    counted from 0, drawn from 1); ``chance`` draws the accuracy of guessing (1/3 for
    the 3-way task) as a dashed line, None leaves it out.
    """
    if not histories:
        raise ValueError("show_training_curves needs at least one history")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")
    keys = (("loss", "cross-entropy loss"), ("accuracy", "training accuracy"),
            ("lr", "learning rate at epoch end"))
    for name, history in histories.items():
        rows = list(history)
        if not rows:
            raise ValueError(f"history {name!r} is empty")
        missing = {"epoch", "loss", "accuracy", "lr"} - set(rows[0])
        if missing:
            raise ValueError(f"history {name!r} lacks {sorted(missing)}; expected the rows of train_three_way")
        epochs = [int(r["epoch"]) + 1 for r in rows]
        for ax, (key, _) in zip(axes, keys):
            ax.plot(epochs, [float(r[key]) for r in rows], marker="o", markersize=3, label=name)
    for ax, (_, label) in zip(axes, keys):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if chance is not None:
        axes[1].axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8)
    if title is not None:
        fig.suptitle(title)
    return fig


def show_three_way_step(images, labels, before, after=None,
                        class_names: Sequence[str] = ("normal", "CutSwap", "CutSwap-scar")) -> Figure:
    """One 3-way batch and what a training step did to it: one row per class, one panel per sample.

    images ``(3B, 3, H, W)`` in [0, 1], in :func:`~cutswap_lib.cutswap.selfsup.make_batch`'s
    blocks (B of label 0, then B of label 1, then B of label 2); labels ``(3B,)``; before,
    after ``(3B, 3)``: class probabilities (softmax of the logits) before and after the step
    (after: optional). Each title gives the sample's probability of its own class, ``p = 0.31 ->
    0.36``; with ``after`` the frame is green where it rose, red where it fell.
    """
    imgs = _images_hwc(images)  # (3B, H, W, C)
    y = _numpy(labels).astype(int).reshape(-1)
    p0 = _numpy(before).astype(np.float64)
    p1 = None if after is None else _numpy(after).astype(np.float64)
    n, k = len(imgs), len(class_names)
    if n == 0 or n % k or y.shape != (n,) or p0.shape != (n, k) or (p1 is not None and p1.shape != (n, k)):
        raise ValueError(f"expected {k} equal blocks: images (3B, C, H, W), labels (3B,), probabilities (3B, {k}); "
                         f"got {n} images, labels {y.shape}, before {p0.shape}"
                         + ("" if p1 is None else f", after {p1.shape}"))
    b = n // k
    if (y != np.repeat(np.arange(k), b)).any():
        raise ValueError(f"labels must come in blocks of {b}: {y.tolist()}")
    fig, axes = plt.subplots(k, b, figsize=(2.1 * b + 0.4, 2.3 * k), squeeze=False, layout="constrained")
    for i in range(n):
        ax = axes[i // b, i % b]
        _show_image(ax, imgs[i])
        title = f"p = {p0[i, y[i]]:.2f}"
        if p1 is not None:
            title += f" -> {p1[i, y[i]]:.2f}"
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if p1[i, y[i]] >= p0[i, y[i]] else "tab:red")
                spine.set_linewidth(2.5)
        ax.set_title(title, fontsize=8)
        if i % b == 0:
            ax.set_ylabel(f"{class_names[y[i]]} ({y[i]})", fontsize=9)
    return fig


# --------------------------------------------------------------------------- memory bank

def pca_basis(features, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``features`` ``(N, D)`` -> mean ``(D,)`` and components ``(dims, D)``.

    Eigenvectors of the covariance matrix (float64), largest variance first; each
    component's sign is fixed so that its largest-magnitude entry is positive.
    Project with ``(x - mean) @ components.T`` -> ``(N, dims)``.
    """
    x = _numpy(features).astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2; got shape {tuple(x.shape)}")
    if not 1 <= dims <= x.shape[1]:
        raise ValueError(f"dims must be in [1, {x.shape[1]}], got {dims}")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)  # (D, D)
    values, vectors = np.linalg.eigh(cov)  # ascending
    comps = vectors[:, ::-1][:, :dims].T  # (dims, D)
    signs = np.sign(comps[np.arange(dims), np.abs(comps).argmax(axis=1)])
    return mean, comps * signs[:, None]


def _as_bank_dict(value) -> dict[str, np.ndarray]:
    if isinstance(value, Mapping):
        return {str(k): _numpy(v).astype(np.float64) for k, v in value.items()}
    return {"memory bank": _numpy(value).astype(np.float64)}


def show_memory_bank_projection(normal_by_name: Mapping[str, object], memory_by_name: Mapping[str, object],
                                anomalous_by_name: Mapping[str, object] | None = None,
                                max_points: int = 4000, seed: int = 0) -> Figure:
    """One panel per backbone: its patch features in 2-D, and what the memory bank keeps.

    ``normal_by_name[name]``: normal patch features ``(N, D)`` (all training patches);
    ``memory_by_name[name]``: the memory bank ``(M, D)``, or ``{label: (M, D)}`` for
    several (e.g. two coreset ratios; drawn larger the smaller they are);
    ``anomalous_by_name[name]`` (optional): patch features ``(A, D)`` inside defects.
    Each panel's PCA is fitted on that backbone's normal features (feature spaces of
    different backbones are not comparable); at most ``max_points`` normal and anomalous
    points are drawn (a seeded random subset), every memory feature is drawn.
    """
    names = list(normal_by_name)
    if not names:
        raise ValueError("show_memory_bank_projection needs at least one backbone")
    if set(memory_by_name) != set(names):
        raise ValueError(f"memory_by_name has {sorted(memory_by_name)}, normal_by_name has {sorted(names)}")
    rng = np.random.default_rng(seed)

    def subset(a: np.ndarray) -> np.ndarray:
        return a if len(a) <= max_points else a[rng.choice(len(a), max_points, replace=False)]

    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 4.0), squeeze=False,
                             layout="constrained")
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], names):
        normal = _numpy(normal_by_name[name]).astype(np.float64)
        mean, comps = pca_basis(normal)

        def project(a):
            a = np.asarray(a, dtype=np.float64)
            if a.ndim != 2 or a.shape[1] != normal.shape[1]:
                raise ValueError(f"{name}: features must be (n, {normal.shape[1]}); got {a.shape}")
            return (a - mean) @ comps.T  # (n, 2)

        p = project(subset(normal))
        ax.scatter(p[:, 0], p[:, 1], s=2, c="lightgrey", label=f"normal patches ({len(normal)})",
                   rasterized=True)
        if anomalous_by_name is not None and name in anomalous_by_name:
            anom = _numpy(anomalous_by_name[name])
            if len(anom):
                p = project(subset(anom))
                ax.scatter(p[:, 0], p[:, 1], s=6, c="tab:red", marker="x", linewidths=0.6,
                           label=f"anomalous patches ({len(anom)})", rasterized=True)
        banks = sorted(_as_bank_dict(memory_by_name[name]).items(), key=lambda kv: -len(kv[1]))
        for i, (label, bank) in enumerate(banks):
            p = project(bank)
            ax.scatter(p[:, 0], p[:, 1], s=8 + 22 * i, c=[colours(i)], edgecolors="black",
                       linewidths=0.3 * i, label=f"{label} ({len(bank)})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(fontsize=7, loc="best", markerscale=1.5)
    return fig


# --------------------------------------------------------------------------- anomaly maps

def show_anomaly_maps_by_backbone(images, maps_by_name: Mapping[str, object], masks=None, titles=None,
                                  scales: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """Rows = test images; columns image | one anomaly map per backbone (``{name: (N, H, W)}``).

    images ``(N, 3, H, W)`` in [0, 1]; maps ``(N, H, W)`` | ``(N, 1, H, W)`` at any resolution
    (stretched over the image); masks ``(N, H, W)`` in {0, 1} or None, outlined in red on the
    image and white on each map. Anomaly scores of different backbones live on different
    scales, so each column has its own colour scale: ``scales[name] = (vmin, vmax)``, by
    default the range of that column's maps; one colour bar under each column.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    n, h, w = imgs.shape[:3]
    if not maps_by_name:
        raise ValueError("show_anomaly_maps_by_backbone needs at least one backbone's maps")
    maps = {name: _maps_nhw(m, f"maps of {name}", n) for name, m in maps_by_name.items()}
    ms = None if masks is None else _maps_nhw(masks, "masks", n)
    titles = _titles(titles, n)
    ncols = 1 + len(maps)
    fig, axes = plt.subplots(n, ncols, figsize=(2.3 * ncols, 2.3 * n + 0.6), squeeze=False,
                             layout="constrained")
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    for i in range(n):
        _show_image(axes[i, 0], imgs[i])
        if ms is not None:
            overlay_mask_contour(axes[i, 0], ms[i])
        axes[i, 0].set_title("image" if titles[i] is None else str(titles[i]), fontsize=8)
    for j, (name, m) in enumerate(maps.items(), start=1):
        vmin, vmax = (scales or {}).get(name, (float(m.min()), float(m.max())))
        if vmax <= vmin:
            vmax = vmin + 1e-6
        for i in range(n):
            ax = axes[i, j]
            _show_image(ax, imgs[i])
            last = ax.imshow(m[i], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax, extent=extent,
                             interpolation="bilinear")
            if ms is not None:
                overlay_mask_contour(ax, ms[i], color="white")
            if i == 0:
                ax.set_title(name, fontsize=9)
        fig.colorbar(last, ax=list(axes[:, j]), location="bottom", shrink=0.8, aspect=15)
    return fig
