"""Augmentations of residual tokens: k-NN residuals, Eq. (12), and random token dropout, Eq. (13).

SemiREST Sec. 3.2.1-3.2.2. Taught in ``notebooks/05_swin_bagging.ipynb``.

* **k-NN residuals** (Eq. 12): instead of always subtracting a token's *first* nearest
  memory PCF, training draws ``tau ~ U[0, 1]`` per token and subtracts the 1st, 2nd or 3rd
  neighbour for ``tau`` in ``[0, a1]``, ``(a1, a2]``, ``(a2, 1]`` (``a1 = 0.5, a2 = 0.8``:
  probabilities 0.5 / 0.3 / 0.2), then multiplies the residual element-wise by
  ``delta = e^z``, ``z ~ N(0, 0.2)`` per channel, clipped to ``+-0.223`` (so delta stays
  within about ``[0.8, 1.25]``).
* **Token dropout** (Eq. 13): every token of a window is reset to the zero vector with
  probability ``alpha = 25 %``. Labels are left as they are (the equation changes tokens
  only), so the network learns to read a token's class from its neighbours too.

One choice of ours, not the paper's: the **training images are in the memory bank**, so a
training patch kept by the coreset would be its own nearest neighbour (a zero residual no
test patch ever has). :func:`k_nearest_memory` therefore takes an ``exclude`` id per query
and skips memory rows from that training image (leave-one-image-out). Synthetic anomalies
made from training image ``i`` exclude image ``i`` as well.
"""

from __future__ import annotations

import torch

from .residuals import elementwise_residual

Tensor = torch.Tensor


SEARCH_BLOCK_BYTES = 512 * 2**20  # k_nearest_memory: a block of distances, mask and masked copy stays below this


def search_chunk(bank_rows: int, chunk: int = 2048, block_bytes: int = SEARCH_BLOCK_BYTES) -> int:
    """Queries per block of :func:`k_nearest_memory`: ``chunk``, fewer (at least 64) when a block of
    ``chunk x bank_rows`` (float32 distances, bool mask, float32 masked copy: 9 bytes each) would pass
    ``block_bytes``: at the paper's sizes a 2,048-query block against a 400,000-row bank is 7.5 GB."""
    return min(chunk, max(64, block_bytes // (9 * max(1, bank_rows))))


def k_nearest_memory(queries: Tensor, bank: Tensor, k: int = 3, exclude: Tensor | None = None,
                     bank_source: Tensor | None = None, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Queries ``(Q, D)``, bank ``(T, D)`` -> distances and indices ``(Q, k)`` of the k nearest rows.

    With ``exclude`` ``(Q,)`` and ``bank_source`` ``(T,)``, rows whose source equals the
    query's ``exclude`` id are skipped (``exclude = -1``: skip nothing). Exact search by
    chunked ``torch.cdist`` on the bank's device, ``chunk`` queries at a time or fewer for a
    large bank (:func:`search_chunk`).
    """
    if (exclude is None) != (bank_source is None):
        raise ValueError("pass exclude and bank_source together")
    if k > bank.shape[0]:
        raise ValueError(f"asked for {k} neighbours in a memory bank of {bank.shape[0]} rows")
    chunk = search_chunk(bank.shape[0], chunk)
    dists, idxs = [], []
    for start in range(0, queries.shape[0], chunk):
        d = torch.cdist(queries[start:start + chunk].to(bank.device, torch.float32), bank.float())  # (q, T)
        if exclude is not None:
            same = exclude[start:start + chunk].to(bank.device)[:, None] == bank_source[None, :]  # (q, T)
            d = d.masked_fill(same, float("inf"))
        dist, idx = d.topk(k, dim=1, largest=False)  # (q, k) each, nearest first
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


def knn_choice(shape: tuple[int, ...], thresholds: tuple[float, float] = (0.5, 0.8),
               generator: torch.Generator | None = None, device=None) -> Tensor:
    """SemiREST Eq. (12)'s neighbour rank per token: ``shape`` -> long tensor in {0, 1, 2} (1st/2nd/3rd)."""
    a1, a2 = thresholds
    if not 0 <= a1 <= a2 <= 1:
        raise ValueError(f"need 0 <= a1 <= a2 <= 1, got thresholds {thresholds}")
    tau = torch.rand(shape, generator=generator, device=device)
    return (tau > a1).long() + (tau > a2).long()  # [0, a1] -> 0, (a1, a2] -> 1, (a2, 1] -> 2


def residual_scale(shape: tuple[int, ...], sigma: float = 0.2, clip: float = 0.223,
                   generator: torch.Generator | None = None, device=None) -> Tensor:
    """SemiREST Eq. (12)'s ``delta = e^z``, ``z ~ N(0, sigma)`` clipped to ``[-clip, clip]``; ``shape``."""
    z = torch.randn(shape, generator=generator, device=device) * sigma
    return z.clamp(-clip, clip).exp()


def knn_residuals(pcf: Tensor, bank: Tensor, neighbours: Tensor, mode: str = "square",
                  generator: torch.Generator | None = None, thresholds: tuple[float, float] = (0.5, 0.8),
                  sigma: float = 0.2, clip: float = 0.223) -> Tensor:
    """SemiREST Eq. (12): PCFs ``(..., D)``, neighbour rows ``(..., 3)`` -> augmented residuals ``(..., D)``.

    ``neighbours`` holds each token's 1st, 2nd, 3rd nearest memory rows (from
    :func:`k_nearest_memory`); one of them is drawn per token by :func:`knn_choice` and
    the residual ``S(f - m) * delta`` is returned (``mode`` as in Eq. 6).
    """
    if neighbours.shape[:-1] != pcf.shape[:-1] or neighbours.shape[-1] < 3:
        raise ValueError(f"expected neighbours (..., 3) for PCFs (..., D), got {tuple(neighbours.shape)} "
                         f"and {tuple(pcf.shape)}")
    rank = knn_choice(pcf.shape[:-1], thresholds, generator, pcf.device)  # (...,)
    rows = neighbours.gather(-1, rank.unsqueeze(-1)).squeeze(-1)  # (...,) memory row per token
    residual = elementwise_residual(pcf - bank[rows], mode)  # (..., D)
    return residual * residual_scale(pcf.shape, sigma, clip, generator, pcf.device)


def token_dropout(windows: Tensor, rate: float = 0.25, generator: torch.Generator | None = None) -> Tensor:
    """SemiREST Eq. (13): windows ``(N, mu, mu, d)`` -> same, each token zeroed with probability ``rate``."""
    if not 0 <= rate < 1:
        raise ValueError(f"token dropout rate must be in [0, 1), got {rate}")
    keep = torch.rand(windows.shape[:-1], generator=generator, device=windows.device) >= rate  # (N, mu, mu)
    return windows * keep.unsqueeze(-1).to(windows.dtype)
