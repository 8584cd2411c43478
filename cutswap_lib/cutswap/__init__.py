"""CutSwap (Qin et al., 2024): saliency-guided negatives for 3-way self-supervised fine-tuning.

One module per idea, each citing the paper's section:

* :mod:`.saliency`   – multilevel LayerCAM maps (Sec. III-A) and their on-disk cache
* :mod:`.clustering` – batched 1-D k-means on each saliency map, the most salient cluster,
  anchor pairs drawn from it (Sec. III-A)
* :mod:`.augment`    – CutSwap and CutSwap-scar (Sec. III-A, "Patch Swapping"), the CutPaste
  baselines, the weak colour jitter of positives
* :mod:`.selfsup`    – the 3-way training set (normal / CutSwap / CutSwap-scar, Sec. III-B)
* :mod:`.train`      – 3-way fine-tuning of the encoder, checkpoints and resume (Sec. III-B)

Pure torch: no figures, no command line (those live in :mod:`cutswap_lib.viz` and
:mod:`cutswap_lib.runs`). Taught in ``notebooks/01_saliency_and_clustering.ipynb``,
``02_cutswap_generation.ipynb`` and ``03_backbone_training.ipynb``.
"""

from .augment import (SCAR_ANGLE, SCAR_LENGTH, SCAR_WIDTH, cutpaste, cutpaste_scar, cutswap, cutswap_scar,
                      place_patches, scar_bound, weak_augment)
from .clustering import (CLUSTER_CHOICES, METHODS, kmeans_saliency, object_share_of_salient_cluster,
                         salient_cluster_mask, sample_anchor_pairs, sample_placeable_pairs)
from .saliency import SaliencyCache, multilevel_layercam, resolve_target, scale_like_gradcam, weights_fingerprint
from .selfsup import LABELS, MODES, OVERLAP, PAPER_LEVELS, ThreeWayDataset, ThreeWaySpec, make_batch
from .train import (ThreeWayNet, TrainConfig, encoder_for_patchcore, latest_checkpoint, lr_at,
                    prune_checkpoints, save_checkpoint, train_three_way)

__all__ = [
    "CLUSTER_CHOICES", "LABELS", "METHODS", "MODES", "OVERLAP", "PAPER_LEVELS", "SCAR_ANGLE", "SCAR_LENGTH",
    "SCAR_WIDTH", "SaliencyCache", "ThreeWayDataset", "ThreeWayNet", "ThreeWaySpec", "TrainConfig",
    "cutpaste", "cutpaste_scar", "cutswap", "cutswap_scar", "encoder_for_patchcore", "kmeans_saliency",
    "latest_checkpoint", "lr_at", "make_batch", "multilevel_layercam", "object_share_of_salient_cluster",
    "place_patches", "prune_checkpoints", "resolve_target", "salient_cluster_mask", "sample_anchor_pairs", "sample_placeable_pairs",
    "save_checkpoint", "scale_like_gradcam", "scar_bound", "train_three_way", "weak_augment", "weights_fingerprint",
]
