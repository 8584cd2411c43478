"""Anomaly-detection metrics: image AUROC, pixel AUROC, pixel AP, PRO curve and AUPRO.

AUROC and AP come from scikit-learn. The PRO curve and AUPRO are written here,
following the MVTec AD evaluation (Bergmann et al., IJCV 2021):

* the ground-truth regions are the 8-connected components of each image's mask;
* for a threshold ``t``, PRO(t) is the mean over all regions (of all images) of the
  fraction of the region's pixels with score >= t, and FPR(t) is the fraction of all
  normal pixels (normal images and the normal part of defective ones) with score >= t;
* AUPRO integrates PRO over FPR from 0 to ``fpr_limit`` (0.3) with the trapezoid rule,
  interpolating the curve at ``fpr_limit``, and divides by ``fpr_limit``.

Inputs may be numpy arrays or torch tensors on any device; they are copied to CPU
numpy. Masks are ``(N, H, W)`` or ``(N, 1, H, W)`` with values in {0, 1}; maps have the
same shape (a singleton channel axis on either side is dropped before comparing).
Bad input (shape mismatch, non-binary masks, NaN scores, a missing class) raises a
``ValueError`` that says what is wrong.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["image_auroc", "pixel_auroc", "pixel_ap", "pixel_ap_by_kind", "pro_curve", "aupro", "evaluate"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)  # 8-connectivity, as in the MVTec evaluation


# --------------------------------------------------------------------------- input checks

def _to_numpy(x, name: str) -> np.ndarray:
    """Any array-like or torch tensor (any device) -> CPU numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.dtype.itemsize < 4:  # float16 / bfloat16
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to an array ({err})") from err


def _check_binary(a: np.ndarray, name: str) -> np.ndarray:
    """Return ``a`` as bool after checking that every value is 0 or 1."""
    if a.dtype == bool:
        return a
    if not (np.issubdtype(a.dtype, np.number)):
        raise ValueError(f"{name} must be numeric or bool with values in {{0, 1}}, got dtype {a.dtype}")
    bad = (a != 0) & (a != 1)
    if bad.any():
        values = np.unique(a[bad])[:5]
        hint = " (masks read from PNG files are often 0/255: divide by 255)" if 255 in values else ""
        raise ValueError(f"{name} must be binary with values in {{0, 1}}; found {values.tolist()}{hint}")
    return a.astype(bool)


def _check_scores(a: np.ndarray, name: str) -> np.ndarray:
    """Return ``a`` as float64 after checking that it is numeric and finite."""
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if np.isnan(a).any():
        raise ValueError(f"{name} contains {int(np.isnan(a).sum())} NaN value(s)")
    if np.isinf(a).any():
        raise ValueError(f"{name} contains {int(np.isinf(a).sum())} infinite value(s)")
    return a


def _need_both_classes(positives: np.ndarray, what: str, metric: str) -> None:
    n_pos = int(positives.sum())
    n_neg = int(positives.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{metric} needs at least one anomalous and one normal {what}; "
            f"got {n_pos} anomalous and {n_neg} normal"
        )


def _images_and_scores(labels, scores, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """labels (N,) in {0,1}, scores (N,) -> (bool (N,), float64 (N,)), validated."""
    y = _to_numpy(labels, "labels")
    s = _to_numpy(scores, "scores")
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(
            f"{metric}: labels and scores must both have shape (N,); "
            f"got labels {tuple(y.shape)} and scores {tuple(s.shape)}"
        )
    y = _check_binary(y, "labels")
    s = _check_scores(s, "scores")
    _need_both_classes(y, "image", metric)
    return y, s


def _ragged(masks, maps, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Lists of per-image masks and maps ``(H_i, W_i)`` of different sizes -> padded (N, H, W) arrays, or None.

    Padding: mask False, map NaN; every metric leaves NaN pixels out (real maps may not hold NaN,
    each image is checked before padding).
    """
    if not isinstance(masks, (list, tuple)) or not isinstance(maps, (list, tuple)):
        return None
    ms = [_to_numpy(x, "masks") for x in masks]
    as_ = [_to_numpy(x, "maps") for x in maps]
    if len(ms) != len(as_) or not ms:
        raise ValueError(f"{metric}: {len(ms)} masks and {len(as_)} maps")
    ms = [x[0] if x.ndim == 3 and x.shape[0] == 1 else x for x in ms]
    as_ = [x[0] if x.ndim == 3 and x.shape[0] == 1 else x for x in as_]
    if len({x.shape for x in ms}) == 1 and all(x.ndim == 2 for x in ms):
        return None  # one size: the array path
    for i, (m, a) in enumerate(zip(ms, as_)):
        if m.ndim != 2 or m.shape != a.shape:
            raise ValueError(f"{metric}: image {i}: mask {m.shape} and map {a.shape} must be the same (H, W)")
    h, w = max(x.shape[0] for x in ms), max(x.shape[1] for x in ms)
    m_out, a_out = np.zeros((len(ms), h, w), dtype=bool), np.full((len(ms), h, w), np.nan)
    for i, (m, a) in enumerate(zip(ms, as_)):
        m_out[i, :m.shape[0], :m.shape[1]] = _check_binary(m, "masks")
        a_out[i, :a.shape[0], :a.shape[1]] = _check_scores(a, "maps")
    return m_out, a_out


def _masks_and_maps(masks, maps, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """masks, maps (N, H, W) | (N, 1, H, W) | (H, W) -> (bool (N, H, W), float64 (N, H, W)).

    Also lists of ``(H_i, W_i)`` masks and maps of different sizes (each image at its own
    size): padded, with NaN in the maps where there is no pixel (see :func:`_ragged`).
    """
    padded = _ragged(masks, maps, metric)
    if padded is not None:
        return padded
    m = _to_numpy(masks, "masks")
    a = _to_numpy(maps, "maps")
    shapes = f"masks {tuple(m.shape)} and maps {tuple(a.shape)}"

    def as_nhw(x: np.ndarray) -> np.ndarray | None:
        if x.ndim == 2:
            return x[None]  # one image
        if x.ndim == 3:
            return x
        if x.ndim == 4 and x.shape[1] == 1:
            return x[:, 0]
        return None

    m3, a3 = as_nhw(m), as_nhw(a)
    if m3 is None or a3 is None:
        raise ValueError(f"{metric}: expected (N, H, W) or (N, 1, H, W) arrays; got {shapes}")
    if m3.shape != a3.shape:
        raise ValueError(f"{metric}: masks and maps must have the same shape; got {shapes}")
    if m3.size == 0:
        raise ValueError(f"{metric}: empty input ({shapes})")
    return _check_binary(m3, "masks"), _check_scores(a3, "maps")


# --------------------------------------------------------------------------- AUROC / AP

def image_auroc(labels, scores) -> float:
    """labels (N,) in {0,1} (1 = anomalous), scores (N,) -> area under the ROC curve."""
    y, s = _images_and_scores(labels, scores, "image_auroc")
    return float(roc_auc_score(y, s))


def pixel_auroc(masks, maps) -> float:
    """masks (N, H, W) | (N, 1, H, W) in {0,1}, maps same shape -> ROC AUC over all pixels."""
    m, a = _pixels(*_masks_and_maps(masks, maps, "pixel_auroc"))
    _need_both_classes(m, "pixel", "pixel_auroc")
    return float(roc_auc_score(m, a))


def pixel_ap(masks, maps) -> float:
    """masks (N, H, W) | (N, 1, H, W) in {0,1}, maps same shape -> average precision over all pixels."""
    m, a = _pixels(*_masks_and_maps(masks, maps, "pixel_ap"))
    _need_both_classes(m, "pixel", "pixel_ap")
    return float(average_precision_score(m, a))


def pixel_ap_by_kind(masks, maps, kinds, normal: str = "good") -> dict[str, float]:
    """Pixel AP of each defect kind on its own: that kind's images plus every ``normal`` image.

    ``kinds``: one name per image (e.g. MVTec's ``test/<kind>/`` folder), ``normal`` naming the
    defect-free ones. One ranking over all kinds (:func:`pixel_ap`) also measures how one kind's
    scores compare with another's; this measures each kind against the normal pixels alone, as a
    model trained or evaluated on that kind only would be. A kind whose masks hold no defect
    pixel is left out. Returns ``{kind: AP}`` in sorted order; ``{}`` without any defect kind.
    """
    kinds = list(kinds)
    n = len(masks)
    if len(kinds) != n or len(maps) != n:
        raise ValueError(f"pixel_ap_by_kind: {n} masks, {len(maps)} maps and {len(kinds)} kinds; "
                         "expected one of each per image")
    out = {}
    for kind in sorted(set(kinds) - {normal}):
        chosen = [i for i, k in enumerate(kinds) if k in (kind, normal)]
        sub_masks = [_to_numpy(masks[i], "masks") for i in chosen]
        if not any(m.any() for m in sub_masks):
            continue
        out[kind] = pixel_ap(sub_masks, [_to_numpy(maps[i], "maps") for i in chosen])  # lists: any sizes
    return out


def _pixels(m: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every real pixel (not padding) of (N, H, W) masks and maps, flattened."""
    keep = ~np.isnan(a)
    return m[keep], a[keep]


# --------------------------------------------------------------------------- PRO / AUPRO

def _region_ids(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """bool (N, H, W) -> (int64 (N, H, W) region ids, 0 = normal, 1..R over all images; R)."""
    ids = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):  # one labelling per image: regions never span images
        labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        ids[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    return ids, n_regions


def _pro_curve(m: np.ndarray, a: np.ndarray, num_thresholds: int | None):
    """Validated bool masks and float maps (N, H, W) -> (fpr, pro, thresholds), fpr increasing."""
    ids, n_regions = _region_ids(m)
    if n_regions == 0:
        raise ValueError("aupro / pro_curve need at least one anomalous pixel in masks; got none")
    keep = ~np.isnan(a).ravel()  # padding of images of different sizes is no pixel
    normal = ~m
    n_normal = int((normal.ravel() & keep).sum())
    if n_normal == 0:
        raise ValueError("aupro / pro_curve need at least one normal pixel in masks; got none")

    ids = ids.ravel()[keep]
    scores = a.ravel()[keep]
    region_size = np.bincount(ids, minlength=n_regions + 1).astype(np.float64)  # (R+1,)
    # Each anomalous pixel carries 1 / (R * |its region|): summing over the pixels above a
    # threshold gives the mean over regions of the covered fraction, i.e. PRO.
    weight = np.zeros(n_regions + 1)
    weight[1:] = 1.0 / (n_regions * region_size[1:])
    pixel_weight = weight[ids]  # (P,), 0 on normal pixels
    is_normal = (ids == 0).astype(np.float64)  # (P,)

    if num_thresholds is None:
        # Exact: one curve point per distinct score. Sort once, descending; a threshold t
        # keeps the prefix of pixels with score >= t, so cumulative sums evaluated at the
        # end of each run of equal scores give the counts (ties move together).
        order = np.argsort(-scores, kind="stable")
        s = scores[order]
        run_end = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # (T,) last index of each tie run
        thresholds = s[run_end]  # (T,) descending
        pro = np.cumsum(pixel_weight[order])[run_end]
        fpr = np.cumsum(is_normal[order])[run_end] / n_normal
    else:
        # Binned: thresholds evenly spaced between the lowest and highest score. Each pixel
        # is counted from the highest threshold <= its score downwards. These are exact
        # points of the curve, just fewer of them (the trapezoid between them is coarser).
        if int(num_thresholds) < 2:
            raise ValueError(f"num_thresholds must be >= 2 or None, got {num_thresholds}")
        k = int(num_thresholds)
        thresholds = np.linspace(scores.max(), scores.min(), k)  # (K,) descending
        ascending = thresholds[::-1]
        bin_of = k - np.searchsorted(ascending, scores, side="right")  # (P,) index into descending
        pro = np.cumsum(np.bincount(bin_of, weights=pixel_weight, minlength=k))
        fpr = np.cumsum(np.bincount(bin_of, weights=is_normal, minlength=k)) / n_normal

    # Start at (0, 0): a threshold above every score keeps no pixel.
    fpr = np.r_[0.0, fpr]
    pro = np.r_[0.0, np.minimum(pro, 1.0)]
    thresholds = np.r_[np.inf, thresholds]
    return fpr, pro, thresholds


def pro_curve(masks, maps, num_thresholds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """masks, maps (N, H, W) | (N, 1, H, W) -> (fpr (T+1,), pro (T+1,)), fpr increasing from 0.

    Per-region overlap curve of the MVTec AD evaluation (Bergmann et al., IJCV 2021): one
    point per distinct score (``num_thresholds=None``) or per evenly spaced threshold.
    The first point is (0, 0) and the last (1, 1).
    """
    m, a = _masks_and_maps(masks, maps, "pro_curve")
    fpr, pro, _ = _pro_curve(m, a, num_thresholds)
    return fpr, pro


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (x, y), x non-decreasing, from x[0] to x_max (interpolated)."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    if xs[-1] < x_max and keep.sum() < x.size:  # cut the next segment at x_max
        j = int(keep.sum())  # first point beyond x_max
        t = (x_max - x[j - 1]) / (x[j] - x[j - 1])
        xs = np.r_[xs, x_max]
        ys = np.r_[ys, y[j - 1] + t * (y[j] - y[j - 1])]
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def aupro(masks, maps, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """masks, maps (N, H, W) | (N, 1, H, W) -> normalised area under the PRO curve up to fpr_limit.

    As in the MVTec AD evaluation (Bergmann et al., IJCV 2021): regions are the 8-connected
    components of each mask, PRO is averaged over all regions of all images, FPR counts all
    normal pixels; trapezoid from FPR 0 to ``fpr_limit`` (interpolated there), divided by
    ``fpr_limit``. The default is exact (every distinct score is a threshold; one sort, no
    loop over thresholds). ``num_thresholds=K`` uses K evenly spaced thresholds instead:
    faster and lighter on very large inputs (no full sort), but an approximation whose
    error shrinks as K grows (typically < 1e-3 for K = 1000 on smooth maps).
    """
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    m, a = _masks_and_maps(masks, maps, "aupro")
    fpr, pro, _ = _pro_curve(m, a, num_thresholds)
    return _trapezoid_to(fpr, pro, float(fpr_limit)) / float(fpr_limit)


# --------------------------------------------------------------------------- all at once

def evaluate(labels, scores, masks=None, maps=None, fpr_limit: float = 0.3,
             num_thresholds: int | None = None) -> dict[str, float]:
    """labels, scores (N,); masks, maps (N, H, W) | (N, 1, H, W) -> dict of the four metrics.

    Keys: ``image_auroc``, ``pixel_auroc``, ``pixel_ap``, ``aupro``. Without masks and maps
    the three pixel metrics are ``nan`` (image-level evaluation only).
    """
    result = {"image_auroc": image_auroc(labels, scores)}
    if masks is None and maps is None:
        result.update(pixel_auroc=float("nan"), pixel_ap=float("nan"), aupro=float("nan"))
        return result
    if masks is None or maps is None:
        raise ValueError("evaluate: give both masks and maps, or neither")
    m, a = _masks_and_maps(masks, maps, "evaluate")
    n_images = _to_numpy(labels, "labels").shape[0]
    if m.shape[0] != n_images:
        raise ValueError(f"evaluate: {n_images} image labels but {m.shape[0]} masks")
    result["pixel_auroc"] = pixel_auroc(m, a)
    result["pixel_ap"] = pixel_ap(m, a)
    result["aupro"] = aupro(m, a, fpr_limit=fpr_limit, num_thresholds=num_thresholds)
    return result
