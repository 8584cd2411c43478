"""One split of an MVTec-layout category as tensors, and the toy objects' footprints.

Used by the notebooks, the tests and every run of :mod:`cutswap_lib.runs`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..images import to_uint8_images
from .errors import DatasetError
from .folder import AnomalyDataset, load_mask
from .toy import toy_foreground_path


def load_split(root: Path, category: str, split: str, image_size: int, dtype: torch.dtype = torch.float32):
    """All samples of one split as tensors: images ``(N,3,S,S)``, masks ``(N,S,S)``, labels ``(N,)``, paths.

    Images are float32 in [0, 1], or with ``dtype=torch.uint8`` rounded to 8 bits after the
    resize (a quarter of the memory, see :mod:`cutswap_lib.images`). They are written one by one
    into tensors made once, so a split is never held twice.
    """
    ds = AnomalyDataset(root, category, split, image_size=image_size)
    if dtype not in (torch.float32, torch.uint8):
        raise ValueError(f"load_split keeps images as torch.float32 or torch.uint8, not {dtype}")
    images = masks = None
    labels, paths = torch.empty(len(ds), dtype=torch.long), []
    for i in range(len(ds)):
        image, mask, label, path = ds[i]  # (3, S, S) float, (1, S, S), int, str
        if images is None:
            images = torch.empty(len(ds), *image.shape, dtype=dtype)
            masks = torch.empty(len(ds), *mask.shape[1:])
        images[i] = image if dtype == torch.float32 else to_uint8_images(image)
        masks[i], labels[i] = mask[0], label
        paths.append(path)
    if images is None:
        raise DatasetError(f"{Path(root) / category / split} holds no images")
    return images, masks, labels, paths


def load_foregrounds(paths, image_size: int) -> torch.Tensor:
    """Object footprints ``(N, 1, S, S)`` in {0, 1} of toy images given by their paths."""
    masks = [torch.from_numpy(load_mask(toy_foreground_path(p))).float()[None, None] for p in paths]
    return torch.nn.functional.interpolate(torch.cat(masks), size=(image_size, image_size),
                                           mode="nearest")  # (N, 1, S, S)
