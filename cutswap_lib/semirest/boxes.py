"""Bounding-box labels: boxes from masks, box files, pixel semi-labels and Eq. (15) block labels.

SemiREST Sec. 3.3 and 3.4.1. Taught in ``notebooks/06_mixmatch_boxes.ipynb``. A box
annotation says only where anomalies are *not*: pixels outside the union of the boxes
are normal (0), pixels inside are unknown (-1). A block (token) is unknown when more
than ``upsilon * beta`` of its ``beta`` pixels are unknown, else normal (Eq. 15,
``upsilon = 50 %``). Unknown blocks feed MixMatch's unlabelled set
(:mod:`.mixmatch`); normal blocks its labelled set.

Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the image they belong to, ``x``
the column, end-exclusive (``x1 - x0`` is the width), as a list per image. They come
from a drawing widget (notebook 06), from a JSON file (:func:`load_boxes`), or from a
ground-truth mask (:func:`boxes_from_mask`: one box around each 8-connected region,
which is what an annotator drawing tight boxes would produce).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..files import atomic_write_text

Tensor = torch.Tensor
Box = tuple[int, int, int, int]

UNKNOWN = -1  # pixel / block semi-label inside the boxes


def boxes_from_mask(mask, margin: int = 0) -> list[Box]:
    """One tight box ``(x0, y0, x1, y1)`` around each 8-connected region of a mask ``(H, W)``.

    ``margin`` pixels are added on every side (clipped to the image), as a hurried
    annotator would draw them.
    """
    mask = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"expected one mask (H, W), got shape {mask.shape}")
    labelled, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    h, w = mask.shape
    boxes = []
    for rows, cols in ndimage.find_objects(labelled):
        boxes.append((max(0, cols.start - margin), max(0, rows.start - margin),
                      min(w, cols.stop + margin), min(h, rows.stop + margin)))
    return boxes


def box_key(path) -> str:
    """The name of a test image in a box file: ``<defect type>/<file>`` (``chip/003.png``)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def rescale_boxes(boxes, from_size: tuple[int, int], to_size: tuple[int, int]) -> list[Box]:
    """Boxes drawn on an image of ``from_size = (H, W)`` -> the same boxes on ``to_size``.

    Rounded outwards (floor of the start, ceiling of the end), so a box that covered a
    defect still covers it after the image is resized.
    """
    (h0, w0), (h1, w1) = _check_size(from_size, "rescale_boxes from_size"), _check_size(to_size, "rescale_boxes to_size")
    sy, sx = h1 / h0, w1 / w0
    return [(int(np.floor(x0 * sx)), int(np.floor(y0 * sy)), min(w1, int(np.ceil(x1 * sx))),
             min(h1, int(np.ceil(y1 * sy)))) for x0, y0, x1, y1 in validate_boxes(boxes, from_size)]


def _check_size(size, where: str) -> tuple[int, int]:
    """``(H, W)`` of two positive integers, or ValueError naming ``where``."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: image_size must be two positive integers (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{where}: image_size must be two positive integers (H, W), got {list(size)}")
    return h, w


def validate_boxes(boxes, size: tuple[int, int], where: str = "boxes") -> list[Box]:
    """Check boxes of one image of ``size = (H, W)``; returns them as int tuples or raises ValueError.

    ``where`` names the source in the message (a file and image name).
    """
    h, w = _check_size(size, where)
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(f"{where}: expected a list of boxes [[x0, y0, x1, y1], ...], got {boxes!r}")
    clean = []
    for i, box in enumerate(boxes):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise ValueError(f"{where}: box {i} {box!r} must be a list of 4 numbers (x0, y0, x1, y1)")
        try:
            x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: box {i} {box!r} holds something that is not a number") from None
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where}: box {i} {tuple(box)} has zero area (need x1 > x0 and y1 > y0)")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"{where}: box {i} {tuple(box)} leaves the {w}x{h} image "
                             f"(x in [0, {w}], y in [0, {h}])")
        clean.append((x0, y0, x1, y1))
    return clean


def box_pixel_labels(boxes, size: tuple[int, int]) -> Tensor:
    """Boxes of one image -> pixel semi-labels ``(H, W)``: 0 outside every box, ``UNKNOWN`` inside."""
    labels = torch.zeros(size, dtype=torch.long)
    for x0, y0, x1, y1 in validate_boxes(boxes, size):
        labels[y0:y1, x0:x1] = UNKNOWN
    return labels


def box_block_labels(pixel_labels: Tensor, grid: tuple[int, int], upsilon: float = 0.5) -> Tensor:
    """SemiREST Eq. (15): pixel semi-labels ``(B, H, W)`` -> block labels ``(B, h_t, w_t)`` in {0, UNKNOWN}.

    A block is unknown when more than ``upsilon`` of its pixels are (area average, as in
    :func:`.labels.anomalous_share`).
    """
    if pixel_labels.ndim != 3:
        raise ValueError(f"expected pixel labels (B, H, W), got {tuple(pixel_labels.shape)}")
    share = F.adaptive_avg_pool2d((pixel_labels == UNKNOWN).float().unsqueeze(1), grid)[:, 0]  # (B, h_t, w_t)
    return torch.where(share > upsilon, UNKNOWN, 0).long()


def save_boxes(path, boxes: dict[str, list[Box]], image_size: tuple[int, int] | None = None) -> Path:
    """Write ``{image name: [boxes]}`` to a JSON file (with the image size the boxes refer to), atomically."""
    payload = {"format": "cutswap-boxes-v1", "box": "x0, y0, x1, y1 in pixels, end-exclusive",
               "image_size": list(image_size) if image_size else None,
               "boxes": {name: [list(map(int, b)) for b in bs] for name, bs in boxes.items()}}
    return atomic_write_text(path, json.dumps(payload, indent=1))  # an interrupt keeps the old file


def load_boxes(path, image_size: tuple[int, int] | None = None,
               resize_to: tuple[int, int] | None = None) -> dict[str, list[Box]]:
    """Read a box file of :func:`save_boxes`; every box is validated (errors name the file and image).

    Boxes are checked against ``image_size`` (default: the size stored in the file) and,
    with ``resize_to = (H, W)``, rescaled to that size (:func:`rescale_boxes`).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"box file {path} does not exist; draw boxes in notebook 06 or derive "
                                f"them from masks with boxes_from_mask") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("boxes"), dict):
        raise ValueError(f"{path}: expected an object with a 'boxes' mapping of image name -> list of boxes")
    size = image_size or (payload["image_size"] if payload.get("image_size") else None)
    if size is None:
        raise ValueError(f"{path}: no image_size in the file; pass image_size=(H, W)")
    size = _check_size(size, str(path))
    boxes = {name: validate_boxes(bs, size, f"{path} [{name}]") for name, bs in payload["boxes"].items()}
    if resize_to is not None and tuple(resize_to) != tuple(size):
        boxes = {name: rescale_boxes(bs, size, resize_to) for name, bs in boxes.items()}
    return boxes
