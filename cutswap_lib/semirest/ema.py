"""The weight average that SemiREST evaluates: an exponential moving average with a warm-up.

SemiREST Sec. 3.1.3: "the exponential moving average (EMA) (Haynes et al., 2012) trick is
adopted to smooth the parameters for the final model"; the paper gives no decay, the authors'
public code keeps the EMA of the Swin's weights at decay 0.999 (``../shared/PAPER-NOTES.md``,
"What public reference code settles"). A plain EMA started at the first step keeps ``decay^T`` of the
first step's (near random) weights after ``T`` steps: 0.999^2000 = 13.5 % for a
2,000-iteration run, and 0.999^400 = 67 % of the model *before* a 400-step fine-tune.

The course therefore warms the decay up (a choice, ``warmup`` in the config)::

    decay_t = min(decay, (1 + t) / (warmup + t))        t = 1, 2, ... (updates so far)

the schedule of TensorFlow's ``tf.train.ExponentialMovingAverage`` with ``num_updates``
(warm-up 10). The average then follows training closely at first and settles at ``decay``
only once ``t`` is large; the share of the starting weights after ``T`` updates is
``prod_t decay_t`` (:func:`initial_share`), below 1e-6 after 100 updates for any decay.
``warmup=None`` gives the plain EMA of the public code.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel

Tensor = torch.Tensor


def decay_at(t: int, decay: float, warmup: float | None = 10.0) -> float:
    """The decay of update ``t`` (1-based count of updates so far): ``min(decay, (1 + t) / (warmup + t))``."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"the EMA decay must be in [0, 1), got {decay}")
    if warmup is None:
        return decay
    if warmup < 1:
        raise ValueError(f"the EMA warm-up must be >= 1 (or None for none), got {warmup}")
    return min(decay, (1.0 + t) / (warmup + t))


def initial_share(updates: int, decay: float, warmup: float | None = 10.0) -> float:
    """Weight of the starting weights in the average after ``updates`` updates: ``prod_{t=1..T} decay_t``."""
    return math.prod(decay_at(t, decay, warmup) for t in range(1, updates + 1))


def warmup_ema(model: torch.nn.Module, decay: float, warmup: float | None = 10.0) -> AveragedModel:
    """An :class:`AveragedModel` of ``model`` whose every update uses :func:`decay_at`.

    The average starts as a copy of ``model``'s current weights (those are the "starting
    weights": the untrained Swin in ``fit``, the unsupervised model in the semi fine-tune);
    each ``update_parameters`` call then blends in the current weights. Buffers are
    copied, not averaged (``use_buffers=False``: the Swin has no running statistics).
    """
    decay_at(1, decay, warmup)  # validate now, not at the first update

    def blend(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        # num_averaged = 1 at the first update after the copy below (AveragedModel's count)
        d = decay_at(int(num_averaged), decay, warmup)
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    ema = AveragedModel(model, multi_avg_fn=blend)
    # count the starting weights as the first "update", so that update_parameters blends from step 1 on
    # (AveragedModel copies the weights at its first update and averages only afterwards)
    ema.update_parameters(model)
    return ema


__all__ = ["decay_at", "initial_share", "warmup_ema"]
