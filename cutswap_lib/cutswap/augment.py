"""Negatives for self-supervision: CutSwap, CutSwap-scar and the CutPaste baselines (CutSwap Sec. III-A).

* :func:`cutswap` swaps two equal-size square patches whose top-left corners are the
  two saliency anchors (CutSwap Sec. III-A, "Patch Swapping"); :func:`cutswap_scar`
  swaps two long thin patches and rotates each after the swap, as CutPaste's scar.
* :func:`cutpaste` / :func:`cutpaste_scar`: CutPaste (Li et al., CVPR 2021) Sec. 3, a
  random rectangle (or thin rotated scar) cut at one random place and pasted at another,
  with an optional colour jitter of the patch.
* :func:`weak_augment`: the colour jitter that makes positives (CutSwap Sec. III; CutPaste
  applies it before cutting, and so do the training sets of :mod:`cutswap_lib.cutswap.selfsup`).

Choices the papers leave open (see ``../shared/PAPER-NOTES.md``):

* **Clipping** (:func:`place_patches`): a patch whose corner is too close to the bottom
  or right border is *moved inwards, keeping its size*. Clipping its size instead would
  make near-border anchors give smaller (and, for two patches, unequal) patches; moving
  keeps every negative at the paper's patch size and the patch still starts at the
  salient pixel as near as the image allows.
* **Overlap**: two patches that would overlap are pushed apart along the axis where they
  overlap less (rows on a tie), each by half the overlap, until they touch; the pair is
  then shifted back inside the image. Disjoint patches make CutSwap a *pure permutation
  of pixels*. This needs room for two patches side by side (``2 h <= H`` or
  ``2 w <= W``), else :class:`ValueError`.
* **Scar** (CutPaste's sizes: width 2-16 px, length 10-25 px, angle -45..45 degrees; the
  length runs along the rows before rotation). Both patches of an image share one size
  and each gets its own angle. An anchor is the top-left corner of the scar's *box*: the
  smallest box centred on the scar that holds it unrotated and at both angles; boxes are
  placed like square patches, so the two footprints never overlap. Rotation is about the
  patch centre, counter-clockwise on screen for a positive angle (as torchvision's
  ``rotate``), with nearest sampling, so every written pixel is an original pixel value;
  only pixels inside the rotated footprint are written.
* **Masks** ``(B, 1, H, W)`` in {0, 1} are exactly the pixels whose value changed
  (``(out != images).any(channel)``): where two swapped pixels happen to be equal the mask
  is 0. ``return_footprint=True`` also returns every pixel that was written.
* **Randomness**: each function draws all it needs with *one* ``torch.rand(B, n)`` call on
  the generator's device (float64), so with a CPU generator a batch of B images gives
  exactly what B single-image calls in a row give; any generator device works with
  images on any device.

Everything is batched on the images' device with index maps (gather / scatter over the
flattened image, no loop over images or pixels). Taught in
``notebooks/02_cutswap_generation.ipynb``.
"""

from __future__ import annotations

import math

import torch

from ..jitter import check_images, color_jitter, int_between, jitter_factors, uniform

Tensor = torch.Tensor
SCAR_WIDTH, SCAR_LENGTH, SCAR_ANGLE = (2, 16), (10, 25), (-45.0, 45.0)  # CutPaste Sec. 3


# --------------------------------------------------------------------------- checks
def _check_anchors(anchors, b: int, device) -> Tensor:
    if not isinstance(anchors, Tensor) or anchors.shape != (b, 2, 2) or anchors.is_floating_point():
        got = f"{anchors.dtype} {tuple(anchors.shape)}" if isinstance(anchors, Tensor) else type(anchors)
        raise ValueError(f"anchors must be an integer tensor (B, 2, 2) = ({b}, 2, 2) of (row, col) "
                         f"corners, got {got}")
    return anchors.to(device=device, dtype=torch.long)


def _pair(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if h < 1 or w < 1:
        raise ValueError(f"patch size must be positive, got {size!r}")
    return h, w


def weak_augment(images: Tensor, generator: torch.Generator | None = None, brightness: float = 0.1,
                 contrast: float = 0.1, saturation: float = 0.1, hue: float = 0.0) -> Tensor:
    """Colour jitter for positives (CutSwap Sec. III): ``(B, 3, H, W)`` -> ``(B, 3, H, W)`` in [0, 1].

    Per image, factors uniform in ``[1 - b, 1 + b]`` (brightness, contrast, saturation) and a
    hue shift in ``[-hue, hue]`` turns, applied in that fixed order (torchvision's
    ``ColorJitter`` shuffles the order; ``tests/test_augment.py`` checks each image against
    torchvision's ``adjust_*`` with the same factors). CutPaste (Li et al., CVPR 2021) Sec. 3
    uses 0.1 for all four on its patch. Taught in ``notebooks/02_cutswap_generation.ipynb``.
    """
    b = check_images(images)[0]
    f = jitter_factors(uniform(generator, b, 4, images.device), brightness, contrast, saturation, hue)
    return color_jitter(images, f, hue=hue > 0)


# --------------------------------------------------------------------------- placement, index maps
def place_patches(anchors: Tensor, size, image_size: tuple[int, int]) -> Tensor:
    """Clip and separate two patches per image: ``(B, 2, 2)`` corners -> ``(B, 2, 2)`` corners.

    ``size``: ``(h, w)``, an int, or ``(B, 2)`` per image. Each corner is moved inwards so
    its patch lies inside the image (size kept); overlapping patches are pushed apart along
    the axis of the smaller overlap (rows on a tie), each by half, then shifted back inside
    (module docstring, CutSwap Sec. III-A).
    """
    b = anchors.shape[0]
    anchors = _check_anchors(anchors, b, anchors.device)
    if isinstance(size, Tensor):
        size = size.to(anchors.device, torch.long).expand(b, 2)
    else:
        size = torch.tensor(_pair(size), device=anchors.device).expand(b, 2)
    extent = torch.tensor(image_size, device=anchors.device)  # (2,) H, W
    if bool((size > extent).any()):
        raise ValueError(f"patch of {size.amax(0).tolist()} px does not fit in a "
                         f"{tuple(image_size)} image")
    fits = 2 * size <= extent  # (B, 2): room for two side by side along rows / cols
    if not bool(fits.any(1).all()):
        raise ValueError(f"two disjoint {size.amax(0).tolist()} patches do not fit in a "
                         f"{tuple(image_size)} image: need 2 h <= H or 2 w <= W "
                         f"(use a smaller patch or scar)")
    c = torch.minimum(anchors.clamp(min=0), (extent - size)[:, None])  # (B, 2, 2) inside
    gap = (c[:, 0] - c[:, 1]).abs()  # (B, 2) distance between corners per axis
    short = size - gap  # (B, 2) overlap per axis (> 0 on both axes: patches overlap)
    overlap = (short > 0).all(1)  # (B,)
    rows = fits[:, 0] & (~fits[:, 1] | (short[:, 0] <= short[:, 1]))  # (B,) axis to separate on
    axis = torch.stack([rows, ~rows], 1) & overlap[:, None]  # (B, 2) one-hot, only if overlapping
    lo, hi = c.amin(1), c.amax(1)  # (B, 2) per axis
    d = short.clamp(min=0)
    lo, hi = lo - d // 2, hi + (d - d // 2)  # now hi - lo = size on the chosen axis
    shift = (-lo).clamp(min=0) - (hi - (extent - size)).clamp(min=0)  # back inside
    lo, hi = lo + shift, hi + shift
    first = c[:, 0] <= c[:, 1]  # (B, 2) patch 0 keeps the lower coordinate (also on a tie)
    moved = torch.stack([torch.where(first, lo, hi), torch.where(first, hi, lo)], 1)  # (B, 2, 2)
    return torch.where(axis[:, None], moved, c)


def _index_map(src: Tensor, dst: Tensor, rect: Tensor, box: Tensor, angle: Tensor | None):
    """Where each written pixel comes from, for K patches per image.

    ``src`` ``(B, K, 2)``: top-left of each source rectangle; ``dst`` ``(B, K, 2)``: top-left of
    each destination box; ``rect`` ``(B, 2)``: rectangle size; ``box`` ``(B, 2)``: box size
    (``box - rect`` even, so the rectangle is centred in it); ``angle`` ``(B, K)`` radians or
    None. Returns destination and source ``(rows, cols)`` and ``valid``, each ``(B, K*G)``.
    """
    dev = src.device
    gh, gw = int(box[:, 0].max()), int(box[:, 1].max())
    i = torch.arange(gh, device=dev, dtype=torch.float64).view(1, 1, gh, 1)
    j = torch.arange(gw, device=dev, dtype=torch.float64).view(1, 1, 1, gw)
    bh, bw, lh, lw = (t.double().view(-1, 1, 1, 1) for t in (box[:, 0], box[:, 1], rect[:, 0], rect[:, 1]))
    dr, dc = i - (bh - 1) / 2, j - (bw - 1) / 2  # offsets from the box centre
    if angle is None:
        qr, qc = dr.expand(-1, src.shape[1], gh, gw), dc.expand(-1, src.shape[1], gh, gw)
    else:  # inverse rotation: which unrotated offset lands here (counter-clockwise on screen)
        cos, sin = angle.cos()[..., None, None], angle.sin()[..., None, None]  # (B, K, 1, 1)
        qr, qc = dr * cos + dc * sin, dc * cos - dr * sin  # (B, K, gh, gw)
    valid = (qr.abs() < lh / 2) & (qc.abs() < lw / 2) & (i < bh) & (j < bw)  # footprint
    s0, s1 = src[..., 0, None, None], src[..., 1, None, None]  # (B, K, 1, 1)
    sr = (s0 + (lh - 1) / 2 + qr).round().long()  # nearest source pixel
    sc = (s1 + (lw - 1) / 2 + qc).round().long()
    sr = torch.minimum(torch.maximum(sr, s0), s0 + rect[:, 0].view(-1, 1, 1, 1) - 1)
    sc = torch.minimum(torch.maximum(sc, s1), s1 + rect[:, 1].view(-1, 1, 1, 1) - 1)
    tr = (dst[..., 0, None, None] + i.long()).expand_as(sr)  # (B, K, gh, gw) destination
    tc = (dst[..., 1, None, None] + j.long()).expand_as(sc)
    b = src.shape[0]
    return tr.reshape(b, -1), tc.reshape(b, -1), sr.reshape(b, -1), sc.reshape(b, -1), valid.reshape(b, -1)


def _write(images: Tensor, index, values: Tensor | None = None, footprint: bool = False):
    """Apply an index map: gather sources (or take ``values`` ``(B, C, N)``), scatter to destinations.

    Returns ``(out, changed-pixel mask)`` and, with ``footprint``, the written-pixel mask.
    Invalid entries go to one spare slot past the image, dropped afterwards.
    """
    tr, tc, sr, sc, valid = index
    b, c, h, w = images.shape
    flat = images.reshape(b, c, h * w)
    if values is None:
        values = flat.gather(2, (sr * w + sc)[:, None].expand(-1, c, -1))  # (B, C, N)
    dest = torch.where(valid, tr * w + tc, h * w)[:, None]  # (B, 1, N)
    out = torch.cat([flat, flat[..., :1]], 2).scatter(2, dest.expand(-1, c, -1), values)
    out = out[..., : h * w].reshape(b, c, h, w)
    mask = (out != images).any(1, keepdim=True).to(images.dtype)  # (B, 1, H, W)
    if not footprint:
        return out, mask
    spare = images.new_zeros(b, 1, h * w + 1).scatter(2, dest, 1.0)
    return out, mask, spare[..., : h * w].reshape(b, 1, h, w)


def _scar_box(rect: Tensor, angles: Tensor) -> Tensor:
    """Box ``(B, 2)`` holding a ``rect`` ``(B, 2)`` scar unrotated and at every angle of ``(B, K)``."""
    cos, sin = angles.cos().abs(), angles.sin().abs()  # (B, K)
    l, w = rect[:, :1].double(), rect[:, 1:].double()
    ext = torch.stack([(l * cos + w * sin).amax(1), (l * sin + w * cos).amax(1)], 1)  # (B, 2)
    grow = ((ext - rect) / 2 - 1e-9).ceil().clamp(min=0).long()  # keep box - rect even
    return rect + 2 * grow


def scar_bound(width, length, angle) -> tuple[int, int]:
    """The largest scar box the ranges can give: ``(rows, cols)``, so that size errors never depend on draws.

    The box grows with length and width; over an angle interval its extents peak at an end,
    at 0 or at +-atan(w / l), +-atan(l / w) (clamped into the interval).
    """
    (w0, w1), (l0, l1), (a0, a1) = width, length, angle
    if not (1 <= w0 <= w1 and 1 <= l0 <= l1 and a0 <= a1):
        raise ValueError(f"scar ranges must be (low, high) with 1 <= low <= high px and angle low <= "
                         f"high, got width={width}, length={length}, angle={angle}")
    peaks = [math.degrees(math.atan2(w1, l1)), math.degrees(math.atan2(l1, w1))]
    cands = [a0, a1, 0.0] + peaks + [-p for p in peaks]
    rad = torch.tensor([min(max(c, a0), a1) for c in cands], dtype=torch.float64).deg2rad()
    return tuple(_scar_box(torch.tensor([[l1, w1]]), rad[None])[0].tolist())


def _scar_sizes(u: Tensor, width, length) -> Tensor:
    """``(B, 2)`` uniforms -> scar rectangles ``(B, 2)`` = (length, width) in pixels."""
    return torch.stack([int_between(u[:, 1], *length), int_between(u[:, 0], *width)], 1)


# --------------------------------------------------------------------------- CutSwap
def cutswap(images: Tensor, anchors: Tensor, patch_size=30, *, return_footprint: bool = False):
    """CutSwap (Sec. III-A): ``(B, 3, H, W)``, ``(B, 2, 2)`` anchors -> images, masks ``(B, 1, H, W)``.

    Swaps two ``patch_size`` patches (int or ``(h, w)``) whose top-left corners are the
    anchors (row, col), after :func:`place_patches` moved them inside and apart: a pure
    permutation of each image's pixels. Masks are exactly the changed pixels. Taught in
    ``notebooks/02_cutswap_generation.ipynb``.
    """
    b, _, h, w = check_images(images)
    anchors = _check_anchors(anchors, b, images.device)
    size = torch.tensor(_pair(patch_size), device=images.device).expand(b, 2)
    corners = place_patches(anchors, size, (h, w))  # (B, 2, 2)
    index = _index_map(corners.flip(1), corners, size, size, None)  # patch 0 <- patch 1 and back
    return _write(images, index, footprint=return_footprint)


def cutswap_scar(images: Tensor, anchors: Tensor, generator: torch.Generator | None = None,
                 width=SCAR_WIDTH, length=SCAR_LENGTH, angle=SCAR_ANGLE, *, return_footprint: bool = False):
    """CutSwap-scar (Sec. III-A): ``(B, 3, H, W)``, ``(B, 2, 2)`` anchors -> images, masks ``(B, 1, H, W)``.

    Two long thin patches of one size per image (CutPaste's scar, Li et al., CVPR 2021 Sec.
    3: ``width``, ``length`` in px, inclusive) swap places, and each is rotated after the
    swap by its own angle in ``angle`` (degrees) about its centre, nearest sampling; the
    anchors are the top-left corners of the scars' boxes (module docstring). Masks are the
    changed pixels. Taught in ``notebooks/02_cutswap_generation.ipynb``.
    """
    b, _, h, w = check_images(images)
    anchors = _check_anchors(anchors, b, images.device)
    big = scar_bound(width, length, angle)
    if 2 * big[0] > h and 2 * big[1] > w:
        raise ValueError(f"two disjoint scar boxes of up to {list(big)} px do not fit in {h}x{w} "
                         f"images (need 2 h <= H or 2 w <= W): use smaller width / length")
    u = uniform(generator, b, 4, images.device)  # width, length, angle 0, angle 1
    rect = _scar_sizes(u, width, length)  # (B, 2)
    rad = torch.deg2rad(angle[0] + u[:, 2:] * (angle[1] - angle[0]))  # (B, 2)
    box = _scar_box(rect, rad)  # (B, 2)
    corners = place_patches(anchors, box, (h, w))  # (B, 2, 2) disjoint boxes
    src = corners.flip(1) + ((box - rect) // 2)[:, None]  # the other box's rectangle
    index = _index_map(src, corners, rect, box, rad)
    return _write(images, index, footprint=return_footprint)


# --------------------------------------------------------------------------- CutPaste baselines
def _paste(images, u, rect, box, rad, jitter, footprint):
    """Cut ``rect`` at a random place, paste it (rotated by ``rad``, jittered) in a random ``box``."""
    b, _, h, w = images.shape
    src = torch.stack([int_between(u[:, 0], 0, h - rect[:, 0]), int_between(u[:, 1], 0, w - rect[:, 1])], 1)
    dst = torch.stack([int_between(u[:, 2], 0, h - box[:, 0]), int_between(u[:, 3], 0, w - box[:, 1])], 1)
    index = _index_map(src[:, None], dst[:, None], rect, box, rad)
    values = None
    if jitter:  # CutPaste's colour jitter of the patch (contrast: the patch's own mean)
        tr, tc, sr, sc, valid = index
        flat = images.reshape(b, images.shape[1], h * w)
        values = flat.gather(2, (sr * w + sc)[:, None].expand(-1, images.shape[1], -1))  # (B, 3, N)
        f = jitter_factors(u[:, 4:8], jitter, jitter, jitter, jitter)
        values = color_jitter(values, f, weight=valid[:, None].to(images.dtype))
    return _write(images, index, values, footprint)


def cutpaste(images: Tensor, generator: torch.Generator | None = None, area_ratio=(0.02, 0.15),
             aspect_ratio=(0.3, 3.3), jitter: float | None = 0.1, *, return_footprint: bool = False):
    """CutPaste (Li et al., CVPR 2021 Sec. 3): ``(B, 3, H, W)`` -> images, masks ``(B, 1, H, W)``.

    Per image a rectangle of area ``area_ratio`` x H W and aspect (w / h) log-uniform in
    ``aspect_ratio`` is cut at a uniform place and pasted at another uniform place (the two
    may overlap), its colours jittered by ``jitter`` (brightness, contrast, saturation, hue;
    None or 0: no jitter). The CutSwap paper's baseline; masks are the changed pixels.
    Taught in ``notebooks/02_cutswap_generation.ipynb``.
    """
    b, _, h, w = check_images(images)
    u = uniform(generator, b, 10, images.device)  # src, dst, jitter x4, area, aspect
    area = (area_ratio[0] + u[:, 8] * (area_ratio[1] - area_ratio[0])) * h * w
    lo, hi = math.log(aspect_ratio[0]), math.log(aspect_ratio[1])
    aspect = (lo + u[:, 9] * (hi - lo)).exp()
    rect = torch.stack([(area / aspect).sqrt().round().clamp(1, h),
                        (area * aspect).sqrt().round().clamp(1, w)], 1).long()  # (B, 2)
    return _paste(images, u, rect, rect, None, jitter, return_footprint)


def cutpaste_scar(images: Tensor, generator: torch.Generator | None = None, width=SCAR_WIDTH,
                  length=SCAR_LENGTH, angle=SCAR_ANGLE, jitter: float | None = 0.1, *,
                  return_footprint: bool = False):
    """CutPaste-scar (Li et al., CVPR 2021 Sec. 3): ``(B, 3, H, W)`` -> images, masks ``(B, 1, H, W)``.

    A thin rectangle (``width`` x ``length`` px, length along the rows) cut at a uniform
    place, jittered (``jitter``, as :func:`cutpaste`), rotated by an angle in ``angle``
    (degrees) with nearest sampling and pasted, only inside its rotated footprint, at
    another uniform place. Taught in ``notebooks/02_cutswap_generation.ipynb``.
    """
    b, _, h, w = check_images(images)
    big = scar_bound(width, length, angle)
    if big[0] > h or big[1] > w:
        raise ValueError(f"a rotated scar box of up to {list(big)} px does not fit in {h}x{w} "
                         f"images: use smaller width / length")
    u = uniform(generator, b, 11, images.device)  # src, dst, jitter x4, width, length, angle
    rect = _scar_sizes(u[:, 8:10], width, length)
    rad = torch.deg2rad(angle[0] + u[:, 10:11] * (angle[1] - angle[0]))  # (B, 1)
    box = _scar_box(rect, rad)
    return _paste(images, u, rect, box, rad, jitter, return_footprint)
