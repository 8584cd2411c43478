"""Where negatives land, counted and pictured (CutSwap Sec. I and III-A), taught in notebook 02.

The CutSwap paper argues (Sec. I, Fig. 1(c)-(e)) that CutPaste's random cut and random paste
often make *useless* negatives: **B2B** (a background patch pasted on the background, so the
"anomaly" looks like a normal image) and **B2F** (a background patch pasted on the object,
unrealistic), while CutSwap's saliency-guided swap stays on the object and keeps its
semantics. This module measures that on images whose object footprint is known (the toy
dataset's ``foreground/`` masks):

* :func:`traced_negatives` makes negatives with one of the four methods of
  :mod:`cutswap_lib.cutswap.augment` and, with a copy of the same random draws, runs the same
  method on an image of pixel *coordinates*: the result is a **provenance map**, for every
  pixel the (row, col) whose content now sits there. From it: the pixels written, the
  pixels read, and whether each written pixel's content comes from the object.
* :func:`foreground_fraction`: the share of a negative's changed pixels that lie on the object.
* :func:`move_shares`: the written pixels split by (source, destination) into object -> object
  (F2F), object -> background (F2B), background -> object (B2F) and background ->
  background (B2B): pixel counts, so no threshold and no patch boxes are needed.
* :func:`negative_kinds`: a negative's kind is the class holding a strict majority (> 1/2)
  of its written pixels, else ``"mixed"``. A square swap is a permutation of the written
  pixels, so it moves exactly as much object onto the background as background onto the
  object: its F2B and B2F shares are equal (at most 1/2 each) and a swap across the
  object's edge counts as *mixed*, never as B2F alone (CutSwap-scar rotates its patches
  with nearest sampling, so there the two shares are only nearly equal).
* :func:`summary_row`: one table row per method (share mostly on the object, mean on-object
  fraction, share of each kind), for :func:`cutswap_lib.runs.format_results_table`.
* :func:`show_negatives`, :func:`show_negative_kinds`: the figures.

Same figure contract as :mod:`cutswap_lib.viz` (new figure, returned, never closed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..cutswap.augment import cutpaste, cutpaste_scar, cutswap, cutswap_scar
from .common import _images_hwc, _numpy, _show_image, overlay_mask_contour

__all__ = ["METHODS", "PIXEL_CLASSES", "KINDS", "TracedNegatives", "traced_negatives",
           "foreground_fraction", "move_shares", "negative_kinds", "kind_fractions", "summary_row",
           "show_negatives", "show_negative_kinds"]

METHODS = ("cutswap", "cutswap-scar", "cutpaste", "cutpaste-scar")
PIXEL_CLASSES = ("F2F", "F2B", "B2F", "B2B")  # (source -> destination), F object, B background
KINDS = PIXEL_CLASSES + ("mixed",)
REGION_COLOURS = ("cyan", "magenta")  # patch 0 / source region; patch 1 / destination region
KIND_COLOURS = ("#2ca02c", "#ff7f0e", "#d62728", "#7f7f7f", "#9467bd")


class TracedNegatives(NamedTuple):
    """Negatives with their provenance; every mask ``(B, 1, H, W)`` in {0, 1}.

    ``images`` ``(B, 3, H, W)`` the negatives; ``masks`` the changed pixels (as the augment
    functions return them); ``written`` the pixels written; ``read`` the pixels whose
    content was copied somewhere; ``source`` ``(B, 2, H, W)`` long, the (row, col) whose
    content sits at each pixel (itself where nothing was written); ``source_fg`` whether
    that content comes from the object (None without a foreground).
    """

    images: torch.Tensor
    masks: torch.Tensor
    written: torch.Tensor
    read: torch.Tensor
    source: torch.Tensor
    source_fg: torch.Tensor | None


def _clone(generator: torch.Generator | None) -> torch.Generator:
    """A generator in the same state as ``generator`` (or as torch's default CPU generator)."""
    g = generator if generator is not None else torch.random.default_generator
    copy = torch.Generator(device=g.device)
    copy.set_state(g.get_state())
    return copy


def _check_mask(x, name: str, shape) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != \
            tuple(shape[-2:]) or x.shape[0] != shape[0]:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f"{name} must be a (B, 1, H, W) = ({shape[0]}, 1, {shape[-2]}, {shape[-1]}) "
                         f"tensor, got {got}")
    return x > 0.5


def traced_negatives(method: str, images: torch.Tensor, foreground: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, anchors: torch.Tensor | None = None,
                     **kwargs) -> TracedNegatives:
    """Negatives of ``method`` with their provenance: ``(B, 3, H, W)`` -> :class:`TracedNegatives`.

    ``method``: one of :data:`METHODS`; ``anchors`` ``(B, 2, 2)`` for the two CutSwap methods;
    ``generator`` for the random ones (it advances exactly as in a plain call); ``kwargs``
    go to the augment function (``patch_size``, scar ``width`` / ``length`` / ``angle``,
    ``area_ratio``, ``jitter``, ...). ``foreground`` ``(B, 1, H, W)``: the object footprint.
    The provenance run repeats the same draws on a coordinate image (CutPaste's colour
    jitter off there: it changes values, not places).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if (anchors is None) == method.startswith("cutswap"):
        raise ValueError(f"{method} {'needs' if anchors is None else 'takes no'} anchors (B, 2, 2)")
    b, _, h, w = images.shape
    rows = torch.arange(h, device=images.device, dtype=images.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.arange(w, device=images.device, dtype=images.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    coords = torch.cat([rows, cols, torch.zeros_like(rows)], 1)  # (B, 3, H, W) "image" of coordinates
    copy = _clone(generator)
    if method == "cutswap":
        out, masks, written = cutswap(images, anchors, return_footprint=True, **kwargs)
        moved, _ = cutswap(coords, anchors, **kwargs)
    elif method == "cutswap-scar":
        out, masks, written = cutswap_scar(images, anchors, generator, return_footprint=True, **kwargs)
        moved, _ = cutswap_scar(coords, anchors, copy, **kwargs)
    else:
        fn = cutpaste if method == "cutpaste" else cutpaste_scar
        out, masks, written = fn(images, generator, return_footprint=True, **kwargs)
        moved, _ = fn(coords, copy, **{**kwargs, "jitter": None})
    source = moved[:, :2].round().long()  # (B, 2, H, W)
    flat = (source[:, 0] * w + source[:, 1]).view(b, -1)  # (B, H W) source index of each pixel
    hit = written.view(b, -1) > 0
    read = torch.zeros(b, h * w + 1, device=images.device)
    read.scatter_(1, torch.where(hit, flat, h * w), 1.0)  # unwritten pixels go to a spare slot
    read = read[:, : h * w].view(b, 1, h, w).to(images.dtype)
    source_fg = None
    if foreground is not None:
        fg = _check_mask(foreground, "foreground", images.shape).to(images.device)
        source_fg = fg.view(b, -1).gather(1, flat).view(b, 1, h, w).to(images.dtype)
    return TracedNegatives(out, masks, written, read, source, source_fg)


def foreground_fraction(masks: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Share of each mask's pixels on the object: ``(B, 1, H, W)``, ``(B, 1, H, W)`` -> ``(B,)``.

    ``|mask & foreground| / |mask|``; NaN for an empty mask (nothing changed: no place).
    """
    m = _check_mask(masks, "masks", masks.shape)
    fg = _check_mask(foreground, "foreground", masks.shape).to(m.device)
    size = m.sum((1, 2, 3)).double()  # (B,)
    on = (m & fg).sum((1, 2, 3)).double()
    return torch.where(size > 0, on / size.clamp(min=1), torch.full_like(size, float("nan"))).float()


def move_shares(written: torch.Tensor, source_fg: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Written pixels by (source, destination): ``(B, 1, H, W)`` x 3 -> ``(B, 4)`` shares.

    Columns as :data:`PIXEL_CLASSES`: F2F, F2B, B2F, B2B (F object, B background; the source
    is where the pixel's content comes from, ``source_fg``, the destination where it lies,
    ``foreground``). Rows sum to 1; NaN rows where nothing was written.
    """
    wr = _check_mask(written, "written", written.shape)
    src = _check_mask(source_fg, "source_fg", written.shape).to(wr.device)
    dst = _check_mask(foreground, "foreground", written.shape).to(wr.device)
    classes = [src & dst, src & ~dst, ~src & dst, ~src & ~dst]
    counts = torch.stack([(c & wr).sum((1, 2, 3)) for c in classes], 1).double()  # (B, 4)
    total = counts.sum(1, keepdim=True)
    shares = counts / total.clamp(min=1)
    return torch.where(total > 0, shares, torch.full_like(shares, float("nan"))).float()


def negative_kinds(shares: torch.Tensor) -> torch.Tensor:
    """Kind of each negative: ``(B, 4)`` shares -> ``(B,)`` long indices into :data:`KINDS`.

    The class with a strict majority (> 1/2) of the written pixels, else 4 ("mixed", also
    for NaN rows).
    """
    if shares.ndim != 2 or shares.shape[1] != len(PIXEL_CLASSES):
        raise ValueError(f"shares must be (B, 4) as move_shares returns, got {tuple(shares.shape)}")
    best, idx = shares.nan_to_num(0.0).max(1)
    return torch.where(best > 0.5, idx, torch.full_like(idx, len(PIXEL_CLASSES)))


def kind_fractions(kinds: torch.Tensor) -> dict[str, float]:
    """Share of negatives of each kind: ``(n,)`` indices -> {kind: fraction} over :data:`KINDS`."""
    counts = torch.bincount(kinds.reshape(-1).cpu(), minlength=len(KINDS)).double()
    return {k: float(c / max(kinds.numel(), 1)) for k, c in zip(KINDS, counts)}


def summary_row(on_object: torch.Tensor, shares: torch.Tensor) -> dict[str, float | int]:
    """One method's counts as a table row: ``(n,)`` fractions, ``(n, 4)`` shares -> dict.

    ``on_object``: :func:`foreground_fraction` of n negatives; ``shares``: their
    :func:`move_shares`. Keys: ``n``; ``mostly on``, the share of negatives above 1/2 on the
    object (NaN, nothing changed, counts as off); ``mean on``, the mean fraction over the
    negatives that changed something; then the share of each of :data:`KINDS`.
    """
    if on_object.ndim != 1 or shares.shape != (len(on_object), len(PIXEL_CLASSES)):
        raise ValueError(f"need (n,) fractions and (n, 4) shares, got {tuple(on_object.shape)} and "
                         f"{tuple(shares.shape)}")
    row: dict[str, float | int] = {"n": len(on_object),
                                   "mostly on": float((on_object.nan_to_num(0.0) > 0.5).double().mean()),
                                   "mean on": float(on_object.double().nanmean())}
    return {**row, **kind_fractions(negative_kinds(shares))}


# --------------------------------------------------------------------------- figures
def _draw_box(ax, box, colour) -> None:
    top, left, hh, ww = (float(v) for v in box)
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), ww, hh, fill=False, edgecolor=colour,
                           linewidth=1.3, linestyle="--"))


def show_negatives(images, negatives: Mapping[str, object], masks: Mapping[str, object], titles=None, *,
                   foreground=None, regions: Mapping[str, Sequence] | None = None,
                   boxes: Mapping[str, object] | None = None) -> Figure:
    """Rows: the originals, then one row per method; each image takes two columns.

    ``images`` ``(N, 3, H, W)``; ``negatives`` / ``masks``: method -> ``(N, 3, H, W)`` /
    ``(N, 1, H, W)`` (changed pixels, shown white on black, right of each negative);
    ``titles``: N column titles; ``foreground`` ``(N, 1, H, W)``: the object, shown beside
    the originals and outlined in yellow on every mask; ``regions``: method -> a sequence
    of ``(N, 1, H, W)`` masks outlined on the negative in cyan, magenta (e.g. read and
    written pixels); ``boxes``: method -> ``(N, P, 4)`` (top, left, height, width) dashed
    rectangles in the same colours (e.g. :func:`~cutswap_lib.cutswap.augment.place_patches`).
    """
    imgs = _images_hwc(images)
    n = imgs.shape[0]
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    if set(negatives) != set(masks):
        raise ValueError(f"negatives and masks name different methods: {sorted(negatives)} vs {sorted(masks)}")
    fg = None if foreground is None else _numpy(foreground).reshape(n, *imgs.shape[1:3])
    names = list(negatives)
    fig, axes = plt.subplots(len(names) + 1, 2 * n, figsize=(1.7 * 2 * n + 0.6, 1.75 * (len(names) + 1)),
                             squeeze=False, layout="constrained")
    for i in range(n):
        _show_image(axes[0, 2 * i], imgs[i])
        axes[0, 2 * i].set_title("original" if titles is None else str(titles[i]), fontsize=8)
        ax = axes[0, 2 * i + 1]
        if fg is None:
            ax.remove()
        else:
            _show_image(ax, fg[i][..., None].astype(np.float32))
            ax.set_title("object footprint", fontsize=8)
    for r, name in enumerate(names, start=1):
        neg = _images_hwc(negatives[name])
        msk = _numpy(masks[name]).reshape(n, *imgs.shape[1:3])
        for i in range(n):
            ax = axes[r, 2 * i]
            _show_image(ax, neg[i])
            for colour, region in zip(REGION_COLOURS, (regions or {}).get(name, ())):
                overlay_mask_contour(ax, _numpy(region)[i].reshape(imgs.shape[1:3]), colour, 1.2)
            if boxes is not None and name in boxes:
                for p, box in enumerate(_numpy(boxes[name])[i]):
                    _draw_box(ax, box, REGION_COLOURS[p % 2])
            ax.set_title(name, fontsize=8)
            ax = axes[r, 2 * i + 1]
            _show_image(ax, msk[i][..., None].astype(np.float32))
            if fg is not None:
                overlay_mask_contour(ax, fg[i], "yellow", 0.8)
            ax.set_title(f"changed: {int(msk[i].sum())} px", fontsize=8)
    return fig


def show_negative_kinds(kinds: Mapping[str, torch.Tensor], on_object: Mapping[str, torch.Tensor] | None = None,
                        title=None) -> Figure:
    """Per method: share of negatives mostly on the object (left), and of each kind (right, stacked).

    ``kinds``: method -> ``(n,)`` indices into :data:`KINDS` (:func:`negative_kinds`);
    ``on_object``: method -> ``(n,)`` :func:`foreground_fraction` values; a bar is the share
    above 1/2 (NaN counts as off), labelled with its value. None: right panel only.
    """
    names = list(kinds)
    panels = 1 if on_object is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels + 1.6, 3.3), squeeze=False,
                             layout="constrained")
    x = np.arange(len(names))
    if on_object is not None:
        ax = axes[0, 0]
        share = [float((on_object[m].nan_to_num(0.0) > 0.5).double().mean()) for m in names]
        bars = ax.bar(x, share, color="#1f77b4")
        ax.bar_label(bars, labels=[f"{s:.2f}" for s in share], fontsize=8)
        ax.set_xticks(x, names, fontsize=8, rotation=15)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("share of negatives")
        ax.set_title("changed pixels mostly on the object", fontsize=9)
    ax = axes[0, -1]
    bottom = np.zeros(len(names))
    fractions = [kind_fractions(kinds[m]) for m in names]
    for k, colour in zip(KINDS, KIND_COLOURS):
        values = np.array([f[k] for f in fractions])
        ax.bar(x, values, bottom=bottom, color=colour, label=k)
        bottom += values
    ax.set_xticks(x, names, fontsize=8, rotation=15)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("share of negatives")
    ax.set_title("kind (majority of written pixels, source->destination)", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # as stacked
    if title is not None:
        fig.suptitle(title, fontsize=10)
    return fig
