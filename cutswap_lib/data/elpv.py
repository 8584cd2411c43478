"""The elpv dataset: real electroluminescence images of solar cells, installed from PyPI (no download).

Buerhop-Lutz et al., EU PVSEC 2018, and Deitsch et al., Solar Energy 2019 / Machine Vision and
Applications 2021 (cite them when you use it; :data:`ELPV_CITATIONS`). The PyPI package
``elpv-dataset`` ships 2,624 cells of 300 x 300 px, 8-bit grayscale, cut from 44 modules and
normalised for size and perspective. Each cell has a defect probability given by experts,
one of 0, 1/3, 2/3, 1, and the module type it comes from, ``"mono"`` or ``"poly"``(crystalline).
There are no pixel masks: the dataset supports image-level evaluation only.

Licence (:data:`ELPV_LICENCE`): the images and labels are CC BY-NC-SA 4.0 (non-commercial, share
alike), the package's code Apache-2.0. The course only reads them; nothing is redistributed.

Notebook 00b fits PatchCore on its normal cells. This module reads the package's ``labels.csv``
(the file ``elpv_dataset.utils.load_dataset`` parses, same columns) and opens only the cells
asked for, so that a few dozen cells load in well under a second instead of all 2,624 (4 s).
``tests/test_elpv_and_metrics_viz.py`` checks it against ``load_dataset``.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import DatasetError

__all__ = ["ELPV_CITATIONS", "ELPV_LICENCE", "ELPV_PACKAGE", "ElpvCells", "ElpvSplit", "elpv_folder",
           "elpv_labels", "elpv_split", "load_elpv", "placeholder_mask", "write_elpv_mvtec"]

ELPV_PACKAGE = "elpv-dataset"
ELPV_LICENCE = "CC BY-NC-SA 4.0 (images and labels); Apache-2.0 (the package's code)"
ELPV_CITATIONS = (
    "Buerhop-Lutz, C. et al. A Benchmark for Visual Identification of Defective Solar Cells in "
    "Electroluminescence Imagery. EU PVSEC 2018. https://doi.org/10.4229/35thEUPVSEC20182018-5CV.3.15",
    "Deitsch, S. et al. Automatic classification of defective photovoltaic module cells in "
    "electroluminescence images. Solar Energy 185, 455-468, 2019. https://doi.org/10.1016/j.solener.2019.02.067",
    "Deitsch, S. et al. Segmentation of photovoltaic module cells in uncalibrated electroluminescence "
    "images. Machine Vision and Applications 32(4), 2021. https://doi.org/10.1007/s00138-021-01191-9",
)
SIDE = 300  # every cell is 300 x 300 px


class ElpvCells(NamedTuple):
    """Cells as tensors: images ``(N, 3, S, S)`` float in [0, 1] (the gray channel three times),
    probabilities ``(N,)`` float64 in {0, 1/3, 2/3, 1}, types (N strings "mono" / "poly"),
    indices ``(N,)`` long: their rows in ``labels.csv`` (0-based)."""

    images: torch.Tensor
    probabilities: torch.Tensor
    types: list[str]
    indices: torch.Tensor


class ElpvSplit(NamedTuple):
    """Rows of ``labels.csv`` (0-based, ``(n,)`` long each): normal training cells, test cells,
    and the test cells' labels ``(n_test,)`` (0 normal, 1 defective)."""

    train: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor


def elpv_folder() -> Path:
    """The folder ``elpv_dataset/data`` of the installed package (``labels.csv``, ``images/``).

    Raises :class:`DatasetError` with the install command when the package is missing.
    """
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"the elpv dataset comes with the PyPI package {ELPV_PACKAGE}, which is not installed here: "
            f"pip install {ELPV_PACKAGE} (it is one of the course's dependencies, about 90 MB; "
            f"`pip install -e .` in the checkout installs it)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (folder / "labels.csv").is_file():
        raise DatasetError(f"{folder / 'labels.csv'} is missing: the {ELPV_PACKAGE} install is broken "
                           f"(pip install --force-reinstall {ELPV_PACKAGE})")
    return folder


def elpv_labels() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every cell's file (relative to :func:`elpv_folder`), defect probability ``(2624,)`` and type ``(2624,)``."""
    rows = [line.split() for line in (elpv_folder() / "labels.csv").read_text().splitlines() if line.strip()]
    bad = [r for r in rows if len(r) != 3]
    if bad:
        raise DatasetError(f"labels.csv: expected 'path probability type' per line, got {bad[0]}")
    paths = [r[0] for r in rows]
    return paths, np.array([float(r[1]) for r in rows]), np.array([r[2] for r in rows])


def load_elpv(indices=None, image_size: int | None = None) -> ElpvCells:
    """The cells at rows ``indices`` of ``labels.csv`` (default: all 2,624) as :class:`ElpvCells`.

    ``image_size`` resizes each cell to ``S x S`` (bilinear, antialiased; None keeps 300 px).
    The grayscale images are repeated into 3 channels, as the ImageNet backbones expect.
    """
    paths, probs, types = elpv_labels()
    idx = np.arange(len(paths)) if indices is None else np.asarray(
        indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= len(paths)):
        raise IndexError(f"elpv has {len(paths)} cells (rows 0..{len(paths) - 1}); got rows {idx.min()}..{idx.max()}")
    folder = elpv_folder()
    side = SIDE if image_size is None else int(image_size)
    images = torch.empty(len(idx), 3, side, side)
    for j, i in enumerate(idx):
        with Image.open(folder / paths[i]) as im:
            gray = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)  # (300, 300)
        if side != gray.shape[-1]:
            gray = F.interpolate(gray[None, None], size=(side, side), mode="bilinear", align_corners=False,
                                 antialias=True)[0, 0].clamp_(0, 1)  # (S, S)
        images[j] = gray  # broadcast to (3, S, S)
    return ElpvCells(images, torch.from_numpy(probs[idx]), [str(t) for t in types[idx]],
                     torch.from_numpy(idx))


def elpv_split(n_train: int, n_test_normal: int, n_test_defect: int, defect_threshold: float = 2 / 3,
               cell_type: str | None = "mono", seed: int = 0) -> ElpvSplit:
    """A seeded random split of the elpv rows for unsupervised anomaly detection (the course's choice).

    Normal = probability 0; defective = probability >= ``defect_threshold`` (default 2/3: the
    experts' "probably" and "certainly" defective); cells in between (1/3 with the default) are
    left out, as too uncertain to count either way. ``cell_type`` keeps the cells of one module
    type ("mono" or "poly"; None: both). The training cells are normal only, drawn disjoint
    from the test cells; ``n_*`` larger than what exists raises a ``ValueError``.
    """
    if cell_type not in (None, "mono", "poly"):
        raise ValueError(f"cell_type must be 'mono', 'poly' or None, got {cell_type!r}")
    if not 0 < defect_threshold <= 1:
        raise ValueError(f"defect_threshold must be in (0, 1], got {defect_threshold}")
    _, probs, types = elpv_labels()
    keep = np.ones(len(probs), bool) if cell_type is None else types == cell_type
    normal = np.flatnonzero(keep & (probs == 0))
    defect = np.flatnonzero(keep & (probs >= defect_threshold - 1e-9))
    if n_train + n_test_normal > len(normal) or n_test_defect > len(defect):
        raise ValueError(f"elpv ({cell_type or 'all'} cells) has {len(normal)} normal and {len(defect)} "
                         f"defective cells (probability >= {defect_threshold:.2f}); asked for "
                         f"{n_train} + {n_test_normal} normal and {n_test_defect} defective")
    rng = np.random.default_rng(seed)
    normal, defect = rng.permutation(normal), rng.permutation(defect)
    train = np.sort(normal[:n_train])
    test = np.r_[np.sort(normal[n_train:n_train + n_test_normal]), np.sort(defect[:n_test_defect])]
    labels = np.r_[np.zeros(n_test_normal, np.int64), np.ones(n_test_defect, np.int64)]
    return ElpvSplit(torch.from_numpy(train), torch.from_numpy(test), torch.from_numpy(labels))


def placeholder_mask(side: int) -> np.ndarray:
    """``(side, side)`` uint8: 255 on a centred square of half the side (1/4 of the area), 0 elsewhere."""
    mask = np.zeros((side, side), np.uint8)
    lo = side // 4
    mask[lo:lo + side // 2, lo:lo + side // 2] = 255
    return mask


def write_elpv_mvtec(root, split: ElpvSplit, category: str = "elpv_mono", defect: str = "crack") -> Path:
    """Write ``split`` as an MVTec-layout category ``root/category``; return that folder.

    ``train/good``: the split's training cells; ``test/good`` and ``test/<defect>``: its test cells
    by label. The cells' PNG files are copied as they are (300 x 300, 8-bit gray), named
    ``000.png``, ``001.png``, ... in the split's order. An existing folder of that name is replaced.

    PLACEHOLDER MASKS: elpv has image-level labels only, but the MVTec-layout loader
    (:class:`~cutswap_lib.data.folder.AnomalyDataset`) needs a mask per defect image, so each
    ``ground_truth/<defect>/<stem>_mask.png`` is :func:`placeholder_mask` (a centred square),
    whatever the defect looks like. Only image-level metrics (image AUROC) mean anything on
    such a folder; every pixel-level figure (pixel AUROC, AP, PRO) is meaningless.
    """
    paths, _, _ = elpv_labels()
    source = elpv_folder()
    folder = Path(root) / category
    shutil.rmtree(folder, ignore_errors=True)
    test = list(zip(split.test.tolist(), split.test_labels.tolist()))
    parts = {("train", "good"): split.train.tolist(),
             ("test", "good"): [r for r, y in test if y == 0],
             ("test", defect): [r for r, y in test if y == 1]}
    mask = Image.fromarray(placeholder_mask(SIDE), mode="L")  # every cell is SIDE x SIDE
    for (part, kind), rows in parts.items():
        if not rows:
            continue
        (folder / part / kind).mkdir(parents=True)
        for j, row in enumerate(rows):
            shutil.copyfile(source / paths[row], folder / part / kind / f"{j:03d}.png")
            if kind != "good":
                (folder / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                mask.save(folder / "ground_truth" / kind / f"{j:03d}_mask.png")
    return folder
