"""SemiREST Sec. 3.3-3.4: box labels (Eq. 15), MixMatch for tokens (Algorithm 1), box fine-tuning."""

import json

import pytest
import torch

from cutswap_lib.data import load_foregrounds, load_split
from cutswap_lib.semirest import IGNORE, ResidualMemory, SemiREST, SemiRESTConfig, TokenSwin
from cutswap_lib.semirest.boxes import (UNKNOWN, box_block_labels, box_pixel_labels, boxes_from_mask,
                                        load_boxes, rescale_boxes, save_boxes, validate_boxes)
from cutswap_lib.semirest.mixmatch import (MixMatchConfig, guess_pivot, lambda_u_at, mixmatch_loss, mixup,
                                           mixup_lambda, sharpen, soft_focal_loss)
from cutswap_lib.semirest.semi import finetune_with_boxes


# ------------------------------------------------------------------ boxes
def test_boxes_from_mask_cover_each_region_tightly():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[2:5, 3:9] = True
    mask[10:18, 20:22] = True
    mask[5, 9] = True  # 8-connected to the first region (diagonal)
    boxes = sorted(boxes_from_mask(mask))
    assert boxes == [(3, 2, 10, 6), (20, 10, 22, 18)]
    assert sorted(boxes_from_mask(mask, margin=3)) == [(0, 0, 13, 9), (17, 7, 25, 20)]


def test_box_labels_never_mark_an_anomalous_pixel_normal(toy_root):
    _, masks, labels, _ = load_split(toy_root, "board", "test", 64)
    for mask in masks[labels == 1]:
        for margin in (0, 2):
            pixel = box_pixel_labels(boxes_from_mask(mask, margin), (64, 64))
            assert not bool(((pixel == 0) & (mask > 0)).any())  # Eq. (15)'s premise: outside = normal
            assert bool((pixel == UNKNOWN).sum() >= (mask > 0).sum())
            blocks = box_block_labels(pixel[None], (8, 8), upsilon=0.0)  # any unknown pixel -> unknown block
            share = torch.nn.functional.adaptive_avg_pool2d(mask[None, None].float(), (8, 8))[0, 0]
            assert not bool(((blocks[0] == 0) & (share > 0)).any())


def test_box_block_labels_eq15_threshold():
    pixel = torch.zeros(1, 8, 8, dtype=torch.long)
    pixel[0, 0:4, 0:4] = UNKNOWN  # block (0, 0): 100 % unknown
    pixel[0, 0:2, 4:8] = UNKNOWN  # block (0, 1): 50 % -> not more than upsilon: normal
    pixel[0, 4:7, 4:8] = UNKNOWN  # block (1, 1): 75 %
    assert box_block_labels(pixel, (2, 2), 0.5).tolist() == [[[UNKNOWN, 0], [0, UNKNOWN]]]


@pytest.mark.parametrize("box, problem", [((5, 5, 5, 9), "zero area"), ((0, 0, 70, 10), "leaves"),
                                          ((-1, 0, 4, 4), "leaves"), ((1, 2, 3), "4 numbers")])
def test_bad_boxes_are_clear_errors(box, problem):
    with pytest.raises(ValueError, match=problem):
        validate_boxes([box], (64, 64), "boxes.json [000.png]")


def test_box_file_round_trip_and_errors(tmp_path):
    path = save_boxes(tmp_path / "boxes.json", {"a.png": [(1, 2, 10, 12)], "b.png": []}, (64, 64))
    assert load_boxes(path) == {"a.png": [(1, 2, 10, 12)], "b.png": []}
    bad = json.loads(path.read_text())
    bad["boxes"]["a.png"] = [[10, 2, 1, 12]]
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"boxes.json \[a.png\].*zero area"):
        load_boxes(path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_boxes(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_boxes(tmp_path / "missing.json")


@pytest.mark.parametrize("to_size", [(128, 128), (48, 48), (100, 70)])
def test_rescaled_boxes_still_cover_the_resized_defect(toy_root, to_size):
    _, masks, labels, _ = load_split(toy_root, "fabric", "test", 64)
    for mask in masks[labels == 1]:
        moved = rescale_boxes(boxes_from_mask(mask), (64, 64), to_size)
        resized = torch.nn.functional.interpolate(mask[None, None], size=to_size, mode="nearest")[0, 0]
        pixel = box_pixel_labels(moved, to_size)  # also validates: inside the new image, non-empty
        assert not bool(((pixel == 0) & (resized > 0)).any())
    assert rescale_boxes([(1, 2, 10, 12)], (64, 64), (64, 64)) == [(1, 2, 10, 12)]
    assert rescale_boxes([(1, 2, 10, 12)], (64, 64), (128, 128)) == [(2, 4, 20, 24)]


def test_load_boxes_resizes_to_the_run_size(tmp_path):
    path = save_boxes(tmp_path / "boxes.json", {"a.png": [(1, 2, 10, 12)]}, (64, 64))
    assert load_boxes(path, resize_to=(32, 32)) == {"a.png": [(0, 1, 5, 6)]}


# ------------------------------------------------------------------ MixMatch pieces
def test_sharpen_equals_its_formula():
    p = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
    for t in (0.5, 0.25, 1.0):
        expected = p ** (1 / t) / (p ** (1 / t) + (1 - p) ** (1 / t))
        torch.testing.assert_close(sharpen(p, t), expected)
    assert sharpen(torch.tensor(0.8), 0.5).item() == pytest.approx(0.64 / (0.64 + 0.04))


def test_sharpen_around_a_pivot_divides_the_odds_by_the_pivots():
    p = torch.tensor([0.05, 0.3, 0.37, 0.45, 0.9])
    for c, t in ((0.37, 0.5), (0.2, 0.25), (0.5, 0.5)):
        reference = torch.sigmoid((torch.logit(p) - torch.logit(torch.tensor(c))) / t)  # odds / pivot odds, ^(1/T)
        torch.testing.assert_close(sharpen(p, t, c), reference)
    assert sharpen(torch.tensor(0.37), 0.5, 0.37).item() == pytest.approx(0.5)  # the pivot stays put
    torch.testing.assert_close(sharpen(p, 0.5, 0.5), sharpen(p, 0.5))  # 0.5: MixMatch's sharpening
    assert sharpen(torch.tensor(0.45), 0.5, 0.37).item() > 0.5 > sharpen(torch.tensor(0.45), 0.5).item()


def test_guess_pivot_is_half_or_the_known_tokens_mean_guess():
    guess = torch.tensor([[[0.2, 0.4], [0.9, 0.6]]])  # (1, 2, 2)
    labels = torch.tensor([[[0, 0], [UNKNOWN, IGNORE]]])
    assert guess_pivot(guess, labels, "half") == 0.5
    assert float(guess_pivot(guess, labels, "known")) == pytest.approx(0.3)  # padding and boxes take no part
    assert guess_pivot(guess, torch.full_like(labels, UNKNOWN), "known") == 0.5  # no known token: 0.5
    with pytest.raises(ValueError, match="guess_pivot"):
        MixMatchConfig(guess_pivot="median").validate()


@pytest.mark.parametrize("upsilon", [1.0, 1.5, -0.1])
def test_upsilon_outside_0_1_is_refused(upsilon):
    """At upsilon >= 1 no block could be unknown; Eq. 15's share is in [0, 1)."""
    assert MixMatchConfig(upsilon=0.0).validate().upsilon == 0.0
    with pytest.raises(ValueError, match="upsilon"):
        MixMatchConfig(upsilon=upsilon).validate()


def test_box_pivot_is_each_windows_unknown_mean_guess_never_below_the_known_level():
    guess = torch.tensor([[[0.2, 0.4], [0.9, 0.5]],    # window 0: unknown 0.9, 0.5 -> 0.7
                          [[0.1, 0.2], [0.25, 0.9]],   # window 1: unknown 0.2, 0.25 -> 0.225, below the known 0.3
                          [[0.3, 0.3], [0.3, 0.3]]])   # window 2: no unknown token -> the known level
    labels = torch.tensor([[[0, 0], [UNKNOWN, UNKNOWN]],
                           [[IGNORE, UNKNOWN], [UNKNOWN, IGNORE]],
                           [[0, 0], [0, IGNORE]]])
    known = guess[labels == 0].mean()
    pivot = guess_pivot(guess, labels, "box")
    assert pivot.shape == (3, 1, 1)
    torch.testing.assert_close(pivot.flatten(), torch.stack([guess.new_tensor(0.7), known, known]))


def test_known_pivot_makes_a_guess_above_the_normal_level_a_positive_pseudo_label():
    class Fixed(torch.nn.Module):  # anomaly probability = the token's first channel
        def forward(self, x):
            p = x[..., 0].clamp(1e-4, 1 - 1e-4)
            return torch.stack([(1 - p).log(), p.log()], -1)

    tokens = torch.full((1, 4, 4, 2), 0.35)  # an under-confident model: normal tokens at 0.35 ...
    tokens[0, 1, 1, 0] = 0.45  # ... and a faint defect at 0.45, inside the box
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, :2] = UNKNOWN
    pseudo = {mode: mixmatch_loss(Fixed(), [tokens] * 3, labels, MixMatchConfig(guess_pivot=mode), step=0,
                                  generator=torch.Generator().manual_seed(0), dropout=0.0)[1]["pseudo"]
              for mode in ("half", "known", "box")}
    assert pseudo["half"][0, 1, 1] < 0.5  # Algorithm 1 as printed: the defect's target is 'normal'
    assert pseudo["known"][0, 1, 1] > 0.5 and pseudo["known"][0, 0, 0] == pytest.approx(0.5, abs=1e-5)
    # "box": the box's own mean (0.375) is the pivot, so the defect is positive, the box's normals below 0.5
    assert pseudo["box"][0, 1, 1] > 0.5 > pseudo["box"][0, 0, 0]


def test_mixup_keeps_lambda_above_half_and_mixes_labels_alike():
    gen = torch.Generator().manual_seed(0)
    lams = [mixup_lambda(0.75, gen) for _ in range(500)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0 and len(set(lams)) > 400
    x, y = torch.randn(10, 4), torch.rand(10)
    x2, y2 = torch.randn(10, 4), torch.rand(10)
    mx, my = mixup(x, y, x2, y2, 0.7)
    torch.testing.assert_close(mx, 0.7 * x + 0.3 * x2)
    torch.testing.assert_close(my, 0.7 * y + 0.3 * y2)
    assert mixup_lambda(0.75, torch.Generator().manual_seed(3)) == mixup_lambda(0.75, torch.Generator().manual_seed(3))


def test_lambda_u_ramp_reaches_its_value_at_step_400_and_stays():
    assert lambda_u_at(0) == 0
    assert lambda_u_at(200) == pytest.approx(2.5)
    assert lambda_u_at(400) == 5.0 and lambda_u_at(10_000) == 5.0
    assert lambda_u_at(400, lambda_u=10) == 10.0  # BTAD


def test_soft_focal_loss_formula():
    pred, target = torch.tensor([0.2, 0.9, 0.6]), torch.tensor([0.0, 0.8, 0.3])
    p = (1 - target) * (1 - pred) + target * pred
    w = torch.tensor([0.75, 0.25, 0.75])  # alpha = 0.25 for t > 0.5, 0.75 otherwise
    expected = -(w * (1 - p) ** 4 * p.log()).mean()
    assert soft_focal_loss(pred, target, 0.25, 4.0).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mixmatch_step_runs_and_its_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = TokenSwin(in_dim=6, embed_dim=16, depth=2, num_heads=2, window=4)
    base = torch.rand(4, 8, 8, 6, generator=gen)
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[:, 2:5, 2:5] = UNKNOWN
    labels[:, 7, :] = IGNORE  # padding takes no part
    base[:, 3, 3] += 3.0  # an anomalous token inside each box
    copies = [base * (1 + 0.05 * torch.randn(base.shape, generator=gen)) for _ in range(3)]
    cfg = MixMatchConfig()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        loss, parts = mixmatch_loss(model, copies, labels, cfg, step=400, generator=torch.Generator().manual_seed(1),
                                    dropout=0.0)
        assert parts["pseudo"].shape == (4, 8, 8) and parts["mix_lambda"] >= 0.5
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------ fine-tuning end to end
def test_finetune_with_boxes_on_toy_disc(toy_root):
    train, _, _, paths = load_split(toy_root, "disc", "train", 64)
    test, masks, labels, _ = load_split(toy_root, "disc", "test", 64)
    torch.manual_seed(0)
    memory = ResidualMemory("resnet18", weights=None, coreset_ratio=0.5, device="cpu", progress=False)
    cfg = SemiRESTConfig.cpu(mu=8, step=4, embed_dim=16, num_heads=2, window=4, iterations=2,
                             synthetic_per_image=1, b1=2, b2=2)
    model = SemiREST(memory, cfg, progress=False)
    with pytest.raises(RuntimeError, match="fit"):
        finetune_with_boxes(model, test[:1], torch.zeros(1, 64, 64, dtype=torch.long))
    model.fit(train, foreground=load_foregrounds(paths, 64))
    bad = (labels == 1).nonzero()[:2, 0]
    pixel = torch.stack([box_pixel_labels(boxes_from_mask(masks[i]), (64, 64)) for i in bad.tolist()])
    history = finetune_with_boxes(model, test[bad], pixel, MixMatchConfig(iterations=3, ramp_steps=1, b1=1, b2=1, b3=1),
                                  progress=False)
    assert len(history) == 3 and all(h["loss"] == h["loss"] for h in history)
    assert set(model.pools["box"].labels.unique().tolist()) <= {0, UNKNOWN}
    _, maps = model.predict(test[:2])
    assert maps.shape == (2, 64, 64)
