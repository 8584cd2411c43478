"""A "real-looking" synthetic MVTec-layout category: wood-like texture, thin / multi-region defects.

The toy data (:mod:`cutswap_lib.data.toy`) draws flat backgrounds and compact, high-contrast
defects, on which SemiREST's semi-supervised setting looks fine; issue #15 saw it collapse on
real photographs. This generator makes a harder, closer-to-real case with numpy / PIL / scipy
only, seeded and deterministic:

* background: wood-like grain (sinusoidal rings warped by smooth noise), multi-scale smooth
  noise, a per-image colour, lighting gradient and vignetting, and sensor noise; every image
  differs (no object: a texture category);
* ``crack``: one to three branching cracks, 1-3 px wide, 50-75 % darker than the wood;
* ``stain``: three to seven small, separated, irregular blobs (radius 4-12 px), some faint
  (contrast down to ~20 %), darker or lighter;
* masks are exact: a pixel is in the mask iff the defect changed it (binary 0 / 255 PNG).

``--background elpv`` keeps the defects and replaces the wood by real photographs: normal
(defect probability 0) electroluminescence cells of the elpv dataset
(:mod:`cutswap_lib.data.elpv`, installed from PyPI), one module type, drawn at random without
repetition and resized to ``--size``. The images are gray, so the stains darken or lighten
without a tint. Unlike :func:`cutswap_lib.data.elpv.write_elpv_mvtec` (the real defective cells,
placeholder masks), every mask here is exact, so the pixel-level metrics mean something; the
defects are drawn, not real. The cells' licence is CC BY-NC-SA 4.0 (``ELPV_LICENCE``).

Layout (see :class:`cutswap_lib.data.folder.AnomalyDataset`)::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/{crack,stain}/000.png
    <root>/<category>/ground_truth/{crack,stain}/000_mask.png

Run::

    .venv/bin/python tools/make_hard_toy.py --root /tmp/hard_toy --category hardwood

    .venv/bin/python tools/make_hard_toy.py --root /tmp/elpv_drawn --category elpv_cracks --background elpv

then e.g. ``python -m cutswap_lib semirest-table --small --dataset mvtec --data-root /tmp/hard_toy
--categories hardwood``. The category name must not be one of MVTec AD's object categories
(those get Otsu's foreground for the synthetic anomalies); any other name is read as a texture.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

SIZE = 224
DEFECTS = ("crack", "stain")
BACKGROUNDS = ("wood", "elpv")


# ----------------------------------------------------------------------------- background
def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """White noise blurred by a Gaussian of ``sigma`` px, scaled to zero mean, unit std: (size, size)."""
    a = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (a - a.mean()) / (a.std() + 1e-8)


def wood_background(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A wood-like RGB image in [0, 1]: (size, size, 3), float64; different for every ``rng`` state."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(-0.12, 0.12)  # grain along y, as one board type photographed the same way
    u = np.cos(angle) * xx + np.sin(angle) * yy  # across the grain
    warp = 9.0 * smooth_noise(rng, size, 18) + 3.0 * smooth_noise(rng, size, 6)
    period = rng.uniform(9.0, 12.0)
    rings = np.sin(2 * np.pi * (u + warp) / period)
    rings = np.sign(rings) * np.abs(rings) ** 0.6  # sharper late-wood lines
    fibres = smooth_noise(rng, size, 1.0)  # fine grain
    blotch = smooth_noise(rng, size, 25)  # large colour variation
    lum = 0.55 + 0.05 * rings + 0.025 * fibres + 0.05 * blotch  # (H, W)
    # lighting: a random linear gradient and a vignette
    gx, gy = rng.uniform(-1, 1, size=2)
    lum *= 1.0 + 0.15 * (gx * (xx / size - 0.5) + gy * (yy / size - 0.5))
    r2 = ((xx - size * rng.uniform(0.3, 0.7)) ** 2 + (yy - size * rng.uniform(0.3, 0.7)) ** 2) / size ** 2
    lum *= 1.0 - rng.uniform(0.1, 0.3) * r2
    base = np.array([0.78, 0.55, 0.33]) * rng.uniform(0.85, 1.15, size=3)  # brownish, per image
    img = lum[..., None] * base[None, None, :] / 0.55  # (H, W, 3)
    img += 0.012 * rng.standard_normal(img.shape)  # sensor noise
    return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- defects
def crack_mask(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One to three branching random-walk cracks, 1-3 px wide: boolean (size, size)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    margin = 24

    def walk(x, y, heading, length, width, depth):
        step = 3.0
        for _ in range(int(length / step)):
            heading += rng.normal(0, 0.25)
            nx, ny = x + step * np.cos(heading), y + step * np.sin(heading)
            if not (2 <= nx < size - 2 and 2 <= ny < size - 2):
                return
            draw.line([(x, y), (nx, ny)], fill=255, width=width)
            if depth < 2 and rng.random() < 0.05:  # a branch, thinner
                walk(nx, ny, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), rng.uniform(15, 45),
                     max(1, width - 1), depth + 1)
            x, y = nx, ny

    for _ in range(rng.integers(1, 4)):
        x, y = rng.uniform(margin, size - margin, size=2)
        walk(x, y, rng.uniform(0, 2 * np.pi), rng.uniform(35, 110), int(rng.integers(1, 4)), 0)
    return np.asarray(canvas) > 0


def stain_masks(rng: np.random.Generator, size: int = SIZE) -> list[np.ndarray]:
    """Three to seven separated irregular blobs (radius 4-12 px): a list of boolean (size, size) masks."""
    yy, xx = np.mgrid[0:size, 0:size]
    blobs, taken = [], np.zeros((size, size), bool)
    edge = smooth_noise(rng, size, 2.0)  # one noise field makes the outlines irregular
    for _ in range(200):
        if len(blobs) >= rng.integers(3, 8):
            break
        cx, cy = rng.uniform(16, size - 16, size=2)
        radius = rng.uniform(4.0, 12.0)
        d = np.hypot(xx - cx, yy - cy) / radius
        blob = d + 0.35 * edge < 1.0
        blob = ndimage.binary_opening(blob) if blob.sum() > 12 else blob
        if blob.sum() < 4 or (ndimage.binary_dilation(blob, iterations=6) & taken).any():
            continue  # too small, or touching another blob: keep the regions separate
        labels, n = ndimage.label(blob)
        if n > 1:  # keep the largest piece, one region per blob
            blob = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
        blobs.append(blob)
        taken |= blob
    return blobs


def add_crack(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Darken one to three cracks (:func:`crack_mask`) by 50-75 % x ``strength``; (image, mask)."""
    mask = crack_mask(rng, img.shape[0])
    depth = strength * rng.uniform(0.5, 0.75)
    out = img.copy()
    out[mask] *= np.clip(1.0 - depth * rng.uniform(0.85, 1.0, size=(int(mask.sum()), 1)), 0.0, 1.0)
    return out, mask


def add_stains(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
               gray: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tint :func:`stain_masks`' blobs, faint (20-30 %) or visible (45-65 %) x ``strength``; (image, mask).

    ``gray``: no colour tint (the same change on the three channels), for gray photographs.
    """
    out, mask = img.copy(), np.zeros(img.shape[:2], bool)
    for blob in stain_masks(rng, img.shape[0]):
        contrast = strength * rng.choice([rng.uniform(0.2, 0.3), rng.uniform(0.45, 0.65)])  # faint or visible
        sign = -1.0 if rng.random() < 0.7 else 1.0
        tint = np.array([1.0, 0.9, 0.75]) if rng.random() < 0.5 else np.array([0.7, 0.8, 1.0])  # oil / water
        if gray:
            tint = np.ones(3)
        out[blob] = np.clip(out[blob] * (1.0 + sign * contrast * tint), 0.0, 1.0)
        mask |= blob
    changed = np.abs(out - img).max(axis=-1) > 0  # exact: only pixels the stain changed
    return out, mask & changed


# ----------------------------------------------------------------------------- writing
def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), mode="RGB").save(path)


def elpv_backgrounds(n: int, size: int, seed: int, cell_type: str = "mono"):
    """``n`` distinct normal elpv cells (probability 0) of ``cell_type``, in a seeded random order,
    resized to ``size``: a generator of RGB arrays (size, size, 3) in [0, 1], float64, gray.

    Raises ``ValueError`` (from :func:`~cutswap_lib.data.elpv.elpv_split`) when the type has fewer
    than ``n`` normal cells, and ``DatasetError`` when the package is not installed.
    """
    from cutswap_lib.data.elpv import elpv_split, load_elpv

    rows = elpv_split(n, 0, 0, cell_type=cell_type, seed=seed).train  # (n,), sorted
    rows = rows[torch.from_numpy(np.random.default_rng(seed).permutation(n))]
    for start in range(0, n, 32):  # a few cells at a time: 300 px cells, never all in memory
        for cell in load_elpv(rows[start:start + 32], image_size=size).images:  # (3, S, S)
            yield cell.permute(1, 2, 0).double().numpy()


def make_category(root: Path, category: str, n_train: int = 60, n_test_good: int = 20, n_defect: int = 20,
                  seed: int = 0, size: int = SIZE, strength: float = 1.0, background: str = "wood") -> Path:
    """Write the category under ``root/category`` (replacing it); returns its folder.

    ``strength`` scales the defects' contrast (1.0: the default ranges; smaller is fainter).
    ``background``: ``"wood"`` (:func:`wood_background`) or ``"elpv"`` (:func:`elpv_backgrounds`,
    real solar-cell photographs; gray stains).
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    rng = np.random.default_rng(seed)
    if background == "elpv":
        images = elpv_backgrounds(n_train + n_test_good + n_defect, size, seed)  # before anything is removed
    else:
        images = (wood_background(rng, size) for _ in range(n_train + n_test_good + n_defect))
    folder = Path(root) / category
    if folder.exists():
        shutil.rmtree(folder)
    for i in range(n_train):
        _save(next(images), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        _save(next(images), folder / "test" / "good" / f"{i:03d}.png")
    adders = {"crack": add_crack, "stain": partial(add_stains, gray=background == "elpv")}
    for k in range(n_defect):
        defect = DEFECTS[k % len(DEFECTS)]
        i = k // len(DEFECTS)
        img, mask = adders[defect](next(images), rng, strength)
        if not mask.any():
            raise RuntimeError(f"empty {defect} mask at image {i}: change the seed")
        _save(img, folder / "test" / defect / f"{i:03d}.png")
        mpath = folder / "ground_truth" / defect / f"{i:03d}_mask.png"
        mpath.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(mpath)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="folder to write the category into")
    p.add_argument("--category", default="hardwood", help="folder name (not an MVTec AD object name)")
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test-good", type=int, default=20)
    p.add_argument("--n-defect", type=int, default=20, help="defective test images, alternating crack / stain")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--strength", type=float, default=1.0, help="scale of the defects' contrast")
    p.add_argument("--background", choices=BACKGROUNDS, default="wood",
                   help="wood: drawn grain; elpv: real normal solar cells (mono) from the elpv package")
    args = p.parse_args(argv)
    try:
        folder = make_category(args.root, args.category, args.n_train, args.n_test_good, args.n_defect, args.seed,
                               args.size, args.strength, args.background)
    except (ValueError, RuntimeError, OSError) as err:  # DatasetError is a ValueError
        print(f"make_hard_toy: {err}", file=sys.stderr)
        return 2
    print(f"wrote {folder}: {args.n_train} train, {args.n_test_good} good test, {args.n_defect} defective test "
          f"({', '.join(DEFECTS)}) on {args.background}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
