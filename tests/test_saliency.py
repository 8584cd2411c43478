"""Saliency (CutSwap Sec. III-A): multilevel LayerCAM vs grad-cam, 1-D k-means vs scikit-learn,
anchor sampling, the saliency cache. Small images (64-96 px), batch 2."""

import numpy as np
import pytest
import torch
from pytorch_grad_cam import LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from sklearn.cluster import KMeans

from cutswap_lib.backbones import build_classifier, saliency_target_layers
from cutswap_lib.data import AnomalyDataset
from cutswap_lib.cutswap import (SaliencyCache, kmeans_saliency, multilevel_layercam,
                                  object_share_of_salient_cluster, salient_cluster_mask,
                                  sample_anchor_pairs)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return build_classifier("vgg16", weights=None)  # no ImageNet weights offline


@pytest.fixture(scope="module")
def lite0():
    return build_classifier("efficientnet_lite0", weights="imagenet")


@pytest.fixture(scope="module")
def disc_images(toy_root):
    ds = AnomalyDataset(toy_root, "disc", "test", image_size=None)  # 64 px
    return torch.stack([ds[i][0] for i in (0, len(ds) - 1)])  # (2, 3, 64, 64)


def gradcam_call(model, x, layers, targets):
    """The reference: grad-cam's LayerCAM called once per layer -> (B, L, H, W) numpy."""
    tg = [ClassifierOutputTarget(int(c)) for c in targets]
    maps = []
    for layer in layers:
        with LayerCAM(model=model, target_layers=[layer]) as cam:
            maps.append(cam(input_tensor=x, targets=tg))
    return np.stack(maps, 1)


# --------------------------------------------------------------------------- LayerCAM
@pytest.mark.parametrize("name,size", [("vgg16", 64), ("efficientnet_lite0", 96)])
def test_multilevel_layercam_equals_gradcam(name, size, vgg, lite0, disc_images):
    model = vgg if name == "vgg16" else lite0
    layers = saliency_target_layers(name, model)
    x = torch.nn.functional.interpolate(disc_images, size=(size, size + 16), mode="bilinear")
    ours, target = multilevel_layercam(model, x, layers, return_target=True)
    assert ours.shape == (2, 5, size, size + 16) and ours.dtype == torch.float32
    ref = gradcam_call(model, x, layers, target)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert (ours.amax((-2, -1)) > 0.99).sum() >= 8  # not a trivial all-zero comparison
    assert float(ours.min()) >= 0 and float(ours.max()) <= 1


def test_rescale_false_equals_compute_cam_per_layer(lite0, disc_images):
    layers = saliency_target_layers("efficientnet_lite0", lite0)
    ours, target = multilevel_layercam(lite0, disc_images, layers, rescale=False, return_target=True)
    tg = [ClassifierOutputTarget(int(c)) for c in target]
    with LayerCAM(model=lite0, target_layers=layers) as cam:  # one pass, as grad-cam's forward
        outputs = cam.activations_and_grads(disc_images)
        sum(t(o) for t, o in zip(tg, outputs)).backward()
        ref = np.concatenate(cam.compute_cam_per_layer(disc_images, tg, False), 1)
    lite0.zero_grad(set_to_none=True)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


def test_target_none_is_top1_and_targets_broadcast(lite0, disc_images):
    layers = saliency_target_layers("efficientnet_lite0", lite0)[2:]
    with torch.no_grad():
        top1 = lite0(disc_images).argmax(1)
    auto, used = multilevel_layercam(lite0, disc_images, layers, return_target=True)
    assert used.tolist() == top1.tolist()
    torch.testing.assert_close(auto, multilevel_layercam(lite0, disc_images, layers, top1))
    one = multilevel_layercam(lite0, disc_images, layers, 7)
    torch.testing.assert_close(one, multilevel_layercam(lite0, disc_images, layers, torch.tensor([7, 7])))
    for bad in (1000, [1, 2, 3], -1):
        with pytest.raises(ValueError, match="target"):
            multilevel_layercam(lite0, disc_images, layers, bad)


def test_hooks_removed_mode_restored_no_parameter_grads(lite0, disc_images):
    layers = saliency_target_layers("efficientnet_lite0", lite0)
    lite0.train()
    try:
        multilevel_layercam(lite0, disc_images, layers)
        assert lite0.training  # eval during the call, the caller's mode after
        with pytest.raises(ValueError, match="target"):
            multilevel_layercam(lite0, disc_images, layers, target=5000)  # fails mid-way
    finally:
        lite0.eval()
    assert all(not layer._forward_hooks for layer in layers)
    assert all(p.grad is None for p in lite0.parameters())
    with torch.inference_mode():  # works from inference mode and with a frozen model
        x = disc_images.clone()
    lite0.requires_grad_(False)
    try:
        frozen = multilevel_layercam(lite0, x, layers[-1:])
    finally:
        lite0.requires_grad_(True)
    torch.testing.assert_close(frozen, multilevel_layercam(lite0, disc_images, layers[-1:]))


def test_layercam_clear_errors(vgg, lite0, disc_images):
    with pytest.raises(ValueError, match="did not run"):
        multilevel_layercam(lite0, disc_images, [vgg.net.features[4]])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        multilevel_layercam(lite0, disc_images[0], saliency_target_layers("efficientnet_lite0", lite0))
    with pytest.raises(ValueError, match="empty"):
        multilevel_layercam(lite0, disc_images, [])
    assert not vgg.net.features[4]._forward_hooks


# --------------------------------------------------------------------------- cache
def test_cache_hit_does_no_forward_pass(tmp_path, lite0, disc_images):
    layers = saliency_target_layers("efficientnet_lite0", lite0)
    uncached = multilevel_layercam(lite0, disc_images, layers)
    calls = []
    handle = lite0.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache = SaliencyCache(tmp_path / "sal")
        first = cache(lite0, disc_images, layers)
        assert len(calls) == 1 and (cache.hits, cache.misses) == (0, 2)
        again = cache(lite0, disc_images, layers)
        assert len(calls) == 1 and (cache.hits, cache.misses) == (2, 2)  # no forward pass
        torch.testing.assert_close(first, again, rtol=0, atol=0)
        torch.testing.assert_close(first, uncached, atol=1e-3, rtol=0)  # float16 storage
        mixed = cache(lite0, torch.stack([disc_images[0].flip(-1), disc_images[0]]), layers)
        assert len(calls) == 2 and cache.misses == 3  # only the new image is computed
        torch.testing.assert_close(mixed[1], first[0], rtol=0, atol=0)
        cache(lite0, disc_images, layers, target=3)  # the target is part of the key
        assert cache.misses == 5
    finally:
        handle.remove()
    files = sorted((tmp_path / "sal").glob("*.pt"))
    entry = torch.load(files[0], weights_only=True)
    assert entry["maps"].dtype == torch.float16 and entry["maps"].shape == (5, 64, 64)


def test_cache_key_covers_weights_layers_size_and_paths(tmp_path, vgg, lite0, disc_images):
    cache = SaliencyCache(tmp_path)
    layers = saliency_target_layers("efficientnet_lite0", lite0)
    base = cache.keys(lite0, disc_images, layers)
    assert len(set(base)) == 2
    assert cache.keys(lite0, disc_images, layers[:4]) != base
    assert cache.keys(lite0, disc_images[..., :48, :48], layers) != base
    param = next(lite0.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)  # weights changed in place (fine-tuning): new keys
    try:
        assert cache.keys(lite0, disc_images, layers) != base
    finally:
        with torch.no_grad():
            param.copy_(saved)
    assert cache.keys(lite0, disc_images, layers) == base
    torch.manual_seed(1)
    other = build_classifier("efficientnet_lite0", weights=None)
    assert cache.keys(other, disc_images, saliency_target_layers("efficientnet_lite0", other)) != base
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    by_path = cache.keys(lite0, disc_images[:1], layers, paths=[img])
    assert by_path == cache.keys(lite0, disc_images[:1] * 0, layers, paths=[str(img)])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        cache.keys(lite0, disc_images[:1], layers, paths=[tmp_path / "missing.png"])


def test_cache_recomputes_a_corrupt_file(tmp_path, lite0, disc_images):
    cache = SaliencyCache(tmp_path)
    layers = saliency_target_layers("efficientnet_lite0", lite0)[-2:]
    first = cache(lite0, disc_images, layers)
    key = cache.keys(lite0, disc_images, layers)[0]
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    again = cache(lite0, disc_images, layers)  # image 0 recomputed alone: batch-size rounding
    torch.testing.assert_close(again, first, rtol=0, atol=1e-3)
    assert cache.misses == 3


# --------------------------------------------------------------------------- k-means
def _inertia(values, centroids, labels):
    return float(((values - centroids[labels]) ** 2).sum())


def test_kmeans_equals_sklearn_on_well_separated_data():
    gen = torch.Generator().manual_seed(0)
    levels = torch.tensor([0.05, 0.3, 0.6, 0.9])
    which = torch.randint(4, (2, 3, 24, 24), generator=gen)
    maps = levels[which] + 0.02 * torch.randn(which.shape, generator=gen)  # (B, L, H, W)
    centroids, assign = kmeans_saliency(maps, k=4)
    assert centroids.shape == (2, 3, 4) and assign.shape == (2, 3, 24, 24)
    for b in range(2):
        for layer in range(3):
            v = maps[b, layer].flatten().double().numpy()[:, None]
            km = KMeans(n_clusters=4, n_init=10, random_state=0).fit(v)
            order = np.argsort(km.cluster_centers_[:, 0])
            np.testing.assert_allclose(centroids[b, layer].numpy(), km.cluster_centers_[order, 0],
                                       atol=1e-6)
            rank = np.empty(4, dtype=int)
            rank[order] = np.arange(4)
            assert (assign[b, layer].flatten().numpy() == rank[km.labels_]).all()
            assert (assign[b, layer] == which[b, layer]).all()


@pytest.mark.parametrize("k", [2, 4, 6])
def test_kmeans_inertia_within_one_percent_of_sklearn(k):
    gen = torch.Generator().manual_seed(k)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 1, 5, 5, generator=gen), size=(48, 48),
                                             mode="bilinear")[:, 0]
    maps = torch.cat([torch.rand(2, 48, 48, generator=gen) ** 6,  # skewed, like saliency
                      smooth,
                      (torch.rand(2, 48, 48, generator=gen) - 0.6).clamp(min=0),  # many zeros
                      torch.randn(2, 48, 48, generator=gen)])
    centroids, assign = kmeans_saliency(maps, k=k)
    assert (centroids.diff(dim=-1) >= 0).all()  # sorted ascending
    for m in range(len(maps)):
        v = maps[m].flatten().double().numpy()
        ref = KMeans(n_clusters=k, n_init=10, random_state=0).fit(v[:, None]).inertia_
        ours = _inertia(v, centroids[m].double().numpy(), assign[m].flatten().numpy())
        assert ours <= 1.01 * ref, (m, ours, ref)
        # each pixel goes to its nearest centroid: a Lloyd fixed point
        near = np.abs(v[:, None] - centroids[m].double().numpy()[None]).argmin(1)
        assert (centroids[m][near] == centroids[m][assign[m].flatten()]).all()


def test_kmeans_degenerate_maps():
    const = torch.full((1, 8, 8), 0.5)
    c, a = kmeans_saliency(const)
    assert c.tolist() == [[0.5] * 4] and (a == 0).all()  # one cluster holds every pixel
    two = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    c, a = kmeans_saliency(two, k=4)
    assert sorted(set(c[0].tolist())) == [0.0, 1.0] and a[0, 0].tolist() == [0, 0, 3, 3]
    c, a = kmeans_saliency(two, k=1)
    assert c.tolist() == [[0.5]] and (a == 0).all()
    with pytest.raises(ValueError, match="maps"):
        kmeans_saliency(torch.rand(8, 8))


# --------------------------------------------------------------------------- anchors
@pytest.fixture(scope="module")
def maps():
    gen = torch.Generator().manual_seed(3)
    return torch.nn.functional.interpolate(torch.rand(2, 5, 6, 6, generator=gen), size=(40, 40),
                                           mode="bilinear") ** 2  # (B, L, H, W)


def _check_in(anchors, mask):
    rows, cols = anchors[..., 0], anchors[..., 1]  # (..., 2)
    flat_mask = mask.flatten(0, -3)
    idx = torch.arange(flat_mask.shape[0])[:, None]
    inside = flat_mask[idx, rows.flatten(0, -2), cols.flatten(0, -2)]
    assert inside.all()
    assert (anchors[..., 0, :] != anchors[..., 1, :]).any(-1).all()  # two distinct pixels


@pytest.mark.parametrize("cluster", ["max", "min", "random"])
def test_anchors_in_selected_cluster_distinct_and_seeded(maps, cluster):
    gen = torch.Generator().manual_seed(0)
    anchors = sample_anchor_pairs(maps, 4, gen, cluster=cluster)
    assert anchors.shape == (2, 5, 2, 2) and anchors.dtype == torch.long
    again = sample_anchor_pairs(maps, 4, torch.Generator().manual_seed(0), cluster=cluster)
    assert torch.equal(anchors, again)
    mask = salient_cluster_mask(maps, 4, cluster=cluster, generator=torch.Generator().manual_seed(0))
    _check_in(anchors, mask)
    if cluster != "random":
        _, assign = kmeans_saliency(maps, 4)
        want = assign.flatten(-2).amax(-1) if cluster == "max" else assign.flatten(-2).amin(-1)
        assert (assign[mask] == want[..., None, None].expand_as(assign)[mask]).all()
    other = sample_anchor_pairs(maps, 4, torch.Generator().manual_seed(1), cluster=cluster)
    assert not torch.equal(anchors, other)


def test_random_cluster_reaches_every_cluster(maps):
    flat = maps.flatten(0, 1)  # (10, H, W)
    _, assign = kmeans_saliency(flat, 4)
    anchors = sample_anchor_pairs(flat.repeat(20, 1, 1), 4, torch.Generator().manual_seed(0),
                                  cluster="random")  # (200, 2, 2)
    m = torch.arange(200) % 10
    picked = assign[m, anchors[:, 0, 0], anchors[:, 0, 1]]
    assert set(picked.tolist()) == {0, 1, 2, 3}


def test_sort_method_layers_subset_and_k(maps):
    gen = torch.Generator().manual_seed(0)
    top = sample_anchor_pairs(maps, generator=gen, method="sort", top_n=300)
    threshold = maps.flatten(-2).topk(300, -1).values[..., -1]  # (B, L)
    values = maps[torch.arange(2)[:, None, None], torch.arange(5)[None, :, None],
                  top[..., 0], top[..., 1]]  # (B, L, 2)
    assert (values >= threshold[..., None]).all()
    sub = sample_anchor_pairs(maps, 4, torch.Generator().manual_seed(0), layers=[0, 2, 4])
    full = sample_anchor_pairs(maps, 4, torch.Generator().manual_seed(0))
    assert sub.shape == (2, 3, 2, 2)
    _check_in(sub, salient_cluster_mask(maps[:, [0, 2, 4]], 4))
    assert full.shape == (2, 5, 2, 2)
    for k in (1, 2, 6):
        _check_in(sample_anchor_pairs(maps, k, gen), salient_cluster_mask(maps, k))
    with pytest.raises(ValueError, match="layers"):
        sample_anchor_pairs(maps[0], layers=[0])
    with pytest.raises(ValueError, match="cluster"):
        sample_anchor_pairs(maps, cluster="top")


def test_single_pixel_cluster_falls_back_and_pairs_are_uniform():
    spike = torch.zeros(1, 6, 6)
    spike[0, 1:3, 1:3] = torch.tensor([[0.5, 0.5], [0.52, 0.0]])
    spike[0, 5, 5] = 1.0  # a cluster of one pixel, the highest centroid
    spike[0, 0, :3] = 0.25
    anchors = sample_anchor_pairs(spike.expand(600, -1, -1), 4, torch.Generator().manual_seed(0))
    pairs = {tuple(map(tuple, a.tolist())) for a in anchors}
    assert pairs == {(p, q) for p in [(1, 1), (1, 2), (2, 1)] for q in [(1, 1), (1, 2), (2, 1)] if p != q}
    assert salient_cluster_mask(spike)[0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1]]
    assert sample_anchor_pairs(torch.zeros(1, 1, 2), 4).tolist() in ([[[0, 0], [0, 1]]],
                                                                     [[[0, 1], [0, 0]]])


def test_object_share_of_salient_cluster():
    levels = torch.tensor([1.0, 0.7, 0.4, 0.0]).repeat_interleave(4)[:, None].expand(16, 16)
    maps = torch.stack([levels, levels.flip(0)])[None].repeat(2, 1, 1, 1)  # (2, 2, 16, 16)
    fg = torch.zeros(2, 1, 16, 16)
    fg[0, :, :8] = 1  # image 0: object in the top half
    fg[1, :, :2] = 1  # image 1: object in the top eighth
    share = object_share_of_salient_cluster(maps, fg)  # level 0: top rows salient, level 1: bottom
    torch.testing.assert_close(share, torch.tensor([[1.0, 0.0], [0.5, 0.0]]))
    with pytest.raises(ValueError, match="foreground"):
        object_share_of_salient_cluster(maps, fg[..., :8])


@CUDA
def test_on_cuda_matches_cpu(lite0, disc_images):
    layers = saliency_target_layers("efficientnet_lite0", lite0)
    cpu = multilevel_layercam(lite0, disc_images, layers)
    model = build_classifier("efficientnet_lite0", device="cuda")
    x = disc_images.cuda()
    gpu, target = multilevel_layercam(model, x, saliency_target_layers("efficientnet_lite0", model),
                                      return_target=True)
    assert gpu.device.type == "cuda"
    ref = gradcam_call(model, x, saliency_target_layers("efficientnet_lite0", model), target)
    np.testing.assert_allclose(gpu.cpu().numpy(), ref, atol=1e-4)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=0)
    c_cpu, a_cpu = kmeans_saliency(cpu)
    c_gpu, a_gpu = kmeans_saliency(cpu.cuda())
    torch.testing.assert_close(c_gpu.cpu(), c_cpu)
    assert (a_gpu.cpu() == a_cpu).float().mean() > 0.999
    gen = torch.Generator(device="cuda").manual_seed(0)
    anchors = sample_anchor_pairs(cpu.cuda(), 4, gen)
    assert anchors.device.type == "cuda"
    _check_in(anchors.cpu(), salient_cluster_mask(cpu, 4))
