"""Splits kept as 8-bit images (cutswap_lib.images): the models read them exactly as the float images."""

import pytest
import torch

from cutswap_lib.data import load_split
from cutswap_lib.images import as_float_images, to_uint8_images
from cutswap_lib.patchcore import PatchCore
from cutswap_lib.semirest import ResidualMemory, SemiREST, SemiRESTConfig
from cutswap_lib.semirest.synthetic import otsu_foreground, synthetic_anomalies


@pytest.fixture(scope="module")
def disc(toy_root):
    """The toy disc split at its own size (64 px): 8-bit images, so uint8 holds them exactly."""
    floats = load_split(toy_root, "disc", "train", 64)[0][:6]
    return floats, load_split(toy_root, "disc", "train", 64, dtype=torch.uint8)[0][:6]


def test_uint8_split_is_the_float_split_rounded_to_grey_levels(toy_root):
    floats, masks, labels, paths = load_split(toy_root, "disc", "test", 48)  # resized: not 8-bit any more
    small, masks8, labels8, paths8 = load_split(toy_root, "disc", "test", 48, dtype=torch.uint8)
    assert small.dtype == torch.uint8 and small.shape == floats.shape
    assert torch.equal(small, (floats * 255).round().to(torch.uint8))
    assert (as_float_images(small) - floats).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(masks8, masks) and torch.equal(labels8, labels) and paths8 == paths
    with pytest.raises(ValueError, match="float32 or torch.uint8"):
        load_split(toy_root, "disc", "test", 48, dtype=torch.float16)


def test_uint8_round_trip_is_exact_for_8_bit_images(disc):
    floats, small = disc
    assert torch.equal(to_uint8_images(floats), small) and torch.equal(as_float_images(small), floats)
    assert as_float_images(floats) is floats  # float32 passes through, no copy


def test_semirest_and_patchcore_read_uint8_as_the_float_images(disc):
    floats, small = disc
    torch.manual_seed(0)
    memory = ResidualMemory("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False)
    config = SemiRESTConfig.cpu(mu=8, step=4, embed_dim=16, num_heads=2, window=4, iterations=2, b1=2, b2=2)
    a = SemiREST(memory, config, progress=False).prepare(floats)
    bank = a.memory.memory_bank.clone()
    b = SemiREST(ResidualMemory(memory.features.extractor, coreset_ratio=0.5, device="cpu", progress=False),
                 config, progress=False).prepare(small)
    assert torch.equal(b.memory.memory_bank, bank)
    assert torch.equal(b.pools["normal"].neighbours, a.pools["normal"].neighbours)
    pc = PatchCore(memory.features.extractor, coreset_ratio=0.5, device="cpu", progress=False)
    s_float, m_float = pc.fit(floats).predict(floats[:2])
    s_small, m_small = pc.fit(small).predict(small[:2])
    assert torch.equal(s_float, s_small) and torch.equal(m_float, m_small)


def test_synthetic_anomalies_and_otsu_read_uint8_as_the_float_images(disc):
    floats, small = disc
    out_f, mask_f = synthetic_anomalies(floats, torch.Generator().manual_seed(3), sources=floats.flip(0))
    out_u, mask_u = synthetic_anomalies(small, torch.Generator().manual_seed(3), sources=small.flip(0))
    assert out_u.dtype == torch.float32 and torch.equal(out_u, out_f) and torch.equal(mask_u, mask_f)
    assert torch.equal(otsu_foreground(small), otsu_foreground(floats))
