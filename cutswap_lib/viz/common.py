"""Shared helpers of the figure modules: conversions, mask outlines, saving (matplotlib only).

Every ``show_*`` function of :mod:`cutswap_lib.viz` draws a new figure with ``plt.subplots`` and
returns the :class:`matplotlib.figure.Figure` so the caller can save it; nothing is closed there.
The command layer saves and closes its figures with :func:`save_figure`. In Jupyter the inline
backend shows every open figure at the end of a cell, so write ``fig = viz.show_samples(...)``
(or end the line with ``;``) to see it once.

Images are ``(N, 3, H, W)`` (or ``(N, 1, H, W)``) in [0, 1], masks ``(N, H, W)`` or
``(N, 1, H, W)`` in {0, 1}; torch tensors (any device) and numpy arrays both work.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["overlay_mask_contour", "save_figure"]


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


def save_figure(fig, path: Path, dpi: int = 80) -> Path:
    """Write ``fig`` to ``path`` (parent folders created) and close it; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
