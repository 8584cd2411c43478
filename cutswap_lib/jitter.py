"""Random draws and batched colour jitter, shared by CutSwap's negatives and SemiREST's anomalies.

* :func:`uniform` draws ``(B, n)`` uniforms in *one* call on the generator's device, so a
  seed fixes every sample and a batch of B images gives what B single-image calls give;
  :func:`int_between` turns uniforms into integers.
* :func:`jitter_factors` and :func:`color_jitter`: brightness, contrast, saturation and hue
  as torchvision's ``ColorJitter`` with a fixed order, batched with one factor row per image
  (and an optional weight for the contrast mean, so a patch can be jittered on its own).

Used by :mod:`cutswap_lib.cutswap.augment` (CutPaste's jitter, the weak positives) and
:mod:`cutswap_lib.semirest.synthetic` (MemSeg-style fills); tested against torchvision in
``tests/test_augment.py``.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale

__all__ = ["check_images", "color_jitter", "int_between", "jitter_factors", "uniform"]


def check_images(images) -> tuple[int, int, int, int]:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images)
        raise ValueError(f"images must be a float tensor (B, C, H, W) in [0, 1], got {got}")
    return tuple(images.shape)


def uniform(generator, b: int, n: int, device) -> Tensor:
    """``(B, n)`` float64 uniforms from one draw on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(b, n, generator=generator, dtype=torch.float64, device=gen_device).to(device)


def int_between(u: Tensor, lo, hi) -> Tensor:
    """Uniform integers in ``[lo, hi]`` (inclusive; scalars or tensors) from uniforms ``u``."""
    lo = torch.as_tensor(lo, device=u.device)
    span = torch.as_tensor(hi, device=u.device) - lo + 1
    return lo + (u * span).long().clamp(max=span - 1)


# --------------------------------------------------------------------------- colour jitter
def _gray(x: Tensor) -> Tensor:
    """Luma of ``(B, 3, ...)`` RGB -> ``(B, 1, ...)``."""
    return GRAY[0] * x[:, :1] + GRAY[1] * x[:, 1:2] + GRAY[2] * x[:, 2:3]


def _shift_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of ``(B, 3, ...)`` RGB by ``shift`` ``(B, 1, ...)`` turns (colorsys formulas)."""
    r, g, b = x[:, :1], x[:, 1:2], x[:, 2:3]
    v, lo = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    chroma = v - lo
    s = torch.where(v > 0, chroma / v.clamp(min=1e-12), torch.zeros_like(v))
    c = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h = torch.where(v == r, (g - b) / c, torch.where(v == g, 2 + (b - r) / c, 4 + (r - g) / c))
    h = torch.where(chroma > 0, h, torch.zeros_like(h))
    h = (h / 6 + 1 + shift) % 1.0  # hue in turns, shifted
    sector = (h * 6).floor()
    f = h * 6 - sector
    sector = sector.long() % 6  # (B, 1, ...)
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    table = torch.cat([v, q, p, t], 1)  # (B, 4, ...) the values a channel can take
    pick = torch.tensor([[0, 1, 2, 2, 3, 0], [3, 0, 0, 1, 2, 2], [2, 2, 3, 0, 0, 1]],
                        device=x.device)  # [channel, sector] -> row of table
    index = pick[:, sector.squeeze(1)].movedim(0, 1)  # (B, 3, ...)
    return table.gather(1, index)


def jitter_factors(u: Tensor, brightness, contrast, saturation, hue) -> Tensor:
    """Uniforms ``(B, 4)`` -> brightness, contrast, saturation factors and hue shift ``(B, 4)``."""
    lo = torch.tensor([max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation),
                       -hue], dtype=u.dtype, device=u.device)
    hi = torch.tensor([1 + brightness, 1 + contrast, 1 + saturation, hue], dtype=u.dtype, device=u.device)
    return lo + u * (hi - lo)


def color_jitter(x: Tensor, f: Tensor, weight: Tensor | None = None, hue: bool = True) -> Tensor:
    """Brightness, contrast, saturation, hue (this fixed order) on ``(B, 3, ...)``; ``f`` ``(B, 4)``.

    Each step blends and clamps to [0, 1] as torchvision's ``adjust_*`` do. The contrast
    step blends with the mean luma over ``weight`` ``(B, 1, ...)`` (all pixels if None).
    """
    f = f.to(x.dtype).view(x.shape[0], 4, *([1] * (x.ndim - 2)))  # (B, 4, 1, ...)
    dims = tuple(range(2, x.ndim))
    x = (f[:, 0:1] * x).clamp(0, 1)  # brightness: blend with black
    luma = _gray(x)
    if weight is None:
        mean = luma.mean(dims, keepdim=True)
    else:
        mean = (luma * weight).sum(dims, keepdim=True) / weight.sum(dims, keepdim=True).clamp(min=1)
    x = (f[:, 1:2] * x + (1 - f[:, 1:2]) * mean).clamp(0, 1)  # contrast: blend with mean grey
    x = (f[:, 2:3] * x + (1 - f[:, 2:3]) * _gray(x)).clamp(0, 1)  # saturation: blend with luma
    return _shift_hue(x, f[:, 3:4]) if hue else x
