"""The two papers' pipelines as one row of boxes and arrows, with "you are here" (every chapter's opening).

* :data:`PIPELINE_STAGES`: the stage keys of each paper, in pipeline order.
* :func:`show_pipeline`: the figure; ``here`` (a key or a list of keys) is drawn as a filled
  coloured box with a "you are here" marker above it, every other box in grey.

Under each box one note says what goes in and out (shapes where they help) and where the
paper says it:

* **CutSwap** (Qin et al., 2024): multilevel LayerCAM (Sec. III-A) -> k-means on each map,
  most salient cluster, two anchors (Sec. III-A, "Saliency Map Clustering") -> CutSwap and
  CutSwap-scar negatives (Sec. III-A, "Patch Swapping"; the scar in Sec. IV, "Implementation
  details") -> 3-way self-supervised fine-tuning of ResNet18 (Sec. III-B, Eq. 1-5, made 3-way
  in Sec. IV) -> PatchCore on the fine-tuned encoder (Sec. III-B, "Testing", Fig. 3(b)).
* **SemiREST** (Li et al.): position-constrained features (Sec. 3.1.1, Eq. 1-3) -> memory bank
  by PatchCore's coreset (Eq. 4) -> residual tokens (Eq. 5-6) -> sliding windows (Sec. 3.1.2,
  Eq. 7-8) -> the Swin transformer (Eq. 9) trained with focal loss (Sec. 3.1.3, Eq. 11) ->
  bagging of the overlapping windows (Eq. 10) -> box labels through MixMatch (Sec. 3.3,
  Algorithm 1; block labels Sec. 3.4.1, Eq. 15).

Cutting each pipeline into these stages, and drawing them in one row, is the course's
choice: the papers draw their own overviews (CutSwap Fig. 2-3, SemiREST Fig. 2-3) with more
detail. In SemiREST, MixMatch is a training scheme (a fine-tune of the unsupervised model,
Sec. 3.3), not a step of inference; it closes the row because the course teaches it last.

Same figure contract as :mod:`cutswap_lib.viz` (a new figure, returned, never closed).
``tools/draw_pipelines.py`` writes ``notebooks/figures/pipeline_{cutswap,semirest}.png``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import NamedTuple

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["PIPELINE_STAGES", "show_pipeline"]


class _Stage(NamedTuple):
    key: str
    label: str  # inside the box
    io: str  # under the box: what goes in and out
    cite: str  # under the note: where the paper says it


_STAGES: dict[str, tuple[_Stage, ...]] = {
    "cutswap": (
        _Stage("layercam", "multilevel LayerCAM saliency",
               "image (B, 3, H, W) → 5 maps (B, 5, H, W)",
               "CutSwap Sec. III-A; layers Sec. IV"),
        _Stage("kmeans", "k-means on saliency, most salient cluster",
               "each map → K = 4 clusters → 2 anchors (row, col)",
               "CutSwap Sec. III-A (clustering); K Sec. IV"),
        _Stage("swap", "CutSwap / CutSwap-scar negatives",
               "positive + anchors → negative (B, 3, H, W)",
               "CutSwap Sec. III-A (swapping); scar Sec. IV"),
        _Stage("three_way", "3-way self-supervised fine-tuning of ResNet18",
               "normal / CutSwap / scar → 3 classes",
               "CutSwap Sec. III-B, Eq. 1-5; 3-way Sec. IV"),
        _Stage("patchcore", "PatchCore: image score and anomaly map",
               "fine-tuned encoder → score (B,), map (B, H, W)",
               "CutSwap Sec. III-B (testing), Fig. 3(b)"),
    ),
    "semirest": (
        _Stage("pcf", "position-constrained patch features",
               "image → f + λ_PE·η: (B, h_f, w_f, d_f)",
               "SemiREST Sec. 3.1.1, Eq. 1-3"),
        _Stage("memory", "memory bank / coreset",
               "normal PCFs (N, d_f) → bank (T, d_f)",
               "SemiREST Sec. 3.1.1, Eq. 4"),
        _Stage("residuals", "residual tokens",
               "(f̂ − nearest m̂)²: (B, h_f, w_f, d_f)",
               "SemiREST Sec. 3.1.1, Eq. 5-6"),
        _Stage("windows", "sliding windows",
               "tokens (B, h_t, w_t, d_t) → windows (μ, μ, d_t)",
               "SemiREST Sec. 3.1.2, Eq. 7-8"),
        _Stage("swin", "Swin transformer over tokens, focal loss",
               "window (μ, μ, d_t) → Θ_w (μ, μ)",
               "SemiREST Sec. 3.1.2-3.1.3, Eq. 9, 11"),
        _Stage("bagging", "bagging of the overlapping windows' predictions",
               "Q window maps → mean Θ (h_t, w_t)",
               "SemiREST Sec. 3.1.2, Eq. 10"),
        _Stage("mixmatch", "box labels through MixMatch",
               "boxes → block labels {0, −1}, loss L_x + λ_u·L_u",
               "SemiREST Sec. 3.3-3.4, Alg. 1, Eq. 15"),
    ),
}

PIPELINE_STAGES: dict[str, tuple[str, ...]] = {paper: tuple(s.key for s in stages)
                                               for paper, stages in _STAGES.items()}

_TITLES = {"cutswap": "CutSwap (Qin et al., 2024): saliency-guided negatives, then PatchCore",
           "semirest": "SemiREST (Li et al.): residual tokens through a sliding Swin transformer"}
HERE_COLOUR = "#ffc857"  # the highlighted box
HERE_EDGE = "#b8860b"
OTHER_COLOUR = "#e3e3e3"  # every other box
OTHER_EDGE = "#9a9a9a"
BOX_W, BOX_H, BOX_Y = 0.8, 0.9, 0.85  # in stage units along x (slot i spans [i, i + 1)), y in [0, Y_TOP]
Y_TOP = 2.1
NOTE_SIZE, CITE_SIZE = 7.5, 7.0  # points
NBSP = "\u00a0"  # a space that textwrap does not break at


def _check(paper: str, here) -> tuple[tuple[_Stage, ...], set[str]]:
    """``paper`` and ``here`` -> the paper's stages and the set of highlighted keys, or ValueError."""
    if paper not in _STAGES:
        raise ValueError(f"unknown paper {paper!r}; valid: {', '.join(map(repr, _STAGES))}")
    stages = _STAGES[paper]
    if here is None:
        keys: list = []
    elif isinstance(here, str):
        keys = [here]
    elif isinstance(here, Iterable):
        keys = list(here)
    else:
        raise ValueError(f"here must be a stage key, a list of keys or None; got {type(here).__name__}")
    valid = PIPELINE_STAGES[paper]
    bad = [k for k in keys if k not in valid]
    if bad:
        raise ValueError(f"unknown {paper} stage(s) {', '.join(map(repr, bad))}; "
                         f"valid: {', '.join(map(repr, valid))}")
    return stages, set(keys)


def _fill(text: str, width: int) -> str:
    """Wrap ``text`` at ``width`` characters, never inside a word, ``( ... )`` or "Eq. 10"."""
    for ref in ("Sec. ", "Eq. ", "Fig. ", "Alg. "):  # a reference stays on one line
        text = text.replace(ref, ref[:-1] + NBSP)
    depth, kept = 0, []
    for ch in text:  # spaces inside parentheses become no-break spaces, so shapes stay whole
        depth += (ch == "(") - (ch == ")")
        kept.append(NBSP if ch == " " and depth > 0 else ch)
    return textwrap.fill("".join(kept), width, break_long_words=False, break_on_hyphens=False)


def show_pipeline(paper: str, here: str | Iterable[str] | None = None, *,
                  figsize: tuple[float, float] = (12.0, 2.8)) -> Figure:
    """One paper's pipeline, boxes and arrows left to right; ``here`` highlighted.

    ``paper``: ``"cutswap"`` or ``"semirest"``; ``here``: a key of
    ``PIPELINE_STAGES[paper]``, a list of them, or None (every box grey). Unknown papers or
    keys raise :class:`ValueError` naming the valid ones. Each box's patch and label carry
    ``gid`` ``"box:<key>"`` and ``"label:<key>"``, the notes ``"note:<key>"`` and
    ``"cite:<key>"``, the marker ``"here:<key>"``, so a test (or a reader) can find them.
    Texts are wrapped to fit the boxes at the default ``figsize`` (notebook width).
    """
    stages, lit = _check(paper, here)
    n = len(stages)
    label_wrap, label_size = (17, 8.5) if n > 5 else (22, 10.0)  # characters per line, points
    note_wrap = 29 if n > 5 else 44
    fig, ax = plt.subplots(figsize=figsize)
    bottom, top = 0.02, 0.88
    fig.subplots_adjust(left=0.005, right=0.995, bottom=bottom, top=top)
    ax.set_xlim(0, n)
    ax.set_ylim(0, Y_TOP)
    ax.axis("off")
    fig.suptitle(_TITLES[paper], fontsize=11, y=0.97)
    per_point = Y_TOP / (figsize[1] * 72 * (top - bottom))  # y units per typographic point
    for i, stage in enumerate(stages):
        on = stage.key in lit
        x0 = i + (1 - BOX_W) / 2
        ax.add_patch(FancyBboxPatch((x0, BOX_Y), BOX_W, BOX_H, boxstyle="round,pad=0,rounding_size=0.06",
                                    facecolor=HERE_COLOUR if on else OTHER_COLOUR,
                                    edgecolor=HERE_EDGE if on else OTHER_EDGE,
                                    linewidth=2.0 if on else 1.0, gid=f"box:{stage.key}"))
        ax.text(i + 0.5, BOX_Y + BOX_H / 2, _fill(stage.label, label_wrap), ha="center", va="center",
                fontsize=label_size, color="black" if on else "#333333", gid=f"label:{stage.key}")
        io = _fill(stage.io, note_wrap)
        y = BOX_Y - 4 * per_point
        ax.text(i + 0.5, y, io, ha="center", va="top", fontsize=NOTE_SIZE, color="#222222",
                gid=f"note:{stage.key}")
        y -= (io.count("\n") + 1) * 1.25 * NOTE_SIZE * per_point + 3 * per_point  # under the note's lines
        ax.text(i + 0.5, y, _fill(stage.cite, note_wrap), ha="center", va="top", fontsize=CITE_SIZE,
                style="italic", color="#555555", gid=f"cite:{stage.key}")
        if on:
            ax.text(i + 0.5, BOX_Y + BOX_H + 3 * per_point, "▼ you are here", ha="center", va="bottom",
                    fontsize=9, fontweight="bold", color=HERE_EDGE, gid=f"here:{stage.key}")
        if i + 1 < n:  # arrow from this box's right edge to the next box's left edge
            ax.add_patch(FancyArrowPatch((x0 + BOX_W + 0.01, BOX_Y + BOX_H / 2),
                                         (i + 1 + (1 - BOX_W) / 2 - 0.01, BOX_Y + BOX_H / 2),
                                         arrowstyle="-|>", mutation_scale=12, linewidth=1.2,
                                         color="#555555"))
    return fig
