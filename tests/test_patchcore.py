"""PatchCore: hand-written parts against straightforward references."""

import numpy as np
import pytest
import torch

from cutswap_lib import metrics
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.data import load_split
from cutswap_lib.patchcore import (PatchCore, greedy_coreset, locally_aware_patch_features,
                                   nearest_neighbors, reweighted_image_scores)


def naive_greedy(features, n_select, start):
    """Greedy k-center written as the algorithm reads (PatchCore Alg. 1), O(n_select * N) cdist."""
    selected = [start]
    while len(selected) < n_select:
        d = torch.cdist(features.double(), features[selected].double()).min(dim=1).values
        selected.append(int(d.argmax()))
    return selected


def test_greedy_coreset_matches_naive_reference():
    torch.manual_seed(0)
    feats = torch.randn(500, 16)
    ours = greedy_coreset(feats, 40, projection_dim=None, half_precision=False, progress=False)
    ref = naive_greedy(feats, 40, start=int(ours[0]))
    assert ours.tolist() == ref


def test_greedy_coreset_is_seeded_and_distinct():
    feats = torch.randn(300, 64, generator=torch.Generator().manual_seed(1))
    a = greedy_coreset(feats, 30, projection_dim=8, seed=3, progress=False)
    b = greedy_coreset(feats, 30, projection_dim=8, seed=3, progress=False)
    c = greedy_coreset(feats, 30, projection_dim=8, seed=4, progress=False)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 30  # farthest-point never picks a row twice


def test_half_precision_keeps_the_coverage_radius():
    """float16 storage changes the picks slightly but not the k-center objective much."""
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(4000, 32, generator=gen) + 5 * torch.randn(20, 32, generator=gen).repeat(200, 1)

    def radius(sel):
        return torch.cdist(feats, feats[sel]).min(dim=1).values.max().item()

    r16 = radius(greedy_coreset(feats, 200, projection_dim=None, half_precision=True, progress=False))
    r32 = radius(greedy_coreset(feats, 200, projection_dim=None, half_precision=False, progress=False))
    assert r16 <= 1.05 * r32


def test_greedy_coreset_rejects_bad_size():
    with pytest.raises(ValueError, match="n_select"):
        greedy_coreset(torch.randn(10, 4), 11)


def test_faiss_search_equals_cdist():
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(200, 24, generator=gen), torch.randn(50, 24, generator=gen)
    dist, idx = nearest_neighbors(queries, bank, k=3)
    ref = torch.cdist(queries.double(), bank.double())
    ref_dist, ref_idx = ref.topk(3, dim=1, largest=False)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(dist.double(), ref_dist, atol=1e-4)


def test_patch_features_average_3x3_and_align_grids():
    torch.manual_seed(0)
    shallow, deep = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
    feats = locally_aware_patch_features({"a": shallow, "b": deep})
    assert feats.shape == (2, 8, 8, 8)
    # interior position: plain mean of the 3x3 neighbourhood
    assert torch.allclose(feats[:, :3, 4, 5], shallow[:, :, 3:6, 4:7].mean(dim=(2, 3)), atol=1e-6)
    # corner: padding does not count (mean of the 2x2 valid neighbours)
    assert torch.allclose(feats[:, :3, 0, 0], shallow[:, :, :2, :2].mean(dim=(2, 3)), atol=1e-6)
    reduced = locally_aware_patch_features({"a": shallow, "b": deep}, feature_dim=4)
    assert reduced.shape == (2, 4, 8, 8)


@pytest.fixture(scope="module")
def toy_splits(toy_root):
    train, _, _, _ = load_split(toy_root, "disc", "train", 64)
    test, masks, labels, _ = load_split(toy_root, "disc", "test", 64)
    return train, test, masks, labels


def brute_force_image_scores(model, train, test, b):
    """Every test patch against every training patch with cdist, then Eq. 7 as the paper writes it."""
    bank = model.embed(train).permute(0, 2, 3, 1).reshape(-1, model.memory_bank.shape[1]).double()
    scores = []
    for image in test:
        q = model.embed(image[None]).permute(0, 2, 3, 1).reshape(-1, bank.shape[1]).double()
        d = torch.cdist(q, bank)  # (P, N)
        patch_scores, nearest = d.min(dim=1)
        p_star = int(patch_scores.argmax())
        s_star = patch_scores[p_star]
        m_star = bank[nearest[p_star]]
        neighbours = torch.cdist(m_star[None], bank)[0].argsort()[:b]  # N_b(m*), m* first
        e = torch.exp(torch.linalg.vector_norm(q[p_star] - bank[neighbours], dim=1))
        scores.append(float((1 - e[0] / e.sum()) * s_star))
    return np.array(scores)


def test_without_coreset_image_scores_equal_brute_force(toy_splits):
    train, test, _, _ = toy_splits
    torch.manual_seed(0)
    model = PatchCore("resnet18", weights=None, coreset_ratio=None, device="cpu",
                      num_neighbors=5, progress=False).fit(train)
    scores, maps = model.predict(test[:6])
    ref = brute_force_image_scores(model, train, test[:6], b=5)
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-4)
    assert maps.shape == (6, 64, 64)


def test_patchcore_random_resnet18_beats_chance_on_toy_disc(tmp_path):
    """With the default profile (224 px, 60 + 60 images) an untrained ResNet18 beats chance.

    Random features vary a lot from one draw to the next, so the claim is about the mean
    over three seeds of the backbone (the main job reports the same mean ± std).
    """
    make_toy_dataset(tmp_path, "disc", n_train=60, n_test_good=20, n_test_defect=10, image_size=224, seed=0)
    train, _, _, _ = load_split(tmp_path, "disc", "train", 224)
    test, masks, labels, _ = load_split(tmp_path, "disc", "test", 224)
    image, pixel = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        model = PatchCore("resnet18", weights=None, coreset_ratio=0.1, device="cpu", seed=seed,
                          progress=False)
        model.fit(train)
        scores, maps = model.predict(test)
        image.append(metrics.image_auroc(labels, scores))
        pixel.append(metrics.pixel_auroc(masks, maps))
    assert model.memory_bank.shape[0] == round(0.1 * 60 * 28 * 28)  # 224 px / stride 8 = 28
    assert np.mean(image) > 0.65, image
    assert np.mean(pixel) > 0.85, pixel


def test_predict_before_fit_and_bad_input_are_clear():
    model = PatchCore("resnet18", weights=None, device="cpu", progress=False)
    with pytest.raises(RuntimeError, match="before fit"):
        model.predict(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.fit(torch.rand(4, 32, 32))
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore("resnet18", weights=None, coreset_ratio=0.0)


def test_one_row_memory_bank_scores_by_plain_maximum():
    """With M = 1 the softmax over one neighbour would zero every image score (AUROC 0.5)."""
    queries = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    bank = torch.zeros(1, 4)
    dist = torch.linalg.vector_norm(queries, dim=-1)  # (3, 5) distances to the one row
    scores = reweighted_image_scores(dist, torch.zeros(3, 5, dtype=torch.long), queries, bank, 9)
    assert torch.allclose(scores, dist.max(dim=1).values)


def test_cached_faiss_index_follows_the_bank():
    """The faiss index is reused for the same bank and rebuilt after an in-place edit or for a new bank."""
    from cutswap_lib.patchcore import nearest_neighbors

    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(50, 8, generator=gen), torch.randn(20, 8, generator=gen)
    brute = torch.cdist(queries, bank).min(1)
    for _ in range(2):  # second call: cached index
        dist, idx = nearest_neighbors(queries, bank)
        assert idx[:, 0].tolist() == brute.indices.tolist()
    bank[brute.indices[0]] += 100.0  # in place: the cache must notice
    dist, idx = nearest_neighbors(queries, bank)
    assert idx[:, 0].tolist() == torch.cdist(queries, bank).min(1).indices.tolist()
    other = torch.randn(50, 8, generator=gen)  # same shape, new tensor
    dist, idx = nearest_neighbors(queries, other)
    torch.testing.assert_close(dist[:, 0], torch.cdist(queries, other).min(1).values, rtol=1e-4, atol=1e-4)
