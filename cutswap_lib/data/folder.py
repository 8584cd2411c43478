"""MVTec-layout folder dataset: ``root/category/{train,test}/<type>/*.png`` with ``ground_truth`` masks.

Used for MVTec AD itself, VisA / BTAD / KSDD2 after their ``prepare_*`` step
(:mod:`cutswap_lib.data.prepare`), and the toy dataset. Layout::

    root/category/train/good/000.png
    root/category/test/good/000.png
    root/category/test/<defect>/000.png
    root/category/ground_truth/<defect>/000_mask.png    (non-zero = anomalous)

Folder names are checked when the dataset is built (category, split, non-empty
training set, a mask for every defect image); images are decoded when loaded, and a
file that cannot be read raises :class:`DatasetError` naming it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from .errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
GOOD = "good"
MASK_SUFFIX = "_mask.png"


def _open_decoded(path) -> Image.Image:
    """Open and fully decode an image, turning every failure into a DatasetError naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA" if "transparency" in img.info else "RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err} (corrupt or not an image?)") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """Integer / float single-channel modes (``I;16``, ``I``, ``F``) scaled to 8-bit ``L``."""
    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
        a = a.astype(np.float64) / 257.0  # 16-bit range 0..65535 -> 0..255
    elif img.mode == "F" and a.max(initial=0) <= 1.0:
        a = a.astype(np.float64) * 255.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def load_rgb(path) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image`` (size W x H).

    Grayscale, palette, 16-bit, CMYK and RGBA inputs are converted (alpha dropped), not
    rejected. A missing, corrupt or non-image file raises :class:`DatasetError` naming it.
    """
    img = _open_decoded(path)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def load_mask(path) -> np.ndarray:
    """Read a ground-truth mask as ``(H, W)`` bool: any non-zero channel counts as anomalous."""
    img = _open_decoded(path)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img) != 0
    a = np.asarray(img.convert("RGB") if img.mode not in ("L", "1", "RGB") else img)
    return a.any(axis=-1) if a.ndim == 3 else a != 0


@dataclass(frozen=True)
class Sample:
    """One image of a split: its path, its mask path (None for good images), label (0/1) and type folder."""

    image: Path
    mask: Path | None
    label: int
    defect_type: str


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _missing_mask_error(image: Path, expected: Path) -> DatasetError:
    """Say which mask was expected for ``image`` and which files look like it."""
    folder = expected.parent
    if not folder.is_dir():
        return DatasetError(f"missing mask for defect image {image}: expected {expected}, "
                            f"but the folder {folder} does not exist")
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    close = difflib.get_close_matches(expected.name, names, n=5, cutoff=0.6)
    close += [n for n in names if Path(n).stem.startswith(image.stem) and n not in close][:5]
    hint = f"; close candidates there: {close}" if close else f"; {len(names)} files there, none close"
    return DatasetError(f"missing mask for defect image {image}: expected {expected}{hint} "
                        f"(MVTec names masks <image stem>{MASK_SUFFIX})")


class AnomalyDataset(torch.utils.data.Dataset):
    """A split of one category in MVTec layout; items are ``(image, mask, label, path)``.

    * image ``(3, S, S)`` float32 in [0, 1], bilinear resize with antialias;
    * mask ``(1, S, S)`` float32 in {0, 1}, nearest-exact resize, zeros for good images;
    * label int, 0 good / 1 defect; path str.

    ``split`` is ``"train"`` or ``"test"`` (any other existing folder of the category,
    e.g. KSDD2's ``train_defect``, works the same way). ``image_size=None`` keeps the
    native size. Attributes: ``samples`` (list of :class:`Sample`) and ``defect_types``
    (sorted names of the defect folders of this split).
    """

    def __init__(self, root, category: str, split: str, image_size: int | None = 128):
        self.root, self.category, self.split, self.image_size = Path(root), category, split, image_size
        folder = self.root / category
        if not folder.is_dir():
            found = sorted(p.name for p in _subfolders(self.root)) if self.root.is_dir() else []
            raise DatasetError(f"missing category folder {folder}"
                               + (f"; categories found in {self.root}: {found}" if found
                                  else f" ({self.root} does not exist or is empty)"))
        split_dir = folder / split
        if not split_dir.is_dir():
            raise DatasetError(f"missing split folder {split_dir}; folders in {folder}: "
                               f"{[p.name for p in _subfolders(folder)]} (expected train/ and test/)")
        self.samples = self._scan(split_dir, folder / "ground_truth")
        self.defect_types = sorted({s.defect_type for s in self.samples if s.label == 1})

    def _scan(self, split_dir: Path, gt_dir: Path) -> list[Sample]:
        samples: list[Sample] = []
        types = _subfolders(split_dir)
        if self.split == "train":
            good = split_dir / GOOD
            if not good.is_dir():
                raise DatasetError(f"empty train set: {good} does not exist")
            if not _images_in(good):
                raise DatasetError(f"empty train set: {good} has no images "
                                   f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        if not types:
            raise DatasetError(f"{split_dir} has no type folders (expected {GOOD}/ and <defect>/ folders)")
        for type_dir in types:
            is_good = type_dir.name == GOOD
            for image in _images_in(type_dir):
                mask = None
                if not is_good:
                    mask = gt_dir / type_dir.name / f"{image.stem}{MASK_SUFFIX}"
                    if not mask.is_file():
                        raise _missing_mask_error(image, mask)
                samples.append(Sample(image, mask, 0 if is_good else 1, type_dir.name))
        if not samples:
            raise DatasetError(f"no images under {split_dir}")
        return samples

    def __len__(self) -> int:
        return len(self.samples)

    def _resize(self, t: torch.Tensor, mode: InterpolationMode) -> torch.Tensor:
        if self.image_size is None:
            return t
        size = [self.image_size, self.image_size]
        if list(t.shape[-2:]) == size:
            return t
        return TF.resize(t, size, interpolation=mode, antialias=mode == InterpolationMode.BILINEAR)

    def __getitem__(self, index: int):
        s = self.samples[index]
        img = load_rgb(s.image)
        image = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W)
        image = self._resize(image.float().div_(255), InterpolationMode.BILINEAR).clamp_(0, 1)
        if s.mask is None:
            h, w = image.shape[-2:]
            mask = torch.zeros(1, h, w)
        else:
            m = load_mask(s.mask)
            if m.shape != (img.height, img.width):
                raise DatasetError(f"mask {s.mask} is {m.shape[1]}x{m.shape[0]} (WxH) but its image "
                                   f"{s.image} is {img.width}x{img.height}")
            mask = self._resize(torch.from_numpy(m).float()[None], InterpolationMode.NEAREST_EXACT)
        return image, mask, s.label, str(s.image)
