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
