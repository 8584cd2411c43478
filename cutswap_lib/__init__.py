"""cutswap_lib: the thin, GPU-capable core of the CutSwap / SemiREST course.

One module per idea (see ``DESIGN.md``):

* :mod:`cutswap_lib.config`     – the one profile switch (fast / default / paper)
* :mod:`cutswap_lib.data`       – MVTec-layout datasets, download helpers, the toy dataset
* :mod:`cutswap_lib.backbones`  – feature extractors and the offline weights policy
* :mod:`cutswap_lib.weights`    – the offline weights policy (re-exported by backbones)
* :mod:`cutswap_lib.saliency`   – multilevel LayerCAM maps and their on-disk cache
* :mod:`cutswap_lib.clustering` – batched 1-D k-means on saliency, anchor sampling
* :mod:`cutswap_lib.augment`    – CutSwap, CutSwap-scar, CutPaste, CutPaste-scar, weak augmentation
* :mod:`cutswap_lib.synthetic`  – Perlin-mask synthetic anomalies (MemSeg / DRAEM manner) for SemiREST
* :mod:`cutswap_lib.selfsup`    – the 3-way training set (normal / CutSwap / CutSwap-scar)
* :mod:`cutswap_lib.train`      – 3-way self-supervised fine-tuning, checkpoints, resume
* :mod:`cutswap_lib.semirest`   – SemiREST (a sub-package): position code, residual tokens, sliding
  windows and bagging, the token Swin, focal loss, block and box labels, k-NN augmentation,
  token dropout, MixMatch, training, the ``semirest-table`` runs and the paper's figures
* :mod:`cutswap_lib.metrics`    – image / pixel AUROC, pixel AP, AUPRO
* :mod:`cutswap_lib.patchcore`  – memory bank, greedy coreset, nearest-neighbour scoring
* :mod:`cutswap_lib.viz`        – the figures the notebooks show (``viz_saliency``, ``viz_negatives``,
  ``viz_training``, ``viz_semirest``, ``viz_bagging``, ``viz_boxes`` for notebooks 01-06)
* :mod:`cutswap_lib.experiments`, :mod:`cutswap_lib.reproduce` – the command-line runs
* :mod:`cutswap_lib.paper_numbers` – the CutSwap paper's reported figures
* ``python -m cutswap_lib``     – the main job (toy PatchCore table and figures) and the
  reproduction commands (``cutswap-table``, ``semirest-table``)
"""

__version__ = "0.1.0"
