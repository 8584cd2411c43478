"""The focal loss of SemiREST, Eq. (11) (Sec. 3.1.3), over block-labelled tokens.

Normal tokens dominate every window, so the paper trains with a focal loss (Lin et al.,
2017) and averages the normal set ``Z-`` and the anomalous set ``Z+`` *separately*:

    L_F = -1/|Z-| sum_{Z-} (1 - alpha) p+^gamma log(1 - p+)  -  1/|Z+| sum_{Z+} alpha (1 - p+)^gamma log(p+)

with ``p+`` the anomaly-class probability of a token, ``alpha = 0.25``, ``gamma = 4``.
Tokens labelled ``IGNORE`` (-100, the empty set of Eq. 14; the value of PyTorch's ``ignore_index``,
kept apart from the -1 "unknown" of box labels, Eq. 15) take no part and get no gradient.
An empty set contributes 0 (a window with no anomalous token is the common case).
Written by hand (the per-set normalisation is the paper's); logs come from ``log_softmax``
so that a confident network does not produce ``log(0)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

IGNORE = -100  # block label of Eq. (14)'s empty set: no gradient


def focal_loss(logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 4.0,
               set_sizes: tuple[int, int] | None = None) -> Tensor:
    """SemiREST Eq. (11): logits ``(..., 2)``, labels ``(...)`` in {1, 0, IGNORE} -> scalar loss.

    ``set_sizes`` ``(|Z-|, |Z+|)``: divide by the sets of a whole step instead of this call's own
    (the step's windows taken in parts, :attr:`~.model.SemiRESTConfig.window_chunks`: the parts'
    losses then add up to the step's loss). None: this call's sets, as Eq. (11) writes it.
    """
    if logits.shape[-1] != 2 or logits.shape[:-1] != labels.shape:
        raise ValueError(f"expected logits (..., 2) and labels (...) of the same leading shape, got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    log_p = F.log_softmax(logits.float(), dim=-1)  # (..., 2)
    log_normal, log_anomalous = log_p[..., 0], log_p[..., 1]  # log(1 - p+), log(p+)
    p_plus = log_anomalous.exp()
    negative, positive = labels == 0, labels == 1  # Z-, Z+
    loss = logits.new_zeros((), dtype=torch.float32)
    if negative.any():
        terms = (1 - alpha) * p_plus[negative] ** gamma * log_normal[negative]
        loss = loss - (terms.mean() if set_sizes is None else terms.sum() / set_sizes[0])
    if positive.any():
        terms = alpha * (1 - p_plus[positive]) ** gamma * log_anomalous[positive]
        loss = loss - (terms.mean() if set_sizes is None else terms.sum() / set_sizes[1])
    return loss
