"""Tests for cutswap_lib.viz.bagging: figures build on tiny inputs; helpers match the plain computation."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cutswap_lib.viz import bagging as vb  # noqa: E402
from cutswap_lib.semirest import bag_windows, window_corners  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def masks(n=2, size=16):
    m = torch.zeros(n, 1, size, size)
    m[:, :, 4:9, 5:10] = 1
    return m


def axes_count(fig: Figure) -> int:
    """Axes that show data (colour bars excluded)."""
    return sum(1 for ax in fig.axes if ax.get_label() != "<colorbar>")


# --------------------------------------------------------------------------- helpers
def test_moving_average_against_a_loop():
    v = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    got = vb.moving_average(v, 3)
    want = []
    for i in range(len(v)):
        part = v[max(0, i - 2):i + 1]
        want.append(np.nanmean(part))
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(vb.moving_average(torch.arange(5.0), 1), np.arange(5.0))
    assert np.isnan(vb.moving_average([np.nan, 1.0], 1)[0])
    with pytest.raises(ValueError, match="window"):
        vb.moving_average(v, 0)


def test_window_on_grid():
    pred = torch.arange(16.0).reshape(4, 4)
    g = vb.window_on_grid(pred, (1, 2), 6, 5)
    assert g.shape == (6, 5)
    np.testing.assert_array_equal(g[1:5, 2:5], pred[:, :3].numpy())  # the part inside the map
    assert np.isnan(g[0]).all() and np.isnan(g[:, :2]).all() and np.isnan(g[5]).all()
    small = vb.window_on_grid(pred, (0, 0), 3, 3)  # a padded window on a map smaller than mu
    np.testing.assert_array_equal(small, pred[:3, :3].numpy())
    with pytest.raises(ValueError, match="mu, mu"):
        vb.window_on_grid(torch.zeros(2, 3), (0, 0), 4, 4)


# --------------------------------------------------------------------------- figures
def test_show_sliding_windows():
    corners = window_corners(6, 6, 4, 2)  # (4, 2)
    fig = vb.show_sliding_windows(images(1)[0], corners, mu=4, grid=(6, 6), highlight=(0, 3))
    assert isinstance(fig, Figure) and axes_count(fig) == 1
    assert len(fig.axes[0].patches) == len(corners)


def test_show_window_coverage():
    _, counts = bag_windows(torch.ones(1, 4, 4, 4), window_corners(6, 6, 4, 2), 6, 6)
    fig = vb.show_window_coverage({"6x6": counts, "big": torch.ones(40, 40)})
    assert isinstance(fig, Figure) and axes_count(fig) == 2
    assert len(fig.axes[0].texts) == 36 and len(fig.axes[1].texts) == 0  # no numbers on a 40 x 40 map
    with pytest.raises(ValueError, match="at least one"):
        vb.show_window_coverage({})


def test_show_synthetic_anomalies():
    x, m = images(3), masks(3)
    fig = vb.show_synthetic_anomalies(x, m, {"texture": (x, m), "colour": (x, m)})
    assert isinstance(fig, Figure) and axes_count(fig) == 3 * 2 * 3


def test_show_block_labels():
    labels = torch.tensor([-1, 0, 1]).repeat(2, 4, 1)[:, :, :3]  # (2, 4, 3)
    labels = torch.cat([labels, labels[:, :, :1]], -1)  # (2, 4, 4)
    fig = vb.show_block_labels(images(2), masks(2), {"eps+ 50%": labels, "eps+ 25%": labels})
    assert isinstance(fig, Figure) and axes_count(fig) == 2 * 4


def test_show_knn_augmentation():
    ranks = torch.tensor([0, 0, 1, 2, 0])
    fig = vb.show_knn_augmentation(ranks, torch.rand(100) * 0.4 + 0.8)
    assert isinstance(fig, Figure) and axes_count(fig) == 2
    heights = [p.get_height() for p in fig.axes[0].patches[:3]]
    np.testing.assert_allclose(heights, [0.6, 0.2, 0.2])


def test_show_distance_histograms():
    fig = vb.show_distance_histograms({"a": torch.rand(50), "b": np.random.rand(20) + 1})
    assert isinstance(fig, Figure) and axes_count(fig) == 1
    with pytest.raises(ValueError, match="at least one"):
        vb.show_distance_histograms({})


def test_show_token_dropout():
    before = torch.rand(4, 4, 3) + 0.1
    after = before.clone()
    after[0, 0] = 0
    fig = vb.show_token_dropout(before, after)
    assert isinstance(fig, Figure) and axes_count(fig) == 3
    assert "6%" in fig.axes[1].get_title()  # one token of 16
    with pytest.raises(ValueError, match="one shape"):
        vb.show_token_dropout(before, after[:2])


def test_show_focal_loss_curves():
    p = torch.linspace(0.01, 0.99, 9)
    fig = vb.show_focal_loss_curves(p, {"CE": -torch.log(1 - p)}, {"CE": -torch.log(p), "x": 1 - p})
    assert isinstance(fig, Figure) and axes_count(fig) == 2
    assert len(fig.axes[1].lines) == 2


def test_show_semirest_history():
    history = [{"iteration": i + 1, "loss": 1.0 / (i + 1), "accuracy": 0.9,
                "anomalous_recall": float("nan") if i % 2 else 0.5} for i in range(10)]
    fig = vb.show_semirest_history(history, window=3)
    assert isinstance(fig, Figure) and axes_count(fig) == 3
    with pytest.raises(ValueError, match="non-empty"):
        vb.show_semirest_history([])


def test_show_window_vs_bagged():
    maps = {"bagged": torch.rand(6, 6), "side by side": torch.rand(6, 6)}
    fig = vb.show_window_vs_bagged(images(1)[0], masks(1)[0, 0], (2, 1), torch.rand(4, 4), maps)
    assert isinstance(fig, Figure) and axes_count(fig) == 4
    fig = vb.show_window_vs_bagged(images(1)[0], None, torch.tensor([0, 0]), torch.rand(4, 4), {"m": torch.rand(6, 6)})
    assert axes_count(fig) == 3
