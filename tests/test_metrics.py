"""Tests for cutswap_lib.metrics: sklearn as reference for AUROC / AP, brute force for AUPRO."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from cutswap_lib import metrics


# --------------------------------------------------------------------------- helpers

def random_masks(rng, n=5, h=12, w=12, n_blobs=3, normal_images=(0,)):
    """(n, h, w) bool masks with a few rectangular blobs each; images in normal_images stay empty."""
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if i in normal_images:
            continue
        for _ in range(n_blobs):
            y, x = rng.integers(0, h - 1), rng.integers(0, w - 1)
            dy, dx = rng.integers(1, 4), rng.integers(1, 4)
            masks[i, y:y + dy, x:x + dx] = True
    return masks


def flood_fill_regions(mask):
    """Brute-force 8-connected components of a 2-D bool mask: list of sets of (y, x)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            region, stack = set(), [(y0, x0)]
            seen[y0, x0] = True
            while stack:
                y, x = stack.pop()
                region.add((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            regions.append(region)
    return regions


def brute_force_pro_curve(masks, maps):
    """One (fpr, pro) point per threshold, from above the maximum down to the minimum score."""
    regions = [(i, r) for i in range(len(masks)) for r in flood_fill_regions(masks[i])]
    normal = ~masks
    thresholds = [np.inf] + sorted(set(maps.ravel().tolist()), reverse=True)
    fprs, pros = [], []
    for t in thresholds:
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        overlaps = []
        for i, region in regions:
            overlaps.append(sum(above[i, y, x] for y, x in region) / len(region))
        pros.append(np.mean(overlaps))
    return np.array(fprs), np.array(pros)


def brute_force_aupro(masks, maps, fpr_limit=0.3):
    """Trapezoid over the brute-force curve, segment by segment, cut at fpr_limit."""
    fpr, pro = brute_force_pro_curve(masks, maps)
    area = 0.0
    for k in range(len(fpr) - 1):
        x0, y0, x1, y1 = fpr[k], pro[k], fpr[k + 1], pro[k + 1]
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # interpolate the curve at fpr_limit
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


# --------------------------------------------------------------------------- AUROC / AP

def test_image_auroc_matches_sklearn_numpy_and_tensor():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    scores = rng.normal(size=40) + labels
    expected = roc_auc_score(labels, scores)
    assert metrics.image_auroc(labels, scores) == pytest.approx(expected, abs=1e-12)
    assert metrics.image_auroc(torch.from_numpy(labels), torch.from_numpy(scores).float()) == \
        pytest.approx(expected, abs=1e-6)


def test_pixel_auroc_and_ap_match_sklearn():
    rng = np.random.default_rng(1)
    masks = random_masks(rng, n=4, h=10, w=10)
    maps = rng.random(masks.shape) + 0.5 * masks
    y, s = masks.ravel(), maps.ravel()
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.pixel_ap(masks, maps) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    # torch tensors with a channel axis, float32 maps, float masks
    tm = torch.from_numpy(masks).float()[:, None]
    ts = torch.from_numpy(maps).float()[:, None]
    assert metrics.pixel_auroc(tm, ts) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert metrics.pixel_ap(tm, ts) == pytest.approx(average_precision_score(y, s), abs=1e-6)


# --------------------------------------------------------------------------- AUPRO known values

def test_perfect_and_inverted_maps():
    rng = np.random.default_rng(2)
    masks = random_masks(rng)
    perfect = masks.astype(np.float32)
    labels = masks.any(axis=(1, 2)).astype(int)
    result = metrics.evaluate(labels, labels.astype(float), masks, perfect)
    assert set(result) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro"}
    assert all(v == pytest.approx(1.0) for v in result.values())
    assert metrics.aupro(masks, 1.0 - perfect) == pytest.approx(0.0, abs=1e-12)


def test_constant_map_is_the_diagonal():
    masks = random_masks(np.random.default_rng(3))
    fpr, pro = metrics.pro_curve(masks, np.zeros(masks.shape))
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(pro, [0, 1])
    # area under y = x up to 0.3, divided by 0.3
    assert metrics.aupro(masks, np.zeros(masks.shape)) == pytest.approx(0.15)


def test_regions_are_eight_connected():
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 1, 1] = mask[0, 2, 2] = True  # diagonal neighbours: ONE region of 2 pixels
    mask[0, 4, 4] = True  # separate region of 1 pixel
    maps = np.zeros(mask.shape)
    maps[0, 1, 1] = 1.0  # half of the diagonal region above the top threshold
    fpr, pro = metrics.pro_curve(mask, maps)
    # threshold 1.0: regions covered 1/2 and 0 -> PRO 0.25 (4-connectivity would give 1/3)
    assert fpr[1] == 0.0 and pro[1] == pytest.approx(0.25)


# --------------------------------------------------------------------------- AUPRO vs brute force

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_aupro_matches_brute_force(seed, ties):
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, n=5, h=11, w=13, n_blobs=3, normal_images=(0, 3))
    if ties:  # few distinct values: many ties inside and across normal / anomalous pixels
        maps = rng.integers(0, 6, masks.shape).astype(float) + masks * rng.integers(0, 3, masks.shape)
    else:
        maps = rng.random(masks.shape) + 0.4 * masks
    fpr_bf, pro_bf = brute_force_pro_curve(masks, maps)
    fpr, pro = metrics.pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, fpr_bf, atol=1e-12)
    np.testing.assert_allclose(pro, pro_bf, atol=1e-12)
    for limit in (0.3, 0.05, 1.0):
        assert metrics.aupro(masks, maps, fpr_limit=limit) == \
            pytest.approx(brute_force_aupro(masks, maps, limit), abs=1e-6)


def test_binned_aupro_is_close_to_exact():
    rng = np.random.default_rng(7)
    masks = random_masks(rng, n=6, h=16, w=16, n_blobs=4, normal_images=(0, 1))
    maps = rng.random(masks.shape) + 0.5 * masks
    exact = metrics.aupro(masks, maps)
    assert exact == pytest.approx(brute_force_aupro(masks, maps), abs=1e-6)
    assert metrics.aupro(masks, maps, num_thresholds=500) == pytest.approx(exact, abs=1e-2)
    assert metrics.aupro(masks, maps, num_thresholds=2) != pytest.approx(exact, abs=1e-2)


def test_aupro_accepts_tensors_with_channel_axis():
    rng = np.random.default_rng(8)
    masks = random_masks(rng)
    maps = rng.random(masks.shape).astype(np.float32) + 0.3 * masks
    expected = metrics.aupro(masks, maps)
    got = metrics.aupro(torch.from_numpy(masks)[:, None], torch.from_numpy(maps)[:, None])
    assert got == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- invalid input

def test_invalid_inputs_give_clear_errors():
    masks = np.zeros((2, 4, 4))
    masks[1, 1:3, 1:3] = 1
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(ValueError, match=r"masks \(2, 4, 4\) and maps \(2, 4, 5\)"):
        metrics.pixel_auroc(masks, np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="binary"):
        metrics.aupro(masks * 255, maps)
    with pytest.raises(ValueError, match="NaN"):
        metrics.pixel_ap(masks, np.where(masks > 0, np.nan, maps))
    with pytest.raises(ValueError, match="at least one anomalous"):
        metrics.pixel_auroc(np.zeros((2, 4, 4)), maps)
    with pytest.raises(ValueError, match="anomalous pixel"):
        metrics.aupro(np.zeros((2, 4, 4)), maps)
    with pytest.raises(ValueError, match="normal pixel"):
        metrics.aupro(np.ones((2, 4, 4)), maps)
    with pytest.raises(ValueError, match="0 anomalous and 3 normal"):
        metrics.image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"labels \(3,\) and scores \(2,\)"):
        metrics.image_auroc([0, 1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="fpr_limit"):
        metrics.aupro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="2 masks"):
        metrics.evaluate([0, 1, 1], [0.1, 0.2, 0.3], masks, maps)


def test_images_of_different_sizes_are_each_evaluated_at_their_own_size():
    """Lists of (H_i, W_i) masks and maps give the metrics of all their pixels; reference: sklearn on the
    concatenated pixels, and AUPRO equal to computing it with each image's regions labelled on its own."""
    from sklearn.metrics import average_precision_score, roc_auc_score
    from cutswap_lib.metrics import aupro, pixel_ap, pixel_auroc
    rng = np.random.default_rng(0)
    masks = [np.zeros((6, 10), bool), np.zeros((9, 4), bool), np.zeros((5, 5), bool)]
    masks[0][1:3, 2:5] = True
    masks[1][4:8, 1:3] = True
    maps = [rng.random(m.shape) + 0.5 * m for m in masks]
    flat_m = np.concatenate([m.ravel() for m in masks])
    flat_a = np.concatenate([a.ravel() for a in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(flat_m, flat_a))
    assert pixel_ap(masks, maps) == pytest.approx(average_precision_score(flat_m, flat_a))
    # brute-force AUPRO: every distinct score a threshold, regions labelled per image at its own size
    from scipy import ndimage
    regions = [(i, lab == r) for i, m in enumerate(masks) for lab, n in [ndimage.label(m, np.ones((3, 3)))]
               for r in range(1, n + 1)]
    fpr, pro = [0.0], [0.0]
    for t in np.sort(np.unique(flat_a))[::-1]:
        fpr.append(float((flat_a[~flat_m] >= t).mean()))
        pro.append(float(np.mean([(maps[i][reg] >= t).mean() for i, reg in regions])))
    fpr, pro = np.array(fpr), np.array(pro)
    j = int(np.searchsorted(fpr, 0.3, side="right"))  # first point beyond 0.3
    xs = np.r_[fpr[:j], 0.3]
    ys = np.r_[pro[:j], pro[j - 1] + (0.3 - fpr[j - 1]) / (fpr[j] - fpr[j - 1]) * (pro[j] - pro[j - 1])]
    reference = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2) / 0.3)
    assert aupro(masks, maps) == pytest.approx(reference, abs=1e-9)
    with pytest.raises(ValueError, match="same"):
        pixel_ap([np.zeros((3, 3))], [np.zeros((3, 4))])


def test_pixel_ap_by_kind_ranks_each_kind_against_the_normal_images_alone():
    """Reference: sklearn on the concatenated pixels of one kind's images and the normal images. A map that
    ranks each kind perfectly on its own but puts one kind below the other's normal pixels scores 1.0 per
    kind and below 1.0 on the pooled ranking (what one pooled AP cannot separate). Works on tensors, on
    ragged per-image sizes, and refuses a kinds list of the wrong length."""
    rng = np.random.default_rng(3)
    kinds = ["good", "crack", "stain", "good", "crack", "stain"]
    masks = random_masks(rng, n=6, h=8, w=8)
    masks[[0, 3]] = 0
    maps = rng.random(masks.shape) + 0.7 * masks
    got = metrics.pixel_ap_by_kind(torch.from_numpy(masks), torch.from_numpy(maps), kinds)
    assert list(got) == ["crack", "stain"]
    for kind in got:
        idx = [i for i, k in enumerate(kinds) if k in (kind, "good")]
        ref = average_precision_score(masks[idx].ravel(), maps[idx].ravel())
        assert got[kind] == pytest.approx(ref, abs=1e-6)
    # separable per kind, not pooled: cracks score 2 on defects, stains' *normal* pixels score 3
    sep = np.where(masks > 0, 2.0, 0.0)
    sep[[2, 5]] = np.where(masks[[2, 5]] > 0, 4.0, 3.0)
    assert metrics.pixel_ap_by_kind(masks, sep, kinds) == {"crack": 1.0, "stain": 1.0}
    assert metrics.pixel_ap(masks, sep) < 0.9
    # ragged sizes: the same as pixel_ap on that kind's list
    ragged_m = [np.zeros((6, 10), bool), np.zeros((9, 4), bool), np.zeros((5, 5), bool)]
    ragged_m[1][4:8, 1:3] = True
    ragged_a = [rng.random(m.shape) + 0.5 * m for m in ragged_m]
    assert metrics.pixel_ap_by_kind(ragged_m, ragged_a, ["good", "crack", "good"]) == \
        {"crack": pytest.approx(metrics.pixel_ap(ragged_m, ragged_a))}
    # a kind without defect pixels is left out; nothing but normal images gives {}
    empty = [np.zeros_like(m) for m in ragged_m]
    assert metrics.pixel_ap_by_kind(empty, ragged_a, ["good", "good", "stain"]) == {}
    with pytest.raises(ValueError, match="one of each per image"):
        metrics.pixel_ap_by_kind(masks, maps, kinds[:-1])
