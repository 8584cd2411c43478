"""Tests for cutswap_lib.viz.negatives: provenance, on-object statistics on known cases, figures."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from cutswap_lib.viz import negatives as vn  # noqa: E402
from cutswap_lib.cutswap import cutpaste, cutpaste_scar, cutswap_scar, place_patches  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def left_half(b=1, size=8):
    """Object footprint = the left half of the image: ``(b, 1, size, size)``."""
    fg = torch.zeros(b, 1, size, size)
    fg[..., : size // 2] = 1
    return fg


def gather(images, source):
    """``images`` read at the provenance map ``source`` ``(B, 2, H, W)``."""
    b, c, h, w = images.shape
    flat = (source[:, 0] * w + source[:, 1]).view(b, 1, -1).expand(-1, c, -1)
    return images.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


# --------------------------------------------------------------------------- statistics
def test_foreground_fraction_known_case():
    masks = torch.zeros(3, 1, 4, 4)
    masks[0, 0, 0] = 1  # top row: 2 of its 4 pixels on the left half
    masks[1, 0, :, :2] = 1  # exactly the object
    fg = left_half(3, 4)
    f = vn.foreground_fraction(masks, fg)
    assert f.shape == (3,)
    assert f[0] == 0.5 and f[1] == 1.0 and math.isnan(f[2])  # empty mask: no place, NaN


def test_foreground_fraction_checks_shapes():
    with pytest.raises(ValueError, match="foreground must be"):
        vn.foreground_fraction(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))


def test_move_shares_and_kinds_known_case():
    written = torch.zeros(2, 1, 4, 4)
    written[:, 0, 0] = 1  # the top row: 4 written pixels
    source_fg = torch.zeros(2, 1, 4, 4)
    source_fg[0, 0, 0, :3] = 1  # image 0: 3 of them carry object content
    fg = left_half(2, 4)  # destination: cols 0, 1 on the object
    shares = vn.move_shares(written, source_fg, fg)
    # image 0, cols 0..3: F->F, F->F, F->B, B->B
    assert torch.equal(shares[0], torch.tensor([0.5, 0.25, 0.0, 0.25]))
    # image 1: nothing comes from the object: B->F, B->F, B->B, B->B
    assert torch.equal(shares[1], torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert torch.equal(vn.negative_kinds(shares), torch.tensor([4, 4]))  # no strict majority: mixed
    empty = vn.move_shares(torch.zeros(1, 1, 4, 4), source_fg[:1], fg[:1])
    assert torch.isnan(empty).all()


def test_negative_kinds_majority_rule():
    shares = torch.tensor([[0.6, 0.2, 0.1, 0.1], [0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0],
                           [0.1, 0.0, 0.8, 0.1], [float("nan")] * 4])
    kinds = vn.negative_kinds(shares)
    assert [vn.KINDS[k] for k in kinds] == ["F2F", "mixed", "B2B", "B2F", "mixed"]
    fractions = vn.kind_fractions(kinds)
    assert fractions["mixed"] == 0.4 and sum(fractions.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        vn.negative_kinds(torch.zeros(3, 5))


def test_summary_row_known_case():
    on = torch.tensor([0.9, 0.5, float("nan"), 0.1])  # 0.5 is not above 1/2; NaN counts as off
    shares = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [float("nan")] * 4, [0.5, 0.25, 0.25, 0.0]])
    row = vn.summary_row(on, shares)
    assert list(row) == ["n", "mostly on", "mean on", *vn.KINDS]
    assert row["n"] == 4 and row["mostly on"] == 0.25
    assert row["mean on"] == pytest.approx(0.5)  # (0.9 + 0.5 + 0.1) / 3, the empty negative left out
    assert (row["F2F"], row["B2B"], row["mixed"]) == (0.25, 0.25, 0.5)
    with pytest.raises(ValueError, match=r"\(n, 4\) shares"):
        vn.summary_row(on, shares[:3])


# --------------------------------------------------------------------------- provenance
def test_cutswap_provenance_known_swap():
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    anchors = torch.tensor([[[0, 0], [0, 4]]])  # patch 0 on the object, patch 1 off it
    t = vn.traced_negatives("cutswap", x, left_half(), anchors=anchors, patch_size=4)
    boxes = torch.zeros(1, 1, 8, 8)
    boxes[..., :4, :] = 1  # both 4x4 patches: rows 0..3, all columns
    assert torch.equal(t.written, boxes) and torch.equal(t.read, boxes)
    assert t.source[0, :, 1, 1].tolist() == [1, 5] and t.source[0, :, 1, 5].tolist() == [1, 1]
    assert t.source[0, :, 6, 6].tolist() == [6, 6]  # untouched pixel: itself
    assert torch.equal(gather(x, t.source), t.images)
    assert torch.equal(t.masks, (t.images != x).any(1, keepdim=True).float())
    shares = vn.move_shares(t.written, t.source_fg, left_half())
    assert torch.equal(shares[0], torch.tensor([0.0, 0.5, 0.5, 0.0]))  # half B->F, half F->B
    assert vn.KINDS[vn.negative_kinds(shares)[0]] == "mixed"
    full = vn.traced_negatives("cutswap", x, torch.ones(1, 1, 8, 8), anchors=anchors, patch_size=4)
    assert vn.KINDS[vn.negative_kinds(vn.move_shares(full.written, full.source_fg, torch.ones(1, 1, 8, 8)))[0]] == "F2F"


def test_square_swap_moves_as_much_object_each_way():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 32, 32, generator=g)
    fg = (torch.rand(16, 1, 32, 32, generator=g) > 0.5).float()
    anchors = torch.randint(0, 32, (16, 2, 2), generator=g)
    t = vn.traced_negatives("cutswap", x, fg, anchors=anchors, patch_size=8)
    shares = vn.move_shares(t.written, t.source_fg, fg)
    assert torch.equal(shares[:, 1], shares[:, 2])
    corners = place_patches(anchors, 8, (32, 32))  # the written pixels are exactly the two boxes
    boxes = torch.zeros(16, 1, 32, 32)
    for i in range(16):
        for r, c in corners[i].tolist():
            boxes[i, 0, r:r + 8, c:c + 8] = 1
    assert torch.equal(t.written, boxes)


@pytest.mark.parametrize("method", ["cutswap-scar", "cutpaste", "cutpaste-scar"])
def test_random_methods_match_a_plain_call_and_their_provenance(method):
    x = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    anchors = torch.randint(0, 64, (6, 2, 2), generator=torch.Generator().manual_seed(3))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    kw = {"jitter": None} if method.startswith("cutpaste") else {}
    t = vn.traced_negatives(method, x, left_half(6, 64), g1,
                            anchors=anchors if method == "cutswap-scar" else None, **kw)
    plain = {"cutswap-scar": lambda: cutswap_scar(x, anchors, g2),
             "cutpaste": lambda: cutpaste(x, g2, jitter=None),
             "cutpaste-scar": lambda: cutpaste_scar(x, g2, jitter=None)}[method]()
    assert torch.equal(t.images, plain[0]) and torch.equal(t.masks, plain[1])
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))  # same draws used
    assert torch.equal(gather(x, t.source), t.images)  # every pixel is where the map says it came from
    assert bool((t.masks <= t.written).all()) and t.read.sum() > 0
    inside = t.source_fg == left_half(6, 64).view(6, 1, 64, 64).flatten(2).gather(
        2, (t.source[:, :1] * 64 + t.source[:, 1:]).flatten(2)).view(6, 1, 64, 64)
    assert inside.all()


def test_cutpaste_with_jitter_keeps_geometry():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    t = vn.traced_negatives("cutpaste", x, None, torch.Generator().manual_seed(6))
    ref = cutpaste(x, torch.Generator().manual_seed(6), return_footprint=True)
    assert torch.equal(t.images, ref[0]) and torch.equal(t.written, ref[2]) and t.source_fg is None
    assert torch.equal(t.images * (1 - t.written), x * (1 - t.written))
    assert torch.equal(t.read.sum((1, 2, 3)), t.written.sum((1, 2, 3)))  # an unrotated paste: a copy


def test_traced_negatives_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="method must be one of"):
        vn.traced_negatives("mixup", x)
    with pytest.raises(ValueError, match="needs anchors"):
        vn.traced_negatives("cutswap", x)
    with pytest.raises(ValueError, match="takes no anchors"):
        vn.traced_negatives("cutpaste", x, anchors=torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="foreground must be"):
        vn.traced_negatives("cutpaste", x, torch.ones(1, 16, 16), torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- figures
def test_show_negatives_layout():
    x = torch.rand(2, 3, 16, 16)
    neg = {"a": torch.rand(2, 3, 16, 16), "b": torch.rand(2, 3, 16, 16)}
    masks = {k: (torch.rand(2, 1, 16, 16) > 0.5).float() for k in neg}
    boxes = {"a": torch.tensor([[[0, 0, 4, 4], [8, 8, 4, 4]]] * 2)}
    fig = vn.show_negatives(x, neg, masks, ["disc", "board"], foreground=left_half(2, 16),
                            regions={"b": [masks["b"]]}, boxes=boxes)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 4  # originals + 2 methods, two columns per image
    assert fig.axes[0].get_title() == "disc"
    assert sum(isinstance(p, Rectangle) for p in fig.axes[4].patches) == 2  # row "a", first image
    fig = vn.show_negatives(x.numpy(), {k: v.numpy() for k, v in neg.items()}, masks)
    assert len(fig.axes) == 3 * 4 - 2  # no foreground: its panels removed
    with pytest.raises(ValueError, match="titles"):
        vn.show_negatives(x, neg, masks, ["one"])
    with pytest.raises(ValueError, match="different methods"):
        vn.show_negatives(x, neg, {"a": masks["a"]})


def test_show_negative_kinds():
    kinds = {"cutswap": torch.tensor([0, 0, 4, 3]), "cutpaste": torch.tensor([1, 2, 3, 4])}
    on = {"cutswap": torch.tensor([0.9, 0.8, float("nan"), 0.1]), "cutpaste": torch.tensor([0.2, 0.7, 0.0, 0.4])}
    fig = vn.show_negative_kinds(kinds, on, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["0.50", "0.25"]
    assert len(vn.show_negative_kinds(kinds).axes) == 1
