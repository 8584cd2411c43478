"""The figures: one module per notebook, the only package that imports matplotlib or ipywidgets.

* :mod:`.common`    – conversions, mask outlines, :func:`save_figure` (shared by every module)
* :mod:`.data`      – notebook 00: images with their defect masks
* :mod:`.patchcore` – PatchCore's anomaly maps and score histograms (main job, 00, 03)
* :mod:`.saliency`  – notebook 01: LayerCAM levels, k-means histograms, clusters, anchors
* :mod:`.negatives` – notebook 02: CutSwap / scar / CutPaste negatives and what they change
* :mod:`.training`  – notebook 03: training curves, memory-bank projections, maps per backbone
* :mod:`.residuals` – notebook 04: position code, residual matches and maps
* :mod:`.bagging`   – notebook 05: windows, coverage, synthetic anomalies, losses, bagging
* :mod:`.boxes`     – notebook 06: box labels, MixMatch steps, the box-drawing widget
* :mod:`.pipeline`  – every chapter's opening: the two papers' pipelines, "you are here"

Every ``show_*`` function returns its :class:`matplotlib.figure.Figure`. The figure modules
may use the method (:mod:`cutswap_lib.cutswap`, :mod:`cutswap_lib.semirest`); the method
never imports them. Text tables are written by :mod:`cutswap_lib.runs`.
"""

from . import bagging, boxes, common, data, negatives, patchcore, residuals, saliency, training
from .common import overlay_mask_contour, save_figure
from .data import show_samples
from .patchcore import show_anomaly_maps, show_score_histogram
from .pipeline import PIPELINE_STAGES, show_pipeline  # the two papers' pipelines, "you are here"
from .saliency import (draw_anchor_boxes, show_cluster_choices, show_clusters, show_kmeans_histogram,
                       show_object_share, show_saliency_levels)
from .negatives import (TracedNegatives, foreground_fraction, kind_fractions, move_shares, negative_kinds,
                        show_negative_kinds, show_negatives, traced_negatives)
from .training import (pca_basis, show_anomaly_maps_by_backbone, show_memory_bank_projection,
                       show_training_curves)
from .residuals import (match_displacement, show_code_distance, show_far_match_share, show_match_displacement,
                        show_position_code, show_position_similarity, show_residual_maps,
                        show_residual_sparsity, token_norm_map, top_channel_share)
from .bagging import (moving_average, show_block_labels, show_distance_histograms, show_focal_loss_curves,
                      show_knn_augmentation, show_semirest_history, show_sliding_windows,
                      show_synthetic_anomalies, show_token_dropout, show_window_coverage,
                      show_window_vs_bagged, window_on_grid)
from .boxes import (BoxAnnotator, normal_blocks_with_defect, show_annotation_levels, show_boxes,
                    show_cost_vs_accuracy, show_finetune_curves, show_lambda_u_ramp, show_mixup,
                    show_pseudo_labels, unknown_block_truth)

__all__ = [
    "PIPELINE_STAGES", "BoxAnnotator", "TracedNegatives", "bagging", "boxes", "common", "data", "draw_anchor_boxes",
    "foreground_fraction", "kind_fractions", "match_displacement", "move_shares", "moving_average",
    "negative_kinds", "negatives", "normal_blocks_with_defect", "overlay_mask_contour", "patchcore",
    "pca_basis", "pipeline", "residuals", "saliency", "save_figure", "show_annotation_levels", "show_anomaly_maps",
    "show_anomaly_maps_by_backbone", "show_block_labels", "show_boxes", "show_cluster_choices",
    "show_clusters", "show_code_distance", "show_cost_vs_accuracy", "show_distance_histograms",
    "show_far_match_share", "show_finetune_curves", "show_focal_loss_curves", "show_kmeans_histogram",
    "show_knn_augmentation", "show_lambda_u_ramp", "show_match_displacement",
    "show_memory_bank_projection", "show_mixup", "show_negative_kinds", "show_negatives",
    "show_object_share", "show_pipeline", "show_position_code", "show_position_similarity", "show_pseudo_labels",
    "show_residual_maps", "show_residual_sparsity", "show_saliency_levels", "show_samples",
    "show_score_histogram", "show_semirest_history", "show_sliding_windows", "show_synthetic_anomalies",
    "show_token_dropout", "show_training_curves", "show_window_coverage", "show_window_vs_bagged",
    "token_norm_map", "top_channel_share", "traced_negatives", "training", "unknown_block_truth",
    "window_on_grid",
]
