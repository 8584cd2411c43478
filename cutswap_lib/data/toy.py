"""The toy inspection dataset: procedural, deterministic, in MVTec AD layout, generated in seconds.

Three categories (see :mod:`cutswap_lib.data.toy_scenes` for the drawings):

* ``fabric`` – a texture: two-tone plain weave; defects ``cut``, ``hole``, ``misweave``, ``stain``;
* ``disc``   – an object on a plain backdrop: a turned metal disc with bolt holes; defects
  ``chip``, ``missing_hole``, ``scratch``, ``stain``;
* ``board``  – several parts: a circuit board; defects ``missing``, ``misplaced``, ``scratch``, ``stain``.

Normal samples vary (position, small rotation, colour, lighting, sensor noise), so the
task is not trivial, while every defect stays visible. A mask is *exactly* the set of
pixels the defect changed: each defective sample is rendered twice from the same
generators, with and without its defect, and the mask is where the two 8-bit images
differ. Each image also gets its object footprint in ``foreground/``.

Layout written under ``root/<category>/``::

    train/good/000.png ...             n_train normal images
    test/good/000.png ...              n_test_good normal images
    test/<defect>/000.png ...          n_test_defect images per defect kind
    ground_truth/<defect>/000_mask.png 0/255 masks
    foreground/<split>/<type>/000.png  0/255 footprints of every image above
    toy_meta.json                      the generation parameters

Same seed, same bytes (numpy ``default_rng`` keyed by seed, category, folder and
index; PNGs written by PIL with fixed options and no metadata).

Regeneration replaces only the generator's own files (the list above); anything else a
user keeps in the category folder (``boxes.json`` from notebook 06, notes, extra
folders) is left byte-identical. See :func:`make_toy_dataset`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import toy_draw
from ..files import atomic_write_text
from .errors import DatasetError
from .toy_scenes import SCENES

TOY_CATEGORIES = ("fabric", "disc", "board")
TOY_DEFECTS: dict[str, tuple[str, ...]] = {c: SCENES[c].defects for c in TOY_CATEGORIES}
GENERATOR_VERSION = 1
META_NAME = "toy_meta.json"
_STREAM_SCENE, _STREAM_LIGHT, _STREAM_NOISE, _STREAM_DEFECT = range(4)
_MAX_ATTEMPTS = 10
_NOISE_SIGMA = 0.012  # sensor noise, in [0, 1] intensity units (about 3 grey levels)
_IMAGE_NAME = re.compile(r"\d{3,}\.png")       # what _names() + ".png" produces, any width
_MASK_NAME = re.compile(r"\d{3,}_mask\.png")
_KIND_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a defect folder name read back from toy_meta.json
_INCOMPLETE = "incomplete"  # toy_meta.json "state" while a regeneration is being moved into place


@dataclass(frozen=True)
class ToySample:
    """One rendered sample: ``image`` ``(S, S, 3)`` uint8, ``mask`` and ``foreground`` ``(S, S)`` bool."""

    image: np.ndarray
    mask: np.ndarray
    foreground: np.ndarray


def _rng(seed: int, category: str, group: str, index: int, stream: int, attempt: int = 0):
    key = [seed, zlib.crc32(category.encode()), zlib.crc32(group.encode()), index, stream, attempt]
    return np.random.default_rng(key)


def _light_and_noise(albedo: np.ndarray, rng_light, rng_noise) -> np.ndarray:
    """Gain, white balance, a lighting gradient and Gaussian sensor noise; ``(S,S,3)`` float → uint8."""
    size = albedo.shape[0]
    y, x = toy_draw.grid(size)
    gain = rng_light.uniform(0.93, 1.07) * (1 + rng_light.uniform(-0.02, 0.02, 3))
    amp, phi = rng_light.uniform(0, 0.08), rng_light.uniform(0, 2 * np.pi)
    ramp = 1 + np.float32(amp) * (x * np.float32(np.cos(phi)) + y * np.float32(np.sin(phi)))  # (S, S)
    img = albedo * ramp[..., None] * gain.astype(np.float32)
    img += rng_noise.normal(0, _NOISE_SIGMA, img.shape).astype(np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _render(category: str, group: str, index: int, defect: str | None, size: int, seed: int,
            attempt: int) -> tuple[np.ndarray, np.ndarray]:
    """One 8-bit image ``(S,S,3)`` and its foreground ``(S,S)``, with ``defect`` drawn in (or None)."""
    scene = SCENES[category]
    params = scene.sample(_rng(seed, category, group, index, _STREAM_SCENE))
    rng_defect = _rng(seed, category, group, index, _STREAM_DEFECT, attempt)
    if defect in scene.structural:
        params = scene.structural[defect](params, rng_defect)
    albedo, fg = scene.raster(params, size)
    if defect in scene.surface:
        scene.surface[defect](albedo, fg, rng_defect, size)
    image = _light_and_noise(albedo, _rng(seed, category, group, index, _STREAM_LIGHT),
                             _rng(seed, category, group, index, _STREAM_NOISE))
    return image, fg


def _check_category(category: str) -> None:
    if category not in TOY_CATEGORIES:
        raise ValueError(f"unknown toy category {category!r}; choose one of {TOY_CATEGORIES}")


def render_toy_sample(category: str, group: str, index: int, *, defect: str | None = None,
                      image_size: int = 128, seed: int = 0) -> ToySample:
    """Render sample ``index`` of folder ``group`` (e.g. ``"train/good"``, ``"test/scratch"``) in memory.

    ``defect=None`` gives the clean version of the same scene (same pose, lighting and
    noise), which is how masks are computed: ``mask = (with_defect != clean).any(-1)``.
    A defect whose change is too small to see (under ``max(6, 0.15% of S^2)`` pixels) is
    redrawn from the next defect generator, so every mask is non-empty.
    Returns a :class:`ToySample` (image ``(S,S,3)`` uint8, mask and foreground ``(S,S)`` bool).
    """
    _check_category(category)
    if defect is not None and defect not in TOY_DEFECTS[category]:
        raise ValueError(f"unknown defect {defect!r} for toy {category!r}; "
                         f"choose one of {TOY_DEFECTS[category]}")
    clean, fg = _render(category, group, index, None, image_size, seed, 0)
    if defect is None:
        return ToySample(clean, np.zeros(fg.shape, dtype=bool), fg)
    min_area = max(6, int(0.0015 * image_size * image_size))
    for attempt in range(_MAX_ATTEMPTS):
        image, fg = _render(category, group, index, defect, image_size, seed, attempt)
        mask = (image != clean).any(axis=-1)
        if mask.sum() >= min_area:
            return ToySample(image, mask, fg)
    raise RuntimeError(f"toy {category}/{group}/{index}: defect {defect!r} changed too few pixels "
                       f"in {_MAX_ATTEMPTS} attempts (image_size {image_size} too small?)")


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write ``(S,S,3)`` uint8 RGB or ``(S,S)`` bool (as 0/255 grey) with fixed PNG options."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _params(category, n_train, n_test_good, n_test_defect, image_size, seed) -> dict:
    for name, value, low in (("n_train", n_train, 1), ("n_test_good", n_test_good, 0),
                             ("n_test_defect", n_test_defect, 0), ("image_size", image_size, 32),
                             ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return {"generator": "cutswap_lib.data.toy", "version": GENERATOR_VERSION, "category": category,
            "n_train": int(n_train), "n_test_good": int(n_test_good),
            "n_test_defect": int(n_test_defect), "image_size": int(image_size), "seed": int(seed)}


def _groups(params: dict) -> list[tuple[str, str, int, str | None]]:
    """(split, type, count, defect) for every image folder of a toy category."""
    groups = [("train", "good", params["n_train"], None), ("test", "good", params["n_test_good"], None)]
    groups += [("test", defect, params["n_test_defect"], defect) for defect in TOY_DEFECTS[params["category"]]]
    return groups


def _names(count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"{i:0{width}d}" for i in range(count)]


def _write_category(target: Path, params: dict) -> None:
    size, seed, category = params["image_size"], params["seed"], params["category"]
    for split, kind, count, defect in _groups(params):
        for index, name in enumerate(_names(count)):
            sample = render_toy_sample(category, f"{split}/{kind}", index, defect=defect,
                                       image_size=size, seed=seed)
            _save_png(sample.image, target / split / kind / f"{name}.png")
            _save_png(sample.foreground, target / "foreground" / split / kind / f"{name}.png")
            if defect is not None:
                _save_png(sample.mask, target / "ground_truth" / kind / f"{name}_mask.png")
    meta = {**params, "defect_types": list(TOY_DEFECTS[category]), "layout": "MVTec AD",
            "foreground": "foreground/<split>/<type>/<name>.png"}
    (target / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _read_meta(target: Path) -> dict | None:
    """The parsed ``toy_meta.json`` of ``target``, or None when it is missing, unreadable or not an object."""
    try:
        meta = json.loads((target / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _owned_folders(category: str, defects) -> list[tuple[str, re.Pattern]]:
    """Every folder the generator writes into for ``category`` with ``defects``, and its file-name pattern."""
    folders = []
    for split, kinds in (("train", ["good"]), ("test", ["good", *defects])):
        for kind in kinds:
            folders += [(f"{split}/{kind}", _IMAGE_NAME), (f"foreground/{split}/{kind}", _IMAGE_NAME)]
    folders += [(f"ground_truth/{defect}", _MASK_NAME) for defect in defects]
    return folders


def _stale_files(target: Path, folders, keep: set[str]) -> list[Path]:
    """Files named like the generator's in its ``folders`` of ``target`` that are not in ``keep``."""
    stale = []
    for rel, pattern in folders:
        folder = target / rel
        if folder.is_dir() and not folder.is_symlink():
            stale += [p for p in sorted(folder.iterdir())
                      if p.is_file() and pattern.fullmatch(p.name) and f"{rel}/{p.name}" not in keep]
    return stale


def _remove_empty_folders(target: Path, folders: list[str]) -> None:
    """Remove the generator's ``folders`` (and their parents in ``target``) that are left empty."""
    candidates = {Path(rel) for rel in folders}
    candidates |= {parent for rel in list(candidates) for parent in rel.parents if parent != Path(".")}
    for rel in sorted(candidates, key=lambda r: len(r.parts), reverse=True):
        folder = target / rel
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()


def _swap_in(tmp: Path, target: Path, category: str) -> None:
    """Move the fresh generation in ``tmp`` over the toy folder ``target``, touching only generator files.

    1. ``toy_meta.json`` is replaced by an *incomplete* marker first: from then until
       step 4 the folder is still recognised as a toy folder (so a rerun may repair it)
       but never as complete (the marker records no parameters);
    2. each generated file is moved into place with ``os.replace`` (same file system:
       ``tmp`` is a sibling of ``target``);
    3. stale generator files are deleted: only names of the generator's own patterns
       (``000.png``, ``000_mask.png``) inside the generator's own folders, for the
       defect kinds of both the old and the new metadata; folders of old defect kinds
       that end up empty are removed;
    4. the new ``toy_meta.json`` is moved in last: the commit point.
    """
    old = _read_meta(target) or {}
    old_defects = [d for d in old.get("defect_types") or [] if isinstance(d, str) and _KIND_NAME.fullmatch(d)]
    defects = list(dict.fromkeys([*old_defects, *TOY_DEFECTS[category]]))
    marker = {"generator": "cutswap_lib.data.toy", "category": category, "state": _INCOMPLETE,
              "defect_types": defects}
    atomic_write_text(target / META_NAME, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    new_files = sorted(rel for rel in (p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
                       if rel != META_NAME)
    for rel in new_files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target / rel)
    folders = _owned_folders(category, defects)
    for path in _stale_files(target, folders, set(new_files)):
        path.unlink()
    _remove_empty_folders(target, [rel for rel, _ in folders])
    os.replace(tmp / META_NAME, target / META_NAME)


def make_toy_dataset(root, category: str, *, n_train: int = 60, n_test_good: int = 20,
                     n_test_defect: int = 10, image_size: int = 128, seed: int = 0) -> Path:
    """Generate toy ``category`` under ``root/category/`` (MVTec layout, see module doc); returns that folder.

    ``n_test_defect`` counts images *per defect kind*. A non-toy folder (no
    ``toy_meta.json``) is never touched: DatasetError. Writing goes to a temporary
    sibling folder first, so an interrupted run never leaves a folder that looks complete.
    A new folder is then renamed into place in one step. An existing toy folder is
    updated file by file (see :func:`_swap_in`): only the generator's own files (images,
    masks, foregrounds, ``toy_meta.json``) are replaced or, when the new parameters make
    fewer of them, deleted; anything else there (``boxes.json`` saved by notebook 06,
    notes, a user's own folder) is kept byte-identical, because users are told to keep
    such files next to the dataset and a profile change must not destroy their work.
    The generator's files end up byte-identical to a fresh generation. About a second
    per category at 128 px with the defaults.
    """
    _check_category(category)
    params = _params(category, n_train, n_test_good, n_test_defect, image_size, seed)
    root = Path(root)
    target = root / category
    if target.exists() and _read_meta(target) is None:
        raise DatasetError(f"{target} exists and is not a toy dataset (no {META_NAME}); "
                           f"refusing to overwrite it: move it away or pick another root")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{category}-", dir=root))
    try:
        _write_category(tmp, params)
        if target.exists():
            _swap_in(tmp, target, category)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(target: Path, params: dict) -> bool:
    """True when ``target`` holds a toy dataset made with ``params`` and none of its images is gone."""
    meta = _read_meta(target)
    if meta is None or meta.get("state") == _INCOMPLETE or {k: meta.get(k) for k in params} != params:
        return False
    return all((target / split / kind / f"{name}.png").is_file()
               for split, kind, count, _ in _groups(params) for name in _names(count))


def ensure_toy_dataset(root, category: str, *, n_train: int = 60, n_test_good: int = 20,
                       n_test_defect: int = 10, image_size: int = 128, seed: int = 0) -> Path:
    """Return ``root/category``, generating it only when absent, incomplete or made with other parameters.

    Regenerating keeps every file that is not the generator's (see :func:`make_toy_dataset`).
    """
    _check_category(category)
    params = _params(category, n_train, n_test_good, n_test_defect, image_size, seed)
    target = Path(root) / category
    if _complete(target, params):
        return target
    return make_toy_dataset(root, category, n_train=n_train, n_test_good=n_test_good,
                            n_test_defect=n_test_defect, image_size=image_size, seed=seed)


def toy_foreground_path(image_path) -> Path:
    """Map ``<root>/<category>/<split>/<type>/<name>.png`` to ``<root>/<category>/foreground/<split>/<type>/<name>.png``.

    The footprint is the object (disc, board) or the whole image (fabric), 0/255 PNG.
    """
    path = Path(image_path)
    if len(path.parts) < 4 or path.parent.parent.name not in ("train", "test"):
        raise DatasetError(f"{path} is not an image of a toy dataset in MVTec layout "
                           f"(expected <root>/<category>/<train|test>/<type>/<name>.png)")
    return path.parents[2] / "foreground" / path.parent.parent.name / path.parent.name / path.name
