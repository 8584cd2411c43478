"""MVTec-layout folder dataset: ``root/category/{train,test}/<type>/*.png`` with ``ground_truth`` masks.

Used for MVTec AD itself, VisA / BTAD / KSDD2 after their ``prepare_*`` step
(:mod:`cutswap_lib.data.prepare`), and the toy dataset. Layout::

    root/category/train/good/000.png
    root/category/test/good/000.png
    root/category/test/<defect>/000.png
    root/category/ground_truth/<defect>/000_mask.png    (see the mask policy below)

Folder names are checked when the dataset is built (category, split, non-empty
training set, a mask for every defect image); images are decoded when loaded, and a
file that cannot be read raises :class:`DatasetError` naming it.

Mask policy (:func:`load_mask`, one rule for every dataset): a pixel is anomalous when
its value is at least half the range of the file's dtype (8-bit >= 128, 16-bit >=
32768), so anti-aliased or JPEG-saved masks with a background of 2 stay right; a mask
holding only 0 and 1 is a 0/1 mask; boolean (mode ``1``) masks are taken as they are.
Colour masks use the brightest colour channel, or the alpha channel when the colour
channels are blank (constant) and alpha is not. :class:`AnomalyDataset` warns
(:class:`MaskWarning`, naming the file) when a defect image's mask is empty or covers
more than half of the image.
"""

from __future__ import annotations

import difflib
import warnings
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
MASK_WARN_FRACTION = 0.5  # a defect mask covering more than this share of its image is suspicious


class MaskWarning(UserWarning):
    """A defect image's mask looks wrong (empty, or most of the image); the message names the file."""


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


def _constant(a: np.ndarray) -> bool:
    """True when every value of ``a`` is the same (an all-black or all-white channel carries nothing)."""
    return a.size == 0 or bool((a == a.flat[0]).all())


def _mask_plane(img: Image.Image) -> np.ndarray:
    """The single ``(H, W)`` plane a mask is read from.

    Grey and boolean images as they are; colour images the max over their colour
    channels; the alpha channel instead when the colour channels are blank (all one
    value, e.g. black or white paint) but alpha is not: a defect drawn only in alpha.
    """
    if img.mode in ("1", "L", "I", "F") or img.mode.startswith("I;16"):
        return np.asarray(img)
    if img.mode not in ("LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    a = np.asarray(img)
    if img.mode == "RGB":
        return a.max(axis=-1)
    colour, alpha = a[..., :-1].max(axis=-1), a[..., -1]
    return alpha if _constant(colour) and not _constant(alpha) else colour


def _half_range(plane: np.ndarray):
    """The binarisation threshold: half the range of the mask's dtype.

    8-bit 128; 16-bit (and Pillow's 32-bit ``I``, which is how some Pillow versions
    read 16-bit PNGs) 32768; float 0.5 when its values lie in [0, 1], else 128.
    """
    if plane.dtype == np.uint8:
        return 128
    if np.issubdtype(plane.dtype, np.integer):
        return 32768
    return 0.5 if plane.max(initial=0) <= 1.0 else 128.0


def load_mask(path, label_map: bool = False) -> np.ndarray:
    """Read a ground-truth mask as ``(H, W)`` bool under the one mask policy of this package.

    ``label_map=True`` is for a raw dataset whose masks are documented as label maps
    (VisA: 0 background, small positive ids for defects): there every non-zero value is
    anomalous. The preparation helpers use it once, when they write the 0/255 masks that
    everything else reads with the default policy below.

    * boolean (mode ``1``) masks are taken as they are;
    * a mask whose values are only 0 and 1 is a 0/1 mask (1 = anomalous);
    * otherwise a pixel is anomalous when its value is at least half the range of the
      dtype: 8-bit >= 128, 16-bit >= 32768. So a JPEG-saved or anti-aliased mask whose
      background is 2 (not 0) and whose defect is a noisy 255 gives the defect's area,
      not the whole image;
    * colour (RGB / RGBA / LA, palette converted) masks use the max over the colour
      channels, or the alpha channel when the colour channels are blank but alpha is
      not (a defect painted only in alpha).

    Why not "any non-zero pixel": a background of 2 would mark 100 % of the image and
    alpha-only masks would mark nothing, both silently. An empty or huge mask is not an
    error here (a good image's mask may be empty); :class:`AnomalyDataset` warns about
    those on defect images.
    """
    img = _open_decoded(path)
    plane = _mask_plane(img)
    if plane.dtype == bool:
        return plane.copy()
    if label_map:
        return plane != 0
    if ((plane == 0) | (plane == 1)).all():
        return plane == 1
    return plane >= _half_range(plane)


@dataclass(frozen=True)
class Sample:
    """One image of a split: its path, its mask path (None for good images), label (0/1) and type folder."""

    image: Path
    mask: Path | None
    label: int
    defect_type: str


def is_image_file(path: Path) -> bool:
    """A file the loaders read as an image: not hidden (e.g. macOS ``._x.png``), one of ``IMAGE_EXTENSIONS``."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


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

    Masks follow :func:`load_mask`'s policy. A defect image whose mask is empty or marks
    more than half of the image gets a :class:`MaskWarning` naming the mask and the
    image, once per file and dataset. The check runs when the item is loaded, not at
    construction: the mask is decoded then anyway, so it costs nothing, and construction
    stays a folder scan; every mask that reaches a model is checked before it is used.
    (With DataLoader workers each worker process warns for the files it loads.)
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
        self._mask_warned: set[Path] = set()

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

    def _check_defect_mask(self, s: Sample, m: np.ndarray) -> None:
        """Warn once per file when a defect image's native-size mask is empty or covers most of it."""
        if s.mask in self._mask_warned:
            return
        fraction = float(m.mean()) if m.size else 0.0
        if fraction == 0:
            problem = ("is empty: no pixel reaches half the value range (>= 128 for 8-bit), so this "
                       "defect image has no anomalous pixel")
        elif fraction > MASK_WARN_FRACTION:
            problem = (f"marks {fraction:.0%} of the image anomalous (more than "
                       f"{MASK_WARN_FRACTION:.0%}): an inverted mask, or a background that is not dark?")
        else:
            return
        self._mask_warned.add(s.mask)
        warnings.warn(f"mask {s.mask} of defect image {s.image} {problem}", MaskWarning, stacklevel=3)

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
            self._check_defect_mask(s, m)
            mask = self._resize(torch.from_numpy(m).float()[None], InterpolationMode.NEAREST_EXACT)
        return image, mask, s.label, str(s.image)
