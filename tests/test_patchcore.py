"""PatchCore: hand-written parts against straightforward references."""

import numpy as np
import pytest
import torch

from cutswap_lib import metrics
from cutswap_lib.data import make_toy_dataset
from cutswap_lib.data import load_split
from cutswap_lib.patchcore import (PatchCore, RecomputedRows, greedy_coreset, locally_aware_patch_features,
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


# --------------------------------------------------------------------------- memory: blocks, float16, chunks
U16 = 2.0 ** -11  # float16's unit roundoff: a rounded row moves by at most U16 times its norm


def _data(seed=0, m=300, q=70, d=24):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=gen) * 3 + 1, torch.randn(q, d, generator=gen) * 3 + 1


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("chunk,bank_chunk", [(7, 13), (70, 300), (4096, 4096)])
def test_chunked_search_equals_brute_force(k, chunk, bank_chunk):
    bank, queries = _data()
    dist, idx = nearest_neighbors(queries, bank, k=k, chunk=chunk, bank_chunk=bank_chunk, backend="torch")
    ref_dist, ref_idx = torch.cdist(queries.double(), bank.double()).topk(k, dim=1, largest=False)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-4)
    f_dist, f_idx = nearest_neighbors(queries, bank, k=k, backend="faiss")
    assert torch.equal(idx, f_idx)


def test_float16_bank_search_is_exact_on_the_rounded_bank_and_within_its_rounding():
    bank, queries = _data(1)
    half = bank.half()
    dist, idx = nearest_neighbors(queries, half, k=3, bank_chunk=50)  # auto: float16 -> chunked torch
    rounded = torch.cdist(queries.double(), half.double())
    ref_dist, ref_idx = rounded.topk(3, dim=1, largest=False)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-4)
    exact = torch.cdist(queries.double(), bank.double()).topk(3, dim=1, largest=False).values
    bound = U16 * torch.linalg.vector_norm(bank, dim=1).max().item() + 1e-4
    assert (dist.double() - exact).abs().max().item() <= bound


def test_greedy_coreset_row_chunks_and_blocks_do_not_change_the_selection():
    feats = torch.randn(900, 40, generator=torch.Generator().manual_seed(4))
    blocks = list(feats.split(250))
    for kwargs in ({"projection_dim": 8}, {"projection_dim": None}, {"projection_dim": 8, "half_precision": True}):
        ref = greedy_coreset(feats, 60, progress=False, **kwargs)
        assert torch.equal(greedy_coreset(feats, 60, progress=False, chunk=37, **kwargs), ref), kwargs
        assert torch.equal(greedy_coreset(blocks, 60, progress=False, **kwargs), ref), kwargs
    # float16 rows are read as float32: the same picks as the rounded bank in float32
    half = feats.half()
    assert torch.equal(greedy_coreset([b.half() for b in blocks], 60, projection_dim=8, progress=False),
                       greedy_coreset(half.float(), 60, projection_dim=8, progress=False))


def test_row_chunks_switch_to_float16_past_the_threshold():
    from cutswap_lib.patchcore import RowChunks, bank_storage_dtype

    full = torch.randn(100, 64, generator=torch.Generator().manual_seed(5))
    rows = RowChunks("auto", half_bank_mb=40 * 64 * 4 / 2**20)  # float16 from the 41st row on
    rows.append(full[:30])
    assert rows.blocks[0].dtype == torch.float32
    for block in full[30:].split(35):
        rows.append(block)
    assert [b.dtype for b in rows.blocks] == [torch.float16] * 3
    index = torch.tensor([99, 0, 31, 64, 65, 29])
    assert torch.equal(rows.take(index), full.half()[index])
    assert torch.equal(rows.concat(), full.half()) and not rows.blocks
    assert bank_storage_dtype("float32", 10**9, 1024) == torch.float32
    with pytest.raises(ValueError, match="bank_dtype"):
        bank_storage_dtype("bfloat16", 1, 1)


def test_streamed_fit_equals_the_whole_bank_reference(toy_splits):
    """Embedding 5 images at a time and picking the coreset from the blocks gives the unstreamed bank."""
    train, test, _, _ = toy_splits
    torch.manual_seed(0)
    model = PatchCore("resnet18", weights=None, coreset_ratio=0.25, device="cpu", batch_size=5,
                      bank_dtype="float32", progress=False).fit(train)
    full = model.embed(train).permute(0, 2, 3, 1).reshape(-1, model.memory_bank.shape[1])  # (N, D) at once
    keep = greedy_coreset(full, round(0.25 * len(full)), progress=False)
    assert model.memory_bank.dtype == torch.float32
    torch.testing.assert_close(model.memory_bank, full[keep], rtol=1e-5, atol=1e-5)


def test_rows_past_the_budget_are_recomputed_and_give_the_kept_rows_bank(toy_splits):
    """Past ``row_budget_mb`` nothing of the training rows is kept; the bank equals the one kept rows give."""
    train, test, _, _ = toy_splits
    torch.manual_seed(0)
    kept = PatchCore("resnet18", weights=None, coreset_ratio=0.25, device="cpu", batch_size=5,
                     bank_dtype="float32", row_budget_mb=None, progress=False).fit(train)
    passes = []
    streamed = PatchCore(kept.extractor, coreset_ratio=0.25, device="cpu", batch_size=5, bank_dtype="float32",
                         row_budget_mb=0.01, progress=False)
    embed = streamed.embed
    streamed.embed = lambda x: passes.append(len(x)) or embed(x)
    streamed.fit(train)
    assert streamed.streamed and not kept.streamed
    assert torch.equal(streamed.memory_bank, kept.memory_bank)
    # the first batch (to learn the sizes), then one pass for the coreset and one to gather the bank
    assert sum(passes) == len(train[:5]) + 2 * len(train)
    torch.testing.assert_close(streamed.predict(test[:3])[1], kept.predict(test[:3])[1], rtol=0, atol=0)
    everything = PatchCore(kept.extractor, coreset_ratio=None, device="cpu", batch_size=5, bank_dtype="float32",
                           row_budget_mb=0.01, progress=False).fit(train)
    assert everything.streamed and everything.memory_bank.shape[0] == len(train) * 8 * 8


def test_recomputing_refuses_a_shuffled_loader(toy_splits):
    train = toy_splits[0]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train), batch_size=4, shuffle=True)
    model = PatchCore("resnet18", weights=None, coreset_ratio=0.25, device="cpu", row_budget_mb=0.01, progress=False)
    with pytest.raises(ValueError, match="same order at every pass"):
        model.fit(loader)
    ordered = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train), batch_size=4)
    assert model.fit(ordered).streamed


def test_recomputed_rows_check_every_pass_and_gather_in_index_order():
    full = torch.randn(23, 5)
    rows = RecomputedRows(lambda: full.split(7), 23, 5)
    index = torch.tensor([22, 0, 7, 6, 14])
    assert torch.equal(rows.take(index), full[index])
    assert torch.equal(greedy_coreset(rows, 6, None, progress=False), greedy_coreset(full, 6, None, progress=False))
    short = RecomputedRows(lambda: full[:20].split(7), 23, 5)
    with pytest.raises(RuntimeError, match="gave 20 rows, 23 were announced"):
        short.take(index)


def test_float16_bank_scores_within_the_rounding_of_the_float32_bank(toy_splits):
    train, test, _, _ = toy_splits
    torch.manual_seed(0)
    ref = PatchCore("resnet18", weights=None, coreset_ratio=None, device="cpu", bank_dtype="float32",
                    progress=False).fit(train)
    half = PatchCore(ref.extractor, coreset_ratio=None, device="cpu", bank_dtype="float16", progress=False,
                     search_chunk=100).fit(train)
    assert ref.memory_bank.dtype == torch.float32 and half.memory_bank.dtype == torch.float16
    s32, m32 = ref.predict(test)
    s16, m16 = half.predict(test)
    # patch scores move by at most the rounding of the bank rows; upsampling and blur are averages
    bound = U16 * torch.linalg.vector_norm(ref.memory_bank, dim=1).max().item() + 1e-4
    assert (m16 - m32).abs().max().item() <= bound
    np.testing.assert_allclose(s16.numpy(), s32.numpy(), rtol=1e-2)  # Eq. 7's reweighting: measured < 1e-3


def test_auto_bank_dtype_follows_the_threshold(toy_splits):
    train = toy_splits[0]
    torch.manual_seed(0)
    small = PatchCore("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False).fit(train)
    assert small.memory_bank.dtype == torch.float32  # 16 images at 64 px: far below 512 MiB
    tiny = PatchCore(small.extractor, coreset_ratio=0.5, device="cpu", half_bank_mb=0.01, progress=False).fit(train)
    assert tiny.memory_bank.dtype == torch.float16 and tiny.memory_bank.shape == small.memory_bank.shape
    with pytest.raises(ValueError, match="bank_dtype"):
        PatchCore(small.extractor, bank_dtype="half")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_search_and_float16_bank_match_the_cpu():
    bank, queries = _data(2, m=5000, q=300, d=64)
    cpu_dist, cpu_idx = nearest_neighbors(queries, bank, k=3)  # faiss
    gpu_dist, gpu_idx = nearest_neighbors(queries.cuda(), bank.cuda(), k=3, bank_chunk=1000)
    assert gpu_dist.is_cuda and torch.equal(gpu_idx.cpu(), cpu_idx)
    torch.testing.assert_close(gpu_dist.cpu(), cpu_dist, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # the search stays float32 under autocast
        half_dist, half_idx = nearest_neighbors(queries.cuda(), bank.half().cuda(), k=3)
    ref_dist, ref_idx = nearest_neighbors(queries, bank.half(), k=3)  # float16 bank on the CPU
    assert torch.equal(half_idx.cpu(), ref_idx)
    torch.testing.assert_close(half_dist.cpu(), ref_dist, rtol=1e-4, atol=1e-4)


def test_greedy_coreset_searches_on_the_named_device_with_rows_on_the_host():
    import pytest
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: rows on the host, search on the GPU")
    from cutswap_lib.patchcore import greedy_coreset
    gen = torch.Generator().manual_seed(0)
    blocks = [torch.randn(700, 64, generator=gen), torch.randn(300, 64, generator=gen)]  # host rows
    on_gpu = greedy_coreset(blocks, 50, 16, seed=3, progress=False, device="cuda", half_precision=False)
    on_cpu = greedy_coreset(blocks, 50, 16, seed=3, progress=False, half_precision=False)
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)
