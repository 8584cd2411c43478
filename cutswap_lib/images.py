"""Image tensors in the two encodings the library reads: float in [0, 1], and 8-bit.

Every model here computes on float32 images in [0, 1] ``(B, 3, H, W)``. A reproduction run
at the paper's sizes holds whole splits on the host, though: KSDD2's 2,085 + 1,004 images
at 512 px are 9.7 GB as float32 and 2.4 GB as ``uint8``. So the SemiREST tables keep their
splits in ``uint8`` (:func:`~cutswap_lib.data.splits.load_split` with ``dtype=torch.uint8``,
rounded after the resize: at most half a grey level, 0.002, off the float image) and the
models turn a batch into floats only when they use it (:func:`as_float_images`). A float
tensor passes through unchanged, so the course's float images work as before.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def as_float_images(images: Tensor, device=None) -> Tensor:
    """Images ``(..., H, W)``, float in [0, 1] or ``uint8`` -> float32 in [0, 1] on ``device`` (None: theirs)."""
    if images.dtype == torch.uint8:
        return images.to(device).float().div_(255)
    return images.to(device, torch.float32)


def to_uint8_images(images: Tensor) -> Tensor:
    """Float images in [0, 1] -> ``uint8``, rounded to the nearest grey level (exact for 8-bit images)."""
    if images.dtype == torch.uint8:
        return images
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
