"""Sliding windows over the token map and their bagging (SemiREST Sec. 3.1.2, Eq. (8) and (10)).

A token map ``(B, h_t, w_t, d_t)`` is cut into square ``mu x mu`` windows whose top-left
corners step by ``s`` tokens (Eq. 8); each window goes through the Swin transformer on its
own (Eq. 9), and the final map averages, at every token, the predictions of all windows
covering it (Eq. 10): the paper's "bagging". Taught in ``notebooks/05_swin_bagging.ipynb``.

Two cases the paper leaves open, decided here:

* **Sizes not divisible by the step.** The corners ``0, s, 2s, ...`` are followed by one
  last window flush with the far edge (``h_t - mu``), so every token is covered. (The
  paper writes ``r^t in [0, h_t - mu)``; reference code uses ``unfold``, whose last
  corner is ``h_t - mu`` when the step divides the size: the same set in that case.)
* **Maps smaller than mu.** The map is zero-padded to ``mu`` on that side (a single
  window); the predictions on padded tokens are dropped before bagging. Padding with
  zeros is what random token dropout (Eq. 13) teaches the network to read as "nothing".

Written by hand: the corner lists and the bagging average (a scatter-add of window
predictions and of ones, then a division), which are the paper's additions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def window_starts(size: int, mu: int, step: int) -> list[int]:
    """Corners along one axis of length ``size``: ``0, step, ...`` plus one flush with the end.

    ``size <= mu`` gives ``[0]`` (one window over the padded map).
    """
    if mu < 1 or step < 1 or size < 1:
        raise ValueError(f"window size mu, step s and map size must be >= 1, got mu={mu}, s={step}, "
                         f"size={size}")
    if size <= mu:
        return [0]
    starts = list(range(0, size - mu + 1, step))
    if starts[-1] != size - mu:
        starts.append(size - mu)  # the last window flush with the edge: every token covered
    return starts


def window_corners(height: int, width: int, mu: int, step: int) -> Tensor:
    """Top-left corners ``(Q, 2)`` (row, column) of the sliding windows of Eq. (8), row-major."""
    rows, cols = window_starts(height, mu, step), window_starts(width, mu, step)
    return torch.tensor([(r, c) for r in rows for c in cols], dtype=torch.long)  # (Q, 2)


def pad_to_window(tokens: Tensor, mu: int) -> Tensor:
    """Zero-pad a token map ``(B, h, w, d)`` at the bottom / right to at least ``mu x mu``."""
    b, h, w, d = tokens.shape
    if h >= mu and w >= mu:
        return tokens
    return F.pad(tokens, (0, 0, 0, max(0, mu - w), 0, max(0, mu - h)))  # (B, max(h,mu), max(w,mu), d)


def extract_windows(tokens: Tensor, corners: Tensor, mu: int) -> Tensor:
    """SemiREST Eq. (8): tokens ``(B, h, w, d)``, corners ``(Q, 2)`` -> windows ``(B, Q, mu, mu, d)``.

    Maps smaller than ``mu`` are zero-padded first (:func:`pad_to_window`).
    """
    if tokens.ndim != 4:
        raise ValueError(f"expected a token map (B, h, w, d), got shape {tuple(tokens.shape)}")
    padded = pad_to_window(tokens, mu)  # (B, H', W', d)
    _, hp, wp, _ = padded.shape
    if corners.numel() and (int(corners[:, 0].max()) + mu > hp or int(corners[:, 1].max()) + mu > wp):
        raise ValueError(f"a window of size {mu} at corners up to {corners.max(0).values.tolist()} "
                         f"leaves the {hp}x{wp} map")
    offsets = torch.arange(mu, device=tokens.device)
    rows = (corners[:, 0].to(tokens.device)[:, None] + offsets)  # (Q, mu)
    cols = (corners[:, 1].to(tokens.device)[:, None] + offsets)  # (Q, mu)
    return padded[:, rows[:, :, None], cols[:, None, :]]  # (B, Q, mu, mu, d)


def bag_windows(predictions: Tensor, corners: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """SemiREST Eq. (10): window maps ``(B, Q, mu, mu)`` -> bagged map ``(B, h, w)`` and counts ``(h, w)``.

    Each token's value is the mean of the predictions of the windows covering it, at the
    token's place inside each window; ``counts`` is ``|N_{r,c}|``, the number of those
    windows. Predictions on padded tokens (outside ``h x w``) are dropped.
    """
    b, q, mu, mu2 = predictions.shape
    if mu != mu2 or corners.shape != (q, 2):
        raise ValueError(f"expected predictions (B, Q, mu, mu) and corners (Q, 2), got "
                         f"{tuple(predictions.shape)} and {tuple(corners.shape)}")
    hp, wp = max(height, mu), max(width, mu)
    offsets = torch.arange(mu, device=predictions.device)
    rows = corners[:, 0].to(predictions.device)[:, None] + offsets  # (Q, mu)
    cols = corners[:, 1].to(predictions.device)[:, None] + offsets  # (Q, mu)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(-1)  # (Q*mu*mu,) index in the padded map
    total = predictions.new_zeros(b, hp * wp)
    total.index_add_(1, flat, predictions.reshape(b, -1))  # sum of window predictions per token
    counts = predictions.new_zeros(hp * wp)
    counts.index_add_(0, flat, torch.ones_like(flat, dtype=predictions.dtype))  # |N_{r,c}|
    total = total.reshape(b, hp, wp)[:, :height, :width]  # (B, h, w)
    counts = counts.reshape(hp, wp)[:height, :width]  # (h, w)
    if bool((counts == 0).any()):
        raise ValueError("some tokens are covered by no window; corners do not tile the map")
    return total / counts, counts
