"""Figures of SemiREST's sliding Swin, its training and its bagging (SemiREST Sec. 3.1.2-3.2), notebook 05.

Same contract as :mod:`cutswap_lib.viz.common`: every ``show_*`` function draws a new figure
with ``plt.subplots`` and returns the :class:`matplotlib.figure.Figure`; nothing is
closed here. Torch tensors (any device, any float dtype) and numpy arrays both work.

* :func:`show_sliding_windows` – the windows of Eq. (8) drawn on an image (token grid -> pixels).
* :func:`show_window_coverage` – ``|N_{r,c}|``, how many windows cover each token (Eq. 10).
* :func:`show_synthetic_anomalies` – normal images and their synthetic anomalies per kind, with masks.
* :func:`show_block_labels` – pixel masks beside their block labels (Eq. 14), ignored blocks marked.
* :func:`show_knn_augmentation` – drawn neighbour ranks and the noise ``delta`` of Eq. (12).
* :func:`show_distance_histograms` – nearest-memory distances of several groups of tokens.
* :func:`show_token_dropout` – a window of tokens before and after random dropout (Eq. 13).
* :func:`show_focal_loss_curves` – per-token loss against the anomaly probability (Eq. 11).
* :func:`show_semirest_history` – loss, accuracy and anomalous recall per iteration, smoothed.
* :func:`show_window_vs_bagged` – one window's prediction beside whole-image token maps.

Two small helpers: :func:`moving_average` (the smoothing of the training curves) and
:func:`window_on_grid` (one window's ``(mu, mu)`` prediction placed on the token grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from .common import _images_hwc, _maps_nhw, _numpy, _show_image, overlay_mask_contour

__all__ = ["moving_average", "window_on_grid", "show_sliding_windows", "show_window_coverage",
           "show_synthetic_anomalies", "show_block_labels", "show_knn_augmentation",
           "show_distance_histograms", "show_token_dropout", "show_focal_loss_curves",
           "show_semirest_history", "show_window_vs_bagged"]

LABEL_COLOURS = ListedColormap(["#bdbdbd", "#f7f7f7", "#d62728"])  # IGNORE (-100, below vmin: grey), normal (0), anomalous (1)


# --------------------------------------------------------------------------- helpers

def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean ``(n,)`` -> ``(n,)``: entry ``i`` averages ``values[max(0, i-window+1) : i+1]``, NaNs skipped."""
    v = _numpy(values).astype(np.float64).reshape(-1)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    ok = ~np.isnan(v)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])  # (n + 1,)
    counts = np.concatenate([[0], np.cumsum(ok)])
    lo = np.maximum(np.arange(1, v.size + 1) - window, 0)
    hi = np.arange(1, v.size + 1)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / np.maximum(n, 1), np.nan)


def window_on_grid(prediction, corner, height: int, width: int) -> np.ndarray:
    """One window's map ``(mu, mu)`` at ``corner`` (row, col) -> ``(height, width)``, NaN where it is not.

    Parts of the window outside the map (the padding of a map smaller than ``mu``) are dropped.
    """
    p = _numpy(prediction).astype(np.float32)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"a window prediction must be (mu, mu); got shape {tuple(p.shape)}")
    r, c = (int(x) for x in _numpy(corner).reshape(-1)[:2])
    grid = np.full((height, width), np.nan, dtype=np.float32)
    part = p[:max(0, height - r), :max(0, width - c)]
    grid[r:r + part.shape[0], c:c + part.shape[1]] = part
    return grid


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- windows (Eq. 8, 10)

def show_sliding_windows(image, corners, mu: int, grid: tuple[int, int], highlight: Sequence[int] = (0,)) -> Figure:
    """The sliding windows of Eq. (8) on an image ``(3, H, W)``: every window outlined, a few highlighted.

    ``corners`` ``(Q, 2)`` (row, column) in tokens on a ``grid = (h_t, w_t)`` token map; a
    token is ``H / h_t x W / w_t`` pixels, so a window is ``mu`` tokens = ``mu * H / h_t``
    pixels. Faint lines mark the token grid; ``highlight`` indexes the windows drawn in colour.
    """
    img = _images_hwc(image)[0]  # (H, W, C)
    h_px, w_px = img.shape[:2]
    sy, sx = h_px / grid[0], w_px / grid[1]  # pixels per token
    cs = _numpy(corners).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(4.6, 4.6), layout="constrained")
    _show_image(ax, img)
    for k in range(1, grid[0]):
        ax.axhline(k * sy - 0.5, color="white", linewidth=0.3, alpha=0.5)
    for k in range(1, grid[1]):
        ax.axvline(k * sx - 0.5, color="white", linewidth=0.3, alpha=0.5)
    colours = plt.cm.tab10.colors
    for q, (r, c) in enumerate(cs):
        special = q in highlight
        colour = colours[list(highlight).index(q) % 10] if special else "yellow"
        ax.add_patch(Rectangle((c * sx - 0.5, r * sy - 0.5), mu * sx, mu * sy, fill=False,
                               edgecolor=colour, linewidth=2.2 if special else 0.6, alpha=1 if special else 0.6))
    ax.set_xlim(-0.5, w_px - 0.5)
    ax.set_ylim(h_px - 0.5, -0.5)
    ax.set_title(f"{len(cs)} windows of {mu} x {mu} tokens on a {grid[0]} x {grid[1]} grid", fontsize=9)
    return fig


def show_window_coverage(counts: Mapping[str, object], annotate: bool = True) -> Figure:
    """One panel per entry ``{title: counts (h, w)}``: the number of windows covering each token, ``|N_{r,c}|``.

    ``annotate`` writes the count into each cell of maps up to 16 x 16 tokens.
    """
    if not counts:
        raise ValueError("show_window_coverage needs at least one count map")
    n = len(counts)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.6), squeeze=False, layout="constrained")
    for ax, (title, value) in zip(axes[0], counts.items()):
        m = _numpy(value).astype(np.float32)
        if m.ndim != 2:
            raise ValueError(f"counts {title!r} must be (h, w); got shape {m.shape}")
        shown = ax.imshow(m, cmap="viridis", vmin=0, vmax=max(1.0, float(m.max())), interpolation="nearest")
        if annotate and max(m.shape) <= 16:
            for (r, c), v in np.ndenumerate(m):
                ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=6 if max(m.shape) > 8 else 8,
                        color="white" if v < 0.6 * m.max() else "black")
        ax.set_title(str(title), fontsize=9)
        ax.set_xlabel("column c")
        ax.set_ylabel("row r")
        fig.colorbar(shown, ax=ax, location="bottom", shrink=0.8, label="|N_rc|")
    return fig


# --------------------------------------------------------------------------- synthetic anomalies and labels

def show_synthetic_anomalies(images, foreground, anomalies: Mapping[str, tuple[object, object]]) -> Figure:
    """Rows: the normal images ``(n, 3, H, W)`` with their foreground ``(n, 1, H, W)``, then one row per kind.

    ``anomalies[kind] = (images (n, 3, H, W), masks (n, 1, H, W))``. Columns come in pairs:
    the image (mask outlined in red) and the mask (white = changed pixels).
    """
    imgs = _images_hwc(images)
    n = imgs.shape[0]
    rows = [("normal", imgs, _maps_nhw(foreground, "foreground", n))]
    rows += [(k, _images_hwc(x), _maps_nhw(m, f"masks of {k!r}", n)) for k, (x, m) in anomalies.items()]
    fig, axes = plt.subplots(len(rows), 2 * n, figsize=(1.6 * 2 * n, 1.7 * len(rows)), squeeze=False,
                             layout="constrained")
    for i, (name, x, m) in enumerate(rows):
        for j in range(n):
            _show_image(axes[i, 2 * j], x[j])
            if i:
                overlay_mask_contour(axes[i, 2 * j], m[j], linewidth=0.8)
            axes[i, 2 * j + 1].imshow(m[j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            _off(axes[i, 2 * j + 1])
            if i == 0:
                axes[i, 2 * j + 1].set_title("foreground", fontsize=8)
        axes[i, 0].set_ylabel(name, fontsize=9)
    return fig


def show_block_labels(images, masks, labels: Mapping[str, object]) -> Figure:
    """Rows = images; columns image | pixel mask | block labels ``(N, h, w)`` per entry (Eq. 14).

    ``images`` ``(N, 3, H, W)``, ``masks`` ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1};
    ``labels[title]`` in {1, 0, -1}: anomalous (red), normal (white), ignored (grey). The
    mask is outlined on every label map.
    """
    imgs = _images_hwc(images)
    n, h, w = imgs.shape[:3]
    ms = _maps_nhw(masks, "masks", n)
    labs = {t: _maps_nhw(v, f"labels {t!r}", n) for t, v in labels.items()}
    ncols = 2 + len(labs)
    fig, axes = plt.subplots(n, ncols, figsize=(2.2 * ncols, 2.2 * n + 0.5), squeeze=False, layout="constrained")
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    for i in range(n):
        _show_image(axes[i, 0], imgs[i])
        overlay_mask_contour(axes[i, 0], ms[i], linewidth=0.8)
        axes[i, 1].imshow(ms[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        _off(axes[i, 1])
        for j, (title, lab) in enumerate(labs.items(), start=2):
            axes[i, j].imshow(lab[i], cmap=LABEL_COLOURS, vmin=-1.5, vmax=1.5, extent=extent, interpolation="nearest")
            overlay_mask_contour(axes[i, j], ms[i], color="black", linewidth=0.6)
            _off(axes[i, j])
            if i == 0:
                axes[i, j].set_title(str(title), fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    axes[0, 1].set_title("pixel mask", fontsize=8)
    fig.legend(handles=[Patch(color=LABEL_COLOURS(k), label=t) for k, t in
                        enumerate(("ignored (no gradient)", "normal (0)", "anomalous (1)"))],
               loc="outside lower center", ncol=3, fontsize=8)
    return fig


# --------------------------------------------------------------------------- augmentation (Eq. 12, 13)

def show_knn_augmentation(ranks, deltas, probabilities: Sequence[float] = (0.5, 0.3, 0.2),
                          clip: float = 0.223) -> Figure:
    """Left: measured share of neighbour ranks ``(n,)`` in {0, 1, 2} beside ``probabilities``;
    right: histogram of the noise factors ``delta`` ``(m,)`` with ``e^{+-clip}`` marked."""
    r = _numpy(ranks).reshape(-1)
    d = _numpy(deltas).astype(np.float64).reshape(-1)
    measured = np.bincount(r.astype(np.int64), minlength=3)[:3] / max(1, r.size)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    x = np.arange(3)
    a.bar(x - 0.2, measured, 0.4, label=f"measured ({r.size} draws)")
    a.bar(x + 0.2, probabilities, 0.4, label="Eq. 12 (a1, a2)", alpha=0.6)
    a.set_xticks(x, ["1st", "2nd", "3rd"])
    a.set_xlabel("neighbour subtracted")
    a.set_ylabel("share of tokens")
    a.legend(fontsize=8)
    b.hist(d, bins=60, color="tab:green")
    for v in (np.exp(-clip), np.exp(clip)):
        b.axvline(v, color="black", linestyle="--", linewidth=1)
    b.set_xlabel(r"$\delta = e^z$ (per channel)")
    b.set_ylabel("count")
    b.set_title(f"clipped at e^(±{clip}) = [{np.exp(-clip):.3f}, {np.exp(clip):.3f}]", fontsize=9)
    return fig


def show_distance_histograms(distances: Mapping[str, object], bins: int = 50) -> Figure:
    """One histogram per group ``{label: distances (n,)}`` on shared bins, as densities."""
    if not distances:
        raise ValueError("show_distance_histograms needs at least one group")
    groups = {k: _numpy(v).astype(np.float64).reshape(-1) for k, v in distances.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(groups.values())), bins=bins)
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    for label, v in groups.items():
        ax.hist(v, bins=edges, density=True, histtype="step", linewidth=1.6, label=f"{label} ({v.size})")
    ax.set_xlabel("distance to the nearest memory PCF")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def show_token_dropout(before, after) -> Figure:
    """A window of tokens ``(mu, mu, d)`` before | which tokens were zeroed | after Eq. (13), as token norms."""
    x, y = _numpy(before).astype(np.float32), _numpy(after).astype(np.float32)
    if x.ndim != 3 or x.shape != y.shape:
        raise ValueError(f"before and after must be windows (mu, mu, d) of one shape; got {x.shape}, {y.shape}")
    nx, ny = np.linalg.norm(x, axis=-1), np.linalg.norm(y, axis=-1)
    dropped = (np.abs(y).sum(-1) == 0) & (np.abs(x).sum(-1) > 0)
    vmax = max(float(nx.max()), 1e-6)
    fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.4), layout="constrained")
    for ax, m, title, cmap, top in ((axes[0], nx, "token norm, before", "inferno", vmax),
                                    (axes[1], dropped, f"zeroed: {dropped.mean():.0%} of tokens", "gray", 1),
                                    (axes[2], ny, "token norm, after dropout", "inferno", vmax)):
        shown = ax.imshow(m.astype(np.float32), cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        _off(ax)
    fig.colorbar(shown, ax=[axes[0], axes[2]], location="bottom", shrink=0.6)
    return fig


# --------------------------------------------------------------------------- loss and training

def show_focal_loss_curves(p_plus, normal: Mapping[str, object], anomalous: Mapping[str, object]) -> Figure:
    """Per-token loss against the anomaly probability ``p_plus`` ``(n,)``: normal tokens (left), anomalous (right).

    ``normal[label]`` and ``anomalous[label]`` are curves ``(n,)`` (e.g. cross-entropy and
    focal losses for several gamma), drawn on a log scale.
    """
    p = _numpy(p_plus).astype(np.float64).reshape(-1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained", sharey=True)
    for ax, curves, title in ((axes[0], normal, "normal token (label 0): loss vs p+"),
                              (axes[1], anomalous, "anomalous token (label 1): loss vs p+")):
        for label, y in curves.items():
            ax.plot(p, _numpy(y).astype(np.float64).reshape(-1), label=str(label))
        ax.set_yscale("log")
        ax.set_ylim(1e-8, None)  # below that the curves only say "silenced"
        ax.set_xlabel("p+ (predicted anomaly probability)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("per-token loss")
    return fig


def show_semirest_history(history: Sequence[Mapping], window: int = 25) -> Figure:
    """Loss | accuracy | anomalous recall per iteration (``SemiREST.history``), raw and smoothed.

    Raw values in a light line, the trailing :func:`moving_average` over ``window`` iterations on top.
    """
    rows = list(history)
    if not rows:
        raise ValueError("show_semirest_history needs a non-empty history")
    it = np.array([r["iteration"] for r in rows])
    keys = (("loss", "focal loss (Eq. 11)"), ("accuracy", "accuracy on labelled tokens"),
            ("anomalous_recall", "recall of anomalous tokens"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    for ax, (key, label) in zip(axes, keys):
        v = np.array([float(r.get(key, np.nan)) for r in rows])
        ax.plot(it, v, color="tab:blue", alpha=0.25, linewidth=0.8, label="per iteration")
        ax.plot(it, moving_average(v, window), color="tab:blue", linewidth=1.8, label=f"mean of {window}")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_ylim(None, 1.005)
    axes[2].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- bagging (Eq. 9-10)

def show_window_vs_bagged(image, mask, corner, window_prediction, maps: Mapping[str, object]) -> Figure:
    """Image | one window's prediction ``(mu, mu)`` on the grid | each token map ``(h, w)`` of ``maps``.

    ``image`` ``(3, H, W)``, ``mask`` ``(H, W)`` or None, ``corner`` the window's (row, col) in
    tokens. Every map shares the colour scale [0, 1] (anomaly probabilities); the window is
    outlined on the image and on every map.
    """
    img = _images_hwc(image)[0]
    token_maps = {k: _numpy(v).astype(np.float32) for k, v in maps.items()}
    if not token_maps:
        raise ValueError("show_window_vs_bagged needs at least one token map")
    h, w = next(iter(token_maps.values())).shape
    mu = _numpy(window_prediction).shape[0]
    r, c = (int(x) for x in _numpy(corner).reshape(-1)[:2])
    panels = {f"one window at ({r}, {c})": window_on_grid(window_prediction, (r, c), h, w), **token_maps}
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(2.9 * (1 + len(panels)), 3.4), layout="constrained")
    _show_image(axes[0], img)
    sy, sx = img.shape[0] / h, img.shape[1] / w
    axes[0].add_patch(Rectangle((c * sx - 0.5, r * sy - 0.5), mu * sx, mu * sy, fill=False, edgecolor="yellow",
                                linewidth=1.5))
    if mask is not None:
        overlay_mask_contour(axes[0], mask, linewidth=0.8)
    axes[0].set_title("image (defect in red)", fontsize=9)
    for ax, (title, m) in zip(axes[1:], panels.items()):
        ax.set_facecolor("#dddddd")  # NaN: tokens the window does not see
        shown = ax.imshow(m, cmap="jet", vmin=0, vmax=1, interpolation="nearest")
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), mu, mu, fill=False, edgecolor="white", linewidth=1.2))
        ax.set_title(str(title), fontsize=9)
        _off(ax)
    fig.colorbar(shown, ax=list(axes[1:]), location="bottom", shrink=0.5, label="P(anomalous)")
    return fig
