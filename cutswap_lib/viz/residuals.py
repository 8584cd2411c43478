"""Figures of SemiREST's position-constrained residuals (SemiREST Sec. 3.1.1), notebook 04.

Same contract as :mod:`cutswap_lib.viz.common`: every ``show_*`` function draws a new figure
with ``plt.subplots`` and returns the :class:`matplotlib.figure.Figure`; nothing is
closed here. Torch tensors (any device, any float dtype) and numpy arrays both work.

* :func:`show_position_code` – a few channels of the position code eta ``(d, h, w)`` of Eq. (3).
* :func:`show_position_similarity` – cosine similarity of eta at a few positions with eta everywhere.
* :func:`show_code_distance` – ``lambda * ||eta(p) - eta(p + delta)||`` against the shift,
  beside the nearest-neighbour distances of the features it is added to (Eq. 2).
* :func:`show_match_displacement` – per token, how far (in grid cells) its nearest memory
  patch sat from it, for several ``lambda_PE``.
* :func:`show_far_match_share` – the share of far matches against ``lambda_PE``.
* :func:`show_residual_maps` – image | ground truth | the norm of each residual token (Eq. 5-6).
* :func:`show_residual_sparsity` – how much of a residual token sits in its largest channels
  (square vs absolute difference, Table 6's "ABS").

Three small helpers compute what the figures and notebook 04 measure:
:func:`token_norm_map` (residual tokens -> a map), :func:`top_channel_share` (sparsity of
a token) and :func:`match_displacement` (where the nearest memory patch came from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .common import _images_hwc, _maps_nhw, _numpy, _show_image, _titles, overlay_mask_contour

__all__ = ["token_norm_map", "top_channel_share", "match_displacement", "show_position_code",
           "show_position_similarity", "show_code_distance", "show_match_displacement",
           "show_far_match_share", "show_residual_maps", "show_residual_sparsity"]

BLOCKS = ("sin col", "cos col", "sin row", "cos row")  # the four channel blocks of Eq. (3)


# --------------------------------------------------------------------------- helpers

def token_norm_map(residuals, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Residual tokens ``(B, h, w, d)`` -> the L2 norm of each token ``(B, h, w)``.

    ``size`` (an int or ``(H, W)``): bilinearly upsampled to the image, ``(B, H, W)``, to
    compare with pixel masks. Not part of SemiREST (its transformer reads the whole
    token); a one-number summary of how much a token says, used by notebook 04.
    """
    r = torch.as_tensor(residuals)
    if r.ndim != 4:
        raise ValueError(f"residual tokens must be (B, h, w, d); got shape {tuple(r.shape)}")
    norms = torch.linalg.vector_norm(r.float(), dim=-1)  # (B, h, w)
    if size is None:
        return norms
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(norms[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)


def top_channel_share(residuals, fraction: float = 0.1) -> torch.Tensor:
    """Non-negative tokens ``(..., d)`` -> the share of each token's sum in its largest channels ``(...)``.

    The largest ``round(fraction * d)`` entries (at least one) of each token, summed, divided by the
    token's sum: ``fraction`` for a flat token, 1 for a token with a single non-zero
    channel; 0 for an all-zero token. For square residuals (Eq. 6) the sum is the
    squared distance, so this is the share of the difference's energy.
    """
    r = torch.as_tensor(residuals).float()
    if r.ndim < 1 or r.shape[-1] < 1:
        raise ValueError(f"tokens must be (..., d) with d >= 1; got shape {tuple(r.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if (r < 0).any():
        raise ValueError("top_channel_share needs non-negative tokens (square or absolute residuals)")
    k = max(1, round(fraction * r.shape[-1]))
    top = r.topk(k, dim=-1).values.sum(-1)  # (...)
    return top / r.sum(-1).clamp_min(torch.finfo(r.dtype).tiny)


def match_displacement(index) -> torch.Tensor:
    """Nearest-row indices ``(B, h, w)`` into a *full* memory bank -> displacement in grid cells ``(B, h, w)``.

    The bank must hold every patch of images on the same ``h x w`` grid, in (image, row,
    column) order: what :class:`cutswap_lib.semirest.ResidualMemory` builds with
    ``coreset_ratio=None``. Row ``t`` then sits at grid row ``(t // w) % h``, column
    ``t % w``; the displacement is the larger of the row and column distances between
    the query token and that position (Chebyshev distance).
    """
    idx = torch.as_tensor(index)
    if idx.ndim != 3 or idx.dtype.is_floating_point:
        raise ValueError(f"index must be integer (B, h, w); got {idx.dtype} {tuple(idx.shape)}")
    _, h, w = idx.shape
    rows = torch.arange(h, device=idx.device)[None, :, None]  # (1, h, 1)
    cols = torch.arange(w, device=idx.device)[None, None, :]  # (1, 1, w)
    return torch.maximum(((idx // w) % h - rows).abs(), (idx % w - cols).abs())  # (B, h, w)


def _code(code) -> np.ndarray:
    c = _numpy(code).astype(np.float64)
    if c.ndim != 3 or c.shape[0] % 4:
        raise ValueError(f"the position code must be (d, h, w) with d a multiple of 4; got {tuple(c.shape)}")
    return c


# --------------------------------------------------------------------------- position code

def show_position_code(code, channels: Sequence[int], freq_exponent: float = 8.0,
                       ncols: int = 4) -> Figure:
    """Channels of the position code ``code`` ``(d, h, w)`` (SemiREST Eq. 3) as images, one axis each.

    Each title names the channel's block (sin / cos of column / row) and its angular
    frequency ``10000^(-freq_exponent * j / d)`` (``j``: index inside the block); values
    in [-1, 1], one shared colour bar.
    """
    c = _code(code)
    d, h, w = c.shape
    channels = [int(k) for k in channels]
    if not channels or any(not 0 <= k < d for k in channels):
        raise ValueError(f"channels must be indices in [0, {d}); got {channels}")
    ncols = max(1, min(int(ncols), len(channels)))
    nrows = math.ceil(len(channels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols + 0.8, 2.3 * nrows + 0.3),
                             squeeze=False, layout="constrained")
    q = d // 4
    shown, used = None, []
    for i, ax in enumerate(axes.ravel()):
        if i >= len(channels):
            ax.remove()  # empty cells of the last row
            continue
        used.append(ax)
        k = channels[i]
        block, j = divmod(k, q)
        freq = 10000.0 ** (-freq_exponent * j / d)
        shown = ax.imshow(c[k], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"k={k}: {BLOCKS[block]}, ω={freq:.2g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=used, shrink=0.8, label="η channel value")
    fig.supxlabel("column c (feature grid)", fontsize=8)
    fig.supylabel("row r", fontsize=8)
    return fig


def show_position_similarity(code, anchors: Sequence[tuple[int, int]]) -> Figure:
    """Cosine similarity of the code at each anchor ``(row, col)`` with the code everywhere, ``(h, w)`` each.

    ``code`` ``(d, h, w)``; one axis per anchor (marked with a cross), one shared colour bar.
    """
    c = _code(code)
    d, h, w = c.shape
    anchors = [(int(r), int(col)) for r, col in anchors]
    if not anchors or any(not (0 <= r < h and 0 <= col < w) for r, col in anchors):
        raise ValueError(f"anchors must be (row, col) inside the {h}x{w} grid; got {anchors}")
    flat = c.reshape(d, -1)
    flat = flat / np.linalg.norm(flat, axis=0, keepdims=True)  # (d, h*w) unit columns
    sims = [(flat[:, r * w + col] @ flat).reshape(h, w) for r, col in anchors]
    vmin = min(float(s.min()) for s in sims)
    fig, axes = plt.subplots(1, len(anchors), figsize=(2.6 * len(anchors) + 0.8, 2.8),
                             squeeze=False, layout="constrained")
    shown = None
    for ax, (r, col), s in zip(axes[0], anchors, sims):
        shown = ax.imshow(s, cmap="viridis", vmin=vmin, vmax=1.0, interpolation="nearest")
        ax.plot([col], [r], marker="x", color="red", markersize=7, markeredgewidth=2)
        ax.set_title(f"similarity to ({r}, {col})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes[0]), shrink=0.8, label="cosine similarity of η")
    return fig


def show_code_distance(code, lambdas: Sequence[float], reference=None) -> Figure:
    """``lambda * ||eta(0, 0) - eta(0, delta)||`` against the shift ``delta`` in grid cells, one line per lambda.

    ``code`` ``(d, h, w)``; the sinusoidal code's distance depends only on the shift, and
    a row shift gives the same curve as a column shift. ``reference`` (optional): distances
    ``(N,)`` to compare with, e.g. each normal test patch's distance to its nearest memory
    feature without the code; drawn as its median (line) and 10-90 % range (band).
    Logarithmic y axis; lambdas <= 0 are skipped (their curve is 0).
    """
    c = _code(code)
    w = c.shape[2]
    shifts = np.arange(w)
    dist = np.linalg.norm(c[:, 0, :1] - c[:, 0, :], axis=0)  # (w,) ||eta(0,0) - eta(0,delta)||
    fig, ax = plt.subplots(figsize=(7.4, 3.4), layout="constrained")
    for lam in lambdas:
        if lam > 0:
            ax.plot(shifts[1:], lam * dist[1:], marker="o", markersize=3, label=f"λ_PE = {lam:g}")
    if reference is not None:
        ref = _numpy(reference).astype(np.float64).reshape(-1)
        if ref.size:
            lo, med, hi = np.percentile(ref, [10, 50, 90])
            ax.axhspan(lo, hi, color="grey", alpha=0.2, label="nearest-neighbour distance, 10-90 %")
            ax.axhline(med, color="black", linestyle="--", linewidth=1, label=f"its median ({med:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("shift δ between two positions (grid cells)")
    ax.set_ylabel("λ_PE · ||η(p) − η(p + δ)||")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the curves, not on them
    return fig


# --------------------------------------------------------------------------- where matches come from

def show_match_displacement(images, displacements: Mapping[str, object], far: int = 2,
                            titles=None) -> Figure:
    """Rows = images; columns: the image, then the displacement map ``(N, h, w)`` of each setting.

    ``images`` ``(N, 3, H, W)`` in [0, 1]; ``displacements[label]`` ``(N, h, w)`` grid cells
    between each token and its nearest memory patch (:func:`match_displacement`), drawn on
    the token grid; tokens farther than ``far`` cells are outlined in cyan, and each panel's
    title gives their share. One colour scale and colour bar for all.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    n = imgs.shape[0]
    if not displacements:
        raise ValueError("show_match_displacement needs at least one displacement map")
    maps = {str(k): _maps_nhw(v, f"displacements {k!r}", n) for k, v in displacements.items()}
    titles = _titles(titles, n)
    vmax = max(1.0, max(float(m.max()) for m in maps.values()))
    ncols = 1 + len(maps)
    fig, axes = plt.subplots(n, ncols, figsize=(2.3 * ncols + 0.8, 2.3 * n + 0.3), squeeze=False,
                             layout="constrained")
    shown = None
    for i in range(n):
        _show_image(axes[i, 0], imgs[i])
        axes[i, 0].set_title("image" if titles[i] is None else str(titles[i]), fontsize=8)
        for j, (label, m) in enumerate(maps.items(), start=1):
            ax = axes[i, j]
            shown = ax.imshow(m[i], cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            overlay_mask_contour(ax, (m[i] > far).astype(np.float32), color="cyan", linewidth=0.8)
            ax.set_title(f"{label}: {(m[i] > far).mean():.0%} > {far}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes[:, 1:].ravel()), shrink=0.8, label="displacement of the match (cells)")
    return fig


def show_far_match_share(shares: Mapping[str, Mapping[float, float]], far: int = 2) -> Figure:
    """Share of tokens matched farther than ``far`` cells against lambda_PE, one line per group.

    ``shares[group][lambda] = share`` in [0, 1]; symmetric-log x axis, so lambda = 0 shows.
    """
    if not shares:
        raise ValueError("show_far_match_share needs at least one group")
    fig, ax = plt.subplots(figsize=(5.0, 3.2), layout="constrained")
    for group, by_lambda in shares.items():
        lams = sorted(by_lambda)
        ax.plot(lams, [100 * by_lambda[lam] for lam in lams], marker="o", label=str(group))
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("λ_PE")
    ax.set_ylabel(f"tokens matched > {far} cells away (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# --------------------------------------------------------------------------- residuals

def show_residual_maps(images, maps: Mapping[str, object], masks=None, titles=None) -> Figure:
    """Rows = images; columns image | ground truth | one token map ``(N, h, w)`` per entry of ``maps``.

    ``images`` ``(N, 3, H, W)`` in [0, 1]; ``maps[label]`` ``(N, h, w)`` on the token grid
    (e.g. :func:`token_norm_map` of square and absolute residuals), drawn beside the image,
    one token per cell; ``masks`` ``(N, H, W)`` in {0, 1} or None (no ground-truth column),
    outlined in red on the image and white on each map. Each map column has its own colour
    scale (square and absolute residuals have different units), shared down the column.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    n, h, w = imgs.shape[:3]
    if not maps:
        raise ValueError("show_residual_maps needs at least one map")
    token_maps = {str(k): _maps_nhw(v, f"maps {k!r}", n) for k, v in maps.items()}
    ms = None if masks is None else _maps_nhw(masks, "masks", n)
    titles = _titles(titles, n)
    first = 1 if ms is None else 2
    ncols = first + len(token_maps)
    fig, axes = plt.subplots(n, ncols, figsize=(2.2 * ncols, 2.2 * n + 0.7), squeeze=False,
                             layout="constrained")
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # token grid stretched over the image's size
    for i in range(n):
        _show_image(axes[i, 0], imgs[i])
        axes[i, 0].set_title("image" if titles[i] is None else str(titles[i]), fontsize=8)
        if ms is not None:
            overlay_mask_contour(axes[i, 0], ms[i])
            axes[i, 1].imshow(ms[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes[i, 1].set_xticks([])
            axes[i, 1].set_yticks([])
            axes[i, 1].set_title("ground truth", fontsize=8)
    for j, (label, m) in enumerate(token_maps.items(), start=first):
        vmin, vmax = float(m.min()), float(m.max())
        vmax = vmax if vmax > vmin else vmin + 1e-6
        for i in range(n):
            ax = axes[i, j]
            shown = ax.imshow(m[i], cmap="inferno", vmin=vmin, vmax=vmax, extent=extent,
                              interpolation="nearest")
            if ms is not None:
                overlay_mask_contour(ax, ms[i], color="white", linewidth=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=8)
        fig.colorbar(shown, ax=list(axes[:, j]), location="bottom", shrink=0.8, aspect=15)
    return fig


def show_residual_sparsity(tokens: Mapping[str, object], fraction: float = 0.1,
                           max_tokens: int = 20000, seed: int = 0) -> Figure:
    """How concentrated residual tokens are: two panels, one line / histogram per group.

    ``tokens[label]``: non-negative tokens ``(..., d)`` (e.g. square or absolute residuals
    of the tokens inside defects). Left: the mean share of a token's sum held by its
    largest channels, against the fraction of channels (sorted per token; the diagonal
    is a flat token). Right: the histogram of :func:`top_channel_share` at ``fraction``.
    At most ``max_tokens`` tokens per group (a seeded random subset).
    """
    if not tokens:
        raise ValueError("show_residual_sparsity needs at least one group of tokens")
    rng = np.random.default_rng(seed)
    fig, (ax_curve, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    bins = np.linspace(0, 1, 41)
    for label, value in tokens.items():
        t = torch.as_tensor(value).float()
        t = t.reshape(-1, t.shape[-1])  # (T, d)
        if t.shape[0] == 0:
            raise ValueError(f"group {label!r} has no tokens")
        if t.shape[0] > max_tokens:
            t = t[torch.from_numpy(rng.choice(t.shape[0], max_tokens, replace=False))]
        d = t.shape[1]
        ordered = t.sort(dim=-1, descending=True).values  # (T, d)
        cum = ordered.cumsum(-1) / ordered.sum(-1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)
        x = np.arange(1, d + 1) / d
        line, = ax_curve.plot(x, cum.mean(0).numpy(), label=f"{label} ({t.shape[0]} tokens)")
        share = top_channel_share(t, fraction).numpy()
        ax_hist.hist(share, bins=bins, density=True, alpha=0.45, color=line.get_color(),
                     label=f"{label}: mean {share.mean():.2f}")
    ax_curve.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="flat token")
    ax_curve.axvline(fraction, color="grey", linestyle="--", linewidth=1)
    ax_curve.set_xlabel("fraction of the token's channels (largest first)")
    ax_curve.set_ylabel("share of the token's sum")
    ax_curve.set_xlim(0, 1)
    ax_curve.set_ylim(0, 1.02)
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7)
    ax_hist.axvline(fraction, color="grey", linestyle=":", linewidth=1)
    ax_hist.set_xlabel(f"share of the token's sum in its top {fraction:.0%} channels")
    ax_hist.set_ylabel("density of tokens")
    ax_hist.legend(fontsize=7)
    return fig
