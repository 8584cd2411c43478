"""Negatives (CutSwap Sec. III-A, CutPaste Sec. 3): CutSwap permutes pixels and its mask is exactly
the change, clipping and overlap rules, scar and CutPaste masks, colour jitter vs torchvision,
determinism, batch = single calls. Random 64 px images, a few toy images."""

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cutswap_lib.cutswap import cutpaste, cutpaste_scar, cutswap, cutswap_scar, place_patches, weak_augment
from cutswap_lib.data import AnomalyDataset
from cutswap_lib.jitter import color_jitter, jitter_factors, uniform

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
H = W = 64


def gen(seed=0, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture(scope="module")
def images():
    return torch.rand(6, 3, H, W, generator=gen(0))


@pytest.fixture(scope="module")
def toy(toy_root):
    ds = AnomalyDataset(toy_root, "board", "train", image_size=None)  # 64 px, large flat areas
    return torch.stack([ds[i][0] for i in range(4)])


def random_anchors(b, seed, high=H):
    return torch.randint(0, high, (b, 2, 2), generator=gen(seed))


def sorted_pixels(x):
    return x.flatten(2).sort(-1).values  # (B, C, H*W): each image's multiset per channel


def changed(x, y):
    return (x != y).any(1, keepdim=True).float()  # (B, 1, H, W)


def patch_box(corner, size):
    box = torch.zeros(H, W)
    box[corner[0]:corner[0] + size, corner[1]:corner[1] + size] = 1
    return box


# --------------------------------------------------------------------------- CutSwap
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutswap_permutes_pixels_and_mask_is_exact(images, seed):
    anchors = random_anchors(len(images), seed)
    out, mask = cutswap(images, anchors, patch_size=20)
    assert out.shape == images.shape and mask.shape == (len(images), 1, H, W)
    assert torch.equal(sorted_pixels(out), sorted_pixels(images))  # a pure permutation
    assert torch.equal(mask, changed(images, out))
    assert torch.equal(mask.sum((1, 2, 3)), torch.full((len(images),), 2 * 20 * 20.0))  # noise: all change


def test_cutswap_swaps_the_placed_patches(images):
    anchors = torch.tensor([[[3, 5], [40, 30]]])
    out, mask = cutswap(images[:1], anchors, patch_size=(12, 9))
    assert torch.equal(out[0, :, 3:15, 5:14], images[0, :, 40:52, 30:39])
    assert torch.equal(out[0, :, 40:52, 30:39], images[0, :, 3:15, 5:14])
    box = torch.zeros(H, W)
    box[3:15, 5:14] = box[40:52, 30:39] = 1
    assert torch.equal(mask[0, 0], box)


def test_border_anchors_are_moved_inside_keeping_size(images):
    anchors = torch.tensor([[[60, 62], [2, 63]], [[-5, 50], [63, 0]]])
    corners = place_patches(anchors, 30, (H, W))
    assert torch.equal(corners, torch.tensor([[[34, 34], [2, 34]], [[0, 34], [34, 0]]]))
    out, mask = cutswap(images[:2], anchors, patch_size=30)
    assert torch.equal(sorted_pixels(out), sorted_pixels(images[:2]))
    for i in range(2):
        box = ((patch_box(corners[i, 0], 30) + patch_box(corners[i, 1], 30)) > 0).float()
        assert torch.equal(mask[i, 0], box)  # both patches whole, inside the image


@pytest.mark.parametrize("a,b", [((10, 10), (10, 10)), ((10, 10), (15, 12)), ((0, 0), (3, 25)),
                                 ((40, 40), (45, 50)), ((34, 0), (34, 1))])
def test_overlapping_anchors_still_permute(images, a, b):
    anchors = torch.tensor([[a, b]])
    corners = place_patches(anchors, 30, (H, W))[0]
    gap = (corners[0] - corners[1]).abs()
    assert bool((gap >= 30).any()), "placed patches must be disjoint"
    assert bool((corners >= 0).all() & (corners <= H - 30).all())
    out, mask = cutswap(images[:1], anchors, patch_size=30)
    assert torch.equal(sorted_pixels(out), sorted_pixels(images[:1]))
    assert mask.sum() == 2 * 30 * 30


def test_overlap_rule_moves_along_the_smaller_overlap():
    # rows overlap by 30 - 2 = 28, cols by 30 - 20 = 10: separate along cols, half each
    corners = place_patches(torch.tensor([[[10, 10], [12, 30]]]), 30, (96, 96))
    assert torch.equal(corners, torch.tensor([[[10, 5], [12, 35]]]))


def test_cutswap_needs_room_for_two_patches(images):
    with pytest.raises(ValueError, match="do not fit"):
        cutswap(images[:1], random_anchors(1, 0), patch_size=40)
    with pytest.raises(ValueError, match="anchors must be"):
        cutswap(images[:2], random_anchors(1, 0), patch_size=10)
    with pytest.raises(ValueError, match="images must be"):
        cutswap(images[0], random_anchors(1, 0))


def test_identical_patches_leave_mask_empty(toy):
    x = torch.zeros(1, 3, H, W)
    x[..., 20:, :] = 0.5  # two uniform halves; both patches in the top one
    out, mask, footprint = cutswap(x, torch.tensor([[[0, 0], [5, 30]]]), 10, return_footprint=True)
    assert torch.equal(out, x) and mask.sum() == 0 and footprint.sum() == 200
    out, mask = cutswap(toy, random_anchors(len(toy), 5), 16)
    assert torch.equal(mask, changed(toy, out))  # uniform board areas: mask < footprint


# --------------------------------------------------------------------------- scar
def test_cutswap_scar_masks_cover_changes_and_change_most(images, toy):
    for x in (images, toy):
        out, mask, footprint = cutswap_scar(x, random_anchors(len(x), 3), gen(1), return_footprint=True)
        assert torch.equal(mask, changed(x, out)) and bool((mask <= footprint).all())
        assert (mask.sum((1, 2, 3)) > 0).float().mean() >= 0.75
        area = footprint.sum((1, 2, 3))
        assert bool((area >= 2 * 2 * 10).all() & (area <= 2 * 31 * 31).all())
        # nearest sampling: every written value is an original pixel value of the image
        for i in range(len(x)):
            colours = x[i].flatten(1).T
            written = out[i].flatten(1).T[footprint[i, 0].flatten() > 0]
            assert bool((written[:, None] == colours[None]).all(-1).any(1).all())


def test_scar_size_errors_do_not_depend_on_draws():
    small = torch.rand(4, 3, 48, 48, generator=gen(0))
    for seed in range(3):  # the default scars' boxes reach 31 px: never two in 48 px
        with pytest.raises(ValueError, match="do not fit"):
            cutswap_scar(small, random_anchors(4, seed, 48), gen(seed))
    tiny = torch.rand(4, 3, 32, 32, generator=gen(0))
    out, mask = cutswap_scar(tiny, random_anchors(4, 0, 32), gen(0), width=(2, 4), length=(5, 10))
    assert torch.equal(mask, changed(tiny, out))
    with pytest.raises(ValueError, match="does not fit"):
        cutpaste_scar(torch.rand(1, 3, 24, 24), gen(0))
    with pytest.raises(ValueError, match="scar ranges"):
        cutpaste_scar(torch.rand(1, 3, H, W), gen(0), width=(5, 2))


def test_cutswap_scar_without_rotation_permutes(images):
    out, mask, footprint = cutswap_scar(images, random_anchors(len(images), 4), gen(2), angle=(0.0, 0.0),
                                        return_footprint=True)
    assert torch.equal(sorted_pixels(out), sorted_pixels(images))
    assert torch.equal(mask, footprint)


# --------------------------------------------------------------------------- CutPaste
@pytest.mark.parametrize("fn", [cutpaste, cutpaste_scar])
@pytest.mark.parametrize("jitter", [0.1, None])
def test_cutpaste_masks(images, fn, jitter):
    out, mask, footprint = fn(images, gen(7), jitter=jitter, return_footprint=True)
    assert torch.equal(mask, changed(images, out)) and bool((mask <= footprint).all())
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert bool((mask.sum((1, 2, 3)) > 0).all())
    outside = footprint == 0
    assert torch.equal(out * outside, images * outside)


def test_cutpaste_area_and_aspect(images):
    fp = cutpaste(images.repeat(4, 1, 1, 1), gen(3), return_footprint=True)[2]
    area = fp.mean((1, 2, 3))
    assert bool((area >= 0.015).all() & (area <= 0.16).all())


# --------------------------------------------------------------------------- colour jitter
def test_color_jitter_matches_torchvision(images):
    u = uniform(gen(4), len(images), 4, "cpu")
    f = jitter_factors(u, 0.4, 0.4, 0.4, 0.3)
    ours = color_jitter(images, f)
    for i in range(len(images)):
        b, c, s, h = f[i].tolist()
        ref = TF.adjust_brightness(images[i], b)
        ref = TF.adjust_contrast(ref, c)
        ref = TF.adjust_saturation(ref, s)
        ref = TF.adjust_hue(ref, h)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_weak_augment_range_shape_and_seed(images):
    out = weak_augment(images, gen(0), 0.5, 0.5, 0.5, 0.2)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(out, weak_augment(images, gen(0), 0.5, 0.5, 0.5, 0.2))
    assert not torch.equal(out, weak_augment(images, gen(1), 0.5, 0.5, 0.5, 0.2))
    assert torch.equal(weak_augment(images, gen(0), 0, 0, 0, 0), images)


# --------------------------------------------------------------------------- determinism, batching
CALLS = {
    "cutswap_scar": lambda x, a, g: cutswap_scar(x, a, g, return_footprint=True),
    "cutpaste": lambda x, a, g: cutpaste(x, g, return_footprint=True),
    "cutpaste_scar": lambda x, a, g: cutpaste_scar(x, g, return_footprint=True),
    "weak_augment": lambda x, a, g: (weak_augment(x, g, hue=0.1),),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_same_seed_same_output_and_batch_equals_single_calls(images, name):
    call, anchors = CALLS[name], random_anchors(len(images), 9)
    first = call(images, anchors, gen(5))[0]
    assert torch.equal(first, call(images, anchors, gen(5))[0])
    assert not torch.equal(first, call(images, anchors, gen(6))[0])
    g = gen(5)  # one generator, one image at a time: the same draws in the same order
    batch = call(images, anchors, gen(5))
    singles = [call(images[i:i + 1], anchors[i:i + 1], g) for i in range(len(images))]
    if name in ("cutpaste", "cutpaste_scar"):
        # the patch's mean luma (contrast jitter) is summed over a padded grid whose size
        # follows the batch: equal up to rounding, with exactly the same footprints
        torch.testing.assert_close(batch[0], torch.cat([s[0] for s in singles]), atol=1e-6, rtol=0)
        assert torch.equal(batch[-1], torch.cat([s[-1] for s in singles]))
    else:
        assert torch.equal(batch[0], torch.cat([s[0] for s in singles]))


def test_cutswap_batch_equals_single_calls(images):
    anchors = random_anchors(len(images), 11)
    out, mask = cutswap(images, anchors, 24)
    for i in range(len(images)):
        o, m = cutswap(images[i:i + 1], anchors[i:i + 1], 24)
        assert torch.equal(o, out[i:i + 1]) and torch.equal(m, mask[i:i + 1])


def test_scar_rotation_direction():
    # a vertical bar rotated by +90 degrees (counter-clockwise on screen) becomes horizontal
    x = torch.zeros(1, 3, H, W)
    x[..., 0:11, 34:37] = 1.0  # the 11 x 3 scar centred in its 11 x 11 box at (0, 30)
    out, _, fp = cutswap_scar(x, torch.tensor([[[0, 30], [40, 10]]]), gen(0), width=(3, 3),
                              length=(11, 11), angle=(90.0, 90.0), return_footprint=True)
    rows, cols = torch.nonzero(out[0, 0] * fp[0, 0], as_tuple=True)
    assert rows.numel() == 33 and int(rows.max() - rows.min()) == 2 and int(cols.max() - cols.min()) == 10
    assert math.isclose(float(fp.sum()), 2 * 33)


@CUDA
def test_cuda_matches_cpu(images):
    x, anchors = images.cuda(), random_anchors(len(images), 12)
    out, mask = cutswap(x, anchors.cuda(), 20)
    assert out.is_cuda and torch.equal(out.cpu(), cutswap(images, anchors, 20)[0])
    for name, call in CALLS.items():  # a CPU generator gives the same draws on any device
        gpu, cpu = call(x, anchors, gen(3))[0], call(images, anchors, gen(3))[0]
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    out = cutpaste_scar(x, gen(0, "cuda"))[0]  # a CUDA generator works too
    assert torch.equal(out, cutpaste_scar(x, gen(0, "cuda"))[0])
