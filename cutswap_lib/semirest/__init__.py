"""SemiREST (Li et al.): position-constrained PatchCore residuals as transformer tokens.

One module per idea, each citing the paper's section and equations:

* :mod:`.position`      – the 2-D sinusoidal position code, Eq. (3), and the PCF sum, Eq. (2)
* :mod:`.residuals`     – position-constrained features, the coreset memory bank and the
  residual tokens ``(B, h_f, w_f, d_f)``, Eq. (1)-(6), Sec. 3.1.1
* :mod:`.windows`       – sliding windows over the token map and their bagging, Eq. (8), (10)
* :mod:`.swin`          – the token Swin transformer (torchvision blocks), Eq. (7), (9)
* :mod:`.losses`        – the focal loss, Eq. (11)
* :mod:`.labels`        – block labels from pixel masks, Eq. (14)
* :mod:`.token_augment` – k-NN residual augmentation, Eq. (12), and token dropout, Eq. (13)
* :mod:`.model`         – :class:`SemiREST`: memory, token pools, training with EMA, bagged prediction
* :mod:`.checkpoints`   – training states, so that an interrupted ``fit`` resumes (the course's plumbing)
* :mod:`.boxes`         – bounding boxes: from masks, box files, pixel semi-labels, Eq. (15)
* :mod:`.mixmatch`      – MixMatch for residual tokens, Algorithm 1 (Sec. 3.3)
* :mod:`.synthetic`     – synthetic anomalies with Perlin masks, in MemSeg's / DRAEM's manner (Sec. 3.2)
* :mod:`.semi`          – semi-supervised fine-tuning with box labels (Fig. 3)

Pure torch: no figures, no command line. The ``semirest-table`` runs and the paper's numbers
live in :mod:`cutswap_lib.runs` (``semirest_tables``, ``semirest_paper``), the figures in
:mod:`cutswap_lib.viz` (``residuals``, ``bagging``, ``boxes``).

Taught in ``notebooks/04_semirest_residuals.ipynb`` (residuals) and
``notebooks/05_swin_bagging.ipynb`` (Swin, bagging, training) and
``notebooks/06_mixmatch_boxes.ipynb`` (box labels, MixMatch).
"""

from .boxes import (UNKNOWN, Box, box_block_labels, box_key, box_pixel_labels, boxes_from_mask, load_boxes,
                    rescale_boxes, save_boxes, validate_boxes)
from .labels import anomalous_share, block_labels
from .losses import IGNORE, focal_loss
from .mixmatch import MixMatchConfig, lambda_u_at, mixmatch_loss, mixup, mixup_lambda, sharpen, soft_focal_loss
from .model import SemiREST, SemiRESTConfig, TokenPool
from .position import add_position_code, position_code
from .residuals import (RESIDUAL_MODES, PositionConstrainedFeatures, ResidualMatch, ResidualMemory,
                        elementwise_residual, nearest_residuals)
from .semi import add_box_pool, finetune_with_boxes
from .swin import TokenSwin
from .synthetic import perlin_mask, perlin_noise, synthetic_anomalies
from .token_augment import k_nearest_memory, knn_choice, knn_residuals, residual_scale, token_dropout
from .windows import bag_windows, extract_windows, pad_to_window, window_corners, window_starts

__all__ = [
    "IGNORE", "RESIDUAL_MODES", "UNKNOWN", "Box", "MixMatchConfig", "PositionConstrainedFeatures",
    "ResidualMatch", "ResidualMemory", "SemiREST", "SemiRESTConfig", "TokenPool", "TokenSwin",
    "add_box_pool", "add_position_code", "anomalous_share", "bag_windows", "block_labels",
    "box_block_labels", "box_key", "box_pixel_labels", "boxes_from_mask", "elementwise_residual",
    "extract_windows", "finetune_with_boxes", "focal_loss", "k_nearest_memory", "knn_choice",
    "knn_residuals", "lambda_u_at", "load_boxes", "mixmatch_loss", "mixup", "mixup_lambda",
    "nearest_residuals", "pad_to_window", "perlin_mask", "perlin_noise", "position_code",
    "rescale_boxes", "residual_scale", "save_boxes", "sharpen", "soft_focal_loss", "synthetic_anomalies",
    "token_dropout", "validate_boxes", "window_corners", "window_starts",
]
