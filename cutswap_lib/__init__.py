"""cutswap_lib: the thin, GPU-capable core of the CutSwap / SemiREST course.

One module per idea (see ``DESIGN.md``):

* :mod:`cutswap_lib.config`     – the one profile switch (fast / default / paper)
* :mod:`cutswap_lib.data`       – MVTec-layout datasets, download helpers, the toy dataset
* :mod:`cutswap_lib.backbones`  – feature extractors and the offline weights policy
* :mod:`cutswap_lib.metrics`    – image / pixel AUROC, pixel AP, AUPRO
* :mod:`cutswap_lib.patchcore`  – memory bank, greedy coreset, nearest-neighbour scoring
* :mod:`cutswap_lib.viz`        – the figures the notebooks show
* ``python -m cutswap_lib``     – the main job (toy PatchCore table and figures)
"""

__version__ = "0.1.0"
