"""The 3-way training set (CutSwap Sec. III-A): items per image and label balance, negatives differ
from their positive only inside their patches, determinism, epochs, maps from a tiny random-init
network through the saliency cache, the CutPaste mode, the vectorised batch. 64 px images."""

import pytest
import torch
from torch import nn

from cutswap_lib.cutswap import place_patches
from cutswap_lib.data import AnomalyDataset
from cutswap_lib.cutswap import SaliencyCache, multilevel_layercam
from cutswap_lib.cutswap import ThreeWayDataset, ThreeWaySpec, make_batch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def train(toy_root):
    return AnomalyDataset(toy_root, "disc", "train", image_size=None)  # 16 images, 64 px


@pytest.fixture(scope="module")
def images(train):
    return torch.stack([train[i][0] for i in range(3)])  # (3, 3, 64, 64)


@pytest.fixture(scope="module")
def maps():
    return torch.rand(3, 5, 64, 64, generator=torch.Generator().manual_seed(0))  # (N, L, H, W)


def items(ds):
    return [ds[i] for i in range(len(ds))]


def test_items_per_image_and_balanced_labels(images, maps):
    ds = ThreeWayDataset(images, maps, patch_size=20)
    assert len(ds) == 3 * 5 * 3 and ds.triplets == 5 and ds.labels == ("normal", "cutswap", "cutswap-scar")
    counts = torch.zeros(3, 3, dtype=torch.long)  # (image, label)
    for i in range(len(ds)):
        n, j, label = ds.locate(i)
        image, y = ds[i]
        assert y == label == i % 3 and image.shape == (3, 64, 64)
        counts[n, y] += 1
    assert torch.equal(counts, torch.full((3, 3), 5))  # 5 positives, 5 CutSwap, 5 scar per image
    assert len(ThreeWayDataset(images, maps, layers=[1, 3])) == 3 * 2 * 3  # the layer ablation


def test_negatives_differ_from_their_positive_only_inside_patches(images, maps):
    ds = ThreeWayDataset(images, maps, patch_size=20, return_masks=True)
    for i in range(0, len(ds), 3):
        pos, _, zero = ds[i]
        assert zero.sum() == 0 and float(pos.min()) >= 0 and float(pos.max()) <= 1
        swap, _, mask = ds[i + 1]
        assert torch.equal(mask[0], (swap != pos).any(0).float())
        corners = place_patches(ds.anchors(i + 1)[None], 20, (64, 64))[0]
        box = torch.zeros(64, 64)
        for r, c in corners.tolist():
            box[r:r + 20, c:c + 20] = 1
        assert bool((mask[0] <= box).all())  # changed pixels lie inside the two patches
        assert torch.equal(swap.flatten(1).sort(1).values, pos.flatten(1).sort(1).values)
        scar, _, mask = ds[i + 2]
        assert torch.equal(mask[0], (scar != pos).any(0).float()) and mask.sum() <= 2 * 31 * 31


def test_anchors_come_from_the_levels_salient_cluster(images):
    maps = torch.zeros(3, 2, 64, 64)
    maps[:, 0, 10:14, 40:44] = 1.0  # level 0: a small hot spot
    maps[:, 1, 50:54, 5:9] = 1.0  # level 1: another one
    ds = ThreeWayDataset(images, maps, patch_size=10)
    for i in range(1, len(ds), 3):
        n, j, _ = ds.locate(i)
        r, c = ds.anchors(i).T
        spot = (10, 40) if j == 0 else (50, 5)
        assert bool(((r >= spot[0]) & (r < spot[0] + 4) & (c >= spot[1]) & (c < spot[1] + 4)).all())
    assert ds.anchors(0) is None


def test_deterministic_by_seed_epoch_and_index(images, maps):
    a, b = ThreeWayDataset(images, maps, seed=1), ThreeWayDataset(images, maps, seed=1)
    order = list(range(len(a)))[::-1]  # any reading order gives the same items
    for i in order:
        assert torch.equal(a[i][0], b[i][0])
    other = ThreeWayDataset(images, maps, seed=2)
    assert not torch.equal(a[1][0], other[1][0])
    before = items(a)
    a.set_epoch(1)
    after = items(a)
    assert all(not torch.equal(x[0], y[0]) for x, y in zip(before, after))  # fresh positives and negatives
    a.set_epoch(0)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(before, items(a)))


def test_dataset_input_and_dataloader(train, maps):
    sub = torch.utils.data.Subset(train, [0, 1, 2])  # items (image, mask, label, path)
    ds = ThreeWayDataset(sub, maps, patch_size=20)
    ref = ThreeWayDataset(torch.stack([train[i][0] for i in range(3)]), maps, patch_size=20)
    assert torch.equal(ds[4][0], ref[4][0])
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=9, shuffle=False)))
    assert x.shape == (9, 3, 64, 64) and y.tolist() == [0, 1, 2] * 3


def test_maps_from_a_tiny_random_network_through_the_cache(images, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    layers = [net[2], net[5]]
    cache = SaliencyCache(tmp_path)
    ds = ThreeWayDataset.from_saliency(images, net, layers, cache=cache, batch_size=2, patch_size=16)
    assert ds.maps.shape == (3, 2, 64, 64) and cache.misses == 3 and len(ds) == 3 * 2 * 3
    direct = multilevel_layercam(net, images, layers)
    torch.testing.assert_close(ds.maps, direct, atol=1e-3, rtol=0)  # float16 in the cache
    image, label = ds[4]
    assert label == 1 and image.shape == (3, 64, 64)
    ThreeWayDataset.from_saliency(images, net, layers, cache=cache)
    assert cache.hits == 3


def test_cutpaste_mode_same_interface(images, maps):
    ds = ThreeWayDataset(images, mode="cutpaste", return_masks=True)
    assert len(ds) == 3 * 5 * 3 and ds.labels == ("normal", "cutpaste", "cutpaste-scar")
    assert len(ThreeWayDataset(images, maps, mode="cutpaste", layers=[0, 2])) == 3 * 2 * 3
    for i in (0, 1, 2):
        image, label, mask = ds[i]
        assert label == i and (mask.sum() > 0) == (i > 0)


def test_errors(images, maps):
    with pytest.raises(ValueError, match="needs saliency maps"):
        ThreeWayDataset(images)
    with pytest.raises(ValueError, match="px but images are"):
        ThreeWayDataset(images, maps[..., :32, :32])
    with pytest.raises(ValueError, match="3 images"):
        ThreeWayDataset(images[:2], maps)
    with pytest.raises(ValueError, match="mode must be"):
        ThreeWayDataset(images, maps, mode="mixup")
    with pytest.raises(ValueError, match="not indices"):
        ThreeWayDataset(images, maps, layers=[7])


# --------------------------------------------------------------------------- make_batch
def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_make_batch_shapes_labels_and_masks(images, maps):
    spec = ThreeWaySpec(patch_size=20)
    x, y, masks = make_batch(images, maps, gen(0), spec, return_masks=True)
    m = 3 * 5
    assert x.shape == (3 * m, 3, 64, 64) and masks.shape == (3 * m, 1, 64, 64)
    assert y.tolist() == [0] * m + [1] * m + [2] * m
    pos, swap, scar = x.split(m)
    assert torch.equal(masks[m:2 * m], (swap != pos).any(1, keepdim=True).float())
    assert torch.equal(masks[2 * m:], (scar != pos).any(1, keepdim=True).float())
    assert torch.equal(swap.flatten(2).sort(-1).values, pos.flatten(2).sort(-1).values)
    assert bool((masks[m:].sum((1, 2, 3)) > 0).float().mean() > 0.8)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_make_batch_deterministic_one_level_and_cutpaste(images, maps):
    a = make_batch(images, maps, gen(3))[0]
    assert torch.equal(a, make_batch(images, maps, gen(3))[0])
    assert not torch.equal(a, make_batch(images, maps, gen(4))[0])
    x, y = make_batch(images, maps, gen(3), layers=[0, 4], levels="one")
    assert x.shape == (9, 3, 64, 64) and y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    x, y = make_batch(images, None, gen(3), ThreeWaySpec(mode="cutpaste"))
    assert x.shape == (45, 3, 64, 64)  # CutSwap's budget: 5 triplets per image, as with 5 levels
    x, y = make_batch(images, None, gen(3), ThreeWaySpec(mode="cutpaste"), levels="one")
    assert x.shape == (9, 3, 64, 64)
    with pytest.raises(ValueError, match="needs saliency maps"):
        make_batch(images, None, gen(3))


@CUDA
def test_make_batch_on_cuda(images, maps):
    x, y = make_batch(images.cuda(), maps.cuda(), gen(0), ThreeWaySpec(patch_size=20))
    assert x.is_cuda and y.is_cuda and x.shape == (45, 3, 64, 64)
    ds = ThreeWayDataset(images.cuda(), maps.cuda(), patch_size=20)
    assert ds[1][0].is_cuda
