"""Lists of images to score: an MVTec-layout category with or without ``ground_truth/``, or plain folders.

:class:`~cutswap_lib.data.folder.AnomalyDataset` insists on a mask for every defect image,
as a benchmark should. A person's own folder is often less complete, so ``python -m
cutswap_lib patchcore`` (:mod:`cutswap_lib.runs.patchcore_folder`) reads its images through
the :class:`ImageSet` made here:

* :func:`mvtec_images` – ``root/category/train/good`` (training) or ``root/category/test/<type>/``
  (labels from the folder names: ``good`` 0, any other folder 1). When
  ``root/category/ground_truth/`` exists, every defect image needs its
  ``ground_truth/<type>/<stem>_mask.png`` (a missing one is an error listing every such
  image: a half-masked benchmark would give wrong pixel metrics); without that folder the
  set has labels but no masks (image-level metrics only).
* :func:`folder_images` – every image directly inside one folder (subfolders are not
  searched: a course choice, so that a folder of defects beside a folder of good images is
  never mixed in by accident). Without ``masks`` the set is unlabelled (scores and maps
  only). With ``masks`` each image's mask is found by stem (``<stem>_mask.<ext>`` or
  ``<stem>.<ext>``) and its label is whether the mask marks any pixel. **Course choice:** a
  test image without a mask file counts as normal (an all-zero mask), and a
  :class:`MissingMaskWarning` names it; that is how such folders usually come (masks drawn
  for the defective images only).
* :class:`ImageList` – a Dataset over the items, ``(image, mask, label, path)`` as
  :class:`AnomalyDataset` gives them, label -1 when unknown.

Images are read with :func:`~cutswap_lib.data.folder.load_rgb` (grey, RGBA and 16-bit files
become RGB), masks with :func:`~cutswap_lib.data.folder.load_mask` (its one mask policy).
Every problem is a :class:`~cutswap_lib.data.DatasetError` naming the folder or file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from .errors import DatasetError
from .folder import GOOD, IMAGE_EXTENSIONS, MASK_SUFFIX, is_image_file, load_mask, load_rgb

__all__ = ["ImageList", "ImageSet", "Item", "MissingMaskWarning", "folder_images", "list_images",
           "mvtec_categories", "mvtec_images"]

SHOWN = 5  # names listed in a message before "... and N more"


class MissingMaskWarning(UserWarning):
    """Test images without a mask file (counted as normal) or masks without an image; the message names them."""


@dataclass(frozen=True)
class Item:
    """One image: its path, its mask file (None: all-zero or unknown), label (0/1, None unknown), group."""

    image: Path
    mask: Path | None
    label: int | None
    group: str  # the type folder (``good``, ``scratch``, ...) in MVTec layout; ``""`` for a plain folder


@dataclass(frozen=True)
class ImageSet:
    """Items of one folder (or category split) and what is known about them.

    ``labelled``: every item has a label; ``masked``: every item's pixel truth is known (a
    mask file, or all zeros by the rules of the module docstring); ``source``: the folder.
    """

    items: tuple[Item, ...]
    labelled: bool
    masked: bool
    source: Path

    def __len__(self) -> int:
        return len(self.items)


def _names(paths, root: Path | None = None) -> str:
    """``a.png, b.png, ... and 3 more``: the first :data:`SHOWN` names (relative to ``root``)."""
    names = [str(p.relative_to(root)) if root else p.name for p in paths]
    more = f" ... and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _folders_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder, what: str) -> list[Path]:
    """The image files directly inside ``folder``, sorted; DatasetError naming it when there are none.

    ``what`` says which folder it is in the message (``"training folder"``, ``"--test folder"``).
    """
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise DatasetError(f"{what} {folder} is a file, not a folder")
    images = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not images:
        subs = _folders_in(folder)
        hint = (f"; it holds the folders {_names(subs)} (subfolders are not searched: point at the "
                f"folder that holds the images)" if subs else "")
        raise DatasetError(f"{what} {folder} has no images (extensions {', '.join(IMAGE_EXTENSIONS)}){hint}")
    return images


def mvtec_categories(root) -> list[str]:
    """Names of the category folders under ``root`` (those holding ``train/`` or ``test/``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} " + ("is a file, not a folder" if root.exists() else "does not exist"))
    found = [p.name for p in _folders_in(root) if (p / "train").is_dir() or (p / "test").is_dir()]
    if not found:
        raise DatasetError(f"data root {root} holds no category in MVTec layout (<category>/train/good/, "
                           f"<category>/test/<type>/); folders there: {[p.name for p in _folders_in(root)]}")
    return found


def mvtec_images(root, category: str, split: str) -> ImageSet:
    """The ``train`` (``good`` only) or ``test`` images of one MVTec-layout category (module docstring)."""
    folder = Path(root) / category
    if not folder.is_dir():
        found = mvtec_categories(root) if Path(root).is_dir() else []
        raise DatasetError(f"missing category folder {folder}" + (f"; categories found: {found}" if found else ""))
    split_dir = folder / split
    if not split_dir.is_dir():
        raise DatasetError(f"missing split folder {split_dir}; folders in {folder}: "
                           f"{[p.name for p in _folders_in(folder)]} (expected train/ and test/)")
    if split == "train":
        items = [Item(p, None, 0, GOOD) for p in list_images(split_dir / GOOD, "training folder")]
        return ImageSet(tuple(items), labelled=True, masked=True, source=split_dir / GOOD)
    types = _folders_in(split_dir)
    if not types:
        raise DatasetError(f"{split_dir} has no type folders (expected {GOOD}/ and <defect>/ folders)")
    gt_dir = folder / "ground_truth"
    masked = gt_dir.is_dir()
    items, missing = [], []
    for type_dir in types:
        for image in sorted(p for p in type_dir.iterdir() if is_image_file(p)):
            mask = None
            if masked and type_dir.name != GOOD:
                mask = gt_dir / type_dir.name / f"{image.stem}{MASK_SUFFIX}"
                if not mask.is_file():
                    missing.append(image)
            items.append(Item(image, mask, int(type_dir.name != GOOD), type_dir.name))
    if not items:
        raise DatasetError(f"{split_dir} has no images in its type folders {_names(types)}")
    if missing:
        raise DatasetError(f"{len(missing)} defect image(s) under {split_dir} have no mask in {gt_dir} "
                           f"(expected <type>/<stem>{MASK_SUFFIX}): {_names(missing, split_dir)}; add "
                           f"them, or remove {gt_dir} for image-level metrics only")
    return ImageSet(tuple(items), labelled=True, masked=masked, source=split_dir)


def _masks_by_stem(masks_dir: Path) -> dict[str, Path]:
    """``{image stem: mask file}`` of a masks folder: ``<stem>_mask.<ext>`` or ``<stem>.<ext>``."""
    found: dict[str, list[Path]] = {}
    for path in list_images(masks_dir, "--masks folder"):
        stem = path.stem[: -len("_mask")] if path.stem.endswith("_mask") else path.stem
        found.setdefault(stem, []).append(path)
    twice = {s: ps for s, ps in found.items() if len(ps) > 1}
    if twice:
        stem, paths = next(iter(twice.items()))
        raise DatasetError(f"--masks folder {masks_dir} holds {len(paths)} masks for the stem {stem!r} "
                           f"({_names(paths)}); keep one per image")
    return {s: ps[0] for s, ps in found.items()}


def folder_images(folder, masks=None, what: str = "--test folder") -> ImageSet:
    """Every image directly inside ``folder``; with ``masks`` (a folder) labelled by its mask (module docstring).

    Warns (:class:`MissingMaskWarning`) with the names of test images that have no mask
    (counted as normal) and of mask files that match no test image.
    """
    folder = Path(folder)
    images = list_images(folder, what)
    if masks is None:
        return ImageSet(tuple(Item(p, None, None, "") for p in images), labelled=False, masked=False,
                        source=folder)
    masks = Path(masks)
    if masks.resolve() == folder.resolve():
        raise DatasetError(f"--masks folder {masks} is the {what} itself: give the folder that holds the masks")
    by_stem = _masks_by_stem(masks)
    items, without = [], []
    for image in images:
        mask = by_stem.get(image.stem)
        if mask is None:
            without.append(image)
            items.append(Item(image, None, 0, ""))
        else:
            items.append(Item(image, mask, int(load_mask(mask).any()), ""))
    if without:
        warnings.warn(f"{len(without)} of {len(images)} test images in {folder} have no mask in {masks} and "
                      f"count as normal (all-zero mask): {_names(without)}", MissingMaskWarning, stacklevel=2)
    unused = sorted(set(by_stem) - {p.stem for p in images})
    if unused:
        warnings.warn(f"{len(unused)} mask file(s) in {masks} match no image in {folder}: "
                      f"{_names([by_stem[s] for s in unused])}", MissingMaskWarning, stacklevel=2)
    return ImageSet(tuple(items), labelled=True, masked=True, source=folder)


class ImageList(torch.utils.data.Dataset):
    """The items of an :class:`ImageSet` as tensors: ``(image, mask, label, path)``.

    * image ``(3, S, S)`` float32 in [0, 1], bilinear resize with antialias (as AnomalyDataset);
    * mask ``(1, S, S)`` float32 in {0, 1}, nearest-exact resize, zeros when the item has no mask file;
    * label int (-1 when unknown); path str.

    ``image_size=None`` keeps the native size (then a batch needs images of one size).
    """

    def __init__(self, images: ImageSet, image_size: int | None):
        self.set, self.items, self.image_size = images, images.items, image_size

    def __len__(self) -> int:
        return len(self.items)

    def _resize(self, t: torch.Tensor, mode: InterpolationMode) -> torch.Tensor:
        size = [self.image_size, self.image_size]
        if self.image_size is None or list(t.shape[-2:]) == size:
            return t
        return TF.resize(t, size, interpolation=mode, antialias=mode == InterpolationMode.BILINEAR)

    def __getitem__(self, index: int):
        item = self.items[index]
        img = load_rgb(item.image)
        image = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
        image = self._resize(image.float().div_(255), InterpolationMode.BILINEAR).clamp_(0, 1)
        if item.mask is None:
            mask = torch.zeros(1, *image.shape[-2:])  # (1, S, S)
        else:
            m = load_mask(item.mask)
            if m.shape != (img.height, img.width):
                raise DatasetError(f"mask {item.mask} is {m.shape[1]}x{m.shape[0]} (WxH) but its image "
                                   f"{item.image} is {img.width}x{img.height}")
            mask = self._resize(torch.from_numpy(m).float()[None], InterpolationMode.NEAREST_EXACT)
        return image, mask, -1 if item.label is None else item.label, str(item.image)
