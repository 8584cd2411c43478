"""Tests for cutswap_lib.viz.residuals: figures build on tiny inputs; helpers match the plain computation."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cutswap_lib.viz import residuals as vr  # noqa: E402
from cutswap_lib.semirest import position_code  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tiny(n=2, h=4, w=5, d=8, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen)
    masks = torch.zeros(n, size, size)
    masks[0, 4:9, 5:10] = 1
    residuals = torch.rand(n, h, w, d, generator=gen)
    return images, masks, residuals


# --------------------------------------------------------------------------- helpers
def test_token_norm_map():
    _, _, res = tiny()
    norms = vr.token_norm_map(res)
    assert norms.shape == (2, 4, 5)
    torch.testing.assert_close(norms[1, 2, 3], res[1, 2, 3].norm())
    up = vr.token_norm_map(res, size=16)
    assert up.shape == (2, 16, 16)
    assert vr.token_norm_map(res, size=(8, 10)).shape == (2, 8, 10)
    with pytest.raises(ValueError, match=r"\(B, h, w, d\)"):
        vr.token_norm_map(res[0])


def test_top_channel_share():
    tokens = torch.tensor([[1.0] * 10, [5.0] + [0.0] * 9, [0.0] * 10, [4.0, 1.0] + [0.5] * 8])
    share = vr.top_channel_share(tokens, 0.1)  # one channel of ten
    torch.testing.assert_close(share, torch.tensor([0.1, 1.0, 0.0, 4.0 / 9.0]))
    torch.testing.assert_close(vr.top_channel_share(tokens[:1], 0.2), torch.tensor([0.2]))  # 2 channels
    torch.testing.assert_close(vr.top_channel_share(torch.ones(1, 30), 0.1), torch.tensor([0.1]))  # 3, not 4
    torch.testing.assert_close(vr.top_channel_share(tokens[1:2], 0.01), torch.tensor([1.0]))  # at least one
    with pytest.raises(ValueError, match="non-negative"):
        vr.top_channel_share(-tokens[:2])
    with pytest.raises(ValueError, match="fraction"):
        vr.top_channel_share(tokens, 0.0)


def test_match_displacement_against_a_loop():
    n_bank, h, w = 3, 4, 5
    idx = torch.randint(0, n_bank * h * w, (2, h, w), generator=torch.Generator().manual_seed(1))
    disp = vr.match_displacement(idx)
    for b in range(2):
        for r in range(h):
            for c in range(w):
                _, rest = divmod(idx[b, r, c].item(), h * w)
                mr, mc = divmod(rest, w)
                assert disp[b, r, c].item() == max(abs(mr - r), abs(mc - c))
    own = (torch.arange(h * w).reshape(1, h, w) + 2 * h * w)  # every token matched to its own place
    assert vr.match_displacement(own).eq(0).all()
    with pytest.raises(ValueError, match="integer"):
        vr.match_displacement(idx.float())


# --------------------------------------------------------------------------- figures
def test_show_position_code():
    code = position_code(6, 7, 16)
    fig = vr.show_position_code(code, channels=[0, 1, 4, 8, 12], ncols=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5 + 1  # five channels (one empty cell removed) + colour bar
    assert "sin col" in fig.axes[0].get_title() and "sin row" in fig.axes[3].get_title()
    with pytest.raises(ValueError, match="channels"):
        vr.show_position_code(code, channels=[16])
    with pytest.raises(ValueError, match="multiple of 4"):
        vr.show_position_code(torch.zeros(6, 3, 3), channels=[0])


def test_show_position_similarity():
    code = position_code(6, 7, 16)
    fig = vr.show_position_similarity(code, anchors=[(0, 0), (3, 4)])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 + 1
    sim = fig.axes[0].images[0].get_array()
    assert sim[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="anchors"):
        vr.show_position_similarity(code, anchors=[(6, 0)])


def test_show_code_distance():
    code = position_code(6, 7, 16)
    fig = vr.show_code_distance(code, lambdas=[0.0, 0.1, 1.0], reference=np.linspace(1, 3, 50))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 3  # two lambdas (0 skipped) + the median line
    x, y = ax.get_lines()[1].get_data()
    want = (code[:, 0, 0] - code[:, 0, 1]).norm().item()
    assert x[0] == 1 and y[0] == pytest.approx(want, rel=1e-5)
    assert len(vr.show_code_distance(code, lambdas=[0.1]).axes) == 1


def test_show_match_displacement():
    images, _, _ = tiny(n=2)
    disp = {"λ=0": torch.randint(0, 5, (2, 4, 5)), "λ=0.1": torch.zeros(2, 4, 5)}
    fig = vr.show_match_displacement(images, disp, far=2, titles=["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 3 + 1
    assert fig.axes[2].get_title().startswith("λ=0.1: 0%")
    with pytest.raises(ValueError, match="N = 2"):
        vr.show_match_displacement(images, {"x": torch.zeros(3, 4, 5)})


def test_show_far_match_share():
    fig = vr.show_far_match_share({"board": {0.0: 0.02, 0.1: 0.02, 1.0: 0.01},
                                   "fabric": {0.0: 0.5, 0.1: 0.5, 1.0: 0.3}})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="at least one"):
        vr.show_far_match_share({})


def test_show_residual_maps():
    images, masks, res = tiny(n=3)
    maps = {"square": vr.token_norm_map(res), "abs": vr.token_norm_map(res.sqrt())}
    fig = vr.show_residual_maps(images, maps, masks, titles=["good", "scratch", "stain"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 4 + 2  # image, ground truth, two maps per row + two colour bars
    no_masks = vr.show_residual_maps(images, {"square": maps["square"]})
    assert len(no_masks.axes) == 3 * 2 + 1
    with pytest.raises(ValueError, match="at least one"):
        vr.show_residual_maps(images, {})


def test_show_residual_sparsity():
    _, _, res = tiny(n=2, d=20)
    fig = vr.show_residual_sparsity({"square": res ** 2, "abs": res}, fraction=0.1, max_tokens=15)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    curve, hist = fig.axes
    assert len(curve.get_lines()) == 2 + 2  # two groups + diagonal + the fraction marker
    x, y = curve.get_lines()[0].get_data()
    assert len(x) == 20 and y[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no tokens"):
        vr.show_residual_sparsity({"empty": torch.zeros(0, 4)})
