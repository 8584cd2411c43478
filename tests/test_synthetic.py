"""Synthetic anomalies (SemiREST Sec. 3.2.3, MemSeg / DRAEM): Perlin noise against a per-pixel
reference, its range and smoothness; masks above the threshold, inside the foreground and at
least min_area; anomalies whose mask is exactly the change, each fill kind, blending, seeds,
odd sizes and bad inputs. Random 64 px images and a few toy images with their footprints."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cutswap_lib.data import AnomalyDataset, toy_foreground_path
from cutswap_lib.jitter import int_between
from cutswap_lib.semirest.synthetic import KINDS, perlin_mask, perlin_noise, synthetic_anomalies

H = W = 64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images():
    return torch.rand(8, 3, H, W, generator=gen(123))


@pytest.fixture(scope="module")
def toy(toy_root):
    """Four disc images (an object on a background) and their foregrounds ``(4, 1, 64, 64)``."""
    ds = AnomalyDataset(toy_root, "disc", "train", image_size=None)
    x = torch.stack([ds[i][0] for i in range(4)])
    fg = [np.asarray(Image.open(toy_foreground_path(ds.samples[i].image))) > 127 for i in range(4)]
    return x, torch.from_numpy(np.stack(fg))[:, None]


def changed(x, y):
    return (x != y).any(1, keepdim=True)  # (B, 1, H, W)


def neighbour_vs_random(noise, seed=0):
    """Mean |difference| between horizontal / vertical neighbours, and between random pixel pairs."""
    near = 0.5 * ((noise[:, 1:] - noise[:, :-1]).abs().mean() + (noise[:, :, 1:] - noise[:, :, :-1]).abs().mean())
    flat = noise.flatten(1)
    i = torch.randint(0, flat.shape[1], (2, 4000), generator=gen(seed))
    return near.item(), (flat[:, i[0]] - flat[:, i[1]]).abs().mean().item()


# --------------------------------------------------------------------------- Perlin noise
def reference_perlin(shape, scale_range, seed):
    """Straightforward Perlin noise, one pixel at a time, from the same draws as perlin_noise (batch 1)."""
    h, w = shape
    g = gen(seed)
    lo, hi = scale_range
    ry, rx = (2 ** int_between(torch.rand(1, 2, generator=g), lo, hi - 1))[0].tolist()
    n = 2 ** (hi - 1) + 1
    angle = (2 * math.pi * torch.rand(1, n * n, generator=g))[0].view(n, n)

    def fade(t):
        return 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3

    out = torch.zeros(h, w)
    for r in range(h):
        for c in range(w):
            u, v = (r + 0.5) / h * ry, (c + 0.5) / w * rx
            i, j = math.floor(u), math.floor(v)
            dots = {}
            for di in (0, 1):
                for dj in (0, 1):
                    a = angle[i + di, j + dj]
                    dots[di, dj] = math.sin(a) * (u - i - di) + math.cos(a) * (v - j - dj)
            sy, sx = fade(u - i), fade(v - j)
            top = dots[0, 0] + sx * (dots[0, 1] - dots[0, 0])
            bottom = dots[1, 0] + sx * (dots[1, 1] - dots[1, 0])
            out[r, c] = math.sqrt(2) * (top + sy * (bottom - top))
    return out


@pytest.mark.parametrize("shape, scale_range, seed", [((12, 10), (1, 4), 0), ((9, 16), (0, 3), 5)])
def test_perlin_noise_matches_per_pixel_reference(shape, scale_range, seed):
    ours = perlin_noise(shape, 1, scale_range, generator=gen(seed))[0]
    torch.testing.assert_close(ours, reference_perlin(shape, scale_range, seed), atol=1e-5, rtol=0)


def test_perlin_noise_statistics():
    noise = perlin_noise((H, W), 200, generator=gen(0))
    assert noise.shape == (200, H, W) and noise.dtype == torch.float32
    assert abs(noise.mean().item()) < 0.03
    assert 0.15 < noise.std().item() < 0.6
    assert noise.abs().max().item() <= 1.0 + 1e-5  # sqrt(2) * the 2-D Perlin bound sqrt(1/2)
    near, far = neighbour_vs_random(noise)
    assert near < 0.45 * far  # spatially smooth
    assert not torch.equal(noise[0], noise[1])  # every image its own noise


def test_perlin_noise_lattice_sets_the_scale():
    coarse = perlin_noise((H, W), 50, scale_range=(0, 2), generator=gen(1))  # 1-2 cells
    fine = perlin_noise((H, W), 50, scale_range=(5, 6), generator=gen(1))  # 32 cells
    (near_c, far_c), (near_f, far_f) = neighbour_vs_random(coarse), neighbour_vs_random(fine)
    assert near_c < 0.1 * far_c
    assert near_f > 3 * near_c
    assert near_f > 0.3 * far_f  # 2 px cells: neighbours nearly independent


@pytest.mark.parametrize("shape", [(96, 80), (37, 50), (1, 5)])
def test_perlin_noise_any_size_and_seeded(shape):
    a = perlin_noise(shape, 4, generator=gen(3))
    assert a.shape == (4, *shape) and torch.isfinite(a).all()
    assert torch.equal(a, perlin_noise(shape, 4, generator=gen(3)))
    assert not torch.equal(a, perlin_noise(shape, 4, generator=gen(4)))


# --------------------------------------------------------------------------- masks
def test_perlin_mask_is_thresholded_noise():
    noise = perlin_noise((H, W), 30, generator=gen(7))
    mask = perlin_mask((H, W), 30, threshold=0.3, generator=gen(7), min_area=1)
    kept = (noise > 0.3).flatten(1).any(1)  # images whose first draw was not empty: not redrawn
    assert kept.sum() >= 10
    assert torch.equal(mask[kept, 0], (noise[kept] > 0.3).float())


@pytest.mark.parametrize("min_area", [1, 16, 200])
def test_perlin_mask_binary_and_at_least_min_area(min_area):
    mask = perlin_mask((H, W), 40, generator=gen(min_area), min_area=min_area)
    assert mask.shape == (40, 1, H, W) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (mask.sum((1, 2, 3)) >= min_area).all()


def test_perlin_mask_higher_threshold_smaller_masks():
    low = perlin_mask((H, W), 40, threshold=0.2, generator=gen(2), min_area=1).mean()
    high = perlin_mask((H, W), 40, threshold=0.6, generator=gen(2), min_area=1).mean()
    assert high < 0.5 * low


def test_perlin_mask_inside_foreground_and_fallback():
    fg = torch.zeros(6, 1, H, W, dtype=torch.bool)
    fg[:, :, 10:30, 40:60] = True  # a 20x20 object
    mask = perlin_mask((H, W), 6, generator=gen(0), foreground=fg, min_area=16)
    assert ((mask > 0) <= fg).all() and (mask.sum((1, 2, 3)) >= 16).all()
    blob = perlin_mask((H, W), 6, threshold=2.0, generator=gen(0), foreground=fg, min_area=30)  # noise never > 2
    area = blob.sum((1, 2, 3))
    assert ((blob > 0) <= fg).all() and (area >= 30).all() and (area <= 40).all()  # a small ellipse
    rows, cols = blob[0, 0].nonzero().unbind(1)
    assert (rows.max() - rows.min()) * (cols.max() - cols.min()) < 100  # compact, not scattered


def test_perlin_mask_foreground_as_numbers():
    fg = torch.zeros(3, 1, H, W)
    fg[..., :, :20] = 1.0  # float {0, 1} footprint, as loaded from a PNG / 255
    mask = perlin_mask((H, W), 3, generator=gen(1), foreground=fg)
    assert mask[..., 20:].sum() == 0 and (mask.sum((1, 2, 3)) >= 16).all()


# --------------------------------------------------------------------------- anomalies
def check_exact(x, out, mask, min_area=16):
    assert out.shape == x.shape and mask.shape == (x.shape[0], 1, *x.shape[2:])
    assert out.min() >= 0 and out.max() <= 1
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask > 0, changed(x, out))  # the mask is exactly the change
    outside = (mask == 0).expand_as(x)
    assert torch.equal(out[outside], x[outside])  # byte-identical outside
    assert (mask.sum((1, 2, 3)) >= min_area).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_anomalies_exact_mask_and_ranges(images, seed):
    out, mask = synthetic_anomalies(images, gen(seed))
    check_exact(images, out, mask)
    assert out.dtype == images.dtype and mask.dtype == images.dtype
    assert (mask.mean((1, 2, 3)) < 0.6).all()  # a defect, not a new image


def test_anomalies_seeded(images):
    a = synthetic_anomalies(images, gen(5))
    b = synthetic_anomalies(images, gen(5))
    c = synthetic_anomalies(images, gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1]) and not torch.equal(a[0], c[0])


def test_anomalies_stay_on_the_toy_object(toy):
    x, fg = toy
    assert 0.05 < fg.float().mean() < 0.95  # a real object, not the whole image
    for seed in range(3):
        out, mask = synthetic_anomalies(x, gen(seed), foreground=fg)
        check_exact(x, out, mask)
        assert ((mask > 0) <= fg).all()


def test_every_kind_is_reachable(images):
    x = images.repeat(4, 1, 1, 1)  # 32 images
    *_, kinds = synthetic_anomalies(x, gen(0), return_kinds=True)
    assert kinds.shape == (32,) and set(kinds.tolist()) == {0, 1, 2}


def fill_spread(x, out, mask):
    """Per image, the largest per-channel std of the anomaly's pixels ``(B,)``."""
    m = mask[:, 0] > 0  # (B, H, W)
    return torch.stack([out[i][:, m[i]].std(1).max() for i in range(len(x))])


def test_each_kind_fills_as_documented(images):
    """Opacity 1, so inside the mask the output is the fill: constant sources -> constant texture,
    a colour -> nearly constant, the (random) image itself, shuffled -> as varied as the image."""
    sources = torch.rand(5, 3, 1, 1, generator=gen(9)).expand(5, 3, H, W)  # flat colours
    out, mask, k = synthetic_anomalies(images, gen(1), sources=sources, opacity=(1, 1), return_kinds=True)
    check_exact(images, out, mask)
    spread = fill_spread(images, out, mask)
    for i, kind in enumerate(k.tolist()):
        if KINDS[kind] == "texture":
            assert spread[i] < 1e-5
        elif KINDS[kind] == "colour":
            assert 0.005 < spread[i] < 0.06
        else:
            assert spread[i] > 0.1
    for kind, lo, hi in [("texture", 0, 1e-5), ("colour", 0.005, 0.06), ("self", 0.1, 1)]:
        out, mask = synthetic_anomalies(images, gen(2), sources=sources, kinds=(kind,), opacity=(1, 1))
        s = fill_spread(images, out, mask)
        assert ((s >= lo) & (s <= hi)).all(), kind


def test_blending_follows_opacity(images):
    """out = (1 - o) x + o fill inside the mask: with a flat source the recovered fill is flat."""
    sources = torch.full((1, 3, H, W), 0.5)
    out, mask = synthetic_anomalies(images, gen(3), sources=sources, kinds="texture", opacity=(0.3, 0.3))
    check_exact(images, out, mask)
    fill = (out - 0.7 * images) / 0.3
    assert fill_spread(images, fill, mask).max() < 1e-4
    assert fill_spread(images, out, mask).min() > 0.05  # the image still shows through


def test_texture_from_the_batch_without_sources():
    x = torch.rand(4, 3, 1, 1, generator=gen(4)).expand(4, 3, H, W).contiguous()  # flat images
    out, mask = synthetic_anomalies(x, gen(4), kinds=("texture",), opacity=(1, 1))
    check_exact(x, out, mask)
    assert fill_spread(x, out, mask).max() < 1e-5  # filled from another flat image of the batch
    one, m1 = synthetic_anomalies(x[:1], gen(4), kinds=("texture",))  # a batch of one: itself, jittered
    assert one.shape == (1, 3, H, W) and m1.shape == (1, 1, H, W)


def test_unchanged_fill_leaves_an_empty_mask():
    """Black images and "self": the fill is black too, nothing changes, and the mask says so."""
    x = torch.zeros(2, 3, H, W)
    out, mask = synthetic_anomalies(x, gen(0), kinds=("self",))
    assert torch.equal(out, x) and mask.sum() == 0


@pytest.mark.parametrize("shape", [(96, 80), (50, 70), (33, 33)])
def test_odd_sizes(shape):
    x = torch.rand(3, 3, *shape, generator=gen(8))
    fg = torch.zeros(3, 1, *shape, dtype=torch.bool)
    fg[..., 5:-5, 5:-5] = True
    out, mask = synthetic_anomalies(x, gen(8), foreground=fg)
    check_exact(x, out, mask)
    assert ((mask > 0) <= fg).all()


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs, match", [
    (dict(images=torch.rand(3, H, W)), r"\(B, C, H, W\)"),
    (dict(images=torch.rand(2, 1, H, W)), "RGB"),
    (dict(images=torch.rand(2, 3, H, W) * 2), r"in \[0, 1\]"),
    (dict(foreground=torch.ones(2, 1, H, W - 1)), r"foreground must be .*\(2, 1, 64, 64\)"),
    (dict(foreground=torch.zeros(2, 1, H, W)), "fewer than min_area"),
    (dict(kinds=()), "kinds is empty"),
    (dict(kinds=("texture", "scratch")), r"unknown anomaly kind.*scratch"),
    (dict(sources=torch.rand(3, 3, H, H + 1)), r"sources must be .*\(S, 3, 64, 64\)"),
    (dict(sources=torch.rand(0, 3, H, W)), "S >= 1"),
    (dict(opacity=(0.0, 1.0)), "opacity"),
    (dict(opacity=(0.8, 0.2)), "opacity"),
    (dict(min_area=H * W + 1), "min_area"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(images=torch.rand(2, 3, H, W, generator=gen(0)), generator=gen(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        synthetic_anomalies(**args)


@pytest.mark.parametrize("kwargs", [dict(shape=(0, 8), batch=1), dict(shape=(8, 8), batch=0),
                                    dict(shape=(8, 8), batch=1, scale_range=(3, 3))])
def test_bad_noise_arguments_raise(kwargs):
    with pytest.raises(ValueError, match="scale_range"):
        perlin_noise(**kwargs)
