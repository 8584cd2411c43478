"""Synthetic anomalies in the MemSeg / DRAEM manner (SemiREST Sec. 3.2.3).

SemiREST Sec. 3.2.3 only says that it "follows the off-the-shelf fake/simulated anomaly
generation approach proposed in MemSeg (Yang et al., 2023)". MemSeg builds on DRAEM
(Zavrtanik et al., ICCV 2021): threshold Perlin noise into a mask, cut the mask to the
object, fill it with foreign content and blend that in. One function per step:

1. :func:`perlin_noise` – batched 2-D gradient noise ``(B, H, W)`` in about [-1, 1].
2. :func:`perlin_mask` – noise above a threshold, inside the foreground ``(B, 1, H, W)``.
3. :func:`synthetic_anomalies` – fill the mask ("texture", "colour" or "self") and blend.

Choices the papers leave open or that we simplify:

* **Lattice** (DRAEM): each image draws ``2**k`` cells per axis, ``k`` uniform in
  ``[lo, hi)`` of ``scale_range`` (``(0, 6)``: 1 to 32 cells), rows and columns apart.
  Lattice coordinates are continuous (pixel centres), so any ``H, W`` works without
  padding; DRAEM's extra random rotation of the noise is left out.
* **Threshold 0.5** (DRAEM, MemSeg). A mask with fewer than ``min_area`` pixels is redrawn
  (``MASK_TRIES`` times), then replaced by a small ellipse of foreground pixels.
* **Fills**: "texture" is another image (``sources``, or another image of the batch; MemSeg
  uses DTD), "colour" a uniform random colour with +-0.05 noise, "self" MemSeg's structural
  anomaly: the image itself, flipped / transposed and colour-jittered, cut into a 4x4 grid
  of blocks that are shuffled. Texture sources get the same flips and jitter.
* **Blending**: ``out = (1 - o m) x + o m fill`` with ``o ~ U(0.15, 1)`` per image
  (MemSeg's transparency; DRAEM's ``1 - beta`` is in [0.2, 1]).
* **Masks** are exactly the changed pixels (as :mod:`cutswap_lib.cutswap.augment`); an image whose
  changed area falls below ``min_area`` (a fill equal to the image) is redrawn.
* **Randomness**: every draw comes from ``generator`` on its own device, so a seed fixes
  the output. Everything is batched; the only loops are the bounded redraws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..images import as_float_images
from ..jitter import check_images, color_jitter, int_between, jitter_factors

Tensor = torch.Tensor
KINDS = ("texture", "colour", "self")
MASK_TRIES, ANOMALY_TRIES = 10, 3  # redraws of a too-small mask / a too-small change
GRID = 4  # MemSeg's structural anomaly: a 4x4 grid of shuffled blocks
JITTER = dict(brightness=0.2, contrast=0.2, saturation=0.5, hue=0.5)  # for texture and self fills
COLOUR_NOISE = 0.05


# --------------------------------------------------------------------------- draws and checks
def _rand(generator, shape, device, dtype=torch.float32) -> Tensor:
    """Uniforms in [0, 1) of ``shape``, drawn on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, dtype=dtype, device=gen_device).to(device)


def _check_foreground(foreground, batch: int, shape, min_area: int) -> Tensor | None:
    """``(B, 1, H, W)`` (bool, or numbers: > 0.5 is foreground) -> bool, or None."""
    if foreground is None:
        return None
    want = (batch, 1, *shape)
    if not isinstance(foreground, Tensor) or tuple(foreground.shape) != want:
        got = tuple(foreground.shape) if isinstance(foreground, Tensor) else type(foreground)
        raise ValueError(f"foreground must be a tensor (B, 1, H, W) = {want}, got {got}")
    fg = foreground > 0.5 if foreground.is_floating_point() else foreground != 0
    small = (fg.sum((1, 2, 3)) < min_area).nonzero().flatten().tolist()
    if small:
        raise ValueError(f"foreground of image(s) {small} has fewer than min_area={min_area} "
                         f"pixels: no anomaly of that size fits inside the object")
    return fg


def otsu_foreground(images: Tensor, min_share: float = 0.05, max_share: float = 0.95) -> Tensor:
    """Object footprints of real images by Otsu's threshold: images ``(B, 3, H, W)`` -> bool ``(B, 1, H, W)``.

    MemSeg restricts its anomalies to the object on object categories; its published code is
    not part of the paper, and re-implementations threshold the grey image per category. The
    course's choice, with no per-category constants: Otsu's threshold of each image's grey
    levels (256 bins), the side that holds most of the image border is the background. A
    footprint outside ``[min_share, max_share]`` of the image (a texture, a failed split)
    becomes the whole image. ``uint8`` images are read 64 at a time as floats.
    """
    if images.dtype == torch.uint8:
        return torch.cat([otsu_foreground(as_float_images(x), min_share, max_share) for x in images.split(64)])
    check_images(images)
    gray = images.mean(1).clamp(0, 1)  # (B, H, W)
    b = gray.shape[0]
    bins = (gray * 255).round().long().flatten(1)  # (B, H*W) in [0, 255]
    hist = torch.zeros(b, 256, device=images.device).scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.float))
    p = hist / hist.sum(1, keepdim=True)  # (B, 256)
    levels = torch.arange(256, device=images.device, dtype=torch.float)
    w0 = p.cumsum(1)  # weight of the dark class at each cut
    mu0 = (p * levels).cumsum(1)
    between = (mu0[:, -1:] * w0 - mu0) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)  # (B, 256)
    cut = between.argmax(1)  # (B,) dark class = levels <= cut
    bright = bins.reshape(gray.shape) > cut[:, None, None]  # (B, H, W)
    border = torch.cat([bright[:, 0], bright[:, -1], bright[:, :, 0], bright[:, :, -1]], 1).float().mean(1)  # (B,)
    fg = torch.where((border > 0.5)[:, None, None], ~bright, bright)  # background = the border's side
    share = fg.float().mean((1, 2))
    fg[(share < min_share) | (share > max_share)] = True
    return fg.unsqueeze(1)


def _check_kinds(kinds) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds is empty: give at least one of {KINDS}")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown anomaly kind(s) {unknown}: choose from {KINDS}")
    return kinds


# --------------------------------------------------------------------------- noise and masks
def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)  # Perlin's 6t^5 - 15t^4 + 10t^3


def perlin_noise(shape: tuple[int, int], batch: int, scale_range=(0, 6),
                 generator: torch.Generator | None = None, device=None) -> Tensor:
    """Batched 2-D Perlin (gradient) noise ``(batch, H, W)``, values in about [-1, 1].

    Each image draws its own lattice of ``2**ky x 2**kx`` cells, ``k`` uniform in
    ``[lo, hi)`` of ``scale_range`` per axis (DRAEM's ``(0, 6)``), and a random unit
    gradient at every lattice point; a pixel (at its centre) blends the four corner ramps
    with Perlin's quintic fade. The noise DRAEM and MemSeg threshold into anomaly masks
    (SemiREST Sec. 3.2.3). Vectorised by gathers, no loop over images or pixels.
    """
    h, w = (int(s) for s in shape)
    lo, hi = (int(s) for s in scale_range)
    if h < 1 or w < 1 or batch < 1 or not 0 <= lo < hi <= 12:
        raise ValueError(f"need H, W, batch >= 1 and 0 <= lo < hi <= 12 in scale_range, got "
                         f"shape={tuple(shape)}, batch={batch}, scale_range={tuple(scale_range)}")
    device = torch.device("cpu") if device is None else torch.device(device)
    res = 2 ** int_between(_rand(generator, (batch, 2), device), lo, hi - 1)  # (B, 2) cells per axis
    n = 2 ** (hi - 1) + 1  # lattice points per axis at the finest resolution
    angle = 2 * math.pi * _rand(generator, (batch, n * n), device)  # (B, n*n)
    grad = torch.stack([angle.sin(), angle.cos()], -1)  # (B, n*n, 2) unit (row, col) gradients

    def axis(size: int, cells: Tensor):  # cells (B,) -> cell index and offset, each (B, size)
        u = (torch.arange(size, device=device) + 0.5) / size * cells[:, None]  # lattice units
        return u.floor().long(), u - u.floor()

    iy, fy = axis(h, res[:, 0])  # (B, H)
    ix, fx = axis(w, res[:, 1])  # (B, W)
    fy, fx = fy[:, :, None], fx[:, None, :]  # (B, H, 1), (B, 1, W)

    def ramp(dy: int, dx: int) -> Tensor:  # gradient of corner (iy+dy, ix+dx) . offset to it
        idx = ((iy + dy)[:, :, None] * n + (ix + dx)[:, None, :]).view(batch, h * w, 1)
        g = grad.gather(1, idx.expand(-1, -1, 2)).view(batch, h, w, 2)  # (B, H, W, 2)
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)  # (B, H, W)

    ty, tx = _fade(fy), _fade(fx)
    top = torch.lerp(ramp(0, 0), ramp(0, 1), tx)  # (B, H, W)
    bottom = torch.lerp(ramp(1, 0), ramp(1, 1), tx)
    return math.sqrt(2) * torch.lerp(top, bottom, ty)  # |noise| <= 1 (2-D Perlin bound sqrt(1/2))


def _fallback_blob(fg: Tensor, min_area: int, generator) -> Tensor:
    """The ``min_area`` foreground pixels nearest a random foreground centre, in a random
    ellipse metric: ``(n, 1, H, W)`` bool -> ``(n, 1, H, W)`` bool (ties may add a few)."""
    n, _, h, w = fg.shape
    centre = (_rand(generator, (n, h * w), fg.device) * fg.flatten(1)).argmax(1)  # (n,) foreground pixel
    cy, cx = (centre // w).view(n, 1, 1, 1), (centre % w).view(n, 1, 1, 1)
    ratio = 2 ** (2 * _rand(generator, (n, 1, 1, 1), fg.device) - 1)  # axis ratio in [1/2, 2]
    y = torch.arange(h, device=fg.device).view(1, 1, h, 1)
    x = torch.arange(w, device=fg.device).view(1, 1, 1, w)
    d = ((y - cy) * ratio) ** 2 + ((x - cx) / ratio) ** 2  # (n, 1, H, W)
    d = d.masked_fill(~fg, float("inf"))
    kth = d.flatten(1).kthvalue(min_area, 1).values.view(n, 1, 1, 1)
    return d <= kth


def perlin_mask(shape: tuple[int, int], batch: int, threshold: float = 0.5,
                generator: torch.Generator | None = None, device=None,
                foreground: Tensor | None = None, min_area: int = 16, scale_range=(0, 6)) -> Tensor:
    """Anomaly masks ``(batch, 1, H, W)`` in {0, 1}: Perlin noise > ``threshold`` (DRAEM, MemSeg).

    With ``foreground`` ``(batch, 1, H, W)`` the mask is cut to the object (MemSeg's
    foreground restriction; SemiREST Sec. 3.2.3). A mask with fewer than ``min_area``
    pixels is redrawn up to ``MASK_TRIES`` times, then replaced by a small ellipse of
    ``min_area`` foreground pixels, so every mask has at least ``min_area`` pixels.
    """
    h, w = (int(s) for s in shape)
    if not 1 <= min_area <= h * w:
        raise ValueError(f"min_area must be in [1, H*W] = [1, {h * w}], got {min_area}")
    fg = _check_foreground(foreground, batch, (h, w), min_area)  # (B, 1, H, W) bool or None
    if device is None:
        device = foreground.device if foreground is not None else torch.device("cpu")
    fg = torch.ones(batch, 1, h, w, dtype=torch.bool, device=device) if fg is None else fg.to(device)
    masks = torch.zeros(batch, 1, h, w, dtype=torch.bool, device=device)
    todo = torch.arange(batch, device=device)  # images still below min_area
    for _ in range(MASK_TRIES):
        noise = perlin_noise((h, w), len(todo), scale_range, generator, device)  # (n, H, W)
        m = (noise[:, None] > threshold) & fg[todo]  # (n, 1, H, W)
        masks[todo] = m
        todo = todo[m.sum((1, 2, 3)) < min_area]
        if len(todo) == 0:
            break
    if len(todo):
        masks[todo] = _fallback_blob(fg[todo], min_area, generator)
    return masks.float()


# --------------------------------------------------------------------------- fills
def _flip_and_jitter(x: Tensor, generator) -> Tensor:
    """Random flips (and a transpose if square) and colour jitter: ``(n, 3, H, W)`` -> same."""
    n = x.shape[0]
    u = _rand(generator, (n, 7), x.device)  # 3 flips, 4 jitter factors
    flip = (u[:, :3] < 0.5).view(n, 3, 1, 1, 1)
    x = torch.where(flip[:, 0], x.flip(-2), x)
    x = torch.where(flip[:, 1], x.flip(-1), x)
    if x.shape[-2] == x.shape[-1]:
        x = torch.where(flip[:, 2], x.transpose(-2, -1), x)  # with the flips: all 8 rotations/mirrors
    return color_jitter(x, jitter_factors(u[:, 3:], **JITTER))


def _texture_fill(own: Tensor, pool: Tensor, from_batch: bool, generator) -> Tensor:
    """Another image per image: ``own`` ``(n,)`` indices, ``pool`` ``(S, 3, H, W)`` -> ``(n, 3, H, W)``.

    ``from_batch``: the pool is the batch itself, so take a different image than one's own.
    """
    s = pool.shape[0]
    u = _rand(generator, (len(own),), pool.device)
    if from_batch:
        pick = (own + int_between(u, 1, max(s - 1, 1))) % s if s > 1 else own  # (n,) never own
    else:
        pick = int_between(u, 0, s - 1)  # (n,)
    return _flip_and_jitter(as_float_images(pool[pick.to(pool.device)], own.device), generator)


def _colour_fill(x: Tensor, generator) -> Tensor:
    """A uniform random colour plus +-``COLOUR_NOISE`` noise: ``(n, 3, H, W)`` -> same."""
    colour = _rand(generator, (x.shape[0], 3, 1, 1), x.device, x.dtype)  # (n, 3, 1, 1)
    noise = (2 * _rand(generator, x.shape, x.device, x.dtype) - 1) * COLOUR_NOISE
    return (colour + noise).clamp(0, 1)  # (n, 3, H, W)


def _block_shuffle(x: Tensor, generator, grid: int = GRID) -> Tensor:
    """Cut ``(n, C, H, W)`` into ``grid x grid`` blocks (edge-padded to fit) and shuffle them."""
    n, c, h, w = x.shape
    bh, bw = -(-h // grid), -(-w // grid)  # block size, rounded up
    x = F.pad(x, (0, bw * grid - w, 0, bh * grid - h), mode="replicate")  # (n, C, g*bh, g*bw)
    blocks = x.view(n, c, grid, bh, grid, bw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, bh, bw)
    perm = _rand(generator, (n, grid * grid), x.device).argsort(1)  # (n, g*g)
    blocks = blocks[torch.arange(n, device=x.device)[:, None], perm]  # (n, g*g, C, bh, bw)
    x = blocks.view(n, grid, grid, c, bh, bw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, grid * bh, grid * bw)
    return x[..., :h, :w]  # (n, C, H, W)


def _self_fill(x: Tensor, generator) -> Tensor:
    """MemSeg's structural anomaly: flipped, jittered, block-shuffled copy of the image itself."""
    return _block_shuffle(_flip_and_jitter(x, generator), generator)


# --------------------------------------------------------------------------- anomalies
def _anomalies_once(x, own, pool, from_batch, fg, generator, kinds, opacity, mask_args):
    """One draw for ``x`` ``(n, 3, H, W)``: images, exact masks ``(n, 1, H, W)``, kinds ``(n,)``."""
    n, _, h, w = x.shape
    m = perlin_mask((h, w), n, generator=generator, device=x.device, foreground=fg, **mask_args)
    u = _rand(generator, (n, 2), x.device, x.dtype)  # kind, opacity
    kind = int_between(u[:, 0], 0, len(kinds) - 1)  # (n,) index into kinds
    o = (opacity[0] + (opacity[1] - opacity[0]) * u[:, 1]).view(n, 1, 1, 1)
    fills = {"texture": lambda: _texture_fill(own, pool, from_batch, generator),
             "colour": lambda: _colour_fill(x, generator), "self": lambda: _self_fill(x, generator)}
    fill = torch.stack([fills[k]() for k in kinds])  # (K, n, 3, H, W)
    fill = fill[kind, torch.arange(n, device=x.device)]  # (n, 3, H, W)
    a = o * m  # (n, 1, H, W) fill weight
    out = torch.where(m > 0, ((1 - a) * x + a * fill).clamp(0, 1), x)  # outside the mask: untouched
    changed = (out != x).any(1, keepdim=True) & (m > 0)  # (n, 1, H, W)
    return out, changed.to(x.dtype), kind


def synthetic_anomalies(images: Tensor, generator: torch.Generator | None, foreground: Tensor | None = None,
                        sources: Tensor | None = None, kinds=KINDS, opacity=(0.15, 1.0), *,
                        threshold: float = 0.5, min_area: int = 16, scale_range=(0, 6),
                        return_kinds: bool = False):
    """Paste a MemSeg / DRAEM synthetic anomaly into each image (SemiREST Sec. 3.2.3).

    ``images`` ``(B, 3, H, W)`` in [0, 1]; ``foreground`` ``(B, 1, H, W)`` keeps anomalies on
    the object; ``sources`` ``(S, 3, H, W)`` are the "texture" images (another image of the
    batch if None). Either may be ``uint8`` (:mod:`cutswap_lib.images`): the images are read
    as floats, and of the sources only the ones picked. Per image: a :func:`perlin_mask`, a kind uniform over ``kinds``, a fill
    (module docstring) and ``o ~ U(opacity)``: ``out = (1 - o m) x + o m fill``.

    Returns ``(images (B, 3, H, W) in [0, 1], masks (B, 1, H, W) in {0, 1})`` where the mask
    is exactly the pixels that changed; with ``return_kinds`` also ``(B,)`` indices into
    ``kinds``. Same generator state, same output.
    """
    images = as_float_images(images)
    b, c, h, w = check_images(images)
    if c != 3 or bool(images.min() < 0) or bool(images.max() > 1):
        raise ValueError(f"images must be RGB (B, 3, H, W) in [0, 1], got {c} channels, values in "
                         f"[{images.min().item():.3g}, {images.max().item():.3g}]")
    kinds = _check_kinds(kinds)
    lo, hi = (float(v) for v in opacity)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"opacity must be (lo, hi) with 0 < lo <= hi <= 1, got {tuple(opacity)}")
    fg = _check_foreground(foreground, b, (h, w), min_area)  # (B, 1, H, W) bool or None
    if sources is not None and (not isinstance(sources, Tensor) or sources.ndim != 4
                                or tuple(sources.shape[1:]) != (3, h, w) or len(sources) == 0):
        got = tuple(sources.shape) if isinstance(sources, Tensor) else type(sources)
        raise ValueError(f"sources must be a tensor (S, 3, H, W) = (S, 3, {h}, {w}) with S >= 1, "
                         f"the same size as images, got {got}")
    from_batch = sources is None
    pool = images if from_batch else sources  # (S, 3, H, W); _texture_fill moves only the picked images
    mask_args = dict(threshold=threshold, min_area=min_area, scale_range=scale_range)
    out, masks = images.clone(), images.new_zeros(b, 1, h, w)
    chosen = torch.zeros(b, dtype=torch.long, device=images.device)
    todo = torch.arange(b, device=images.device)  # images whose change is still below min_area
    for _ in range(ANOMALY_TRIES):
        o, m, k = _anomalies_once(images[todo], todo, pool, from_batch, None if fg is None else fg[todo],
                                  generator, kinds, (lo, hi), mask_args)
        out[todo], masks[todo], chosen[todo] = o, m, k
        todo = todo[m.sum((1, 2, 3)) < min_area]
        if len(todo) == 0:
            break
    return (out, masks, chosen) if return_kinds else (out, masks)
