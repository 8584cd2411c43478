"""SemiREST Sec. 3.1.2-3.2: sliding windows, bagging, token Swin, focal loss, block labels, augmentations."""

import math

import pytest
import torch

from cutswap_lib.semirest.labels import block_labels
from cutswap_lib.semirest.losses import IGNORE, focal_loss
from cutswap_lib.semirest.swin import TokenSwin
from cutswap_lib.semirest.token_augment import (k_nearest_memory, knn_choice, knn_residuals,
                                                residual_scale, token_dropout)
from cutswap_lib.semirest.windows import (bag_windows, extract_windows, window_corners,
                                          window_starts)


# ------------------------------------------------------------------ windows and bagging
@pytest.mark.parametrize("size, mu, step, expected", [
    (64, 32, 8, [0, 8, 16, 24, 32]),  # the paper's 64 x 64 map: 5 x 5 = 25 windows
    (28, 16, 4, [0, 4, 8, 12]),
    (30, 16, 8, [0, 8, 14]),  # not divisible: one last window flush with the edge
    (20, 32, 8, [0]),  # smaller than mu: one padded window
    (32, 32, 8, [0]),
])
def test_window_starts(size, mu, step, expected):
    assert window_starts(size, mu, step) == expected


def _brute_counts(h, w, corners, mu):
    counts = torch.zeros(h, w)
    for r0, c0 in corners.tolist():
        for r in range(h):
            for c in range(w):
                counts[r, c] += (r0 <= r < r0 + mu) and (c0 <= c < c0 + mu)
    return counts


@pytest.mark.parametrize("h, w, mu, step", [(28, 28, 16, 4), (30, 21, 16, 8), (12, 40, 16, 8), (9, 7, 16, 4)])
def test_bagging_constant_windows_and_counts(h, w, mu, step):
    corners = window_corners(h, w, mu, step)
    preds = torch.full((2, len(corners), mu, mu), 0.37)
    bagged, counts = bag_windows(preds, corners, h, w)
    assert bagged.shape == (2, h, w)
    torch.testing.assert_close(bagged, torch.full((2, h, w), 0.37))
    torch.testing.assert_close(counts, _brute_counts(h, w, corners, mu))
    assert counts.min() >= 1


def test_bagging_equals_eq10_by_brute_force():
    h, w, mu, step = 13, 11, 8, 3
    corners = window_corners(h, w, mu, step)
    preds = torch.rand(1, len(corners), mu, mu, generator=torch.Generator().manual_seed(0))
    bagged, _ = bag_windows(preds, corners, h, w)
    for r, c in [(0, 0), (6, 5), (12, 10), (7, 3)]:
        values = [preds[0, i, r - r0, c - c0] for i, (r0, c0) in enumerate(corners.tolist())
                  if r0 <= r < r0 + mu and c0 <= c < c0 + mu]
        assert bagged[0, r, c].item() == pytest.approx(sum(values).item() / len(values), rel=1e-6)


def test_extract_windows_slices_eq8_and_pads_small_maps():
    tokens = torch.arange(2 * 10 * 12 * 3, dtype=torch.float32).reshape(2, 10, 12, 3)
    corners = window_corners(10, 12, 4, 3)
    win = extract_windows(tokens, corners, 4)
    assert win.shape == (2, len(corners), 4, 4, 3)
    for q, (r0, c0) in enumerate(corners.tolist()):
        torch.testing.assert_close(win[:, q], tokens[:, r0:r0 + 4, c0:c0 + 4])
    small = extract_windows(tokens, window_corners(10, 12, 16, 8), 16)
    assert small.shape == (2, 1, 16, 16, 3)
    torch.testing.assert_close(small[:, 0, :10, :12], tokens)
    assert small[:, 0, 10:].abs().sum() == 0 and small[:, 0, :, 12:].abs().sum() == 0


def test_bagging_rejects_uncovered_maps():
    with pytest.raises(ValueError, match="covered by no window"):
        bag_windows(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 0]]), 8, 8)


# ------------------------------------------------------------------ Swin
def test_token_swin_shapes_and_window_independence():
    torch.manual_seed(0)
    model = TokenSwin(in_dim=12, embed_dim=16, depth=2, num_heads=2, window=4).eval()
    x = torch.randn(3, 8, 8, 12)
    logits = model(x)
    assert logits.shape == (3, 8, 8, 2)
    p = model.anomaly_probability(x)
    assert p.shape == (3, 8, 8) and bool(((p > 0) & (p < 1)).all())
    # each window is classified on its own: batch composition does not change a window's output
    torch.testing.assert_close(model(x[1:2]), logits[1:2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="in_dim|expected windows"):
        model(torch.randn(1, 8, 8, 5))


def test_token_swin_rejects_bad_heads():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TokenSwin(8, embed_dim=30, num_heads=4)


# ------------------------------------------------------------------ focal loss
def _focal_direct(p_plus, labels, alpha, gamma):
    neg = [(1 - alpha) * p ** gamma * math.log(1 - p) for p, y in zip(p_plus, labels) if y == 0]
    pos = [alpha * (1 - p) ** gamma * math.log(p) for p, y in zip(p_plus, labels) if y == 1]
    return -(sum(neg) / len(neg) if neg else 0) - (sum(pos) / len(pos) if pos else 0)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 4.0), (0.5, 0.0), (0.75, 2.0)])
def test_focal_loss_equals_eq11(alpha, gamma):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    labels = torch.randint(-1, 2, (40,), generator=gen)
    p_plus = logits.softmax(-1)[:, 1].tolist()
    expected = _focal_direct(p_plus, labels.tolist(), alpha, gamma)
    assert focal_loss(logits, labels, alpha, gamma).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_ignores_empty_set_and_gives_it_no_gradient():
    logits = torch.randn(2, 3, 2, requires_grad=True)
    labels = torch.tensor([[0, IGNORE, 0], [IGNORE, 0, 0]])
    loss = focal_loss(logits, labels)
    loss.backward()
    assert logits.grad[0, 1].abs().sum() == 0 and logits.grad[1, 0].abs().sum() == 0
    only_neg = _focal_direct(logits.detach().softmax(-1)[..., 1][labels == 0].tolist(), [0] * 4, 0.25, 4)
    assert loss.item() == pytest.approx(only_neg, rel=1e-5)
    with pytest.raises(ValueError):
        focal_loss(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


# ------------------------------------------------------------------ block labels
def test_block_labels_eq14_thresholds():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 0:4, 0:4] = 1  # block (0, 0): 100 %
    mask[0, 0, 0:1, 4:8] = 1  # block (0, 1): 4 of 16 = 25 %
    mask[0, 0, 4, 4] = 1  # block (1, 1): 1 of 16 = 6.25 %
    labels = block_labels(mask, (2, 2), eps_plus=0.5, eps_minus=0.08)
    assert labels.tolist() == [[[1, IGNORE], [0, 0]]]
    labels = block_labels(mask, (2, 2), eps_plus=0.2, eps_minus=0.08)
    assert labels.tolist() == [[[1, 1], [0, 0]]]
    with pytest.raises(ValueError):
        block_labels(mask, (2, 2), eps_plus=0.05, eps_minus=0.08)


# ------------------------------------------------------------------ augmentations
def test_knn_choice_frequencies_match_the_thresholds():
    rank = knn_choice((200_000,), (0.5, 0.8), torch.Generator().manual_seed(0))
    freq = torch.bincount(rank, minlength=3).float() / rank.numel()
    # binomial standard error at n = 2e5 is about 0.0011: 5 sigma bands
    for observed, expected in zip(freq.tolist(), (0.5, 0.3, 0.2)):
        assert abs(observed - expected) < 0.0056


def test_knn_residuals_use_the_drawn_neighbour_and_bounded_scale():
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(50, 6, generator=gen)
    pcf = torch.randn(4, 5, 6, generator=gen)
    _, nbrs = k_nearest_memory(pcf.reshape(-1, 6), bank, k=3)
    nbrs = nbrs.reshape(4, 5, 3)
    res = knn_residuals(pcf, bank, nbrs, "square", torch.Generator().manual_seed(3))
    candidates = torch.stack([(pcf - bank[nbrs[..., j]]) ** 2 for j in range(3)], -1)  # (4, 5, 6, 3)
    ratio = res.unsqueeze(-1) / candidates  # delta per channel for the true neighbour
    ok = ((ratio >= math.exp(-0.223) - 1e-5) & (ratio <= math.exp(0.223) + 1e-5)).all(dim=2)  # (4, 5, 3)
    assert bool(ok.any(-1).all())
    delta = residual_scale((10_000,), generator=torch.Generator().manual_seed(0))
    assert delta.min() >= math.exp(-0.223) - 1e-6 and delta.max() <= math.exp(0.223) + 1e-6


def test_k_nearest_memory_matches_brute_force_and_excludes_own_image():
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(40, 5, generator=gen), torch.randn(30, 5, generator=gen)
    source = torch.arange(40) // 10  # four images of ten rows
    exclude = torch.randint(0, 4, (30,), generator=gen)
    dist, idx = k_nearest_memory(queries, bank, 3, exclude, source, chunk=7)
    for q in range(30):
        allowed = [i for i in range(40) if source[i] != exclude[q]]
        brute = sorted(allowed, key=lambda i: float((queries[q] - bank[i]).norm()))[:3]
        assert idx[q].tolist() == brute
        assert dist[q, 0].item() == pytest.approx(float((queries[q] - bank[brute[0]]).norm()), rel=1e-4)


def test_token_dropout_zeroes_whole_tokens_at_the_rate():
    x = torch.rand(64, 16, 16, 8) + 0.1
    out = token_dropout(x, 0.25, torch.Generator().manual_seed(0))
    zero = (out == 0).all(-1)
    assert bool(((out == x).all(-1) | zero).all())
    assert abs(zero.float().mean().item() - 0.25) < 0.01
    with pytest.raises(ValueError):
        token_dropout(x, 1.0)


def test_checkpointed_blocks_give_the_same_outputs_and_gradients():
    """Recomputing each block in the backward (stochastic depth replayed) changes memory only."""
    import copy

    torch.manual_seed(0)
    plain = TokenSwin(16, 32, depth=4, num_heads=2, window=4, stochastic_depth=0.5).train()
    recomputed = copy.deepcopy(plain)
    recomputed.checkpoint_blocks = True
    x = torch.randn(6, 8, 8, 16)
    outs = []
    for model in (plain, recomputed):
        torch.manual_seed(5)
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(plain.parameters(), recomputed.parameters()))
    with torch.no_grad():  # inference: no checkpoint, the same numbers
        assert torch.equal(plain.eval()(x), recomputed.eval()(x))


def test_search_blocks_shrink_with_the_bank_and_give_the_same_neighbours():
    from cutswap_lib.semirest.token_augment import search_chunk

    assert search_chunk(1000) == 2048  # toy banks: the full block
    assert search_chunk(409_600) * 409_600 * 9 <= 512 * 2**20  # BTAD 03's bank at 512 px: below 512 MiB
    assert search_chunk(10**9) == 64  # never fewer than 64 queries
    gen = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(300, 8, generator=gen), torch.randn(500, 8, generator=gen)
    source, exclude = torch.arange(500) % 7, torch.arange(300) % 7
    whole = k_nearest_memory(queries, bank, 3, exclude, source, chunk=2048)
    small = k_nearest_memory(queries, bank, 3, exclude, source, chunk=64)  # 5 blocks
    assert torch.equal(whole[1], small[1]) and torch.equal(whole[0], small[0])
