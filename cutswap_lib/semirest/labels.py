"""Block labels from pixel masks: SemiREST Eq. (14) (Sec. 3.4).

A token of the ``h_t x w_t`` map covers a block of ``beta = (h_I / h_t) x (w_I / w_t)``
pixels (rho = 1). Its label is 1 (anomalous) when more than ``eps_plus * beta`` of those
pixels are anomalous, 0 (normal) when fewer than ``eps_minus * beta`` are, and empty
(``IGNORE``, -100: no gradient) in between. The paper: ``eps+ = 50 %, eps- = 8 %``
unsupervised; ``25 % / 8 %`` supervised and semi-supervised.

Here the share of anomalous pixels per block is an area average of the mask
(``adaptive_avg_pool2d``), which equals ``sum / beta`` exactly when the image size is a
multiple of the token grid and splits boundary pixels proportionally otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import IGNORE

Tensor = torch.Tensor


def anomalous_share(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """Pixel masks ``(B, 1, H, W)`` in {0, 1} -> share of anomalous pixels per block ``(B, h_t, w_t)``."""
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"expected masks (B, 1, H, W), got {tuple(masks.shape)}")
    if masks.shape[-2] < grid[0] or masks.shape[-1] < grid[1]:
        raise ValueError(f"a {tuple(masks.shape[-2:])} mask is smaller than the {grid} token grid")
    return F.adaptive_avg_pool2d(masks.float(), grid)[:, 0]  # (B, h_t, w_t)


def labels_from_share(share: Tensor, eps_plus: float = 0.5, eps_minus: float = 0.08) -> Tensor:
    """SemiREST Eq. (14) on the shares of anomalous pixels per block ``(B, h_t, w_t)`` -> labels, same shape."""
    if not 0 <= eps_minus <= eps_plus <= 1:
        raise ValueError(f"need 0 <= eps_minus <= eps_plus <= 1, got eps_minus={eps_minus}, "
                         f"eps_plus={eps_plus}")
    labels = torch.full(share.shape, IGNORE, dtype=torch.long, device=share.device)
    labels[share > eps_plus] = 1
    labels[share < eps_minus] = 0
    return labels


def block_labels(masks: Tensor, grid: tuple[int, int], eps_plus: float = 0.5,
                 eps_minus: float = 0.08) -> Tensor:
    """SemiREST Eq. (14): masks ``(B, 1, H, W)`` -> block labels ``(B, h_t, w_t)`` in {1, 0, IGNORE}."""
    return labels_from_share(anomalous_share(masks, grid), eps_plus, eps_minus)
