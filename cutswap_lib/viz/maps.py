"""One anomaly map per figure: an image beside its map overlay, on a colour scale the caller fixes.

Used by ``python -m cutswap_lib patchcore`` (:mod:`cutswap_lib.runs.patchcore_folder`), which
writes one such figure per test image. :func:`~cutswap_lib.viz.patchcore.show_anomaly_maps` puts
many rows on one scale that starts at the lowest value of its own maps; here the caller gives
both ends (``vmin``, ``vmax``), so that the separate files of one run share a scale and their
colours compare.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .common import _images_hwc, _maps_nhw, _show_image, overlay_mask_contour

__all__ = ["show_anomaly_overlay"]


def show_anomaly_overlay(image, anomaly_map, mask=None, title=None, vmin=None, vmax=None) -> Figure:
    """Columns image | map overlay (jet, alpha 0.5, the mask outlined in white) with one colour bar.

    image (3, H, W) | (1, 3, H, W) in [0, 1]; anomaly_map (H, W) | (1, H, W), any resolution
    (stretched over the image); mask (H, W) | (1, H, W) in {0, 1} or None. ``vmin`` / ``vmax``
    default to the map's own lowest and highest value.
    """
    img = _images_hwc(image)[0]  # (H, W, C)
    h, w = img.shape[:2]
    amap = _maps_nhw(anomaly_map, "anomaly_map", 1)[0]  # (h, w)
    vmin = float(amap.min()) if vmin is None else float(vmin)
    vmax = float(amap.max()) if vmax is None else float(vmax)
    if vmax <= vmin:
        vmax = vmin + 1e-6  # a constant map still gets a valid scale
    fig, (left, right) = plt.subplots(1, 2, figsize=(5.4, 2.6), layout="constrained")
    _show_image(left, img)
    left.set_title("image" if title is None else str(title), fontsize=8)
    _show_image(right, img)
    shown = right.imshow(amap, cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax,
                         extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
    if mask is not None:
        overlay_mask_contour(right, mask, color="white")
    right.set_title("anomaly map" + ("" if mask is None else " (white: ground truth)"), fontsize=8)
    fig.colorbar(shown, ax=right, shrink=0.8, label="anomaly score")
    return fig
