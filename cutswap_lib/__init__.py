"""cutswap_lib: the thin, GPU-capable core of the CutSwap / SemiREST course.

It reads as the course: a shared core, the two papers' methods, the command layer, the figures.

Shared core

* :mod:`cutswap_lib.config`     – the one profile switch (fast / default / paper)
* :mod:`cutswap_lib.data`       – MVTec-layout datasets, splits as tensors, downloads, the toy dataset
* :mod:`cutswap_lib.backbones`  – feature extractors (ResNet18, WideResNet50, VGG16, EfficientNet-Lite0)
* :mod:`cutswap_lib.weights`    – the one offline weights policy and checkpoint loading
* :mod:`cutswap_lib.patchcore`  – memory bank, greedy coreset, nearest-neighbour scoring, maps
* :mod:`cutswap_lib.metrics`    – image / pixel AUROC, pixel AP, AUPRO
* :mod:`cutswap_lib.jitter`     – random draws and batched colour jitter (both papers' augmentations)

The two papers' methods (pure torch)

* :mod:`cutswap_lib.cutswap`    – CutSwap: multilevel LayerCAM, k-means and anchors, CutSwap / scar /
  CutPaste negatives, the 3-way set and its training loop
* :mod:`cutswap_lib.semirest`   – SemiREST: position code, residual tokens, windows and bagging, the
  token Swin, focal loss, k-NN augmentation, token dropout, synthetic anomalies, block and box
  labels, MixMatch

The command layer and the figures

* :mod:`cutswap_lib.runs`       – the main job, both papers' tables and reported numbers, CSV / Markdown
* :mod:`cutswap_lib.viz`        – one figure module per notebook (the only place using matplotlib)
* ``python -m cutswap_lib``     – :mod:`cutswap_lib.__main__`: argument parsing and dispatch

Method code imports neither :mod:`~cutswap_lib.runs` nor :mod:`~cutswap_lib.viz`;
``tests/test_layout.py`` checks the layering and that no import circle exists.
"""

__version__ = "0.1.0"

SOURCE = "https://github.com/cutswap-course/cutswap-notebooks@main"
"""Where users get the course: the repository's address and the ref they get, as ``<address>@<ref>``.

Every notebook's "Open in Colab" badge opens the notebook at this ref and every setup cell installs
``git+<SOURCE>``, so the notebook a user reads and the library it imports are the same commit.
The ref is the branch ``main``: the repository has no release tag, and a commit hash cannot name
the commit that records it. At a release, tag it and put the tag here. ``colab/sync_notebooks.py``
writes the badges and setup cells from this constant; ``tests/test_colab_setup.py`` fails on any
notebook (or ``notebooks/README.md``) that names another address or ref.
"""


def source_address(source: str = SOURCE) -> str:
    """The repository address of ``source`` (``<address>@<ref>``)."""
    return source.rpartition("@")[0]


def source_ref(source: str = SOURCE) -> str:
    """The ref (branch or tag) of ``source`` (``<address>@<ref>``)."""
    return source.rpartition("@")[2]


def colab_url(notebook: str, source: str = SOURCE) -> str:
    """Colab's address of ``notebook`` (a path in the repository, e.g. ``notebooks/00_data_tour.ipynb``) at the ref."""
    github = "https://github.com/"
    address = source_address(source)
    if not address.startswith(github):
        raise ValueError(f"Colab opens notebooks from GitHub only, not from {address!r}")
    return f"https://colab.research.google.com/github/{address[len(github):]}/blob/{source_ref(source)}/{notebook}"
