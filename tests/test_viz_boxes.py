"""Tests for cutswap_lib.viz.boxes: figures build on tiny inputs; the box annotator round-trips a JSON file."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cutswap_lib.viz import boxes as vb  # noqa: E402
from cutswap_lib.semirest import (IGNORE, UNKNOWN, block_labels, box_block_labels, box_key, box_pixel_labels,  # noqa: E402
                                  load_boxes, save_boxes)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tiny(n=2, size=32, grid=4):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=gen)
    masks = torch.zeros(n, size, size)
    masks[0, 4:10, 6:12] = 1
    masks[1, 20:30, 2:5] = 1
    boxes = [[(6, 4, 12, 10)], [(2, 20, 5, 30), (20, 20, 24, 24)]]
    blocks = block_labels(masks[:, None], (grid, grid), 0.25, 0.08)
    pixels = torch.stack([box_pixel_labels(b, (size, size)) for b in boxes])
    return images, masks, boxes, blocks, box_block_labels(pixels, (grid, grid), 0.5)


# --------------------------------------------------------------------------- helpers
def test_box_key_and_hidden_defect_blocks():
    assert box_key("/data/toy/disc/test/chip/003.png") == "chip/003.png"
    masks = torch.zeros(1, 8, 8)
    masks[0, 0, 0] = 1  # 1 of the 16 pixels of block (0, 0)
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    assert vb.normal_blocks_with_defect(masks, labels) == (1, 1 / 16)
    labels[0, 0, 0] = UNKNOWN
    assert vb.normal_blocks_with_defect(masks, labels) == (0, 0.0)


def test_unknown_block_truth_counts_eq14_labels_inside_the_boxes_like_a_loop():
    gen = torch.Generator().manual_seed(3)
    masks = (torch.rand(3, 32, 32, generator=gen) > 0.8).float()
    masks[0, 2:14, 3:9] = 1  # a blob
    masks[1, 10, 0:30] = 1   # a thin horizontal crack
    boxes = [[(3, 2, 9, 14)], [(0, 10, 30, 11)], [(0, 0, 16, 16), (20, 20, 32, 32)]]
    box_labels = box_block_labels(torch.stack([box_pixel_labels(b, (32, 32)) for b in boxes]), (8, 8), 0.0)
    got = vb.unknown_block_truth(masks, box_labels, eps_plus=0.25, eps_minus=0.08)
    counts = {"anomalous": 0, "normal": 0, "ignored": 0}
    for b in range(3):  # brute force: each unknown block's share of defect pixels, Eq. 14 by hand
        for i in range(8):
            for j in range(8):
                if box_labels[b, i, j] == UNKNOWN:
                    share = float(masks[b, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean())
                    counts["anomalous" if share > 0.25 else "normal" if share < 0.08 else "ignored"] += 1
    n = sum(counts.values())
    assert got["unknown blocks"] == n == int((box_labels == UNKNOWN).sum()) > 0
    for key, count in counts.items():
        assert got[key] == pytest.approx(count / n)
    assert vb.unknown_block_truth(masks, torch.zeros(3, 8, 8, dtype=torch.long))["unknown blocks"] == 0


# --------------------------------------------------------------------------- figures
def test_show_annotation_levels_and_boxes():
    images, masks, boxes, blocks, box_blocks = tiny()
    assert set(blocks.unique().tolist()) <= {0, 1, IGNORE}
    fig = vb.show_annotation_levels(images, masks, blocks, boxes, box_blocks, titles=["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 4
    assert len(fig.axes[3].patches) == 1 and len(fig.axes[7].patches) == 2  # boxes drawn on the last column
    with pytest.raises(ValueError, match="one block map"):
        vb.show_annotation_levels(images, masks, blocks[:1], boxes, box_blocks)
    fig = vb.show_boxes(images, boxes, masks, titles=["a", "b"], ncols=5)
    assert len(fig.axes) == 2 and "2 boxes" in fig.axes[1].get_title()


def test_show_pseudo_labels_and_mixup():
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(3, 8, 8, generator=gen)
    labels = torch.zeros(8, 8, dtype=torch.long)
    labels[2:5, 2:6] = UNKNOWN
    labels[7] = IGNORE
    fig = vb.show_pseudo_labels(probs, labels, crop=torch.rand(3, 16, 16), crop_mask=torch.zeros(16, 16))
    assert isinstance(fig, Figure) and len(fig.axes) == 5 + 3 + 1  # top row, bottom row, colour bar
    assert "0.5" in fig.axes[6].get_title()
    tokens = torch.rand(8, 8, 4, generator=gen)
    fig = vb.show_mixup(tokens, 0.7 * tokens + 0.3 * tokens.flip(0), torch.rand(8, 8), torch.rand(8, 8), 0.7,
                        labels)
    assert len(fig.axes) == 4 + 2


def test_ramp_curves_and_cost_figure():
    fig = vb.show_lambda_u_ramp(5.0, 400, steps=600, iterations=300)
    line = fig.axes[0].lines[0].get_ydata()
    assert len(fig.axes) == 1 and line[0] == 0 and line[400] == 5.0 and line[600] == 5.0
    history = [{"iteration": i + 1, "loss": 1.0, "loss_focal": 0.5, "loss_x": 0.1, "loss_u": 0.2,
                "lambda_u": i / 10} for i in range(30)]
    assert len(vb.show_finetune_curves(history, window=5).axes) == 3
    with pytest.raises(ValueError, match="non-empty"):
        vb.show_finetune_curves([])
    results = {"ours": {"none": (0.5, 0.9, 0.95), "box": (0.6, 0.9, 0.96), "block": (0.7, 0.92, 0.97),
                        "pixel": (0.7, 0.92, 0.97)},
               "paper": {"none": (0.81, 0.975, 0.993), "box": (0.838, 0.981, 0.995), "pixel": None}}
    fig = vb.show_cost_vs_accuracy(results, {"none": 0, "box": 5, "block": 17, "pixel": 32},
                                   notes={"ours": "pixel = block"}, hollow={"ours": ["pixel"]})
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 2
    assert len(fig.axes[0].collections) == 4 and len(fig.axes[1].collections) == 2  # None left out


# --------------------------------------------------------------------------- the annotator
def test_box_annotator_round_trips_boxes_through_json(tmp_path):
    images, masks, _, _, _ = tiny(n=3)
    path = tmp_path / "disc" / "boxes.json"
    names = ["chip/000.png", "scratch/001.png", "stain/002.png"]
    annotator = vb.BoxAnnotator(images, names, path, masks=masks)  # no front end needed
    assert annotator.click(10, 12) is None  # first corner
    assert annotator.click(3, 20) == (3, 12, 11, 21)  # second corner: the box spans both clicked pixels
    assert annotator.add() == (3, 12, 11, 21)
    annotator.add((0, 0, 4, 4))
    assert annotator.remove() == (0, 0, 4, 4)
    assert annotator.go(-1) == "stain/002.png"  # wraps around
    annotator.set_box((20, 20, 32, 30))
    annotator.add()
    annotator.add((1, 1, 5, 5), name="scratch/001.png")
    assert annotator.remove(name="scratch/001.png") == (1, 1, 5, 5) and annotator.remove(name="scratch/001.png") is None
    with pytest.raises(ValueError, match="leaves"):
        annotator.add((20, 20, 40, 30))
    assert annotator.render().size == (64, 64)  # scale 2
    saved = annotator.save()
    assert saved == path and load_boxes(path) == {"chip/000.png": [(3, 12, 11, 21)], "stain/002.png": [(20, 20, 32, 30)]}
    again = vb.BoxAnnotator(images, names, path)  # starts from the file
    assert again.boxes == {"chip/000.png": [(3, 12, 11, 21)], "scratch/001.png": [], "stain/002.png": [(20, 20, 32, 30)]}
    assert vb.BoxAnnotator(images, names, path, load=False).boxes["chip/000.png"] == []
    assert len(again.figure().axes) == 3
    with pytest.raises(ValueError, match="names"):
        vb.BoxAnnotator(images, names[:2], path)


def test_box_annotator_widget_buttons_and_sliders(tmp_path):
    pytest.importorskip("ipywidgets")
    images, _, _, _, _ = tiny(n=2)
    path = save_boxes(tmp_path / "boxes.json", {"b.png": [(1, 1, 4, 4)]}, (32, 32))
    annotator = vb.BoxAnnotator(images, ["a.png", "b.png"], path)
    box = annotator.widget()
    buttons = annotator._widgets["buttons"]
    annotator._widgets["x"].value = (2, 9)
    annotator._widgets["y"].value = (3, 7)
    assert annotator.pending == (2, 3, 9, 7)
    buttons["add box"].click()
    buttons["next ▶"].click()
    assert annotator.name == "b.png"
    buttons["remove last"].click()
    buttons["save"].click()
    assert load_boxes(path) == {"a.png": [(2, 3, 9, 7)]}
    assert "saved 1 image" in annotator._widgets["status"].value
    assert annotator._widgets["view"].value[:4] == b"\x89PNG" and box.children
