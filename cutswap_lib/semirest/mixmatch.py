"""MixMatch for residual tokens: SemiREST Algorithm 1 (Sec. 3.3), for box-labelled windows.

Taught in ``notebooks/06_mixmatch_boxes.ipynb``. Inside the boxes the block labels are
unknown (-1), outside they are normal (0) (Eq. 15, :mod:`.boxes`). For one batch of such
windows, :func:`mixmatch_loss` follows the paper's steps:

1. ``M`` k-NN augmentations of every window (Eq. 12), labels copied;
2. guess: the mean over the ``M`` copies of the Swin's anomaly probability, sharpened
   with temperature ``Gamma`` (:func:`sharpen`), is the pseudo label of every unknown token;
   sharpening pivots on 0.5, as in MixMatch (``guess_pivot="half"``; see below);
3. flatten the tokens of all copies; the labelled set ``X`` holds the normal tokens
   (target 0), the unlabelled set ``U`` the unknown ones (target = pseudo label);
4. shuffle ``W = X u U`` and MixUp ``X`` with the first ``|X|`` of ``W`` and ``U`` with the
   rest, with ``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(a, a)`` (one draw per
   batch), tokens and targets alike (:func:`mixup`);
5. put every mixed token back at its place (retensorise), token dropout (Eq. 13);
6. predict, and take the soft focal losses ``L_x`` (``alpha_x, gamma_x``) over ``X`` and
   ``L_u`` (``alpha_u, gamma_u``) over ``U`` with ``p_i = (1 - y*_i)(1 - y_i) + y*_i y_i``
   (:func:`soft_focal_loss`); the loss is ``L_x + lambda_u L_u`` with ``lambda_u`` ramped
   linearly to its final value over 400 steps and held there (:func:`lambda_u_at`).

The guess pivot, a course choice (``guess_pivot``). Sharpening at 0.5 and the loss's
``p_i``, which is linear in the prediction, send every unknown token whose guess is below 0.5
to 0 and every one above it to 1. A model trained with the focal loss at ``alpha = 0.25``
scores even its true defects below 0.5 when they are faint (measured on the hard toy of
``tools/make_hard_toy.py``: defect blocks 0.50, normal blocks 0.37 on average), and then
``L_u`` teaches the boxes' defects as normal, until they score like normal wood. With
``guess_pivot="known"`` the guesses are sharpened around the mean guess of the labelled
normal tokens of the same windows (outside the boxes) instead: what scores above the
model's own normal level counts as anomalous; most of a box then turns positive and the model
learns "inside a box" rather than the defect. ``guess_pivot="box"`` sharpens each window around
the mean guess of its own unknown tokens (never below the ``"known"`` level): only what stands
out within its box counts as anomalous. ``"half"`` is Algorithm 1 as printed and the default;
the CPU profile of ``semirest-table --small`` uses ``"known"``.

Open points, chosen and made parameters: MixUp's Beta parameter (0.75, MixMatch's default;
the paper does not give it); tokens padded outside a small map (``IGNORE``) take no part;
the fine-tune's length (800 iterations, so that the 400-step ramp completes). Table 6's
row without MixMatch is ``unknown_tokens=False``: the unknown tokens are dropped from ``X``,
``U`` and the MixUp partners, so the boxes' insides do not train the model at all.
Written by hand (the paper's customisation of MixMatch); MixMatch itself is Berthelot et
al., 2019.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .boxes import UNKNOWN
from .losses import IGNORE
from .token_augment import token_dropout

Tensor = torch.Tensor
GUESS_PIVOTS = ("half", "known", "box")


@dataclasses.dataclass
class MixMatchConfig:
    """Algorithm 1's constants (the paper's values) and the semi-supervised schedule (Sec. 4.2)."""

    copies: int = 3  # M
    temperature: float = 0.5  # Gamma
    mix_alpha: float = 0.75  # Beta(a, a) of MixUp: not stated in the paper, MixMatch's default
    alpha_x: float = 0.25
    gamma_x: float = 4.0
    alpha_u: float = 0.75
    gamma_u: float = 4.0
    lambda_u: float = 5.0  # 10 on BTAD
    ramp_steps: int = 400  # lambda_u reaches its value after this many steps ("the first 400 steps")
    upsilon: float = 0.5  # Eq. (15)
    lr: float = 3e-5
    window_fraction: float = 0.1  # p
    b1: int = 3  # normal images per iteration (focal loss, Eq. 11)
    b2: int = 3  # synthetic anomalies per iteration (focal loss, Eq. 11)
    b3: int = 2  # box-labelled images per iteration (MixMatch)
    eps_plus: float = 0.25  # Eq. (14) for the synthetic anomalies of the fine-tune (semi setting; BTAD 80 %)
    eps_minus: float = 0.08  # (BTAD 0 %)
    dropout: float = 0.25  # alpha, Eq. (13): "the hyperparameters v, alpha, Gamma and M are set to 50 %, 25 %, ..."
    unknown_tokens: bool = True  # False: Table 6's row without MixMatch (unknown tokens take no part at all)
    guess_pivot: str = "half"  # sharpen around 0.5 (Algorithm 1), "known" or "box" (choices): see guess_pivot
    iterations: int = 800  # not stated in the paper: the ramp's 400 steps, then as many at full lambda_u

    def validate(self) -> "MixMatchConfig":
        """Raise ValueError when the schedule cannot do what the paper describes; returns self."""
        if self.iterations < 1:
            raise ValueError(f"the fine-tune needs at least 1 iteration, got {self.iterations}")
        if self.lambda_u > 0 and self.unknown_tokens and self.ramp_steps >= self.iterations:
            raise ValueError(f"lambda_u is ramped over {self.ramp_steps} steps but the fine-tune has "
                             f"{self.iterations}: it would never reach {self.lambda_u}; use fewer ramp steps "
                             f"or more iterations")
        if self.guess_pivot not in GUESS_PIVOTS:
            raise ValueError(f"guess_pivot must be one of {GUESS_PIVOTS}, got {self.guess_pivot!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"token dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.upsilon < 1:  # at 1 no block could be unknown: every box would teach its defect as normal
            raise ValueError(f"upsilon (Eq. 15) must be in [0, 1), got {self.upsilon}")
        return self


def sharpen(p: Tensor, temperature: float = 0.5, pivot: Tensor | float = 0.5) -> Tensor:
    """MixMatch's sharpening of a binary probability ``p`` (any shape): ``p^(1/T) / (p^(1/T) + (1-p)^(1/T))``.

    ``pivot`` (a probability, a scalar or broadcastable to ``p``): the value that stays put. The
    odds are divided by the pivot's odds before sharpening, ``r = (p / (1-p)) / (c / (1-c))``
    -> ``r^(1/T) / (1 + r^(1/T))``; ``pivot = 0.5`` is MixMatch's sharpening.
    """
    p = p.clamp(0, 1)
    c = torch.as_tensor(pivot, dtype=p.dtype, device=p.device).clamp(1e-6, 1 - 1e-6)
    a, b = (p * (1 - c)) ** (1 / temperature), ((1 - p) * c) ** (1 / temperature)
    return a / (a + b).clamp_min(1e-12)


def guess_pivot(guess: Tensor, labels: Tensor, mode: str = "half") -> Tensor | float:
    """The probability sharpening pivots on: 0.5 (``"half"``), the known tokens' mean guess, or per window.

    ``guess`` ``(N, mu, mu)`` averaged over the copies, ``labels`` ``(N, mu, mu)`` with 0 for the
    tokens labelled normal and ``UNKNOWN`` inside the boxes. ``"known"``: the mean guess of the
    known tokens, one scalar (0.5 when there is none). ``"box"``: one pivot per window ``(N, 1, 1)``,
    the mean guess of that window's unknown tokens, never below the ``"known"`` pivot (a window
    without unknown tokens takes the ``"known"`` pivot): inside a box only what scores above the
    box's own level counts as anomalous, which suits thin defects in large boxes and halves
    defects that fill their box.
    """
    if mode == "half":
        return 0.5
    known = guess[labels == 0]
    level = known.mean() if known.numel() else 0.5
    if mode == "known":
        return level
    unknown = (labels == UNKNOWN).to(guess.dtype)  # (N, mu, mu)
    count = unknown.sum((1, 2))  # (N,)
    box_mean = (guess * unknown).sum((1, 2)) / count.clamp_min(1)  # (N,)
    return torch.where(count > 0, box_mean.clamp_min(level), level)[:, None, None]  # (N, 1, 1)


def mixup_lambda(alpha: float = 0.75, generator: torch.Generator | None = None) -> float:
    """``lambda' = max(lambda, 1 - lambda)`` with ``lambda ~ Beta(alpha, alpha)`` (one draw, seeded by ``generator``)."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator,
                             device=generator.device if generator is not None else "cpu"))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(lam, 1 - lam)


def mixup(x: Tensor, y: Tensor, x_other: Tensor, y_other: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """MixUp: tokens ``(N, d)`` and targets ``(N,)`` with partners -> ``lam * a + (1 - lam) * b`` for both."""
    return lam * x + (1 - lam) * x_other, lam * y + (1 - lam) * y_other


def lambda_u_at(step: int, lambda_u: float = 5.0, ramp_steps: int = 400) -> float:
    """Weight of ``L_u`` at ``step`` (0-based): linear from 0 to ``lambda_u`` over ``ramp_steps``, then held."""
    return lambda_u * min(1.0, step / ramp_steps) if ramp_steps > 0 else lambda_u


def soft_focal_loss(predicted: Tensor, target: Tensor, alpha: float, gamma: float) -> Tensor:
    """Algorithm 1 step 9: ``-(1/|Z|) sum_Z w_i (1 - p_i)^gamma log p_i`` over tokens ``(N,)``.

    ``p_i = (1 - t_i)(1 - y_i) + t_i y_i`` for target ``t`` and prediction ``y`` (anomaly
    probabilities); ``w_i = alpha`` where ``t_i > 0.5`` (Z+), ``1 - alpha`` elsewhere (Z-).
    An empty set gives 0.
    """
    if predicted.numel() == 0:
        return predicted.sum() * 0
    p = ((1 - target) * (1 - predicted) + target * predicted).clamp(1e-7, 1.0)  # (N,)
    weight = torch.where(target > 0.5, alpha, 1 - alpha)
    return -(weight * (1 - p) ** gamma * p.log()).mean()


def mixmatch_loss(model, copies: list[Tensor], labels: Tensor, config: MixMatchConfig, step: int,
                  generator: torch.Generator | None = None, dropout: float = 0.25) -> tuple[Tensor, dict]:
    """SemiREST Algorithm 1 on windows: ``M`` augmented copies ``(N, mu, mu, d)``, labels ``(N, mu, mu)``.

    ``labels`` are 0 (normal), ``UNKNOWN`` (inside a box) or ``IGNORE`` (padding). ``model``
    maps windows to per-token logits ``(N, mu, mu, 2)`` (:class:`.swin.TokenSwin`). Returns
    ``L_x + lambda_u(step) L_u`` and a dict of its parts (pseudo labels included, for plots).
    """
    m = len(copies)
    n, mu, _, d = copies[0].shape
    with torch.no_grad():  # step 3: guess and sharpen
        guess = torch.stack([model(c).softmax(-1)[..., 1] for c in copies]).mean(0)  # (N, mu, mu)
        pseudo = sharpen(guess, config.temperature, guess_pivot(guess, labels, config.guess_pivot))  # (N, mu, mu)
    x = torch.stack(copies).reshape(-1, d)  # (M*N*mu*mu, d) all tokens of all copies
    y_star = labels.repeat(m, 1, 1).reshape(-1)  # (M*N*mu*mu,) in {0, UNKNOWN, IGNORE}
    target = torch.where(y_star == UNKNOWN, pseudo.repeat(m, 1, 1).reshape(-1), 0.0)  # (M*N*mu*mu,)
    known = (y_star == 0).nonzero()[:, 0]  # X
    unknown = (y_star == UNKNOWN).nonzero()[:, 0]  # U
    if not config.unknown_tokens:  # no MixMatch: the boxes' insides are neither targets nor MixUp partners
        unknown = unknown[:0]
    order = torch.cat([known, unknown])  # X then U
    partner = order[torch.randperm(len(order), generator=generator, device=order.device)]  # W = shuffle(X u U)
    lam = mixup_lambda(config.mix_alpha, generator)
    mixed_x, mixed_t = mixup(x[order], target[order], x[partner], target[partner], lam)
    x_hat, t_hat = x.clone(), target.clone()
    x_hat[order], t_hat[order] = mixed_x, mixed_t  # step 7: retensorise (tokens keep their places)
    windows = token_dropout(x_hat.reshape(m * n, mu, mu, d), dropout, generator)
    predicted = model(windows).softmax(-1)[..., 1].reshape(-1)  # (M*N*mu*mu,)
    loss_x = soft_focal_loss(predicted[known], t_hat[known], config.alpha_x, config.gamma_x)
    loss_u = soft_focal_loss(predicted[unknown], t_hat[unknown], config.alpha_u, config.gamma_u)
    weight = lambda_u_at(step, config.lambda_u, config.ramp_steps) if config.unknown_tokens else 0.0
    parts = {"loss_x": loss_x.item(), "loss_u": loss_u.item(), "lambda_u": weight, "mix_lambda": lam,
             "guess": guess, "pseudo": pseudo}
    return loss_x + weight * loss_u, parts


__all__ = ["GUESS_PIVOTS", "IGNORE", "MixMatchConfig", "guess_pivot", "lambda_u_at", "mixmatch_loss", "mixup",
           "mixup_lambda", "sharpen", "soft_focal_loss"]
