"""Tests for cutswap_lib.viz.pipeline and tools/draw_pipelines.py: stages, highlight, errors, committed PNGs."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from conftest import load_tool  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from cutswap_lib import viz  # noqa: E402
from cutswap_lib.viz import pipeline as vp  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "notebooks" / "figures"
LABELS = {  # the labels the course's chapters name, in pipeline order
    "cutswap": ["multilevel LayerCAM saliency", "k-means on saliency, most salient cluster",
                "CutSwap / CutSwap-scar negatives", "3-way self-supervised fine-tuning of ResNet18",
                "PatchCore: image score and anomaly map"],
    "semirest": ["position-constrained patch features", "memory bank / coreset", "residual tokens",
                 "sliding windows", "Swin transformer over tokens, focal loss",
                 "bagging of the overlapping windows' predictions", "box labels through MixMatch"],
}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def flat(text: str) -> str:
    """A drawn text with its line breaks (and no-break spaces) read as single spaces."""
    return " ".join(text.split())


def by_gid(fig, prefix: str) -> dict:
    """``{key: artist}`` for the artists whose gid is ``prefix:key``."""
    artists = list(fig.axes[0].patches) + list(fig.axes[0].texts)
    return {a.get_gid().split(":", 1)[1]: a for a in artists if (a.get_gid() or "").startswith(prefix + ":")}


def draw_tool():
    return load_tool("draw_pipelines")


def test_stage_keys():
    assert vp.PIPELINE_STAGES == {
        "cutswap": ("layercam", "kmeans", "swap", "three_way", "patchcore"),
        "semirest": ("pcf", "memory", "residuals", "windows", "swin", "bagging", "mixmatch"),
    }
    assert viz.PIPELINE_STAGES is vp.PIPELINE_STAGES and viz.show_pipeline is vp.show_pipeline


@pytest.mark.parametrize("paper", ["cutswap", "semirest"])
def test_labels_drawn_in_order(paper):
    fig = vp.show_pipeline(paper)
    assert isinstance(fig, Figure)
    texts = [flat(t.get_text()) for t in fig.axes[0].texts]
    where = [texts.index(label) for label in LABELS[paper]]  # ValueError if a label is missing
    assert where == sorted(where)
    xs = [fig.axes[0].texts[i].get_position()[0] for i in where]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # left to right
    labels = by_gid(fig, "label")
    assert [flat(labels[k].get_text()) for k in vp.PIPELINE_STAGES[paper]] == LABELS[paper]


@pytest.mark.parametrize("paper", ["cutswap", "semirest"])
def test_every_stage_has_a_note_and_a_citation(paper):
    fig = vp.show_pipeline(paper)
    notes, cites = by_gid(fig, "note"), by_gid(fig, "cite")
    name = {"cutswap": "CutSwap Sec.", "semirest": "SemiREST Sec."}[paper]
    for key in vp.PIPELINE_STAGES[paper]:
        assert "→" in notes[key].get_text() or "(" in notes[key].get_text()
        assert flat(cites[key].get_text()).startswith(name)


def test_notes_carry_the_papers_numbers():
    fig = vp.show_pipeline("semirest")
    notes, cites = by_gid(fig, "note"), by_gid(fig, "cite")
    assert "(B, h_f, w_f, d_f)" in flat(notes["pcf"].get_text())  # a shape is never split over lines
    assert flat(cites["pcf"].get_text()) == "SemiREST Sec. 3.1.1, Eq. 1-3"
    assert "Eq. 10" in flat(cites["bagging"].get_text())
    assert flat(cites["swin"].get_text()).endswith("Eq. 9, 11")  # the Swin map and the focal loss
    cites = by_gid(vp.show_pipeline("cutswap"), "cite")
    assert flat(cites["three_way"].get_text()).startswith("CutSwap Sec. III-B, Eq. 1-5")


def facecolours(fig) -> dict:
    return {key: to_rgba(box.get_facecolor()) for key, box in by_gid(fig, "box").items()}


@pytest.mark.parametrize("paper", ["cutswap", "semirest"])
def test_only_the_highlighted_box_differs(paper):
    keys = vp.PIPELINE_STAGES[paper]
    assert len(set(facecolours(vp.show_pipeline(paper)).values())) == 1  # nothing highlighted
    assert by_gid(vp.show_pipeline(paper), "here") == {}
    for key in keys:
        fig = vp.show_pipeline(paper, here=key)
        colours = facecolours(fig)
        assert list(colours) == list(keys)
        others = {c for k, c in colours.items() if k != key}
        assert len(others) == 1 and colours[key] not in others
        marker = by_gid(fig, "here")
        assert list(marker) == [key] and "you are here" in marker[key].get_text()
        plt.close(fig)


def test_a_list_of_stages_is_highlighted():
    fig = vp.show_pipeline("semirest", here=["swin", "bagging"])
    colours = facecolours(fig)
    lit = {colours["swin"], colours["bagging"]}
    others = {c for k, c in colours.items() if k not in ("swin", "bagging")}
    assert len(lit) == 1 and len(others) == 1 and lit.isdisjoint(others)
    assert sorted(by_gid(fig, "here")) == ["bagging", "swin"]


def test_bad_paper_or_key_names_the_valid_ones():
    with pytest.raises(ValueError, match="'cutswap', 'semirest'"):
        vp.show_pipeline("patchcore")
    with pytest.raises(ValueError, match="'layercam', 'kmeans', 'swap', 'three_way', 'patchcore'"):
        vp.show_pipeline("cutswap", here="swin")  # a SemiREST stage
    with pytest.raises(ValueError, match="'nope'.*valid: 'pcf'"):
        vp.show_pipeline("semirest", here=["swin", "nope"])
    with pytest.raises(ValueError, match="here must be"):
        vp.show_pipeline("semirest", here=3)


def test_default_size_is_notebook_width():
    assert tuple(vp.show_pipeline("cutswap").get_size_inches()) == (12.0, 2.8)


def test_committed_pngs_are_what_the_tool_writes(tmp_path):
    written = draw_tool().draw(tmp_path)
    chapters = [f"here_{c}.png" for c in draw_tool().CHAPTERS]
    assert [p.name for p in written] == ["pipeline_cutswap.png", "pipeline_semirest.png", *chapters]
    for path in written:
        committed = FIGURES / path.name
        assert committed.is_file(), f"{committed} is missing: run tools/draw_pipelines.py"
        assert committed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(committed) as a, Image.open(path) as b:
            assert a.format == b.format == "PNG"
            assert a.size == b.size == (1200, 280)  # 12 x 2.8 inches at 100 dpi, no tight crop
