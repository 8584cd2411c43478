"""SemiREST position code and residuals against the equations written out plainly."""

import math

import pytest
import torch

from cutswap_lib.data import load_split
from cutswap_lib.patchcore import locally_aware_patch_features
from cutswap_lib.semirest import (PositionConstrainedFeatures, ResidualMemory, add_position_code,
                                  elementwise_residual, nearest_residuals, position_code)


def eq3(r, c, k, d, rho, exponent=8):
    """SemiREST Eq. (3) for one channel k at row r, column c, case by case as printed."""
    if k < d / 4:
        return math.sin((c / rho) / 10000 ** (exponent * k / d))
    if k < d / 2:
        return math.cos((c / rho) / 10000 ** (exponent * (k - d / 4) / d))
    if k < 3 * d / 4:
        return math.sin((r / rho) / 10000 ** (exponent * (k - d / 2) / d))
    return math.cos((r / rho) / 10000 ** (exponent * (k - 3 * d / 4) / d))


def brute_force(queries, bank, mode):
    """Eq. (5)-(6) the slow way: all distances, argmin, then square / abs of the difference."""
    d = torch.cdist(queries.double(), bank.double())  # (Q, M)
    idx = d.argmin(dim=1)
    diff = queries.double() - bank.double()[idx]
    res = diff ** 2 if mode == "square" else diff.abs()
    return res, d.min(dim=1).values, idx


# --------------------------------------------------------------------------- position code
@pytest.mark.parametrize("rho, exponent", [(1, 8), (2, 8), (1, 4)])
def test_position_code_matches_eq3_element_by_element(rho, exponent):
    h, w, d = 3, 5, 16
    eta = position_code(h, w, d, rho=rho, freq_exponent=exponent)
    assert eta.shape == (d, h, w) and eta.dtype == torch.float32
    for k in range(d):
        for r in range(h):
            for c in range(w):
                assert eta[k, r, c].item() == pytest.approx(eq3(r, c, k, d, rho, exponent), abs=1e-6)


def test_position_code_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of 4"):
        position_code(4, 4, 18)
    with pytest.raises(ValueError, match="h, w, rho"):
        position_code(0, 4, 16)


def test_lambda_zero_is_plain_features_and_lambda_adds_the_code():
    feats = torch.randn(2, 16, 3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(add_position_code(feats, lambda_pe=0.0), feats)
    torch.testing.assert_close(add_position_code(feats, lambda_pe=0.1) - feats,
                               0.1 * position_code(3, 4, 16).expand(2, -1, -1, -1))


# --------------------------------------------------------------------------- residuals on tiny features
@pytest.mark.parametrize("mode", ["square", "abs"])
def test_nearest_residuals_equal_brute_force(mode):
    gen = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(200, 12, generator=gen), torch.randn(60, 12, generator=gen)
    res, dist, idx = nearest_residuals(queries, bank, mode)
    ref_res, ref_dist, ref_idx = brute_force(queries, bank, mode)
    assert res.shape == (60, 12) and dist.shape == idx.shape == (60,)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(res.double(), ref_res, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dist.double(), ref_dist, atol=1e-4, rtol=1e-4)


def test_elementwise_residual_modes():
    diff = torch.tensor([-2.0, -0.5, 0.0, 3.0])
    assert elementwise_residual(diff, "square").tolist() == [4.0, 0.25, 0.0, 9.0]
    assert elementwise_residual(diff, "abs").tolist() == [2.0, 0.5, 0.0, 3.0]
    with pytest.raises(ValueError, match="square"):
        elementwise_residual(diff, "l1")


# --------------------------------------------------------------------------- the memory class
@pytest.fixture(scope="module")
def lite0_features():
    """The Lite0 CPU profile: _blocks.4 + _blocks.10, d_f = 152 (built once)."""
    return PositionConstrainedFeatures("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def toy_images(toy_root):
    train, _, _, _ = load_split(toy_root, "disc", "train", 64)
    test, _, labels, _ = load_split(toy_root, "disc", "test", 64)
    return train[:4], test[labels == 1][:3]


def memory_on(features, **kw):
    """A ResidualMemory over an existing PositionConstrainedFeatures (no second backbone build)."""
    kw = {"coreset_ratio": None, "progress": False, "device": "cpu", **kw}
    return ResidualMemory(features.extractor, **kw)


def test_position_code_constrains_matching(lite0_features):
    """Two memory features equal up to a small offset: the query takes the one at its position.

    Memory: feature a at (0, 0), b = a + delta at (0, 1). The query at (0, 0) is closer
    to b in plain feature space, so PatchCore (lambda_pe = 0) picks b; with the position
    code the memory PCF at the query's own position wins.
    """
    a = torch.randn(8, generator=torch.Generator().manual_seed(2))
    delta = torch.full((8,), 0.01)
    train = torch.stack([a, a + delta], dim=-1)[None, :, None, :]  # (1, 8, 1, 2)
    query = (a + 0.8 * delta)[None, :, None, None]  # (1, 8, 1, 1) at position (0, 0)
    plain = memory_on(lite0_features, lambda_pe=0.0).fit_features(train)
    assert plain.match_features(query).index.item() == 1
    pcf = memory_on(lite0_features, lambda_pe=0.1).fit_features(train)
    out = pcf.match_features(query)
    assert out.index.item() == 0
    torch.testing.assert_close(out.residuals[0, 0, 0], (0.8 * delta) ** 2)


def test_every_position_matches_itself_on_constant_features(lite0_features):
    """A constant training map: memory PCFs differ only by position; queries find their own."""
    f0 = torch.randn(16, generator=torch.Generator().manual_seed(3))
    train = f0[None, :, None, None].expand(1, 16, 4, 5).contiguous()
    query = train + 1e-4 * torch.randn(1, 16, 4, 5, generator=torch.Generator().manual_seed(4))
    out = memory_on(lite0_features).fit_features(train).match_features(query)
    assert out.index[0].flatten().tolist() == list(range(20))


@pytest.mark.parametrize("mode", ["square", "abs"])
def test_memory_class_equals_brute_force_on_random_features(lite0_features, mode):
    gen = torch.Generator().manual_seed(5)
    train, query = torch.randn(3, 16, 4, 4, generator=gen), torch.randn(2, 16, 4, 4, generator=gen)
    out = memory_on(lite0_features).fit_features(train).match_features(query, mode)
    eta = 0.1 * position_code(4, 4, 16)
    bank = (train + eta).permute(0, 2, 3, 1).reshape(-1, 16)
    ref_res, ref_dist, ref_idx = brute_force((query + eta).permute(0, 2, 3, 1).reshape(-1, 16), bank, mode)
    assert out.residuals.shape == (2, 4, 4, 16) and out.distance.shape == (2, 4, 4)
    assert torch.equal(out.index.flatten(), ref_idx)
    torch.testing.assert_close(out.residuals.reshape(-1, 16).double(), ref_res, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.distance.flatten().double(), ref_dist, atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- end to end, Lite0 CPU profile
@pytest.fixture(scope="module")
def lite0_memory(lite0_features, toy_images):
    return memory_on(lite0_features).fit(toy_images[0])


def test_lite0_profile_shapes(lite0_features, lite0_memory, toy_images):
    assert lite0_features.extractor.name == "efficientnet_lite0" and lite0_features.d_f == 152
    train, test = toy_images
    out = lite0_memory.match(test)
    assert out.residuals.shape == (3, 8, 8, 152)
    assert out.distance.shape == out.index.shape == (3, 8, 8)
    assert lite0_memory.memory_bank.shape == (4 * 8 * 8, 152)  # coreset off: every patch
    assert (out.residuals >= 0).all() and (out.distance > 0).any()
    # a training image's PCFs are in the bank: its residuals vanish (up to batch-size rounding)
    again = lite0_memory.match(train[:1])
    assert again.distance.max().item() < 1e-2 and again.residuals.max().item() < 1e-6


@pytest.mark.parametrize("mode", ["square", "abs"])
def test_end_to_end_equals_brute_force(lite0_features, lite0_memory, toy_images, mode):
    train, test = toy_images
    out = lite0_memory.match(test, mode)
    with torch.no_grad():
        bank = lite0_features(train).permute(0, 2, 3, 1).reshape(-1, 152)  # all training PCFs
        queries = lite0_features(test).permute(0, 2, 3, 1).reshape(-1, 152)
    ref_res, ref_dist, _ = brute_force(queries, bank, mode)
    torch.testing.assert_close(out.residuals.reshape(-1, 152).double(), ref_res, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.distance.flatten().double(), ref_dist, atol=1e-3, rtol=1e-4)


def test_lambda_zero_features_are_patchcore_features(lite0_features, toy_images):
    plain = PositionConstrainedFeatures(lite0_features.extractor, lambda_pe=0.0, device="cpu")
    with torch.no_grad():
        ref = locally_aware_patch_features(lite0_features.extractor(toy_images[1]), 1024)
        assert torch.equal(plain(toy_images[1]), ref)
        torch.testing.assert_close(lite0_features(toy_images[1]) - ref,
                                   0.1 * position_code(8, 8, 152).expand(3, -1, -1, -1))


def test_default_backbone_asks_for_the_papers_network(monkeypatch):
    """backbone=None: WideResNet50 where its weights load, else Lite0 (choose_backbone decides)."""
    from cutswap_lib.semirest import residuals

    asked = []
    monkeypatch.setattr(residuals, "choose_backbone",
                        lambda preferred: asked.append(preferred) or "efficientnet_lite0")
    features = PositionConstrainedFeatures(device="cpu")
    assert asked == ["wide_resnet50_2"] and features.extractor.name == "efficientnet_lite0"


def test_paper_profile_wrn50_gives_1024_channels():
    """WRN50 layer2 + layer3 (512 + 1024) pooled to d_f = 1024, as in the paper (random init here)."""
    features = PositionConstrainedFeatures("wide_resnet50_2", weights=None, device="cpu")
    assert features.d_f == 1024 and features.extractor.layers == ["layer2", "layer3"]
    with torch.no_grad():
        assert features(torch.rand(1, 3, 64, 64)).shape == (1, 1024, 8, 8)


def test_coreset_keeps_the_ratio(lite0_features, toy_images):
    memory = memory_on(lite0_features, coreset_ratio=0.1).fit(toy_images[0])
    assert memory.memory_bank.shape == (round(0.1 * 4 * 64), 152)
    assert memory.residuals(toy_images[1][:1]).shape == (1, 8, 8, 152)


def test_clear_errors(lite0_features, toy_images):
    memory = memory_on(lite0_features)
    with pytest.raises(RuntimeError, match="fit"):
        memory.residuals(toy_images[1])
    with pytest.raises(ValueError, match="no training images"):
        memory.fit(torch.utils.data.TensorDataset(torch.zeros(0, 3, 64, 64)))
    with pytest.raises(ValueError, match="coreset_ratio"):
        memory_on(lite0_features, coreset_ratio=0.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        PositionConstrainedFeatures(lite0_features.extractor, feature_dim=150, device="cpu")
    memory.fit_features(torch.randn(1, 152, 2, 2))
    with pytest.raises(ValueError, match="mode"):
        memory.match_features(torch.randn(1, 152, 2, 2), mode="l1")
    with pytest.raises(ValueError, match="channels"):
        memory.match_features(torch.randn(1, 148, 2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu(lite0_features):
    gen = torch.Generator().manual_seed(6)
    train, query = torch.randn(3, 16, 4, 4, generator=gen), torch.randn(2, 16, 4, 4, generator=gen)
    cpu = memory_on(lite0_features).fit_features(train).match_features(query)
    gpu_memory = ResidualMemory("efficientnet_lite0", coreset_ratio=None, progress=False, device="cuda")
    gpu = gpu_memory.fit_features(train).match_features(query)
    assert gpu.residuals.device.type == "cuda"
    assert torch.equal(gpu.index.cpu(), cpu.index)
    torch.testing.assert_close(gpu.residuals.cpu(), cpu.residuals, atol=1e-5, rtol=1e-5)
