"""SemiREST position code: the 2-D sinusoidal code of Eq. (3), and the PCF of Eq. (2).

SemiREST Sec. 3.1.1 adds a fixed sinusoidal code of each patch's grid position to its
feature before PatchCore's nearest-neighbour search, so that a query patch prefers
memory patches from the same place in the (roughly aligned) training images.
Taught in ``notebooks/04_semirest_residuals.ipynb``.

**Eq. (3) as printed.** For the feature at grid position ``p = [r, c]`` (row ``r`` in
``[0, h_f)``, column ``c`` in ``[0, w_f)``, both 0-based) and channel ``k`` in ``[0, d_f)``::

    eta(k) = sin( (c / rho) / 10000^(8 k / d_f) )              k in [0, d_f/4)
             cos( (c / rho) / 10000^(8 (k - d_f/4) / d_f) )    k in [d_f/4, d_f/2)
             sin( (r / rho) / 10000^(8 (k - d_f/2) / d_f) )    k in [d_f/2, 3 d_f/4)
             cos( (r / rho) / 10000^(8 (k - 3 d_f/4) / d_f) )  k in [3 d_f/4, d_f)

so the channels are four equal blocks ``[sin col | cos col | sin row | cos row]``, and
inside each block the local index ``j = k - offset`` runs over ``[0, d_f/4)`` with
frequency ``10000^(-8 j / d_f)``.

Readings this code had to choose (each one a parameter or stated here):

* **The 8 in the exponent** is taken literally (``freq_exponent=8``): within a block the
  frequencies fall from 1 to ``10000^-2 = 1e-8``; on a 64-wide grid the channels with
  ``j > 0.35 d_f/4`` turn by less than 0.1 rad across the whole grid, so about two thirds
  of each block is nearly constant (sin ~ 0, cos ~ 1). The paper says Eq. (3)
  "mainly follows" MAE (He et al., 2022), whose code uses ``10000^(-4 j / d_f)``
  (frequencies from 1 to 1e-4); ``freq_exponent=4`` gives exactly that spacing. MAE's
  channel layout (column sin, column cos, row sin, row cos) is the same as Eq. (3)'s.
* ``c / rho`` is a true division (no flooring); ``rho`` is the token patch size of
  Sec. 3.1.2 and is 1 in the paper, where the code does not depend on it.
* Positions are indices of the feature grid (``h_f x w_f``), not image pixels.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def position_code(h: int, w: int, d: int, rho: float = 1, *, freq_exponent: float = 8.0,
                  device=None, dtype=torch.float32) -> Tensor:
    """SemiREST Eq. (3): the position code eta of every grid position, ``(d, h, w)``.

    Channel ``k`` at row ``r``, column ``c``: blocks ``[sin col | cos col | sin row |
    cos row]`` of ``d / 4`` channels each, argument ``(pos / rho) * 10000^(-freq_exponent
    * j / d)`` with ``j`` the index inside the block (module docstring: Eq. (3) as printed,
    and why ``freq_exponent`` is a parameter). ``d`` must be a multiple of 4.
    """
    if d <= 0 or d % 4:
        raise ValueError(f"the position code of SemiREST Eq. (3) splits the feature dimension "
                         f"into 4 equal blocks; d_f must be a positive multiple of 4, got {d}")
    if h <= 0 or w <= 0 or rho <= 0:
        raise ValueError(f"position_code needs h, w, rho > 0, got h={h}, w={w}, rho={rho}")
    q = d // 4
    # 1-D tables in float64 on the CPU (tiny), then one cast and an expand on the device
    j = torch.arange(q, dtype=torch.float64)
    inv_freq = 10000.0 ** (-freq_exponent * j / d)  # (q,)
    col = torch.outer(inv_freq, torch.arange(w, dtype=torch.float64) / rho)  # (q, w)
    row = torch.outer(inv_freq, torch.arange(h, dtype=torch.float64) / rho)  # (q, h)
    col = torch.cat([col.sin(), col.cos()]).to(device=device, dtype=dtype)  # (d/2, w)
    row = torch.cat([row.sin(), row.cos()]).to(device=device, dtype=dtype)  # (d/2, h)
    return torch.cat([col[:, None, :].expand(2 * q, h, w),
                      row[:, :, None].expand(2 * q, h, w)])  # (d, h, w)


def add_position_code(features: Tensor, lambda_pe: float = 0.1, rho: float = 1, *,
                      freq_exponent: float = 8.0) -> Tensor:
    """SemiREST Eq. (2): position-constrained features ``f + lambda_pe * eta``, ``(B, D, h, w)``.

    ``features`` ``(B, D, h, w)`` are patch features on their grid; eta is
    :func:`position_code` of that grid (SemiREST Sec. 3.1.1). ``lambda_pe = 0`` returns
    the features unchanged (the "without PCF" row of the paper's Table 6).
    """
    if features.ndim != 4:
        raise ValueError(f"expected patch features (B, D, h, w), got shape {tuple(features.shape)}")
    if lambda_pe == 0:
        return features
    _, d, h, w = features.shape
    eta = position_code(h, w, d, rho, freq_exponent=freq_exponent, device=features.device,
                        dtype=features.dtype)  # (D, h, w)
    return features + lambda_pe * eta  # (B, D, h, w)
