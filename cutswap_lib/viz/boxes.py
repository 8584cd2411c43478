"""Figures and the box-drawing tool of notebook 06: weak labels and MixMatch (SemiREST Sec. 3.3-3.4, 4.7).

Same contract as :mod:`cutswap_lib.viz.common`: every ``show_*`` function draws a new figure
and returns the :class:`matplotlib.figure.Figure`; nothing is closed here. Torch tensors
(any device) and numpy arrays both work. Colours follow the paper's Fig. 1: block labels
normal blue, anomalous orange, ignored grey; box labels normal green, unknown yellow.

* :func:`show_annotation_levels` – the same images labelled three ways: pixel mask, block
  labels (Eq. 14), boxes and their block labels (Eq. 15).
* :func:`show_boxes` – images with their boxes (what a box file holds).
* :func:`show_pseudo_labels` – Algorithm 1 step 3 on one window: the anomaly probability
  of each k-NN copy, their mean (the guess), the sharpened pseudo labels and the sharpen curve.
* :func:`show_mixup` – Algorithm 1 steps 4-6 on the same window: tokens and targets before
  and after MixUp.
* :func:`show_lambda_u_ramp`, :func:`show_finetune_curves` – the weight of ``L_u`` and the
  fine-tuning losses.
* :func:`show_cost_vs_accuracy` – seconds of annotation per image against AP / PRO / pixel
  AUROC (the paper's Fig. 5), one column per source of numbers.

Helpers: :func:`normal_blocks_with_defect` (how much defect a "normal" block label may hide),
:func:`unknown_block_truth` (how much of a box's unknown blocks is defect, by the mask);
the name of a test image in a box file is :func:`cutswap_lib.semirest.box_key`.
:class:`BoxAnnotator` draws boxes on test images with ipywidgets (imported only when its
widget is built) and writes them with :func:`cutswap_lib.semirest.save_boxes`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from PIL import Image, ImageDraw

from ..semirest.boxes import UNKNOWN, load_boxes, save_boxes, validate_boxes
from ..semirest.labels import anomalous_share
from ..semirest.losses import IGNORE
from ..semirest.mixmatch import lambda_u_at, sharpen
from .common import _images_hwc, _maps_nhw, _numpy, _show_image, _titles, overlay_mask_contour

__all__ = ["normal_blocks_with_defect", "unknown_block_truth", "show_annotation_levels", "show_boxes",
           "show_pseudo_labels", "show_mixup", "show_lambda_u_ramp", "show_finetune_curves",
           "show_cost_vs_accuracy", "BoxAnnotator"]

# (colour, name) per label value; the paper's Fig. 1
BLOCK_COLOURS = {0: ("#3b6fd4", "normal (0)"), 1: ("#f28e2b", "anomalous (1)"), IGNORE: ("#9a9a9a", "ignored (∅)")}
BOX_COLOURS = {0: ("#2ca02c", "normal (0)"), UNKNOWN: ("#f5d000", "unknown (-1)")}
METRIC_NAMES = {"ap": "AP", "pro": "PRO", "pixel_auroc": "pixel AUROC"}
LEVEL_MARKERS = {"none": "s", "box": "*", "block": "p", "pixel": "o"}  # Fig. 5: star, pentagon, circle


# --------------------------------------------------------------------------- helpers

def normal_blocks_with_defect(masks, labels) -> tuple[int, float]:
    """Blocks labelled normal (0) that contain anomalous pixels: their count and the largest share.

    ``masks`` ``(B, H, W)`` in {0, 1}; ``labels`` ``(B, h, w)`` block labels (Eq. 14 or 15).
    Eq. 14 allows up to ``eps-`` by design; Eq. 15 may cut a defect at a box edge.
    """
    m = torch.as_tensor(masks).float()
    lab = torch.as_tensor(labels).cpu()
    share = anomalous_share(m.unsqueeze(1), tuple(lab.shape[-2:])).cpu()  # (B, h, w)
    hidden = share[(lab == 0) & (share > 0)]
    return int(hidden.numel()), float(hidden.max()) if hidden.numel() else 0.0


def unknown_block_truth(masks, box_labels, eps_plus: float = 0.25, eps_minus: float = 0.08) -> dict[str, float]:
    """What the boxes' unknown blocks hold, by the mask: the shares Eq. 14 would label anomalous / normal / ignored.

    ``masks`` ``(B, H, W)`` in {0, 1}; ``box_labels`` ``(B, h, w)`` Eq. 15 block labels in {0, UNKNOWN}.
    Returns ``{"unknown blocks": n, "anomalous": a, "normal": m, "ignored": i}`` with ``a + m + i = 1``
    (all zero when no block is unknown). MixMatch has to find the anomalous share among the unknown
    blocks from its own guesses: a thin crack's box is mostly normal blocks, a stain's mostly anomalous.
    """
    m = torch.as_tensor(masks).float()
    unknown = torch.as_tensor(box_labels).cpu() == UNKNOWN
    share = anomalous_share(m.unsqueeze(1), tuple(unknown.shape[-2:])).cpu()[unknown]  # (n,) of the unknown blocks
    n = int(share.numel())
    if n == 0:
        return {"unknown blocks": 0, "anomalous": 0.0, "normal": 0.0, "ignored": 0.0}
    anomalous, normal = float((share > eps_plus).sum()) / n, float((share < eps_minus).sum()) / n
    return {"unknown blocks": n, "anomalous": anomalous, "normal": normal, "ignored": 1.0 - anomalous - normal}


def _label_overlay(ax, labels, colours: Mapping, size: tuple[int, int], alpha: float = 0.55) -> None:
    """Block labels ``(h, w)`` stretched over an ``(H, W)`` image, one colour per value."""
    lab = _numpy(labels)
    values = list(colours)
    index = np.full(lab.shape, -1, dtype=np.int64)
    for k, v in enumerate(values):
        index[lab == v] = k
    rgba = np.zeros(lab.shape + (4,), dtype=np.float32)
    cmap = ListedColormap([colours[v][0] for v in values])
    for k in range(len(values)):
        rgba[index == k] = cmap(k)
    rgba[..., 3] = np.where(index >= 0, alpha, 0.0)
    h, w = size
    ax.imshow(rgba, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
    gh, gw = lab.shape  # block grid lines
    for r in range(1, gh):
        ax.axhline(r * h / gh - 0.5, color="white", linewidth=0.2, alpha=0.5)
    for c in range(1, gw):
        ax.axvline(c * w / gw - 0.5, color="white", linewidth=0.2, alpha=0.5)


def _draw_boxes(ax, boxes, colour: str = "red", linewidth: float = 1.5) -> None:
    for x0, y0, x1, y1 in boxes:
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour,
                               linewidth=linewidth))


def _legend(fig, colours: Mapping, title: str, loc: str) -> None:
    handles = [Patch(color=c, label=name) for c, name in colours.values()]
    fig.legend(handles=handles, title=title, loc=loc, fontsize=7, title_fontsize=7, ncols=len(handles),
               frameon=False)


# --------------------------------------------------------------------------- label figures

def show_annotation_levels(images, masks, block_labels, boxes, box_labels, titles=None) -> Figure:
    """Rows = images ``(N, 3, H, W)``; columns image | pixel mask | block labels (Eq. 14) | boxes + Eq. 15 labels.

    ``masks`` ``(N, H, W)``; ``block_labels`` ``(N, h, w)`` in {1, 0, IGNORE};
    ``boxes`` one list of ``(x0, y0, x1, y1)`` per image; ``box_labels`` ``(N, h, w)`` in {0, UNKNOWN}.
    """
    imgs = _images_hwc(images)  # (N, H, W, C)
    n, h, w = imgs.shape[:3]
    ms = _maps_nhw(masks, "masks", n)
    blocks, box_blocks = _numpy(block_labels), _numpy(box_labels)
    if blocks.shape[0] != n or box_blocks.shape[0] != n or len(boxes) != n:
        raise ValueError(f"need one block map, one box list and one box-label map per image ({n})")
    titles = _titles(titles, n)
    fig, axes = plt.subplots(n, 4, figsize=(9.6, 2.4 * n + 0.7), squeeze=False, layout="constrained")
    heads = ["image", "pixel labels (mask)", "block labels, Eq. 14", "box labels, Eq. 15"]
    for i in range(n):
        row = axes[i]
        for ax in row:
            _show_image(ax, imgs[i] * (0.55 if ax is not row[0] else 1.0))
        row[0].set_title(heads[0] if titles[i] is None else str(titles[i]), fontsize=8)
        row[1].imshow(ms[i], cmap="Reds", alpha=0.8 * (ms[i] > 0), vmin=0, vmax=1, interpolation="nearest")
        _label_overlay(row[2], blocks[i], BLOCK_COLOURS, (h, w))
        _label_overlay(row[3], box_blocks[i], BOX_COLOURS, (h, w))
        _draw_boxes(row[3], boxes[i], colour="red")
        for ax in row[1:]:
            overlay_mask_contour(ax, ms[i], color="red", linewidth=0.6)
        if i == 0:
            for ax, head in zip(row[1:], heads[1:]):
                ax.set_title(head, fontsize=8)
    _legend(fig, BLOCK_COLOURS, "block labels", "lower left")
    _legend(fig, BOX_COLOURS, "box labels", "lower right")
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    return fig


def show_boxes(images, boxes, masks=None, titles=None, ncols: int = 5) -> Figure:
    """Images ``(N, 3, H, W)`` with their boxes (one list each) in yellow; mask outlines in red if given."""
    imgs = _images_hwc(images)
    n = imgs.shape[0]
    if len(boxes) != n:
        raise ValueError(f"got {len(boxes)} box lists for {n} images")
    ms = None if masks is None else _maps_nhw(masks, "masks", n)
    titles = _titles(titles, n)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.1 * nrows), squeeze=False,
                             layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.remove()
            continue
        _show_image(ax, imgs[k])
        if ms is not None:
            overlay_mask_contour(ax, ms[k], linewidth=0.6)
        _draw_boxes(ax, boxes[k], colour="#f5d000")
        ax.set_title(f"{titles[k] or ''} ({len(boxes[k])} box{'es' if len(boxes[k]) != 1 else ''})", fontsize=7)
    return fig


# --------------------------------------------------------------------------- MixMatch figures

def _map_panel(ax, values, title: str, cmap: str = "magma", vmin=0.0, vmax=1.0):
    im = ax.imshow(_numpy(values), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return im


def show_pseudo_labels(copy_probs, labels, pseudo=None, temperature: float = 0.5, crop=None,
                       crop_mask=None) -> Figure:
    """Algorithm 1 step 3 on one window: probabilities of ``M`` k-NN copies ``(M, mu, mu)`` -> guess -> pseudo.

    ``labels`` ``(mu, mu)`` the window's box labels (0 / UNKNOWN / IGNORE); ``pseudo``
    ``(mu, mu)`` the sharpened guess (computed with :func:`sharpen` when None); ``crop``
    ``(3, H, W)`` the image under the window, ``crop_mask`` its ground truth (outlined).
    Top row: crop | labels | one map per copy. Bottom: guess | pseudo labels | the
    sharpen curve with the window's unknown tokens on it.
    """
    probs = torch.as_tensor(copy_probs).detach().float().cpu()  # (M, mu, mu)
    m = probs.shape[0]
    guess = probs.mean(0)  # (mu, mu)
    pseudo = sharpen(guess, temperature) if pseudo is None else torch.as_tensor(pseudo).detach().float().cpu()
    lab = torch.as_tensor(labels).cpu()
    ncols = m + 2
    fig = plt.figure(figsize=(2.1 * ncols, 4.6), layout="constrained")
    grid = fig.add_gridspec(2, ncols)
    top = [fig.add_subplot(grid[0, j]) for j in range(ncols)]
    if crop is not None:
        _show_image(top[0], _images_hwc(crop)[0])
        if crop_mask is not None:
            overlay_mask_contour(top[0], crop_mask, linewidth=0.8)
        top[0].set_title("image under the window", fontsize=8)
    else:
        top[0].axis("off")
    lab_img = np.zeros(tuple(lab.shape) + (3,), dtype=np.float32)
    for value, (colour, _) in {**BOX_COLOURS, IGNORE: BLOCK_COLOURS[IGNORE]}.items():
        lab_img[_numpy(lab) == value] = np.array(to_rgb(colour))
    _show_image(top[1], lab_img)
    top[1].set_title("box labels (yellow: unknown)", fontsize=8)
    for j in range(m):
        im = _map_panel(top[j + 2], probs[j], f"copy {j + 1}: p(anomalous)")
    unknown = lab == UNKNOWN
    outline = unknown.float().numpy()
    bottom = [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1]), fig.add_subplot(grid[1, 2:])]
    _map_panel(bottom[0], guess, f"guess: mean of {m}")
    _map_panel(bottom[1], pseudo, f"sharpened, Γ = {temperature:g}")
    for ax in (*top[2:], *bottom[:2]):
        if 0 < outline.sum() < outline.size:
            ax.contour(outline, levels=[0.5], colors=["#f5d000"], linewidths=0.8)
    fig.colorbar(im, ax=top[-1], shrink=0.9, label="p (all maps)")
    ax = bottom[2]
    p = torch.linspace(0, 1, 201)
    for t in sorted({1.0, temperature, temperature / 2}, reverse=True):
        ax.plot(p, sharpen(p, t), label=f"Γ = {t:g}" + (" (paper)" if t == temperature else ""),
                linewidth=2 if t == temperature else 1)
    if bool(unknown.any()):
        ax.scatter(guess[unknown], pseudo[unknown], s=8, color="black", zorder=3, label="unknown tokens")
    ax.set_xlabel("guess (mean probability)")
    ax.set_ylabel("pseudo label")
    ax.set_title("Sharpen(p, Γ) = p^(1/Γ) / (p^(1/Γ) + (1-p)^(1/Γ))", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def show_mixup(tokens_before, tokens_after, targets_before, targets_after, lam: float, labels=None) -> Figure:
    """Algorithm 1 steps 4-6 on one window: token norms and targets ``(mu, mu)`` before / after MixUp with ``lam``.

    ``tokens_*`` are ``(mu, mu, d)`` residual tokens (shown by their L2 norm);
    ``targets_*`` ``(mu, mu)`` the training targets (0 outside the boxes, the pseudo label inside);
    ``labels`` ``(mu, mu)`` outlines the unknown region.
    """
    norms = [torch.as_tensor(t).detach().float().cpu().norm(dim=-1) for t in (tokens_before, tokens_after)]
    vmax = float(max(n.max() for n in norms))
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), layout="constrained")
    im0 = _map_panel(axes[0], norms[0], "token norm ‖r‖ (one copy)", "viridis", 0, vmax)
    _map_panel(axes[1], norms[1], f"after MixUp, λ' = {lam:.2f}", "viridis", 0, vmax)
    im2 = _map_panel(axes[2], targets_before, "target: 0 or pseudo label")
    _map_panel(axes[3], targets_after, "mixed target")
    if labels is not None:
        outline = (torch.as_tensor(labels).cpu() == UNKNOWN).float().numpy()
        if 0 < outline.sum() < outline.size:
            for ax in axes:
                ax.contour(outline, levels=[0.5], colors=["#f5d000"], linewidths=0.8)
    fig.colorbar(im0, ax=axes[:2], shrink=0.8, label="‖r‖")
    fig.colorbar(im2, ax=axes[2:], shrink=0.8, label="target")
    return fig


def show_lambda_u_ramp(lambda_u: float = 5.0, ramp_steps: int = 400, steps: int = 800,
                       iterations: int | None = None) -> Figure:
    """The weight of ``L_u`` against the step (:func:`lambda_u_at`); ``iterations`` marks where a run stops."""
    x = np.arange(steps + 1)
    fig, ax = plt.subplots(figsize=(5, 2.8), layout="constrained")
    ax.plot(x, [lambda_u_at(int(s), lambda_u, ramp_steps) for s in x], color="tab:red")
    ax.axvline(ramp_steps, color="gray", linestyle=":", linewidth=1)
    ax.annotate(f"λ_u = {lambda_u:g} from step {ramp_steps}", (ramp_steps, lambda_u), xytext=(8, -14),
                textcoords="offset points", fontsize=8)
    if iterations is not None:
        ax.axvline(iterations, color="tab:blue", linestyle="--", linewidth=1, label=f"this run stops: {iterations}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("λ_u (weight of L_u)")
    return fig


def _smooth(values, window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def show_finetune_curves(history: Sequence[Mapping], window: int = 10) -> Figure:
    """Fine-tuning history (dicts with ``loss_focal``, ``loss_x``, ``loss_u``, ``lambda_u``): three panels.

    Losses drawn raw (faint) and as a moving average over ``window`` steps.
    """
    if not history:
        raise ValueError("show_finetune_curves needs a non-empty history")
    steps = np.array([h["iteration"] for h in history])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3), layout="constrained")
    panels = [(axes[0], ("loss_focal", "loss_x"), "labelled: focal (blue part) and L_x"),
              (axes[1], ("loss_u",), "unlabelled: L_u")]
    for ax, keys, title in panels:
        for key, colour in zip(keys, ("tab:blue", "tab:green")):
            y = [h[key] for h in history]
            ax.plot(steps, y, color=colour, alpha=0.25, linewidth=0.8)
            smooth = _smooth(y, window)
            ax.plot(steps[len(steps) - len(smooth):], smooth, color=colour, label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    axes[2].plot(steps, [h["lambda_u"] for h in history], color="tab:red")
    axes[2].set_title("λ_u (ramp)", fontsize=9)
    axes[2].set_xlabel("step")
    return fig


# --------------------------------------------------------------------------- cost vs accuracy

def show_cost_vs_accuracy(results: Mapping[str, Mapping[str, Sequence[float] | None]],
                          seconds: Mapping[str, float], notes: Mapping[str, str] | None = None,
                          metrics: Sequence[str] = ("ap", "pro", "pixel_auroc"),
                          hollow: Mapping[str, Sequence[str]] | None = None) -> Figure:
    """Seconds of annotation per image (x) against each metric (rows), one column per source (Fig. 5).

    ``results``: ``{source: {level: (AP, PRO, pixel AUROC) or None}}`` with levels among
    ``seconds`` (e.g. ``none`` 0 s, ``box`` 5, ``block`` 17, ``pixel`` 32); None is left
    out. ``hollow``: ``{source: [levels]}`` drawn as open markers (a point that repeats
    another model). ``notes``: ``{source: text}`` under the column.
    """
    sources = list(results)
    fig, axes = plt.subplots(len(metrics), len(sources), figsize=(4.2 * len(sources), 2.1 * len(metrics) + 0.6),
                             squeeze=False, sharex=True, layout="constrained")
    order = sorted(seconds, key=seconds.get)
    for j, source in enumerate(sources):
        levels = [lv for lv in order if results[source].get(lv) is not None]
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            xs = [seconds[lv] for lv in levels]
            ys = [results[source][lv][i] for lv in levels]
            ax.plot(xs, ys, color="gray", linewidth=0.8, zorder=1)
            for lv, x, y in zip(levels, xs, ys):
                open_ = lv in (hollow or {}).get(source, ())
                ax.scatter([x], [y], marker=LEVEL_MARKERS.get(lv, "o"), s=110 if lv == "box" else 60,
                           facecolor="white" if open_ else f"C{i}", edgecolor=f"C{i}", zorder=2)
                ax.annotate(lv, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
            ax.set_ylabel(METRIC_NAMES.get(metric, metric), fontsize=9)
            ax.margins(y=0.25)
            if i == 0:
                ax.set_title(source, fontsize=9)
        axes[-1, j].set_xlabel("annotation time per image (s)")
        axes[-1, j].set_xticks([seconds[lv] for lv in order])
        axes[-1, j].set_xticklabels([f"{seconds[lv]:g}" + ("+" if lv == "pixel" else "") for lv in order])
        if notes and notes.get(source):
            axes[-1, j].text(0.0, -0.42, notes[source], transform=axes[-1, j].transAxes, fontsize=7,
                             va="top", wrap=True)
    return fig


# --------------------------------------------------------------------------- the box tool

class BoxAnnotator:
    """Draw boxes on a few test images and save them as a box file (SemiREST Sec. 3.4.1, Eq. 15).

    ``images`` ``(N, 3, H, W)`` in [0, 1]; ``names`` their keys in the file (:func:`box_key`);
    ``path`` the JSON file (:func:`~cutswap_lib.semirest.save_boxes`), read at start when it
    exists and ``load`` is true; ``masks`` ``(N, H, W)`` optional ground truth, outlined as the
    paper's annotators saw it ("mimic the ground truth", Sec. 4.7). Works without a front
    end: :meth:`set_box`, :meth:`click`, :meth:`add`, :meth:`remove`, :meth:`go` and
    :meth:`save` are plain methods; :meth:`widget` builds the ipywidgets controls on top of
    them (two clicks on the image need the ``ipyevents`` package; sliders always work).
    """

    def __init__(self, images, names: Sequence[str], path, masks=None, load: bool = True, scale: int = 2):
        self.images = _images_hwc(images)  # (N, H, W, 3)
        self.names = [str(n) for n in names]
        if len(self.names) != len(self.images):
            raise ValueError(f"got {len(self.names)} names for {len(self.images)} images")
        self.size = tuple(self.images.shape[1:3])  # (H, W)
        self.masks = None if masks is None else _maps_nhw(masks, "masks", len(self.images)) > 0.5
        self.path, self.scale = Path(path), int(scale)
        self.boxes: dict[str, list] = {n: [] for n in self.names}
        if load and self.path.exists():
            stored = load_boxes(self.path, self.size)
            self.boxes.update({n: list(b) for n, b in stored.items() if n in self.boxes})
        self.index = 0
        h, w = self.size
        self.pending = (w // 4, h // 4, w // 2, h // 2)  # the box the sliders / clicks are setting
        self._corner: tuple[int, int] | None = None
        self._widgets: dict | None = None

    # ---- state
    @property
    def name(self) -> str:
        return self.names[self.index]

    def go(self, index: int) -> str:
        """Show image ``index`` (wraps around); returns its name."""
        self.index = index % len(self.names)
        self._corner = None
        self._refresh()
        return self.name

    def set_box(self, box) -> tuple:
        """Set the pending box ``(x0, y0, x1, y1)`` (validated against the image size)."""
        self.pending = validate_boxes([box], self.size, f"box for {self.name}")[0]
        self._refresh(sliders=True)
        return self.pending

    def click(self, x: float, y: float):
        """A click at pixel ``(x, y)``: the first sets a corner, the second the opposite one (-> pending box)."""
        h, w = self.size
        x, y = int(min(max(x, 0), w - 1)), int(min(max(y, 0), h - 1))
        if self._corner is None:
            self._corner = (x, y)
            self._refresh()
            return None
        (a, b), self._corner = self._corner, None
        return self.set_box((min(a, x), min(b, y), max(a, x) + 1, max(b, y) + 1))

    def add(self, box=None, name: str | None = None) -> tuple:
        """Add ``box`` (default: the pending one) to image ``name`` (default: the shown one)."""
        name = name or self.name
        box = validate_boxes([box or self.pending], self.size, f"box for {name}")[0]
        self.boxes[name].append(box)
        self._refresh()
        return box

    def remove(self, i: int = -1, name: str | None = None):
        """Remove box ``i`` (default: the last) of image ``name``; returns it, or None when there is none."""
        boxes = self.boxes[name or self.name]
        box = boxes.pop(i) if boxes else None
        self._refresh()
        return box

    def save(self, path=None) -> Path:
        """Write the images that have boxes to the JSON file (an image without boxes is not annotated)."""
        drawn = {n: b for n, b in self.boxes.items() if b}
        out = save_boxes(path or self.path, drawn, self.size)
        if self._widgets:
            self._widgets["status"].value = f"saved {len(drawn)} image(s) to {out}"
        return out

    # ---- drawing
    def render(self, index: int | None = None):
        """The image ``index`` (default: shown) scaled up, mask outline red, boxes yellow, pending box cyan (PIL)."""
        i = self.index if index is None else index
        s = self.scale
        rgb = (self.images[i] * 255).round().astype(np.uint8)
        if self.masks is not None:
            m = self.masks[i]
            edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
            rgb[edge] = (230, 30, 30)
        img = Image.fromarray(rgb).resize((rgb.shape[1] * s, rgb.shape[0] * s), Image.NEAREST)
        draw = ImageDraw.Draw(img)
        for x0, y0, x1, y1 in self.boxes[self.names[i]]:
            draw.rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], outline=(255, 215, 0), width=2)
        if i == self.index:
            x0, y0, x1, y1 = self.pending
            draw.rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], outline=(0, 220, 255), width=1)
            if self._corner is not None:
                cx, cy = self._corner[0] * s, self._corner[1] * s
                draw.line([cx - 6, cy, cx + 6, cy], fill=(0, 220, 255), width=2)
                draw.line([cx, cy - 6, cx, cy + 6], fill=(0, 220, 255), width=2)
        return img

    def figure(self) -> Figure:
        """Every image with its boxes (matplotlib), the static view of the annotations."""
        return show_boxes(self.images.transpose(0, 3, 1, 2), [self.boxes[n] for n in self.names],
                          None if self.masks is None else self.masks.astype(np.float32), self.names)

    def _refresh(self, sliders: bool = False) -> None:
        ws = self._widgets
        if not ws:
            return
        buffer = io.BytesIO()
        self.render().save(buffer, format="png")
        ws["view"].value = buffer.getvalue()
        if sliders:
            x0, y0, x1, y1 = self.pending
            ws["busy"] = True
            ws["x"].value, ws["y"].value = (x0, x1), (y0, y1)
            ws["busy"] = False
        ws["status"].value = (f"image {self.index + 1}/{len(self.names)} <b>{self.name}</b>: "
                              f"{len(self.boxes[self.name])} box(es) {self.boxes[self.name]}; pending {self.pending}")

    def widget(self):
        """Sliders, buttons and the image (ipywidgets); clicks on the image when ``ipyevents`` is installed."""
        import ipywidgets as widgets

        h, w = self.size
        x0, y0, x1, y1 = self.pending
        ws = {"view": widgets.Image(format="png"), "status": widgets.HTML(),
              "x": widgets.IntRangeSlider(value=(x0, x1), min=0, max=w, description="x0, x1"),
              "y": widgets.IntRangeSlider(value=(y0, y1), min=0, max=h, description="y0, y1"), "busy": False}
        buttons = {label: widgets.Button(description=label, layout=widgets.Layout(width="auto"))
                   for label in ("◀ previous", "next ▶", "add box", "remove last", "save")}
        actions = {"◀ previous": lambda: self.go(self.index - 1), "next ▶": lambda: self.go(self.index + 1),
                   "add box": self.add, "remove last": self.remove, "save": self.save}
        for label, button in buttons.items():
            button.on_click(lambda _b, f=actions[label]: f())

        def slid(_change):
            if not ws["busy"] and ws["x"].value[1] > ws["x"].value[0] and ws["y"].value[1] > ws["y"].value[0]:
                self.set_box((ws["x"].value[0], ws["y"].value[0], ws["x"].value[1], ws["y"].value[1]))

        ws["x"].observe(slid, names="value")
        ws["y"].observe(slid, names="value")
        ws["buttons"] = buttons
        self._widgets = ws
        try:
            from ipyevents import Event
            ws["events"] = Event(source=ws["view"], watched_events=["click"])
            ws["events"].on_dom_event(lambda e: self.click(e["dataX"] / self.scale, e["dataY"] / self.scale))
            hint = "click two opposite corners on the image, or use the sliders; then <i>add box</i>"
        except ImportError:
            hint = "set the box with the sliders, then <i>add box</i> (for two clicks: pip install ipyevents)"
        self._refresh(sliders=True)
        return widgets.VBox([widgets.HTML(hint), ws["view"], ws["x"], ws["y"],
                             widgets.HBox(list(buttons.values())), ws["status"]])
