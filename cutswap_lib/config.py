"""The one profile switch of the course.

``CUTSWAP_PROFILE=fast|default|paper`` selects a :class:`Profile` of sizes:

* ``fast``    – what CI runs: tiny images, few samples, seconds per notebook.
* ``default`` – what a person at the keyboard gets on a laptop CPU.
* ``paper``   – what a GPU user runs to reproduce the tables (paper sizes).

It also says where files go, for the same reason (one place to look):

* ``CUTSWAP_HOME``       – the folder that holds ``data/`` (datasets, toy data, box files) and
  ``results/`` (tables, figures, caches, checkpoints). Unset: the checkout (or, for an installed
  package, the current folder), as before. On Colab the setup cell can point it at a mounted
  Google Drive folder, so that downloads and checkpoints survive a runtime reset.
* ``CUTSWAP_<KEY>_URL``  – another download address for dataset ``<key>`` (e.g. ``CUTSWAP_MVTEC_URL``),
  for when a host rotates its share links; the recorded checksum still applies.

This is the only place in the library that reads an environment variable;
notebooks call :func:`get_profile` in their configuration cell.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

PROFILE_ENV = "CUTSWAP_PROFILE"
HOME_ENV = "CUTSWAP_HOME"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes that scale a run from CI smoke test to paper reproduction."""

    name: str
    image_size: int  # side of the square input fed to the networks (px)
    toy_train: int  # normal training images per toy category
    toy_test_good: int  # normal test images per toy category
    toy_test_defect: int  # test images per defect kind
    coreset_ratio: float  # PatchCore memory-bank fraction
    batch_size: int
    epochs: int  # self-supervised fine-tuning epochs (CutSwap paper: 256)


PROFILES: dict[str, Profile] = {
    "fast": Profile("fast", image_size=64, toy_train=16, toy_test_good=6, toy_test_defect=3,
                    coreset_ratio=0.1, batch_size=16, epochs=1),
    "default": Profile("default", image_size=224, toy_train=60, toy_test_good=20,
                       toy_test_defect=10, coreset_ratio=0.1, batch_size=32, epochs=8),
    "paper": Profile("paper", image_size=224, toy_train=200, toy_test_good=40,
                     toy_test_defect=20, coreset_ratio=0.1, batch_size=96, epochs=256),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the profile called ``name``, else the one named by ``$CUTSWAP_PROFILE``, else ``default``."""
    name = name or os.environ.get(PROFILE_ENV, "default")
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown profile {name!r} (from ${PROFILE_ENV} or the caller); "
            f"choose one of {sorted(PROFILES)}"
        ) from None


def home() -> Path:
    """The folder that holds ``data/`` and ``results/``: ``$CUTSWAP_HOME`` when set, else the checkout
    when run from a clone (its ``data/README.md`` marks it), else the current folder."""
    chosen = os.environ.get(HOME_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser().absolute()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "data" / "README.md").exists():
        return checkout
    return Path.cwd()


def data_root() -> Path:
    """Where datasets live: ``<home>/data`` (the checkout's ``data/`` unless ``$CUTSWAP_HOME`` says otherwise)."""
    return home() / "data"


def toy_root(profile: Profile) -> Path:
    """The toy dataset of ``profile`` (one folder per profile, so profiles never overwrite each other)."""
    return data_root() / f"toy_{profile.name}"


def results_root() -> Path:
    """Where runs write tables, figures, caches and checkpoints: ``results/`` beside ``data/``."""
    return home() / "results"


def url_env(key: str) -> str:
    """The environment variable that overrides dataset ``key``'s download address (``CUTSWAP_MVTEC_URL``)."""
    return f"CUTSWAP_{key.upper()}_URL"


def dataset_url(key: str) -> str | None:
    """The download address set in ``$CUTSWAP_<KEY>_URL`` for dataset ``key``, or None when unset."""
    return os.environ.get(url_env(key), "").strip() or None
