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
* :mod:`.boxes`         – bounding boxes: from masks, box files, pixel semi-labels, Eq. (15)
* :mod:`.mixmatch`      – MixMatch for residual tokens, Algorithm 1 (Sec. 3.3)
* :mod:`.semi`          – semi-supervised fine-tuning with box labels (Fig. 3)
* :mod:`.reproduce`     – the ``semirest-table`` runs (Tables 1, 3, 5, 6)
* :mod:`.paper_numbers` – the paper's reported figures (Tables 1-6) and annotation times

Taught in ``notebooks/04_semirest_residuals.ipynb`` (residuals) and
``notebooks/05_swin_bagging.ipynb`` (Swin, bagging, training) and
``notebooks/06_mixmatch_boxes.ipynb`` (box labels, MixMatch).
"""

from .boxes import UNKNOWN, box_block_labels, box_key, box_pixel_labels, boxes_from_mask, load_boxes, save_boxes
from .labels import anomalous_share, block_labels
from .losses import IGNORE, focal_loss
from .mixmatch import MixMatchConfig, mixmatch_loss, sharpen
from .model import SemiREST, SemiRESTConfig, TokenPool
from .position import add_position_code, position_code
from .residuals import (RESIDUAL_MODES, PositionConstrainedFeatures, ResidualMatch, ResidualMemory,
                        elementwise_residual, nearest_residuals)
from .semi import finetune_with_boxes
from .swin import TokenSwin
from .token_augment import k_nearest_memory, knn_choice, knn_residuals, residual_scale, token_dropout
from .windows import bag_windows, extract_windows, window_corners, window_starts

__all__ = [
    "UNKNOWN", "MixMatchConfig", "box_block_labels", "box_key", "box_pixel_labels", "boxes_from_mask", "load_boxes",
    "save_boxes", "mixmatch_loss", "sharpen", "finetune_with_boxes", "IGNORE", "RESIDUAL_MODES", "PositionConstrainedFeatures", "ResidualMatch", "ResidualMemory",
    "SemiREST", "SemiRESTConfig", "TokenPool", "TokenSwin", "add_position_code", "anomalous_share",
    "bag_windows", "block_labels", "elementwise_residual", "extract_windows", "focal_loss",
    "k_nearest_memory", "knn_choice", "knn_residuals", "nearest_residuals", "position_code",
    "residual_scale", "token_dropout", "window_corners", "window_starts",
]
