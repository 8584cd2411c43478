"""One split of an MVTec-layout category as tensors, and the toy objects' footprints.

Used by the notebooks, the tests and every run of :mod:`cutswap_lib.runs`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .folder import AnomalyDataset, load_mask
from .toy import toy_foreground_path


def load_split(root: Path, category: str, split: str, image_size: int):
    """All samples of one split as tensors: images ``(N,3,S,S)``, masks ``(N,S,S)``, labels ``(N,)``, paths."""
    ds = AnomalyDataset(root, category, split, image_size=image_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), shuffle=False)
    images, masks, labels, paths = next(iter(loader))
    return images, masks[:, 0], labels, list(paths)


def load_foregrounds(paths, image_size: int) -> torch.Tensor:
    """Object footprints ``(N, 1, S, S)`` in {0, 1} of toy images given by their paths."""
    masks = [torch.from_numpy(load_mask(toy_foreground_path(p))).float()[None, None] for p in paths]
    return torch.nn.functional.interpolate(torch.cat(masks), size=(image_size, image_size),
                                           mode="nearest")  # (N, 1, S, S)
