"""Convert VisA, BTAD and KolektorSDD2 from their published layouts to MVTec layout.

Every function writes ``out_root/<category>/{train/good, test/good, test/<defect>,
ground_truth/<defect>/<stem>_mask.png}`` with 0/255 PNG masks, copies images
unchanged, can be re-run (it overwrites), and raises :class:`DatasetError` naming
the offending file when the input does not look as expected.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .errors import DatasetError
from .folder import MASK_SUFFIX, is_image_file, load_mask

VISA_COLUMNS = ("object", "split", "label", "image", "mask")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _write_mask(mask: np.ndarray, dst: Path) -> None:
    """Save a ``(H, W)`` bool mask as a 0/255 grey PNG."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(dst, format="PNG")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _inside(path: Path, root: Path, where: str) -> Path:
    """``path``, refused unless it resolves (links followed) to a place inside ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: {path} resolves to {resolved}, outside {root}; refusing to use it")
    return path


def _write_jobs(jobs: list[tuple], src_root: Path, out_root: Path, desc: str, label_map: bool = False) -> None:
    """Check that every ``(src, dst, mask_src, mask_dst)`` stays inside its root, then copy the
    images and write the 0/255 masks (``mask_src=None``: no mask). Nothing is written unless all pass.

    ``label_map``: the raw masks are label maps (every non-zero value anomalous, VisA's convention);
    otherwise :func:`load_mask`'s policy reads them."""
    for src, dst, mask_src, mask_dst in jobs:
        _inside(src, src_root, "source image")
        _inside(dst, out_root, "destination")
        if mask_src is not None:
            _inside(mask_src, src_root, "source mask")
            _inside(mask_dst, out_root, "destination")
    for src, dst, mask_src, mask_dst in tqdm(jobs, desc=desc, unit="image"):
        _copy(src, dst)
        if mask_src is not None:
            _write_mask(load_mask(mask_src, label_map=label_map), mask_dst)


# ------------------------------------------------------------------------------------ VisA

def _csv_name(where: str, value: str) -> str:
    """A CSV cell used as one folder name: non-empty, no path separators, not ``.`` or ``..``."""
    if not value or value in (".", "..") or "/" in value or "\\" in value:
        raise DatasetError(f"{where}: {value!r} is not a plain folder name")
    return value


def _csv_path(where: str, value: str, root: Path) -> Path:
    """``root/value`` for a CSV cell; refused when empty, absolute, with ``..`` or resolving outside ``root``."""
    posix = value.replace("\\", "/")
    if not value:
        raise DatasetError(f"{where} is empty")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise DatasetError(f"{where}: {value!r} is an absolute path; it must be relative to {root}")
    if ".." in posix.split("/"):
        raise DatasetError(f"{where}: {value!r} climbs out with '..'")
    return _inside(root / posix, root, where)


def _read_split_csv(split_csv: Path) -> list[tuple[int, dict]]:
    """The rows of a VisA split CSV as ``(line number, {column: stripped value})``."""
    with split_csv.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in VISA_COLUMNS if c not in header]
        if missing:
            raise DatasetError(f"{split_csv}: columns {missing} missing (found {header}; expected {VISA_COLUMNS})")
        return [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _visa_job(split_csv: Path, line: int, row: dict, visa_root: Path, out_root: Path) -> tuple:
    """Check one split-CSV row; its ``(src, dst, mask_src, mask_dst)`` job."""
    split, label = row["split"].lower(), row["label"].lower()
    if split not in ("train", "test") or label not in ("normal", "anomaly"):
        raise DatasetError(f"{split_csv}:{line}: split {row['split']!r} / label {row['label']!r} not "
                           f"understood (expected train|test and normal|anomaly)")
    category = out_root / _csv_name(f"{split_csv}:{line}: column 'object'", row["object"])
    src = _csv_path(f"{split_csv}:{line}: column 'image'", row["image"], visa_root)
    if not src.is_file():
        raise DatasetError(f"{split_csv}:{line}: image {src} not found")
    kind = "good" if label == "normal" else "bad"
    dst = _inside(category / split / kind / src.name, out_root, f"{split_csv}:{line}: column 'object'")
    if kind == "good":
        return src, dst, None, None
    if not row["mask"]:
        raise DatasetError(f"{split_csv}:{line}: column 'mask' is empty for anomalous image {src}")
    mask_src = _csv_path(f"{split_csv}:{line}: column 'mask'", row["mask"], visa_root)
    if not mask_src.is_file():
        raise DatasetError(f"{split_csv}:{line}: mask {mask_src} for anomalous image {src} not found")
    mask_dst = _inside(category / "ground_truth" / kind / f"{src.stem}{MASK_SUFFIX}", out_root,
                       f"{split_csv}:{line}: column 'object'")
    return src, dst, mask_src, mask_dst


def _check_unique(split_csv: Path, jobs: list[tuple[int, tuple]]) -> None:
    """Refuse two rows that would write different sources to the same output file."""
    seen: dict[Path, tuple[int, Path]] = {}
    for line, (src, dst, mask_src, mask_dst) in jobs:
        for source, target in ((src, dst), (mask_src, mask_dst)):
            if target is None:
                continue
            first_line, first = seen.setdefault(target, (line, source))
            if first != source:
                raise DatasetError(f"{split_csv}:{line}: {source} would overwrite {first} (line {first_line}) "
                                   f"at {target}")


def prepare_visa(visa_root, split_csv, out_root) -> Path:
    """VisA → MVTec layout following a split CSV (the publisher's ``split_csv/1cls.csv``); returns ``out_root``.

    CSV columns ``object, split, label, image, mask``: ``label`` is ``normal`` or
    ``anomaly``, ``image`` / ``mask`` are paths relative to ``visa_root``. Normal images
    go to ``<object>/<split>/good``, anomalous ones to ``<object>/<split>/bad`` with
    ``ground_truth/bad/<stem>_mask.png`` (VisA masks: non-zero = anomalous → 0/255).

    The whole CSV is checked before anything is copied: ``object`` must be a plain
    folder name, ``image`` / ``mask`` relative paths without ``..`` that resolve inside
    ``visa_root``, every destination must resolve inside ``out_root`` and no two rows may
    write different files to the same place; else :class:`DatasetError` names the CSV,
    the line and the column.
    """
    visa_root, split_csv, out_root = Path(visa_root), Path(split_csv), Path(out_root)
    if not split_csv.is_file():
        raise DatasetError(f"VisA split file not found: {split_csv}")
    rows = _read_split_csv(split_csv)
    jobs = [(line, _visa_job(split_csv, line, row, visa_root, out_root)) for line, row in rows]
    _check_unique(split_csv, jobs)
    _write_jobs([job for _, job in jobs], visa_root, out_root, "VisA -> MVTec layout", label_map=True)
    return out_root


# ------------------------------------------------------------------------------------ BTAD

def _btad_root(raw_root: Path) -> Path:
    inner = raw_root / "BTech_Dataset_transformed"  # the folder inside btad.zip
    return inner if inner.is_dir() else raw_root


def _btad_mask(cat: Path, image: Path) -> Path:
    candidates = [cat / "ground_truth" / "ko" / f"{image.stem}{ext}" for ext in (".png", ".bmp")]
    found = [c for c in candidates if c.is_file()]
    if not found:
        raise DatasetError(f"BTAD mask for {image} not found (looked for {', '.join(str(c) for c in candidates)})")
    return found[0]


def prepare_btad(raw_root, out_root) -> Path:
    """BTAD → MVTec layout; returns ``out_root``.

    Reads ``01/``, ``02/``, ``03/`` (directly under ``raw_root`` or under its
    ``BTech_Dataset_transformed/``), each with ``train/ok``, ``test/ok``, ``test/ko`` and
    ``ground_truth/ko/<stem>.png|.bmp``. Writes ``train/good``, ``test/good``, ``test/ko``
    and ``ground_truth/ko/<stem>_mask.png`` (0/255). Every file is found (and checked to
    resolve inside ``raw_root``) before anything is written.
    """
    raw, out_root = _btad_root(Path(raw_root)), Path(out_root)
    categories = sorted(p for p in raw.iterdir() if p.is_dir() and (p / "train").is_dir()) if raw.is_dir() else []
    if not categories:
        raise DatasetError(f"no BTAD category folders (01/, 02/, 03/ holding train/ and test/) under {raw_root}")
    jobs = []
    for cat in categories:
        for src_rel, dst_rel in (("train/ok", "train/good"), ("test/ok", "test/good"), ("test/ko", "test/ko")):
            folder = cat / src_rel
            if not folder.is_dir():
                raise DatasetError(f"BTAD folder missing: {folder}")
            for image in _images(folder):
                dst = out_root / cat.name / dst_rel / image.name
                if src_rel != "test/ko":
                    jobs.append((image, dst, None, None))
                    continue
                mask_dst = out_root / cat.name / "ground_truth" / "ko" / f"{image.stem}{MASK_SUFFIX}"
                jobs.append((image, dst, _btad_mask(cat, image), mask_dst))
    _write_jobs(jobs, Path(raw_root), out_root, "BTAD -> MVTec layout")
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
    ships with ``(copy)`` in their names are skipped. Every ground truth is read (and every
    file checked to resolve inside ``raw_root``) before anything is written.
    """
    raw, out_root = _ksdd2_root(Path(raw_root)), Path(out_root)
    out, jobs = out_root / "ksdd2", []
    for split in ("train", "test"):
        images = [p for p in _images(raw / split) if not p.stem.endswith("_GT") and "(copy)" not in p.stem]
        for image in tqdm(images, desc=f"KSDD2 {split}: reading masks", unit="image"):
            gt = raw / split / f"{image.stem}_GT.png"
            if not gt.is_file():
                raise DatasetError(f"KolektorSDD2 ground truth {gt} for image {image} not found")
            if not load_mask(gt).any():
                jobs.append((image, out / split / "good" / image.name, None, None))
                continue
            stem = image.stem if split == "test" else f"train_{image.stem}"
            folder = "test" if split == "test" else "train_defect"
            jobs.append((image, out / folder / "defect" / f"{stem}{image.suffix}",
                         gt, out / "ground_truth" / "defect" / f"{stem}{MASK_SUFFIX}"))
    _write_jobs(jobs, Path(raw_root), out_root, "KSDD2 -> MVTec layout")
    return out_root
