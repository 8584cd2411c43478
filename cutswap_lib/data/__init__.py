"""Data: MVTec-layout datasets, download helpers for the real benchmarks, and the toy dataset.

* :mod:`.folder`   – :class:`AnomalyDataset` over any MVTec-layout folder, :func:`load_rgb`
* :mod:`.toy`      – the generated toy inspection dataset (fabric, disc, board)
* :mod:`.registry` – :data:`DATASETS`, one download record per real dataset
* :mod:`.download` – :func:`download_dataset`, :func:`verify_checksum`
* :mod:`.extract`  – :func:`safe_extract`: archives that cannot write outside their folder
* :mod:`.prepare`  – VisA / BTAD / KolektorSDD2 → MVTec layout
* :mod:`.splits`   – one split as tensors (:func:`load_split`), toy object footprints
"""

from .download import download_dataset, verify_checksum
from .errors import ChecksumError, DatasetError, DownloadError, UnsafeArchiveError
from .extract import safe_extract
from .folder import IMAGE_EXTENSIONS, AnomalyDataset, MaskWarning, Sample, load_mask, load_rgb
from .prepare import prepare_btad, prepare_ksdd2, prepare_visa
from .registry import DATASETS, DatasetRecord
from .splits import load_foregrounds, load_split
from .toy import (TOY_CATEGORIES, TOY_DEFECTS, ToySample, ensure_toy_dataset, make_toy_dataset,
                  render_toy_sample, toy_foreground_path)

__all__ = [
    "AnomalyDataset", "ChecksumError", "DATASETS", "DatasetError", "DatasetRecord", "DownloadError",
    "IMAGE_EXTENSIONS", "MaskWarning", "Sample", "TOY_CATEGORIES", "TOY_DEFECTS", "ToySample", "UnsafeArchiveError",
    "download_dataset", "ensure_toy_dataset", "load_foregrounds", "load_mask", "load_rgb", "load_split",
    "make_toy_dataset",
    "prepare_btad", "prepare_ksdd2", "prepare_visa", "render_toy_sample", "safe_extract",
    "toy_foreground_path", "verify_checksum",
]
