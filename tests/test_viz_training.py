"""Tests for cutswap_lib.viz.training: the figures build on tiny inputs; the PCA matches scikit-learn."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402

from cutswap_lib.viz import training as vt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(n, start_loss=1.1):
    return [{"epoch": e, "loss": start_loss / (e + 1), "accuracy": 0.3 + 0.1 * e, "lr": 0.03 / (e + 1),
             "seconds": 1.0} for e in range(n)]


def test_show_training_curves():
    fig = vt.show_training_curves({"CutSwap": history(4), "CutPaste": history(4, 1.3)})
    assert isinstance(fig, Figure)
    loss, acc, lr = fig.axes
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 3, 2]  # accuracy also has the chance line
    x, y = loss.get_lines()[0].get_data()
    assert list(x) == [1, 2, 3, 4] and y[0] == pytest.approx(1.1)
    assert acc.get_lines()[-1].get_ydata()[0] == pytest.approx(1 / 3)
    one = vt.show_training_curves({"one epoch": history(1)}, chance=None)
    assert len(one.axes[1].get_lines()) == 1
    with pytest.raises(ValueError, match="lacks"):
        vt.show_training_curves({"bad": [{"epoch": 0, "loss": 1.0}]})
    with pytest.raises(ValueError, match="empty"):
        vt.show_training_curves({"none": []})


def test_show_three_way_step():
    images = torch.rand(6, 3, 16, 16)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    before = torch.full((6, 3), 1 / 3)
    after = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    fig = vt.show_three_way_step(images, labels, before, after)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # 3 rows (classes) x 2 samples
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["normal (0)", "CutSwap (1)", "CutSwap-scar (2)"]
    assert fig.axes[3].get_title() == f"p = 0.33 -> {float(after[3, 1]):.2f}"  # its own class: label 1
    rose = {i: float(after[i, labels[i]]) >= 1 / 3 for i in range(6)}
    colours = {i: fig.axes[i].spines["top"].get_edgecolor() for i in range(6)}
    assert all(colours[i] == matplotlib.colors.to_rgba("tab:green" if rose[i] else "tab:red") for i in range(6))
    only_before = vt.show_three_way_step(images, labels, before)
    assert only_before.axes[0].get_title() == "p = 0.33"
    with pytest.raises(ValueError, match="blocks"):
        vt.show_three_way_step(images, torch.tensor([0, 1, 0, 1, 2, 2]), before)
    with pytest.raises(ValueError, match="equal blocks"):
        vt.show_three_way_step(images[:5], labels[:5], before[:5])


def test_pca_basis_matches_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
    mean, comps = vt.pca_basis(torch.from_numpy(x).float(), dims=2)
    ref = PCA(n_components=2).fit(x)
    np.testing.assert_allclose(mean, ref.mean_, rtol=1e-5, atol=1e-5)
    # same axes up to sign; ours: largest-magnitude entry positive
    np.testing.assert_allclose(np.abs(comps), np.abs(ref.components_), atol=1e-4)
    assert (comps[np.arange(2), np.abs(comps).argmax(1)] > 0).all()
    np.testing.assert_allclose(np.abs((x - mean) @ comps.T), np.abs(ref.transform(x)), atol=1e-3)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        vt.pca_basis(np.zeros(5))
    with pytest.raises(ValueError, match="dims"):
        vt.pca_basis(x, dims=7)


def test_show_memory_bank_projection():
    rng = np.random.default_rng(1)
    normal = {name: torch.from_numpy(rng.normal(size=(300, 5))).float() for name in ("a", "b")}
    memory = {"a": normal["a"][:30], "b": {"coreset 0.1": normal["b"][:30], "coreset 0.01": normal["b"][:3]}}
    anomalous = {"a": rng.normal(size=(20, 5)) + 4}
    fig = vt.show_memory_bank_projection(normal, memory, anomalous, max_points=100)
    assert isinstance(fig, Figure)
    ax_a, ax_b = fig.axes
    assert ax_a.get_title() == "a"
    sizes_a = [len(c.get_offsets()) for c in ax_a.collections]
    assert sizes_a == [100, 20, 30]  # normal subset, anomalous, memory bank (all drawn)
    sizes_b = [len(c.get_offsets()) for c in ax_b.collections]
    assert sizes_b == [100, 30, 3]  # larger bank first, the small one drawn on top
    # the memory points sit exactly where the same normal points project
    a_mem = ax_a.collections[2].get_offsets()
    mean, comps = vt.pca_basis(normal["a"].numpy())
    np.testing.assert_allclose(a_mem, (normal["a"][:30].numpy() - mean) @ comps.T, atol=1e-4)
    with pytest.raises(ValueError, match="memory_by_name"):
        vt.show_memory_bank_projection(normal, {"a": memory["a"]})
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        vt.show_memory_bank_projection({"a": normal["a"]}, {"a": np.zeros((3, 4))})


def test_show_anomaly_maps_by_backbone():
    rng = np.random.default_rng(2)
    images = rng.random((3, 3, 16, 16)).astype(np.float32)
    masks = np.zeros((3, 16, 16), dtype=np.float32)
    masks[1:, 4:8, 4:8] = 1
    maps = {"pre": torch.rand(3, 16, 16), "cp": rng.random((3, 1, 8, 8)) * 10, "cs": torch.rand(3, 16, 16) + 5}
    fig = vt.show_anomaly_maps_by_backbone(images, maps, masks, titles=["x", "y", "z"],
                                           scales={"cs": (0.0, 7.0)})
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 4 + 3  # image + 3 backbones per row, one colour bar per backbone
    grid = np.array(fig.axes[:12]).reshape(3, 4)
    assert [ax.get_title() for ax in grid[0]] == ["x", "pre", "cp", "cs"]
    clims = [grid[0, j].get_images()[-1].get_clim() for j in (1, 2, 3)]
    assert clims[2] == (0.0, 7.0)  # given scale
    assert clims[1] == pytest.approx((float(maps["cp"].min()), float(maps["cp"].max())))  # own range
    assert len({grid[i, 1].get_images()[-1].get_clim() for i in range(3)}) == 1  # shared down a column
    no_mask = vt.show_anomaly_maps_by_backbone(images[:1], {"pre": maps["pre"][:1]})
    assert len(no_mask.axes) == 2 + 1
    with pytest.raises(ValueError, match="maps of cp"):
        vt.show_anomaly_maps_by_backbone(images, {"cp": maps["cp"][:2]})
