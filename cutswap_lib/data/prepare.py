"""Convert VisA, BTAD and KolektorSDD2 from their published layouts to MVTec layout.

Every function writes ``out_root/<category>/{train/good, test/good, test/<defect>,
ground_truth/<defect>/<stem>_mask.png}`` with 0/255 PNG masks, copies images
unchanged, can be re-run (it overwrites), and raises :class:`DatasetError` naming
the offending file when the input does not look as expected.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import DatasetError
from .folder import IMAGE_EXTENSIONS, MASK_SUFFIX, load_mask

VISA_COLUMNS = ("object", "split", "label", "image", "mask")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _write_mask(mask: np.ndarray, dst: Path) -> None:
    """Save a ``(H, W)`` bool mask as a 0/255 grey PNG."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(dst, format="PNG")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


# ------------------------------------------------------------------------------------ VisA

def prepare_visa(visa_root, split_csv, out_root) -> Path:
    """VisA → MVTec layout following a split CSV (the publisher's ``split_csv/1cls.csv``); returns ``out_root``.

    CSV columns ``object, split, label, image, mask``: ``label`` is ``normal`` or
    ``anomaly``, ``image`` / ``mask`` are paths relative to ``visa_root``. Normal images
    go to ``<object>/<split>/good``, anomalous ones to ``<object>/<split>/bad`` with
    ``ground_truth/bad/<stem>_mask.png`` (VisA masks: non-zero = anomalous → 0/255).
    """
    visa_root, split_csv, out_root = Path(visa_root), Path(split_csv), Path(out_root)
    if not split_csv.is_file():
        raise DatasetError(f"VisA split file not found: {split_csv}")
    with split_csv.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in VISA_COLUMNS if c not in header]
        if missing:
            raise DatasetError(f"{split_csv}: columns {missing} missing (found {header}; expected {VISA_COLUMNS})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    for line, row in enumerate(tqdm(rows, desc="VisA -> MVTec layout", unit="image"), start=2):
        split, label = row["split"].lower(), row["label"].lower()
        if split not in ("train", "test") or label not in ("normal", "anomaly"):
            raise DatasetError(f"{split_csv}:{line}: split {row['split']!r} / label {row['label']!r} not "
                               f"understood (expected train|test and normal|anomaly)")
        src = visa_root / row["image"]
        if not src.is_file():
            raise DatasetError(f"{split_csv}:{line}: image {src} not found")
        kind = "good" if label == "normal" else "bad"
        category = out_root / row["object"]
        _copy(src, category / split / kind / src.name)
        if kind == "bad":
            mask_src = visa_root / row["mask"] if row["mask"] else None
            if mask_src is None or not mask_src.is_file():
                raise DatasetError(f"{split_csv}:{line}: mask {mask_src or '(empty column)'} for anomalous "
                                   f"image {src} not found")
            _write_mask(load_mask(mask_src), category / "ground_truth" / kind / f"{src.stem}{MASK_SUFFIX}")
    return out_root


# ------------------------------------------------------------------------------------ BTAD

def _btad_root(raw_root: Path) -> Path:
    inner = raw_root / "BTech_Dataset_transformed"  # the folder inside btad.zip
    return inner if inner.is_dir() else raw_root


def prepare_btad(raw_root, out_root) -> Path:
    """BTAD → MVTec layout; returns ``out_root``.

    Reads ``01/``, ``02/``, ``03/`` (directly under ``raw_root`` or under its
    ``BTech_Dataset_transformed/``), each with ``train/ok``, ``test/ok``, ``test/ko`` and
    ``ground_truth/ko/<stem>.png|.bmp``. Writes ``train/good``, ``test/good``, ``test/ko``
    and ``ground_truth/ko/<stem>_mask.png`` (0/255).
    """
    raw, out_root = _btad_root(Path(raw_root)), Path(out_root)
    categories = sorted(p for p in raw.iterdir() if p.is_dir() and (p / "train").is_dir()) if raw.is_dir() else []
    if not categories:
        raise DatasetError(f"no BTAD category folders (01/, 02/, 03/ holding train/ and test/) under {raw_root}")
    for cat in categories:
        for src_rel, dst_rel in (("train/ok", "train/good"), ("test/ok", "test/good"), ("test/ko", "test/ko")):
            folder = cat / src_rel
            if not folder.is_dir():
                raise DatasetError(f"BTAD folder missing: {folder}")
            for image in tqdm(_images(folder), desc=f"BTAD {cat.name} {src_rel}", unit="image"):
                _copy(image, out_root / cat.name / dst_rel / image.name)
                if src_rel == "test/ko":
                    candidates = [cat / "ground_truth" / "ko" / f"{image.stem}{ext}" for ext in (".png", ".bmp")]
                    found = [c for c in candidates if c.is_file()]
                    if not found:
                        raise DatasetError(f"BTAD mask for {image} not found (looked for "
                                           f"{', '.join(str(c) for c in candidates)})")
                    _write_mask(load_mask(found[0]),
                                out_root / cat.name / "ground_truth" / "ko" / f"{image.stem}{MASK_SUFFIX}")
    return out_root


# ------------------------------------------------------------------------------------ KolektorSDD2

def _ksdd2_root(raw_root: Path) -> Path:
    if (raw_root / "train").is_dir() and (raw_root / "test").is_dir():
        return raw_root
    inner = [p for p in raw_root.iterdir() if p.is_dir() and (p / "train").is_dir()] if raw_root.is_dir() else []
    if len(inner) == 1:
        return inner[0]
    raise DatasetError(f"KolektorSDD2 train/ and test/ folders not found under {raw_root}")


def prepare_ksdd2(raw_root, out_root) -> Path:
    """KolektorSDD2 → one MVTec-layout category ``ksdd2`` under ``out_root``; returns ``out_root``.

    ``train/`` and ``test/`` hold ``N.png`` with ``N_GT.png``; an all-zero GT means a good
    image. Writes good images to ``ksdd2/<split>/good``, test positives to
    ``ksdd2/test/defect`` and train positives to ``ksdd2/train_defect/defect`` (named
    ``train_N``, so their masks never collide with test masks), masks to
    ``ksdd2/ground_truth/defect/<stem>_mask.png``. The duplicate files the publisher
    ships with ``(copy)`` in their names are skipped.
    """
    raw, out = _ksdd2_root(Path(raw_root)), Path(out_root) / "ksdd2"
    for split in ("train", "test"):
        images = [p for p in _images(raw / split) if not p.stem.endswith("_GT") and "(copy)" not in p.stem]
        for image in tqdm(images, desc=f"KSDD2 {split}", unit="image"):
            gt = raw / split / f"{image.stem}_GT.png"
            if not gt.is_file():
                raise DatasetError(f"KolektorSDD2 ground truth {gt} for image {image} not found")
            mask = load_mask(gt)
            if not mask.any():
                _copy(image, out / split / "good" / image.name)
                continue
            stem = image.stem if split == "test" else f"train_{image.stem}"
            folder = "test" if split == "test" else "train_defect"
            _copy(image, out / folder / "defect" / f"{stem}{image.suffix}")
            _write_mask(mask, out / "ground_truth" / "defect" / f"{stem}{MASK_SUFFIX}")
    return Path(out_root)
